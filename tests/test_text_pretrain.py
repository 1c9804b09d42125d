"""Pretraining from scratch: tokenizer, corpus split, n-gram baseline, a tiny LM run, exact resume."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from brushpen.cli.main import main
from brushpen.errors import BadInput, BadParameter
from brushpen.generators.copy import CopyRequest, generate_copy
from brushpen.text.corpus import (fortune_entries, holdout, load_corpus, read_documents,
                                  split_documents, write_documents)
from brushpen.text.ngram import CharNGram, CharUnigram
from brushpen.text.pretrain import PretrainConfig, Pretrainer, encode_stream, evaluate
from brushpen.text.tokenizer import train_tokenizer

SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "a small bird", "the teacher"]
VERBS = ["sees", "likes", "finds", "follows", "paints", "greets"]
OBJECTS = ["the red ball", "a green tree", "the river", "a quiet house", "the moon", "a blue car"]
TINY = ["--layers", "2", "--heads", "2", "--dim", "32", "--block-size", "32", "--batch", "16",
        "--lr", "3e-3", "--warmup", "10", "--vocab-size", "300", "--threads", "1"]


def synthetic_docs(n: int = 400, seed: int = 0) -> list[str]:
    """Short documents of one to three sentences from a tiny grammar: learnable, not memorisable."""
    rng = random.Random(seed)
    return [" ".join(f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
                     for _ in range(rng.randint(1, 3))) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "grammar.txt"
    write_documents(path, synthetic_docs())
    return path


def test_tokenizer_round_trips_and_reloads(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = train_tokenizer(synthetic_docs(200), vocab_size=400)
    assert 300 < len(tok) <= 400
    for text in ["The cat sees the moon.", "tabs\tand  double  spaces\n\nnew lines",
                 "unseen: ünïcödé, emoji 🎨, 中文", ""]:
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == text
    # Merges were learnt: a frequent phrase is far shorter than its bytes.
    assert len(tok("the teacher greets").input_ids) <= len("the teacher greets") / 3
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "A small bird paints a quiet house."
    assert again(text).input_ids == tok(text).input_ids
    assert (again.bos_token, again.eos_token, again.pad_token) == ("<|bos|>", "<|eos|>", "<|pad|>")


def test_tokenizer_rejects_tiny_vocab() -> None:
    with pytest.raises(BadParameter):
        train_tokenizer(["abc"], vocab_size=100)


def test_documents_split_and_holdout(tmp_path: Path) -> None:
    assert split_documents("one\nline\n%\ntwo\n%\n") == ["one\nline", "two"]
    assert split_documents("para one\nstill\n\npara two\n") == ["para one\nstill", "para two"]
    assert split_documents("a\nb\nc\n") == ["a", "b", "c"]
    docs = [f"doc {i}" for i in range(100)]
    train, val = holdout(docs, 0.1, seed=3)
    assert len(val) == 10 and not set(train) & set(val) and len(train) + len(val) == 100
    assert holdout(docs, 0.1, seed=3) == (train, val)
    assert holdout(docs, 0.1, seed=4)[1] != val
    # A folder with train.txt and val.txt carries its own split, round-tripping every document.
    write_documents(tmp_path / "train.txt", train)
    write_documents(tmp_path / "val.txt", val)
    corpus = load_corpus(tmp_path)
    assert (corpus.train, corpus.val) == (train, val)
    with pytest.raises(BadInput):
        read_documents(tmp_path / "missing")


def test_fortune_whitelist_and_cleaning(tmp_path: Path) -> None:
    folder = tmp_path / "usr/share/games/fortunes"
    folder.mkdir(parents=True)
    (folder / "wisdom").write_text("B\x08Bold words.\n\t\t-- Someone\n%\nA rude shit joke.\n%\n"
                                   "Bold words.\n\t\t-- Someone\n%\nKind words.\n%\n", encoding="utf-8")
    (folder / "men-women").write_text("Not whitelisted.\n%\n", encoding="utf-8")
    entries, stats = fortune_entries(tmp_path)
    assert entries == ["Bold words.\n\t\t-- Someone", "Kind words."]  # overstrike gone, dedup, blocklist
    assert stats["dropped_by_blocklist"] == 1 and "men-women" not in stats["entries_per_file"]


def test_ngram_is_normalised_and_beats_unigram() -> None:
    train, val = holdout(synthetic_docs(), 0.1, seed=0)
    ngram = CharNGram(5).fit(train)
    alphabet = sorted({g[-1] for g in ngram.counts[1]})
    for context in ["\x02" * 4, "the c", "zzzzz"]:
        assert math.isclose(sum(ngram.prob(context, c) for c in alphabet) + ngram.prob(context, "~"), 1.0)
    uni = CharUnigram().fit(train).bits_per_char(val)
    assert 3.0 < uni < 5.0
    assert ngram.bits_per_char(val) < 0.5 * uni


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_tiny_pretraining_beats_unigram_and_loads(corpus_file: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "weights" / "text" / "tiny"
    assert main(["text", "pretrain", "--corpus", str(corpus_file), "--out", str(out),
                 "--steps", "150", "--eval-every", "50", *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [50, 100, 150]

    corpus = load_corpus(corpus_file)
    # Same units, two ways: bits per character against the character unigram, and nats per
    # token against the unigram entropy of the tokens.
    unigram_bpc = CharUnigram().fit(corpus.train).bits_per_char(corpus.val)
    assert metrics["val_bpc"] < 0.5 * unigram_bpc
    assert metrics["baseline"]["unigram_val_bpc"] == pytest.approx(unigram_bpc)

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    counts = Counter(encode_stream(tok, corpus.train)[1:].tolist())
    total = sum(counts.values())
    token_entropy = -sum(c / total * math.log(c / total) for c in counts.values())
    assert metrics["val_loss"] < 0.5 * token_entropy
    # The folder holds the trained model itself: it reproduces the recorded validation loss.
    again = evaluate(model, tok, corpus.val, block_size=32)
    assert again["val_loss"] == pytest.approx(metrics["val_loss"], abs=1e-4)
    for name in ("card.md", "tokenizer.json", "config.json"):
        assert (out / name).is_file()
    card = (out / "card.md").read_text()
    assert "val bits/char" in card and "ngram5 (character)" in card and "Apache-2.0" in card
    assert f"--corpus {corpus_file}" in card and "not an instruction-tuned" in card
    prompt = tok("The cat", return_tensors="pt")
    text = tok.decode(model.generate(**prompt, max_new_tokens=12, do_sample=False)[0],
                      skip_special_tokens=True)
    assert text.startswith("The cat ") and any(v in text for v in VERBS)
    # The copy service runs it too: its prompt (about 40 tokens) and 40 new tokens do not fit the
    # 32-token window, so the prompt is cut from the left and the budget shrinks to what fits.
    result = generate_copy(CopyRequest("The cat likes a green tree", kind="description", n=2,
                                       max_new_tokens=40, seed=1, model=str(out), deliberate=False))
    assert len(result.variants) == 2 and all(result.texts)


def test_resume_continues_exactly(corpus_file: Path, tmp_path: Path) -> None:
    def config(out: Path, **kw) -> PretrainConfig:
        return PretrainConfig(corpus=corpus_file, out=out, layers=2, heads=2, dim=32, block_size=32,
                              batch=8, steps=40, eval_every=20, warmup=5, lr=3e-3, vocab_size=300,
                              ngram_order=0, threads=1, **kw)

    whole = tmp_path / "whole"
    Pretrainer(config(whole), progress=False).run()
    split = tmp_path / "split"
    Pretrainer(config(split, stop_after_steps=20), progress=False).run()
    assert json.loads((split / "metrics.json").read_text())["step"] == 20
    Pretrainer(config(split, resume=True), progress=False).run()

    a, b = _weights(whole), _weights(split)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha = json.loads((whole / "metrics.json").read_text())["history"]
    hb = json.loads((split / "metrics.json").read_text())["history"]
    assert [h["val_loss"] for h in ha] == [h["val_loss"] for h in hb]
    with pytest.raises(BadParameter, match="--dim 32"):
        Pretrainer(PretrainConfig(corpus=corpus_file, out=split, dim=64, heads=2, layers=2,
                                  block_size=32, vocab_size=300, resume=True), progress=False)


def test_bad_parameters_are_clear_errors(corpus_file: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(BadParameter):
        PretrainConfig(corpus=corpus_file, out=tmp_path, dim=30, heads=4).validate()
    assert main(["text", "pretrain", "--corpus", str(tmp_path / "nope.txt"), "--out",
                 str(tmp_path / "o"), "--threads", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("one\n%\ntwo\n%\n", encoding="utf-8")
    assert main(["text", "pretrain", "--corpus", str(tiny), "--out", str(tmp_path / "o"), *TINY]) == 2
    assert "block_size" in capsys.readouterr().err
