"""A small brief -> copy dataset that ships offline, for brand-voice LoRA fine-tuning of the copywriter.

`build_copy_pairs` writes `train.jsonl`, `heldout.jsonl` and `dataset.json` (how it was made). Rows
are `{"brief", "kind", "tone", "copy"}`, the format `brushpen finetune text --data` reads. Two
sources, both from package registries, no network at build time:

- **PyPI `Faker`** (MIT), locale en_US, seeded. Each row takes one company name, one `bs()` phrase
  ("unleash B2B content": verb, adjective, noun) and one `catch_phrase()` ("Reactive mission-critical
  intranet": adjective, descriptor, noun). The brief names the company, what it does (the bs phrase)
  and the catch phrase's words as keywords; the copy is the catch phrase reshaped into a tagline by
  one of `TAGLINE_TEMPLATES`, picked by the seeded generator.
- **Debian `fortunes`** (BSD-style), the whitelisted, blocklist-filtered corpus that `brushpen data
  fortunes` builds (`brushpen.text.corpus`). Only short one-line entries that read like a slogan are
  kept (`is_slogan`). The brief is a Faker company and bs phrase plus the line's three longest
  content words as brand values; the copy is the line itself, kind `tagline`, tone `witty`.

The same seed and the same package versions give byte-identical files. The held-out split is drawn
by a seeded shuffle over all rows, so held-out catch phrases and fortunes never appear in training.
"""

from __future__ import annotations

import json
import random
import re
from importlib.metadata import version
from pathlib import Path

from brushpen.errors import BadInput
from brushpen.store import atomic_write_json, atomic_write_text
from brushpen.text.corpus import read_documents

FAKER_LOCALE = "en_US"
# Taglines of at most 8 words (the tagline kind's length hint), from a catch phrase's words
# (adj, desc, noun) and a bs phrase's words (verb, bs_adj, bs_noun).
TAGLINE_TEMPLATES = (
    "{Adj} {noun}. {Desc} by design.",
    "{Verb} your {bs_adj} {bs_noun}.",
    "The {desc} {noun} for {bs_adj} teams.",
    "{Adj}, {desc}, ready for you.",
    "{Verb} {bs_noun}. Stay {adj}.",
    "{Noun}, made {desc}.",
)
STOPWORDS = frozenset("""a about after again all also always an and any are as at be because been before
being but by can could did do does doing for from had has have having he her here him his how i if in
into is it its just like me more most my never no not now of on once only or our out over own same she
should so some such than that the their them then there these they this those through to too under
until up very was we were what when where which while who whom why will with would you your""".split())


def is_slogan(line: str) -> bool:
    """A fortune that can stand as a tagline: one line, 4-10 words, a plain statement."""
    words = line.split()
    return ("\n" not in line and 20 <= len(line) <= 60 and 4 <= len(words) <= 10 and line[:1].isupper()
            and line.endswith((".", "!")) and not re.search(r"[\"':;()?\[\]]|--|\.\.|\s{2}|[0-9]", line))


def keywords(line: str, k: int = 3) -> list[str]:
    """The `k` longest content words of a line (ties keep reading order), lower-case."""
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", line)]
    content = list(dict.fromkeys(w for w in words if w not in STOPWORDS and len(w) >= 4))
    return sorted(content, key=lambda w: -len(w))[:k]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def faker_row(fake, rng: random.Random) -> dict:
    company = fake.company()
    adj, desc, noun = _catch_words(fake)
    verb, bs_adj, bs_noun = fake.bs().split(" ", 2)
    slots = {"adj": adj.lower(), "desc": desc.lower(), "noun": noun.lower(), "verb": verb.lower(),
             "bs_adj": bs_adj, "bs_noun": bs_noun}
    slots.update({k.capitalize(): _cap(v) for k, v in list(slots.items())})
    copy = rng.choice(TAGLINE_TEMPLATES).format(**slots)
    brief = f"{company}, a company that helps you {verb} {bs_adj} {bs_noun}. Keywords: {adj.lower()}, " \
            f"{desc.lower()}, {noun.lower()}"
    return {"brief": brief, "kind": "tagline", "tone": "confident", "copy": copy, "source": "faker"}


def _catch_words(fake) -> tuple[str, str, str]:
    # catch_phrase() joins one word from each of three lists; some nouns are two words
    # ("open architecture"), so draw the three parts from the provider's own lists instead of splitting.
    lists = fake.provider("faker.providers.company").catch_phrase_words
    return tuple(fake.random_element(part) for part in lists)  # type: ignore[return-value]


def fortune_row(line: str, fake) -> dict:
    company = fake.company()
    verb, bs_adj, bs_noun = fake.bs().split(" ", 2)
    brief = f"{company}, a company that helps you {verb} {bs_adj} {bs_noun}. Brand values: " \
            f"{', '.join(keywords(line))}"
    return {"brief": brief, "kind": "tagline", "tone": "witty", "copy": line, "source": "fortunes"}


def build_copy_pairs(out: Path, fortunes_dir: Path, n_faker: int = 250, n_fortunes: int = 150,
                     n_heldout: int = 50, seed: int = 0) -> dict:
    """Write train.jsonl, heldout.jsonl and dataset.json under `out`; return dataset.json's content."""
    from faker import Faker

    fortunes_dir = Path(fortunes_dir)
    if not (fortunes_dir / "train.txt").is_file():
        raise BadInput(f"{fortunes_dir} holds no fortunes corpus: run `brushpen data fortunes` first")
    docs = read_documents(fortunes_dir / "train.txt") + read_documents(fortunes_dir / "val.txt")
    slogans = sorted(set(d for d in docs if is_slogan(d)))
    rng = random.Random(seed)
    if len(slogans) < n_fortunes:
        raise BadInput(f"only {len(slogans)} slogan-like fortunes, {n_fortunes} asked for")
    picked = rng.sample(slogans, n_fortunes)

    fake = Faker(FAKER_LOCALE)
    fake.seed_instance(seed)
    rows, seen = [], set()
    while len(rows) < n_faker:
        row = faker_row(fake, rng)
        if row["copy"].lower() not in seen:   # the same tagline twice would leak across the split
            seen.add(row["copy"].lower())
            rows.append(row)
    rows += [fortune_row(line, fake) for line in picked]
    rng.shuffle(rows)
    heldout, train = rows[:n_heldout], rows[n_heldout:]

    out = Path(out)
    for name, part in (("train.jsonl", train), ("heldout.jsonl", heldout)):
        atomic_write_text(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
    fortunes_source = fortunes_dir / "source.json"
    info = {
        "what": "brief -> copy pairs for brand-voice LoRA fine-tuning of the copywriter",
        "seed": seed, "train": len(train), "heldout": len(heldout),
        "sources": {
            "faker": {"package": "PyPI Faker", "version": version("Faker"), "licence": "MIT",
                      "locale": FAKER_LOCALE, "rows": n_faker,
                      "how": "brief = company() + bs() + the catch phrase's three words as keywords; copy = "
                             "the catch phrase reshaped by a seeded choice of tagline template",
                      "templates": list(TAGLINE_TEMPLATES)},
            "fortunes": {"package": "Debian fortunes, fortunes-min (brushpen data fortunes)",
                         "corpus": json.loads(fortunes_source.read_text(encoding="utf-8")).get("packages")
                         if fortunes_source.is_file() else None,
                         "licence": "BSD-style", "rows": n_fortunes, "slogan_like_lines": len(slogans),
                         "how": "one-line entries of 20-60 characters and 4-10 words ending in . or !, without "
                                "quotes, colons, questions, digits or attributions; brief = a Faker company and "
                                "bs() + the line's three longest content words; copy = the line"}},
        "split": f"seeded shuffle (random.Random({seed})) of all rows, first {n_heldout} held out",
        "kinds": sorted({r["kind"] for r in rows}),
        "command": f"brushpen data copy-pairs --out {out} --seed {seed}",
    }
    atomic_write_json(out / "dataset.json", info)
    return info
