"""Brand-voice LoRA for the copywriter, on a tiny random Llama with a tiny BPE tokenizer in a private store.

LoRA correctness (zero B changes nothing, training changes the output, merged equals unmerged), a
training run whose held-out copy loss falls, resume equal to an uninterrupted run, the adapter's
round trip through the store and the copy service, the mismatch errors, the base files untouched,
JSONL validation, and the deterministic dataset builder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from brushpen.adapters import FinetuneEvent, read_info, weights_sha256
from brushpen.errors import BadInput, BrokenModel, ModelNotFound
from brushpen.text.base import load_adapted
from brushpen.text.copy_data import build_copy_pairs, is_slogan
from brushpen.text.lora import TextFinetuneRequest, TextLoraConfig, finetune
from brushpen.text.lora_data import copy_token_nll, encode, read_examples

CHAT = ("{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}")
PRODUCTS = ["kettle", "lamp", "bike", "sofa", "watch", "boots", "tent", "radio", "phone", "desk",
            "chair", "drone", "stove", "camera", "guitar", "piano", "scarf", "mug", "pen", "rug"]


def rows() -> list[dict]:
    return [{"brief": f"A {p} for busy people", "kind": "tagline", "copy": f"The {p} that works for you."}
            for p in PRODUCTS]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return path


def save_tiny_lm(folder: Path, seed: int) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from brushpen.text.tokenizer import train_tokenizer

    texts = [r["brief"] + " " + r["copy"] for r in rows()] + ["Write one short, memorable tagline for this product"]
    tok = train_tokenizer(texts * 4, vocab_size=320)
    tok.chat_template = CHAT
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, tie_word_embeddings=True,
                                         # large enough embeddings that the frozen, tied output layer can
                                         # express a confident prediction (0.02 caps logits near +-0.6)
                                         initializer_range=0.3,
                                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("lora")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRUSHPEN_WEIGHTS", str(root / "weights"))
        mp.setenv("BRUSHPEN_HOME", str(root / "home"))
        for name, seed in (("tiny", 0), ("other", 1)):
            save_tiny_lm(root / "weights" / "text" / name, seed)
        data = write_jsonl(root / "train.jsonl", rows()[:16])
        held = write_jsonl(root / "held.jsonl", rows()[16:])
        yield {"root": root, "data": data, "held": held, "base": root / "weights" / "text" / "tiny"}


def request(env: dict, out: str, **kw) -> TextFinetuneRequest:
    return TextFinetuneRequest(**{"base": "text/tiny", "data": env["data"], "heldout": env["held"], "out": out,
                                  "rank": 4, "lr": 1e-2, "batch_size": 4, "epochs": 5, "eval_every": 10,
                                  "dropout": 0.0, "threads": 1, **kw})


@pytest.fixture(scope="module")
def trained(env: dict):
    before = weights_sha256(list(env["base"].glob("*.safetensors")))
    events: list[FinetuneEvent] = []
    result = finetune(request(env, "voice"), events.append)
    return {"result": result, "events": events, "hash_before": before}


def tiny_inputs(env: dict):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(env["base"])
    return torch.tensor([tok("A lamp for busy people", add_special_tokens=False)["input_ids"]])


def test_zero_initialised_b_leaves_the_logits_unchanged(env: dict) -> None:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    ids = tiny_inputs(env)
    base = AutoModelForCausalLM.from_pretrained(env["base"]).eval()
    with torch.no_grad():
        want = base(ids).logits.clone()
        peft = get_peft_model(base, TextLoraConfig(rank=4).peft()).eval()
        got = peft(ids).logits
    assert torch.equal(got, want)
    # every projection of both layers carries an adapter
    assert sum(n.endswith("lora_A.default.weight") for n, _ in peft.named_parameters()) == 2 * 7


def test_training_lowers_the_heldout_copy_loss(trained: dict) -> None:
    m = trained["result"].metrics
    assert m["steps"] == 20 and m["total_steps"] == 20     # 16 examples / batch 4 x 5 epochs
    assert m["heldout_loss"] < m["heldout_loss_before"] - 0.5, m
    losses = [e.loss for e in trained["events"] if e.loss is not None and "heldout_loss" not in e.metrics]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.5
    info = read_info(trained["result"].path)
    assert info.rank == 4 and info.trainable_params == m["trainable_params"] and info.base == "text/tiny"
    assert {p.name for p in trained["result"].path.iterdir()} >= {
        "adapter_config.json", "adapter_model.safetensors", "adapter.json", "card.md", "metrics.json"}
    assert "## Metrics" in (trained["result"].path / "card.md").read_text()


def test_trainable_parameter_count_is_the_lora_matrices(trained: dict) -> None:
    # rank 4 on hidden 32, kv 16 (2 heads of 8), MLP 64: A is r x in, B is out x r, per layer.
    r, h, kv, mlp = 4, 32, 16, 64
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, mlp), (h, mlp), (mlp, h)]
    assert trained["result"].metrics["trainable_params"] == 2 * sum(r * (i + o) for i, o in shapes)


def test_round_trip_merged_equals_unmerged_and_output_differs(env: dict, trained: dict) -> None:
    from peft import PeftModel

    from brushpen.store import list_models
    from brushpen.text.base import _load_folder

    listed = {m.name: m.adapters for m in list_models()}
    assert listed["tiny"] == ["voice"] and listed["other"] == []
    tm = load_adapted("text/tiny:voice")
    assert tm.name == "text/tiny:voice"
    base, _ = _load_folder.__wrapped__(str(env["base"].resolve()))
    unmerged = PeftModel.from_pretrained(_load_folder.__wrapped__(str(env["base"].resolve()))[0],
                                         str(trained["result"].path)).eval()
    ids = tiny_inputs(env)
    with torch.no_grad():
        merged_logits, unmerged_logits, base_logits = tm.model(ids).logits, unmerged(ids).logits, base(ids).logits
        greedy = [m.generate(ids, max_new_tokens=8, do_sample=False) for m in (tm.model, unmerged)]
    assert torch.allclose(merged_logits, unmerged_logits, atol=1e-5, rtol=0)
    assert (merged_logits - base_logits).abs().max() > 0.1
    assert torch.equal(greedy[0], greedy[1])
    assert load_adapted("text/tiny:voice").model is tm.model        # cached per (base, adapter, mtime)
    # loading read the base, never wrote it
    assert weights_sha256(list(env["base"].glob("*.safetensors"))) == trained["hash_before"]


def test_copy_service_runs_the_adapter(trained: dict) -> None:
    from brushpen.generators.copy import CopyRequest, copy_models, generate_copy

    req = dict(brief="A tent for busy people", kind="tagline", n=1, temperature=0, max_new_tokens=8, seed=3)
    via_model = generate_copy(CopyRequest(model="text/tiny:voice", **req))
    via_adapter = generate_copy(CopyRequest(model="text/tiny", adapter="voice", **req))
    assert via_model.texts == via_adapter.texts and via_model.settings["model"] == "text/tiny:voice"
    assert "text/tiny:voice" in copy_models()


def test_resume_equals_an_uninterrupted_run(env: dict, trained: dict) -> None:
    from safetensors.torch import load_file

    class Stop(Exception):
        pass

    def stop_after_checkpoint(ev: FinetuneEvent) -> None:
        if ev.step == 11:
            raise Stop
    with pytest.raises(Stop):
        finetune(request(env, "again"), stop_after_checkpoint)
    result = finetune(request(env, "again", resume=True))
    a = load_file(str(trained["result"].path / "adapter_model.safetensors"))
    b = load_file(str(result.path / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert result.metrics["heldout_loss"] == pytest.approx(trained["result"].metrics["heldout_loss"], abs=1e-5)


def test_mismatched_and_broken_adapters_are_refused(env: dict, trained: dict) -> None:
    adapters = env["root"] / "weights" / "text"
    # made for other base weights
    shutil.copytree(trained["result"].path, adapters / "other" / "adapters" / "voice")
    with pytest.raises(BrokenModel, match="other weights"):
        load_adapted("text/other:voice")
    # config rank differs from the tensors' rank
    bad = adapters / "tiny" / "adapters" / "rank"
    shutil.copytree(trained["result"].path, bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    with pytest.raises(BrokenModel, match="rank 8"):
        load_adapted("text/tiny:rank")
    # truncated weights
    broken = adapters / "tiny" / "adapters" / "broken"
    shutil.copytree(trained["result"].path, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(BrokenModel, match="broken"):
        load_adapted("text/tiny:broken")
    with pytest.raises(ModelNotFound, match="voice"):
        load_adapted("text/tiny:nope")
    assert weights_sha256(list(env["base"].glob("*.safetensors"))) == trained["hash_before"]


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    good = json.dumps(rows()[0])
    cases = {"not json": "not valid JSON", '["a list"]': "JSON object", '{"brief": "x"}': "'copy' is missing",
             '{"brief": "x", "copy": "y", "kind": "poem"}': "unknown kind", '{"text": ""}': "non-empty"}
    for bad, message in cases.items():
        f = tmp_path / "bad.jsonl"
        f.write_text(f"{good}\n\n{bad}\n{good}\n", encoding="utf-8")
        with pytest.raises(BadInput, match=f"line 3: .*{message}"):
            read_examples(f)
    f.write_text(good + "\n" + json.dumps({"text": "Plain text row."}) + "\n", encoding="utf-8")
    examples = read_examples(f)
    assert examples[1].brief is None and examples[1].copy == "Plain text row."
    with pytest.raises(BadInput, match="does not exist"):
        read_examples(tmp_path / "missing.jsonl")


def test_only_the_copy_tokens_carry_loss(env: dict) -> None:
    from transformers import AutoTokenizer

    from brushpen.text.lora_data import Example
    from brushpen.text.prompts import build_prompt

    tok = AutoTokenizer.from_pretrained(env["base"])
    ids, labels = encode(tok, Example("The lamp that works.", "A lamp", "tagline"))
    n_prompt = len(tok(build_prompt(tok, "A lamp", "tagline"), add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert tok.decode(ids[n_prompt:]) == "The lamp that works.<|eos|>"


def test_heldout_loss_matches_a_plain_cross_entropy(env: dict) -> None:
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(env["base"])
    model = AutoModelForCausalLM.from_pretrained(env["base"]).eval()
    encoded = [encode(tok, e) for e in read_examples(env["held"])]
    got = copy_token_nll(model, encoded, batch_size=3)
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in encoded:   # one at a time, no padding, full logits
            logits = model(torch.tensor([ids])).logits[0, :-1]
            total += F.cross_entropy(logits, torch.tensor(labels[1:]), ignore_index=-100, reduction="sum").item()
            count += sum(x != -100 for x in labels[1:])
    assert got["tokens"] == count and got["heldout_loss"] == pytest.approx(total / count, abs=1e-4)


def test_dataset_builder_is_deterministic(tmp_path: Path) -> None:
    lines = [f"Fortune number {w} keeps the doctor away." for w in
             ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")]
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    (fortunes / "train.txt").write_text("\n%\n".join(lines[:10] + ["Too short.", "Why ask?"]) + "\n%\n")
    (fortunes / "val.txt").write_text("\n%\n".join(lines[10:]) + "\n%\n")
    a = build_copy_pairs(tmp_path / "a", fortunes, n_faker=30, n_fortunes=10, n_heldout=8, seed=5)
    build_copy_pairs(tmp_path / "b", fortunes, n_faker=30, n_fortunes=10, n_heldout=8, seed=5)
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # dataset.json is the same but for the command line, which names the output folder
    described = [json.loads((tmp_path / d / "dataset.json").read_text()) for d in "ab"]
    assert [{k: v for k, v in d.items() if k != "command"} for d in described] == \
        [{k: v for k, v in a.items() if k != "command"}] * 2
    build_copy_pairs(tmp_path / "c", fortunes, n_faker=30, n_fortunes=10, n_heldout=8, seed=6)
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (tmp_path / "c" / "train.jsonl").read_bytes()
    train, held = read_examples(tmp_path / "a" / "train.jsonl"), read_examples(tmp_path / "a" / "heldout.jsonl")
    assert (len(train), len(held), a["train"], a["heldout"]) == (32, 8, 32, 8)
    assert not {e.copy for e in train} & {e.copy for e in held}
    assert all(len(e.copy.split()) <= 10 and e.kind == "tagline" for e in train + held)
    assert not is_slogan("Why ask?") and is_slogan("A stitch in time saves nine.")


@pytest.mark.slow   # builds the whole app (diffusers, gradio imports): ~30 s on the shared box
def test_api_lists_and_serves_the_adapter(env: dict, trained: dict) -> None:
    from fastapi.testclient import TestClient

    from brushpen.api.app import ApiSettings, create_app
    from brushpen.generators.copy import CopyRequest, generate_copy

    body = {"prompt": "A tent for busy people", "model": "text/tiny:voice", "n": 1, "seed": 3, "max_tokens": 8,
            "kind": "tagline", "temperature": 0}
    with TestClient(create_app(ApiSettings(batch_worker=False))) as client:
        listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert listed["text/tiny:voice"]["adapter"] == "voice" and listed["text/tiny:voice"]["base"] == "text/tiny"
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "text/tiny:voice"
        want = generate_copy(CopyRequest(brief=body["prompt"], kind="tagline", n=1, seed=3, max_new_tokens=8,
                                         temperature=0, model="text/tiny:voice")).texts
        assert [c["text"] for c in r.json()["choices"]] == want
        r = client.post("/v1/completions", json={**body, "model": "text/tiny:nope"})
        assert r.status_code == 404 and "nope" in r.text


def test_tuning_searches_the_copy_lora(env: dict) -> None:
    """`brushpen tune text` on the tiny LM: trial 0 is the request, the pruner sees the held-out loss,
    and the best trial is published with the study in its card."""
    from brushpen.generators.tune import tune

    rows: list[dict] = []
    result = tune("text", request(env, "tuned", max_steps=20), budget_s=300, trials=3, seed=0, on_trial=rows.append)
    assert [r["trial"] for r in rows] == [0, 1, 2] and rows[0]["params"] == {"lr": 1e-2, "rank": 4, "dropout": 0.0}
    assert all(r["reached"] in (10, 20) for r in rows)   # held-out loss every eval_every steps
    done = [r["value"] for r in rows if r["state"] == "complete"]
    assert result.best_value == min(done) and result.ref == "tiny:tuned"
    assert "## Tuning" in (result.path / "card.md").read_text()
    assert not [p for p in result.path.parent.iterdir() if p.name.startswith("tuned.t")]
