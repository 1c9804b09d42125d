"""The copywriter: GGUF conversion, seeded variants, streaming, batching, the filter, bad inputs, the CLI.

The base model is converted once into $BRUSHPEN_HOME (default ~/.cache/brushpen, the same copy
`make run` uses) and loaded once per session; on a clean machine the first test converts it.
Generations stay at a dozen tokens so the whole file runs in about a minute on one thread.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from brushpen.cli.copy_cmd import _print_stream
from brushpen.errors import BadParameter, BrokenModel, ModelNotFound
from brushpen.generators.catalog import copy_model
from brushpen.generators.copy import (DELIBERATE_TEMPERATURE, PLAIN_TEMPERATURE, CopyRequest, copy_models,
                                      generate_copy, generate_copy_batch, stream_copy)
from brushpen.text.base import (BASE_NAME, COPY_MODEL, _load_folder, convert_base, default_copy_model, load_gguf,
                                load_text_model)
from brushpen.text.filter import check_brief, load_blocklist
from brushpen.text.prompts import KINDS, build_prompt
from brushpen.text.sampling import clean, fit_context
from conftest import PYTHON, REPO, apply_copy_events, subprocess_env

BRIEFS = json.loads((REPO / "tests" / "data" / "briefs.json").read_text(encoding="utf-8"))
BRIEF = "Reusable steel water bottle that keeps drinks cold for 24 hours"


@pytest.fixture(scope="session")
def base_dir() -> Path:
    return convert_base()


@pytest.fixture(scope="session")
def text_model(base_dir: Path):
    return load_text_model()


def small(**kw) -> CopyRequest:
    """Plain sampling on the base: these tests pin its seeds, redraws and token streaming (deliberate
    mode has tests/test_copy_deliberate.py; the default model, the last test here)."""
    return CopyRequest(**{"brief": BRIEF, "n": 3, "max_new_tokens": 12, "seed": 11, "deliberate": False,
                          "model": BASE_NAME, **kw})


def test_briefs_file_covers_every_kind() -> None:
    assert len(BRIEFS) == 20
    assert {b["kind"] for b in BRIEFS} == set(KINDS)
    assert all(b["brief"] and b["tone"] and b["audience"] for b in BRIEFS)


def test_conversion_gives_the_gguf_models_logits(base_dir: Path, text_model) -> None:
    # The GGUF is dequantized to fp32 on load and the copy stores those fp32 weights as they are,
    # so the two models hold identical tensors: logits should agree to float rounding (we allow 1e-4
    # on logits of magnitude ~10-30, far below any sampling-relevant difference).
    assert (base_dir / "model.safetensors").is_file() and (base_dir / "tokenizer.json").is_file()
    assert not list(base_dir.parent.glob(f".{BASE_NAME}.staging-*"))
    assert "quantization_config" not in json.loads((base_dir / "config.json").read_text())
    gguf_model, gguf_tok = load_gguf()
    prompt = build_prompt(gguf_tok, BRIEF, "tagline", "playful", "hikers")
    ids = gguf_tok(prompt, return_tensors="pt", add_special_tokens=False)
    ours = text_model.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    assert torch.equal(ids["input_ids"], ours["input_ids"])
    with torch.inference_mode():
        ref = gguf_model(**ids).logits
        got = text_model.model(**ours).logits
    assert ref.shape == got.shape and ref.abs().max() > 5
    assert (ref - got).abs().max().item() < 1e-4
    assert torch.equal(ref[0, -1].argmax(), got[0, -1].argmax())


def test_the_converted_copy_reloads_fast(base_dir: Path, text_model) -> None:
    start = time.perf_counter()
    model, _ = _load_folder.__wrapped__(str(base_dir.resolve()))
    assert time.perf_counter() - start < 3.0  # ~0.5 s measured; the GGUF path takes 15-30 s
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)


def test_same_seed_same_text_and_variants_distinct(text_model) -> None:
    a = generate_copy(small(n=4))
    b = generate_copy(small(n=4))
    assert a.texts == b.texts and len(a.texts) == 4
    assert all(t.strip() for t in a.texts)
    assert len({t.lower() for t in a.texts}) == 4
    # Variant i draws seed 11+i; one that repeats another is redrawn with 11 + 4·attempt + i.
    assert [v.seed for v in a.variants][:2] == [11, 12]
    assert all(v.seed in {11 + i + 4 * k for k in range(3)} for i, v in enumerate(a.variants))
    assert a.settings["seed"] == 11 and a.settings["model"] == BASE_NAME
    assert generate_copy(small(n=4, seed=99)).texts != a.texts
    for t in a.texts:  # cleaned: single-line headline, no template tokens
        assert "\n" not in t and "<|" not in t and "im_end" not in t


def test_streaming_gives_the_same_text_as_generate(text_model) -> None:
    req = small(kind="description", max_new_tokens=16, n=2)
    texts, deltas, final = apply_copy_events(stream_copy(req))
    assert deltas > 2  # it really streamed
    assert texts == final.texts == generate_copy(req).texts


def test_streaming_marks_each_variant_final_as_its_row_ends(text_model) -> None:
    # Headlines stop at their newline, so rows end at different steps: a finished variant is
    # announced while the others still stream, and what it showed then is its final text.
    req = small(kind="headline", max_new_tokens=40, n=3, seed=5)
    texts: dict[int, str] = {}
    order: list[tuple[str, int, bool]] = []
    final_at: dict[int, str] = {}
    for ev in stream_copy(req):
        if ev.kind == "done":
            result = ev.result
            break
        if ev.kind == "delta":
            texts[ev.variant] = texts.get(ev.variant, "") + ev.text
        elif ev.kind == "replace":
            texts[ev.variant] = ev.text
        order.append((ev.kind, ev.variant, ev.final))
        if ev.final:
            final_at[ev.variant] = texts.get(ev.variant)
    assert sorted(final_at) == [0, 1, 2]
    assert [final_at[i] for i in range(3)] == result.texts == generate_copy(req).texts
    first_final = next(k for k, (_, _, final) in enumerate(order) if final)
    assert any(not final for _, _, final in order[first_final + 1:])  # others were still streaming


def _listing(result) -> str:
    return "".join(f"{i}. {t}\n" for i, t in enumerate(result.texts, 1))


def test_tty_stream_redraws_every_variant_in_place(text_model) -> None:
    req = small(kind="headline", max_new_tokens=24, n=3, seed=8)
    out = io.StringIO()
    _print_stream(stream_copy(req), out=out, tty=True)
    frames = out.getvalue().split("\x1b[J")
    live, final = frames[1:-1], frames[-1]
    assert final == _listing(generate_copy(req))  # the block is cleared, then the final variants
    ups = {f.rsplit("\x1b[", 1)[-1] for f in live}
    assert "3F" in ups and ups <= {"1F", "2F", "3F"}  # a block of at most 3 lines, redrawn in place
    for i in (1, 2, 3):  # every variant grew on screen, not only the first
        shown = {line for f in live for line in f.split("\n") if line.startswith(f"{i}. ")}
        assert len(shown) > 3, (i, shown)


def test_piped_stream_prints_the_final_list_when_the_filter_redraws(text_model, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    req = small(kind="headline", max_new_tokens=20, n=2, seed=21)
    word = max(generate_copy(req).texts[1].split(), key=len).strip(".,!?:;\"'()#").lower()
    (tmp_path / "blocklist.txt").write_text(f"{word}\n", encoding="utf-8")
    monkeypatch.setenv("BRUSHPEN_BLOCKLIST", str(tmp_path / "blocklist.txt"))
    out = io.StringIO()
    _print_stream(stream_copy(req), out=out, tty=False)
    shown, marker, final = out.getvalue().partition("final list:)\n")
    assert marker and word in shown.lower()  # the blocked variant was shown as it finished ...
    assert final == _listing(generate_copy(req)) and word not in final.lower()  # ... then fixed


def test_batch_of_briefs(text_model) -> None:
    reqs = [CopyRequest(b["brief"], b["kind"], b["tone"], b["audience"], n=2, max_new_tokens=10, seed=3,
                        deliberate=False) for b in BRIEFS[:3]]
    results = generate_copy_batch(reqs)
    assert [len(r.variants) for r in results] == [2, 2, 2]
    assert [r.settings["brief"] for r in results] == [b["brief"] for b in BRIEFS[:3]]
    assert [r.texts for r in generate_copy_batch(reqs)] == [r.texts for r in results]


def test_temperature_zero_is_greedy(text_model) -> None:
    a = generate_copy(small(n=1, temperature=0, seed=1))
    b = generate_copy(small(n=1, temperature=0, seed=2))
    assert a.texts == b.texts and a.texts[0]
    with pytest.raises(BadParameter, match="greedy"):
        generate_copy(small(n=3, temperature=0))


@pytest.mark.parametrize("kw, match", [
    ({"brief": ""}, "empty"), ({"brief": "   \n"}, "empty"), ({"brief": "x" * 100_000}, "100,000 characters"),
    ({"n": -1}, "n must lie"), ({"n": 0}, "n must lie"), ({"n": 17}, "n must lie"),
    ({"temperature": -0.5}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_k": -1}, "top_k"),
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"kind": "poem"}, "unknown kind"), ({"seed": -3}, "seed"),
])
def test_bad_inputs_are_refused_before_any_work(kw: dict, match: str) -> None:
    with pytest.raises(BadParameter, match=match):
        generate_copy(small(**kw))


def test_filter_refuses_a_blocked_brief() -> None:
    bl = load_blocklist()
    assert bl.hits("a CLASS act, Nazi   propaganda") == ["nazi"]  # whole words, case-insensitive
    with pytest.raises(BadParameter, match="refused by the text filter.*'shit'"):
        check_brief("Shit-hot deals on coffee")
    with pytest.raises(BadParameter, match="text filter"):
        generate_copy(small(brief="Bullshit-free accounting software"))


def test_filter_redraws_or_drops_a_blocked_output(text_model, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    first = generate_copy(small(n=2))
    word = max(first.texts[0].split(), key=len).strip(".,!?:;\"'()#").lower()
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text(f"# test list\n{word}\n", encoding="utf-8")
    monkeypatch.setenv("BRUSHPEN_BLOCKLIST", str(blocklist))
    again = generate_copy(small(n=2))
    assert all(word not in load_blocklist().hits(t) for t in again.texts)
    assert first.texts[0] not in again.texts
    # Variant 1 was redrawn with a fresh seed, or dropped with a note saying why.
    assert (again.variants and again.variants[0].seed != 11) or again.notes
    assert len(again.variants) + len(again.notes) >= 2
    assert all("blocklist" in n for n in again.notes)


def test_clean_strips_template_labels_quotes_and_trims() -> None:
    assert clean('Subject: "Big spring sale starts now"<|im_end|>', True) == "Big spring sale starts now"
    assert clean("\n**Headline:** Cold for 24 hours\nMore text here", True) == "Cold for 24 hours"
    assert clean("Stays cold all day. Packs flat. Made from rec", False, ended=False) == \
        "Stays cold all day. Packs flat."
    assert clean("Stays cold all day. Packs flat", False, ended=True) == "Stays cold all day. Packs flat"


def test_fit_context_cuts_prompts_from_the_left_for_short_windows() -> None:
    ids = torch.arange(1, 101).reshape(2, 50)
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    same, n = fit_context(enc, 80, 8192)  # the base's window: untouched
    assert same is enc and n == 80
    kept, n = fit_context(enc, 80, 128)   # 50 + 80 > 128: the prompt fits in half the window ...
    assert kept["input_ids"].shape == (2, 50) and n == 78  # ... so the budget gives way
    cut, n = fit_context(enc, 20, 40)     # 50 + 20 > 40: the prompt keeps its last 20 tokens
    assert n == 20 and torch.equal(cut["input_ids"], ids[:, -20:]) and cut["attention_mask"].shape == (2, 20)
    cut, n = fit_context(enc, 200, 64)    # the budget alone exceeds the window: half each
    assert torch.equal(cut["input_ids"], ids[:, -32:]) and n == 32


def test_unknown_and_broken_models_name_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="unknown text model 'no-such-model'.*smollm2-135m"):
        load_text_model("no-such-model")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(BrokenModel, match="safetensors"):
        load_text_model(broken)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env.pop("BRUSHPEN_BLOCKLIST", None)
    return subprocess.run([PYTHON, "-m", "brushpen.cli.main", "copy", *args], env=env,
                          capture_output=True, text=True, timeout=180, cwd=REPO)


def test_cli_json(base_dir: Path) -> None:
    proc = run_cli(BRIEF, "--kind", "tagline", "--n", "2", "--seed", "5", "--max-new-tokens", "10",
                   "--json", "--threads", "1", "--no-deliberate")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [v["seed"] for v in out["variants"]] == [5, 6]
    assert all(v["text"] for v in out["variants"])
    assert out["settings"]["kind"] == "tagline" and out["settings"]["max_new_tokens"] == 10


def test_cli_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture) -> None:
    """Through the CLI's `main` in this process: the same code path as `brushpen copy`, without
    three fresh interpreters (the plain command's own process is tested above)."""
    from brushpen.cli.main import main

    def cli(*args: str) -> tuple[int, str]:
        code = main(["copy", *args])
        return code, capsys.readouterr().err

    code, err = cli(BRIEF, "--model", "no-such-model")
    assert code == 2
    assert err.strip().startswith("error: unknown text model 'no-such-model'")
    assert len(err.strip().splitlines()) == 1
    code, err = cli(BRIEF, "--adapter", "no-such-adapter")
    assert code == 2 and "has no adapter 'no-such-adapter'" in err
    assert len(err.strip().splitlines()) == 1
    code, err = cli("", "--n", "2")
    assert code == 2 and "brief is empty" in err


def test_cli_stream_piped_prints_what_the_plain_command_prints(base_dir: Path) -> None:
    args = (BRIEF, "--kind", "ad", "--n", "3", "--seed", "4", "--max-new-tokens", "24", "--threads", "1",
            "--no-deliberate")
    plain, streamed = run_cli(*args), run_cli(*args, "--stream")
    assert plain.returncode == streamed.returncode == 0, streamed.stderr
    assert plain.stdout.count("\n") >= 3 and "\x1b" not in streamed.stdout
    assert streamed.stdout == plain.stdout


def test_copy_tune_measures_score_what_they_say(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sweep behind the defaults (benchmarks/copy_tune.py) rests on these crude measures.
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("copy_tune", REPO / "benchmarks" / "copy_tune.py")
    tune = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "copy_tune", tune)  # dataclasses look their module up there
    spec.loader.exec_module(tune)
    bottle = {"brief": "Reusable steel bottle that keeps drinks cold for 24 hours", "kind": "headline"}
    assert tune.score_variant("Cold for 24 hours, every hike", bottle) == {
        "on_brief": True, "fits_length": True, "chatbot": False, "stray_tags": False,
        "new_numbers": False, "placeholders": False, "loops": False}
    assert tune.score_variant("Bottles that last", bottle)["on_brief"]          # shared stem "bottl"
    assert not tune.score_variant("The ultimate travel companion", bottle)["on_brief"]
    long_one = tune.score_variant("Hey there! I'm Alex and this steel bottle is 50% off today #hydrate", bottle)
    assert long_one["chatbot"] and long_one["stray_tags"] and long_one["new_numbers"]
    assert not long_one["fits_length"]                                             # 13 words > 10
    assert tune.score_variant("Dear [Recipient's Name],", {**bottle, "kind": "email-subject"})["placeholders"]
    ad = {"brief": "Budgeting app", "kind": "ad"}
    assert tune.score_variant("Save more. Spend less. Try it free today!", ad)["fits_length"]   # 3 sentences
    assert not tune.score_variant("Save more.", ad)["fits_length"]
    assert tune.score_variant("The best bottle ever, the best bottle yet", bottle)["loops"]
    assert tune.distinct2(["a b c", "a b d"]) == 0.75                              # 3 distinct of 4 bigrams


def test_the_shipped_distilled_student_serves_and_differs_from_the_base(text_model) -> None:
    """`smollm2-135m:copy` (weights/text/smollm2-135m/adapters/copy) loads on the converted base,
    which its adapter.json ties it to by hash, and changes what the base writes for the same seed."""
    info = json.loads((REPO / "weights" / "text" / BASE_NAME / "adapters" / "copy" / "adapter.json").read_text())
    assert info["rank"] == 8 and info["base"] == f"text/{BASE_NAME}"
    student = generate_copy(small(model=f"{BASE_NAME}:copy", max_new_tokens=16))
    base = generate_copy(small(max_new_tokens=16))
    assert student.settings["model"] == f"{BASE_NAME}:copy" and len(student.texts) == 3
    assert all(t.strip() for t in student.texts) and student.texts != base.texts


def test_a_request_without_a_model_gets_the_distilled_copywriter(text_model) -> None:
    """On torch the default is `smollm2-135m:copy`, with its own plain-sampling temperature (0.7:
    at the base's 0.3 its variants collapse into one); the ONNX backends, whose graphs are of the
    base, get the base; naming a model or an adapter keeps it."""
    assert default_copy_model() == COPY_MODEL == f"{BASE_NAME}:copy"
    assert CopyRequest(BRIEF).model == COPY_MODEL and CopyRequest(BRIEF).temperature == DELIBERATE_TEMPERATURE
    assert CopyRequest(BRIEF, deliberate=False).temperature == 0.7
    assert CopyRequest(BRIEF, deliberate=False, model="smollm2:copy").temperature == 0.7   # an alias of the base
    assert CopyRequest(BRIEF, deliberate=False, model=BASE_NAME).temperature == PLAIN_TEMPERATURE
    assert CopyRequest(BRIEF, deliberate=False, adapter="taglines").model is None
    assert CopyRequest(BRIEF, backend="onnx-int8").model == BASE_NAME
    assert copy_models()[:2] == [COPY_MODEL, BASE_NAME]
    assert copy_model(None) == COPY_MODEL and copy_model(None, "onnx-int8") == BASE_NAME   # the API's default
    result = generate_copy(CopyRequest(BRIEF, kind="tagline", n=2, draft=2, seed=3))
    assert result.settings["model"] == COPY_MODEL and result.settings["temperature"] == DELIBERATE_TEMPERATURE
    with pytest.raises(BadParameter, match=f"pick model {BASE_NAME} for onnx"):
        generate_copy(CopyRequest(BRIEF, model=COPY_MODEL, backend="onnx"))
