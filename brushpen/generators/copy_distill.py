"""Teacher copy for distilling a bigger copywriter into SmolLM2-135M (`brushpen data copy-distill`).

A stronger model (the installable `qwen2.5-coder-0.5b`, served int8 through onnxruntime) writes copy
for synthetic briefs in deliberate mode; only variants that pass every check of `brushpen.text.checks`
are kept, and they become `{"brief", "kind", "tone", "audience", "copy"}` rows, the format
`brushpen finetune text --data` reads. A LoRA on SmolLM2 trained on them is the student
(`smollm2-135m:copy`, see docs/finetune.md, "The distilled copywriter").

The briefs are combinations of the lists below, written for this purpose: an offering (a product, a
service, an event or an offer) with one or two concrete facts, times an audience, a tone and a kind
of copy. None is taken from the held-out panel (tests/data/copy_panel.json): `test_copy_distill.py`
checks that no offering, and no fact of four words or more, appears in it (stock phrases such as
"20% off everything" do). One offering, a dog-walking service, is also among the tuning briefs of
tests/data/briefs.json, which is allowed. A brief's facts carry numbers, prices and names on
purpose: the checks refuse copy that invents one, so the kept copy shows the student how to use a
brief's facts and nothing else.

The work is resumable: every brief's result is appended to `progress.jsonl` as it finishes (a torn
last line is dropped on resume); `--shard K/N` splits it between processes, and `train.jsonl`,
`heldout.jsonl` and `dataset.json` are written atomically from it at the end. The held-out split is
whole offerings, so the student's held-out loss is measured on products it never saw.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from brushpen.errors import BadParameter
from brushpen.generators.copy import CopyRequest, generate_copy
from brushpen.store import atomic_write_json, atomic_write_text
from brushpen.text.prompts import KINDS

# (offering, facts): a brief is the offering with one or two of its facts.
OFFERINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Cordless stick vacuum", ("runs 45 minutes on one charge", "weighs 2.1 kg", "with a washable filter")),
    ("Insulated lunch box", ("keeps food warm for 6 hours", "dishwasher safe", "three stackable tins")),
    ("Trail running shoes", ("with a grippy lugged sole", "weigh 280 g a pair", "in sizes 36 to 47")),
    ("Smart plant sensor", ("tells your phone when to water", "battery lasts a year", "for $19")),
    ("Linen shirt", ("garment-washed for softness", "in six colours", "made in Portugal")),
    ("Bamboo cutting board set", ("three sizes", "with juice grooves", "for $34")),
    ("Portable espresso maker", ("no batteries needed", "fits in a jacket pocket", "makes a double shot")),
    ("Kids' bike helmet", ("with a rear LED light", "adjustable dial fit", "for ages 5 to 10")),
    ("Weighted blanket", ("7 kg of glass beads", "removable cotton cover", "in single and double sizes")),
    ("Ceramic pour-over coffee dripper", ("hand-glazed", "fits most mugs", "brews in 3 minutes")),
    ("Waterproof hiking jacket", ("packs into its own pocket", "with taped seams", "weighs 310 g")),
    ("Solar garden lights", ("set of 8", "switch on at dusk", "run 10 hours on a sunny day")),
    ("Dog harness", ("no-pull front clip", "reflective stitching", "in five sizes")),
    ("Sourdough starter kit", ("with a 10-year-old starter", "a glass jar and a recipe card", "for $22")),
    ("Bluetooth speaker", ("12 hours of playtime", "floats in water", "pairs two speakers for stereo")),
    ("Electric kettle", ("boils a litre in 3 minutes", "five temperature settings", "keeps warm for 30 minutes")),
    ("Yoga mat", ("natural rubber", "6 mm thick", "with alignment lines")),
    ("Reusable beeswax food wraps", ("pack of 5", "last about a year", "made from organic cotton")),
    ("Mechanical keyboard", ("hot-swappable switches", "USB-C and Bluetooth", "backlit keys")),
    ("Baby carrier", ("for newborns to 4 years", "breathable mesh", "three carrying positions")),
    ("Rain boots", ("natural rubber", "foldable", "in sizes for kids and adults")),
    ("Air purifier", ("cleans a 40 m² room in 12 minutes", "quiet night mode", "filter lasts 6 months")),
    ("Hand-thrown ceramic mugs", ("set of 4", "holds 350 ml", "microwave safe")),
    ("Cast aluminium pizza oven", ("reaches 450°C in 20 minutes", "runs on gas", "cooks a pizza in 90 seconds")),
    ("Kids' magnetic building tiles", ("60 pieces", "for ages 3 and up", "with a storage bag")),
    ("Noise machine for sleep", ("20 soothing sounds", "auto-off timer", "fits on a bedside table")),
    ("E-reader", ("glare-free screen", "battery lasts 6 weeks", "holds thousands of books")),
    ("Vegan protein bars", ("15 g of protein each", "box of 12", "no added sugar")),
    ("Olive oil from Crete", ("cold-pressed", "harvested in November", "in a 750 ml tin")),
    ("Wool socks", ("pack of 3", "cushioned sole", "made in Wales")),
    ("House cleaning service", ("same-week booking", "eco-friendly products", "from $80 a visit")),
    ("Bike repair shop", ("fixes flats while you wait", "open until 7pm", "on Harbour Street")),
    ("Online piano lessons", ("30-minute video lessons", "for complete beginners", "first week free")),
    ("Dog-walking service", ("group walks of up to 4 dogs", "GPS-tracked routes", "$15 a walk")),
    ("Tax return help for freelancers", ("done in one meeting", "fixed fee of $120", "open until April")),
    ("Language exchange app", ("matches you with native speakers", "video and text chat", "free to join")),
    ("Mobile phone repair", ("screens replaced in an hour", "90-day warranty", "at the Eastgate mall")),
    ("Wedding photographer", ("full-day coverage", "200 edited photos", "delivered in 3 weeks")),
    ("Meal prep delivery for athletes", ("high-protein meals", "delivered twice a week", "from $9 a meal")),
    ("Window cleaning company", ("inside and out", "insured staff", "booked online in 2 minutes")),
    ("Children's swimming lessons", ("small groups of 4", "for ages 4 to 9", "on Saturday mornings")),
    ("Budget travel app", ("finds cheap train tickets", "price alerts", "free on iOS and Android")),
    ("Personal trainer", ("home visits", "45-minute sessions", "first session free")),
    ("Coworking space", ("day passes for $25", "fast wifi", "5 minutes from the station")),
    ("Guitar strings subscription", ("a fresh set every month", "for acoustic and electric", "$9 a month")),
    ("Craft beer festival", ("40 local breweries", "on 18 and 19 July", "at the old tram depot")),
    ("Jazz night", ("every Friday at 8pm", "live trio", "at the Blue Lantern bar")),
    ("Charity fun run", ("5 km route through the park", "on 6 September", "all entry fees go to the hospice")),
    ("Photography workshop", ("for smartphone users", "two hours", "on 14 May at the town hall")),
    ("Book swap evening", ("bring a book, take a book", "on the first Monday of each month", "free entry")),
    ("Science museum late opening", ("adults only", "every Thursday until 10pm", "with a bar")),
    ("Open-air cinema", ("screenings in August", "bring a blanket", "tickets $8")),
    ("Repair café", ("volunteers fix toasters, lamps and clothes", "every second Saturday", "free")),
    ("Beach clean-up", ("on Sunday at 9am", "gloves and bags provided", "meet at the north car park")),
    ("Startup pitch night", ("8 founders, 5 minutes each", "on 3 October", "free for students")),
    ("End-of-season sale on ski gear", ("up to 50% off", "until 31 March", "in store and online")),
    ("Free delivery weekend", ("on every order", "this Saturday and Sunday", "no minimum spend")),
    ("New customer offer at a bakery", ("a free coffee with any pastry", "all of June", "on Station Road")),
    ("Student discount on software", ("40% off the annual plan", "with a valid student email", "until 30 September")),
    ("Bundle offer on camping gear", ("tent, two sleeping bags and a stove", "for $299", "this week only")),
    ("Refer-a-friend reward at a bank", ("$50 for you and your friend", "when they open an account", "no limit")),
    ("Price drop on a streaming plan", ("now $6 a month", "ad-free", "cancel any time")),
    ("Anniversary sale at a bookshop", ("20% off everything", "on Saturday", "25 years on Queen Street")),
    ("Flash sale on running watches", ("30% off", "for 48 hours", "GPS and heart-rate models")),
    ("Trade-in offer on old phones", ("up to $200 credit", "towards any new phone", "until Sunday")),
    ("Seed library at a community garden",
     ("free vegetable seeds", "open on Wednesdays", "bring back seeds in autumn")),
    ("Adult evening pottery course", ("8 weeks", "all materials included", "$210")),
    ("Night bus service", ("runs every 30 minutes", "from midnight to 5am", "starts on 1 November")),
    ("Heat pump installation", ("government grant of $5,000 available", "10-year warranty", "free home survey")),
    ("Electric scooter rental", ("unlock with the app", "$0.25 a minute", "helmet included")),
)

# Audiences broad enough to suit any offering: the first run drew narrow ones at random ("music
# lovers" for a sourdough kit), and the teacher dutifully wrote "Sourdough Starter Kit for Music Fans".
# Half the briefs name none (the prompt then says "a general audience").
AUDIENCES = ("local residents", "first-time customers", "busy people", "young professionals", "families",
             "people on a budget")
NO_AUDIENCE_SHARE = 0.5
TONES = ("friendly", "confident", "playful", "warm", "urgent", "premium", "calm", "witty", "energetic", None)


# The teacher drafts cooler than the studio's deliberate mode (0.7). On 30 synthetic briefs (seed 7)
# judged blind, 7 of its 41 kept copies were usable as written at 0.3, 4 of 49 at 0.7, and 6 of 46 at
# 0.3 with a system prompt forbidding invented facts: within noise of each other, so 0.3 is kept for
# its plainer wording (BENCHMARKS.md, "The distilled copywriter"). Picks still differ (`distinct`).
TEACHER_TEMPERATURE = 0.3


@dataclass(frozen=True)
class SyntheticBrief:
    id: int
    offering: str
    brief: str
    kind: str
    tone: str | None
    audience: str | None


def synthetic_briefs(count: int, seed: int = 0) -> list[SyntheticBrief]:
    """`count` seeded briefs: an offering with one or two of its facts, an audience, a tone and a kind."""
    if count < 1:
        raise BadParameter("count must be at least 1")
    rng = random.Random(seed)
    kinds = list(KINDS)
    out = []
    for i in range(count):
        offering, facts = OFFERINGS[rng.randrange(len(OFFERINGS))]
        chosen = rng.sample(facts, rng.choice((1, 2)))
        # "Dog harness with reflective stitching", but "Yoga mat, natural rubber, 6 mm thick".
        joiner = " " if chosen[0].startswith(("with ", "for ", "in ", "at ", "on ", "from ")) else ", "
        brief = offering + joiner + ", ".join(chosen)
        audience = None if rng.random() < NO_AUDIENCE_SHARE else rng.choice(AUDIENCES)
        out.append(SyntheticBrief(i, offering, brief, kinds[i % len(kinds)], rng.choice(TONES), audience))
    return out


def heldout_offerings(seed: int = 0, share: float = 0.1) -> set[str]:
    """The offerings whose briefs form the held-out split (whole offerings, never seen in training)."""
    names = [o for o, _ in OFFERINGS]
    random.Random(seed + 1).shuffle(names)
    return set(names[:max(1, round(share * len(names)))])


def _done_rows(progress: Path) -> list[dict]:
    """The finished briefs of an interrupted run; a torn last line (a kill mid-write) is dropped."""
    if not progress.exists():
        return []
    rows = []
    for line in progress.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def progress_file(out: Path, shard: tuple[int, int] = (0, 1)) -> Path:
    """`progress.jsonl`, or `progress-K-of-N.jsonl` for shard K of N (briefs whose id % N == K)."""
    k, n = shard
    return out / ("progress.jsonl" if n == 1 else f"progress-{k}-of-{n}.jsonl")


def all_done_rows(out: Path) -> list[dict]:
    """Every finished brief in `out`, whichever shard wrote it, by id."""
    rows: dict[int, dict] = {}
    for f in sorted(Path(out).glob("progress*.jsonl")):
        for r in _done_rows(f):
            rows.setdefault(r["id"], r)
    return [rows[i] for i in sorted(rows)]


def distill(out: Path, teacher: str, count: int, seed: int = 0, backend: str = "onnx-int8", n: int = 2,
            draft: int = 3, temperature: float = TEACHER_TEMPERATURE, shard: tuple[int, int] = (0, 1),
            log: Callable[[str], None] = print) -> dict:
    """Teacher copy for `count` synthetic briefs into `out` (resuming a run there); returns dataset.json.

    With `shard=(K, N)`, this process writes only the briefs whose id % N == K, so N processes (or
    machines sharing `out`) split the work; each writes the splits from every brief done so far, and
    the last to finish writes the whole set."""
    k, shards = shard
    if shards < 1 or not 0 <= k < shards:
        raise BadParameter(f"shard {k}/{shards}: want K/N with 0 <= K < N")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress = progress_file(out, shard)
    mine = _done_rows(progress)
    if mine:   # rewrite without a torn tail before appending
        atomic_write_text(progress, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in mine))
    finished = {r["id"] for r in all_done_rows(out)}
    todo = [b for b in synthetic_briefs(count, seed) if b.id % shards == k and b.id not in finished]
    t0 = time.perf_counter()
    with progress.open("a", encoding="utf-8") as f:
        for i, b in enumerate(todo, 1):
            result = generate_copy(CopyRequest(b.brief, b.kind, b.tone, b.audience, n=n, seed=seed * 100_000 + b.id,
                                               model=teacher, backend=backend, draft=draft,
                                               temperature=temperature))
            row = {**asdict(b), "copies": result.texts}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            if i % 25 == 0 or i == len(todo):
                log(f"shard {k}/{shards}: {i}/{len(todo)} briefs, {i / (time.perf_counter() - t0) * 60:.1f} briefs/min")
    done = [r for r in all_done_rows(out) if r["id"] < count]
    return write_splits(out, done, teacher, backend, count, seed, n, draft, temperature)


def teacher_source(teacher: str, backend: str, n: int, draft: int, temperature: float) -> dict:
    """The teacher as the adapter card's "Data" section lists a source: package, version, licence, how."""
    from brushpen.text.install import INSTALLABLE

    how = (f"copy written by {teacher} ({backend}) for synthetic briefs (brushpen/generators/copy_distill.py: "
           f"offerings x audiences x tones x kinds), deliberate mode with {draft} drafts per variant at temperature "
           f"{temperature:g}, {n} variants a brief, kept only where every check passed")
    if teacher in INSTALLABLE:
        m = INSTALLABLE[teacher]
        return {"package": "PyPI " + ", ".join(p.package for p in m.parts), "version": m.parts[0].version,
                "licence": f"{m.licence}, the upstream {m.upstream.split(' ')[0]}'s terms", "how": how}
    return {"package": teacher, "version": "", "licence": "see the teacher's card", "how": how}


def write_splits(out: Path, done: list[dict], teacher: str, backend: str, count: int, seed: int, n: int,
                 draft: int, temperature: float = TEACHER_TEMPERATURE) -> dict:
    held = heldout_offerings(seed)
    train, heldout = [], []
    for r in done:
        for copy in r["copies"]:
            line = {"brief": r["brief"], "kind": r["kind"], "tone": r["tone"], "audience": r["audience"],
                    "copy": copy}
            (heldout if r["offering"] in held else train).append({k: v for k, v in line.items() if v is not None})
    for name, rows in (("train.jsonl", train), ("heldout.jsonl", heldout)):
        atomic_write_text(out / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    meta = {"teacher": teacher, "backend": backend, "briefs": count, "briefs_done": len(done), "seed": seed,
            "variants_per_brief": n, "draft": draft, "temperature": temperature,
            "kept": len(train) + len(heldout), "train": len(train), "heldout": len(heldout),
            "briefs_with_no_passing_copy": sum(not r["copies"] for r in done),
            "heldout_offerings": sorted(held), "filter": "deliberate mode: every check of brushpen.text.checks",
            "sources": {"teacher": teacher_source(teacher, backend, n, draft, temperature)}}
    atomic_write_json(out / "dataset.json", meta)
    return meta
