"""Deliberate copy mode: draft, check, pick.

The picking step runs on crafted drafts (the shipped `pick`, fed strings a 135M model really
writes), so each rule is shown on its own; then the whole path runs on the shipped base model
with short generations: every returned variant passes its checks, the run is repeatable, the
stream equals the plain call, and the CLI's --json carries the checks and the rejected drafts.
"""

from __future__ import annotations

import json

import pytest

from brushpen.api.schemas import CompletionRequest
from brushpen.errors import BadParameter
from brushpen.generators.copy import CopyRequest, generate_copy, pick, stream_copy
from brushpen.text.base import convert_base, load_text_model
from brushpen.text.filter import load_blocklist
from brushpen.text.sampling import RawText

BRIEF = "Pet insurance that pays vet bills within 48 hours"


def drafts(*texts: str) -> list[tuple[RawText, int]]:
    return [(RawText(t, True), 100 + j) for j, t in enumerate(texts)]


def run_pick(req: CopyRequest, *texts: str):
    return pick(req, drafts(*texts), load_blocklist(), {"seed": 100, "deliberate": True})


def test_a_passing_draft_beats_failing_ones_whatever_the_order() -> None:
    req = CopyRequest(brief=BRIEF, kind="email-subject", n=1)
    result = run_pick(req, "Dear [Your Name],", "Hey everyone, I'm Emma!",
                      "Vet bills paid within 48 hours, pet first")
    assert result.texts == ["Vet bills paid within 48 hours, pet first"]
    assert result.variants[0].seed == 102 and not result.notes
    assert all(c["passed"] for c in result.variants[0].checks)
    # The misses keep their verdicts, the failing check named.
    failed = {v.text: [c["name"] for c in v.checks if not c["passed"]] for v in result.rejected}
    assert set(failed) <= {"Dear [Your Name],", "Hey everyone, I'm Emma!"} and failed
    assert all("placeholders" in f or "opener" in f for f in failed.values())


def test_invented_facts_and_near_duplicates_are_not_picked() -> None:
    req = CopyRequest(brief=BRIEF, kind="headline", n=2)
    result = run_pick(req, "Vet bills paid in 24 hours: pet insurance that keeps up",
                      "Pet insurance that pays vet bills fast",
                      "Pet insurance that pays vet bills fast!",
                      "Your pet's vet bills, paid within 48 hours")
    assert len(result.texts) == 2
    assert "Vet bills paid in 24 hours: pet insurance that keeps up" not in result.texts   # 24 is not in the brief
    twins = {"Pet insurance that pays vet bills fast", "Pet insurance that pays vet bills fast!"}
    assert not twins <= set(result.texts)


def test_when_nothing_passes_the_result_says_so_instead_of_returning_junk() -> None:
    req = CopyRequest(brief=BRIEF, kind="email-subject", n=3)
    result = run_pick(req, "Dear [Customer Name],", "Dear [Customer Name],", "", "Here's a subject line for you:")
    assert result.variants == []
    assert len(result.notes) == 1
    note = result.notes[0]
    assert note.startswith("0 of 3 variants passed the checks among 4 drafts")
    assert "placeholders" in note and "1 came out empty" in note and "1 repeated another draft" in note
    assert [v.text for v in result.rejected] and all(v.checks for v in result.rejected)
    assert "rejected" in result.to_json()


def test_blocked_drafts_are_never_shown_even_as_rejected() -> None:
    req = CopyRequest(brief="Loud headphones for the gym", kind="headline", n=1)
    result = run_pick(req, "Fucking loud gym headphones", "Gym headphones that go loud")
    assert result.texts == ["Gym headphones that go loud"]
    assert all("uck" not in v.text for v in result.rejected)


def test_the_knobs_are_checked() -> None:
    with pytest.raises(BadParameter, match="draft must lie in 1..16"):
        CopyRequest(brief=BRIEF, draft=0).validate()
    with pytest.raises(BadParameter, match="n × draft is 80 candidates; the limit is 64"):
        CopyRequest(brief=BRIEF, n=10, draft=8).validate()
    CopyRequest(brief=BRIEF, n=10, draft=8, deliberate=False).validate()   # plain mode drafts nothing
    assert CopyRequest(brief=BRIEF, n=3, draft=4).drafts == 12
    assert CopyRequest(brief=BRIEF, n=1, temperature=0).drafts == 1       # greedy: one answer to check


def test_the_apis_best_of_is_deliberate_mode() -> None:
    body = CompletionRequest(prompt=BRIEF, n=2, best_of=7)
    assert body.draft == 4   # 7 drafts asked, rounded up to whole drafts per variant
    with pytest.raises(ValueError, match="best_of \\(1\\) must be at least n"):
        CompletionRequest(prompt=BRIEF, n=2, best_of=1)
    with pytest.raises(ValueError, match="not both"):
        CompletionRequest(prompt=BRIEF, n=1, best_of=4, draft=2)
    with pytest.raises(ValueError, match="not both"):
        CompletionRequest(prompt=BRIEF, n=1, best_of=4, deliberate=False)


# ---- on the shipped base model -------------------------------------------------------------------

@pytest.fixture(scope="module")
def text_model():
    convert_base()
    return load_text_model()


def small(**kw) -> CopyRequest:
    return CopyRequest(**{"brief": BRIEF, "kind": "headline", "n": 2, "draft": 3, "max_new_tokens": 24,
                          "seed": 7, **kw})


def test_every_picked_variant_passes_and_the_run_repeats(text_model) -> None:
    a, b = generate_copy(small()), generate_copy(small())
    assert a.to_json() == b.to_json()
    assert a.settings["deliberate"] is True and a.settings["draft"] == 3
    assert len(a.variants) + len(a.rejected) >= 1
    for v in a.variants:
        assert 7 <= v.seed < 7 + 6    # one of the n × draft drafts
        assert all(c["passed"] for c in v.checks if c["hard"])
    if len(a.variants) < 2:
        assert a.notes and "passed the checks among 6 drafts" in a.notes[0]
    # The plain variants are drafts 0..n-1 of the same seed: deliberate mode sees them too.
    plain = generate_copy(small(deliberate=False))
    assert [v.seed for v in plain.variants][:1] == [7] and all(v.checks is None for v in plain.variants)


def test_streaming_a_deliberate_run_gives_the_same_variants(text_model) -> None:
    req = small(kind="tagline", seed=3)
    texts: dict[int, str] = {}
    final = None
    for ev in stream_copy(req):
        assert ev.kind in ("delta", "drop", "done")
        if ev.kind == "delta":
            assert ev.final and ev.variant not in texts   # a picked variant arrives whole, once
            texts[ev.variant] = ev.text
        elif ev.kind == "done":
            final = ev.result
    assert final is not None and [texts[i] for i in sorted(texts)] == final.texts == generate_copy(req).texts


def test_cli_json_shows_checks_and_rejected(text_model, capsys) -> None:
    from brushpen.cli.main import main

    code = main(["copy", BRIEF, "--kind", "email-subject", "--n", "2", "--draft", "2", "--seed", "5",
                 "--max-new-tokens", "20", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["draft"] == 2 and "rejected" in out
    for v in out["variants"] + out["rejected"]:
        assert [c["name"] for c in v["checks"]] == ["on_brief", "length", "placeholders", "opener", "meta",
                                                    "invented_facts", "repetition", "distinct"]


def test_korean_prompts_and_checks_end_to_end(text_model) -> None:
    """`lang="ko"`: a Korean prompt ending in the kind's Korean label, and checks that count Korean
    length in characters. (The 135M base writes little usable Korean, so the picks may be few.)"""
    from brushpen.text.prompts import build_prompt

    brief = "48시간 안에 진료비를 지급하는 반려동물 보험"
    prompt = build_prompt(text_model.tokenizer, brief, "tagline", lang="ko")
    assert "태그라인을 한 줄 쓰세요" in prompt and "공백 빼고 24자 이내" in prompt and prompt.endswith("태그라인:")
    result = generate_copy(CopyRequest(brief=brief, kind="tagline", lang="ko", n=1, draft=3, max_new_tokens=24,
                                       seed=2))
    assert result.settings["lang"] == "ko"
    assert result.variants or result.notes
    for v in result.variants + result.rejected:
        length = next(c for c in v.checks if c["name"] == "length")
        assert "characters" in length["detail"], length
    with pytest.raises(BadParameter, match="unknown language 'fr'"):
        CopyRequest(brief=brief, lang="fr").validate()
