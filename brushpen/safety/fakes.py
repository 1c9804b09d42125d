"""The detector's **fake** set, built from the same real photo patches (`brushpen detect build-fakes`).

Families (each a folder `OUT/<family>/<split>/*.png`), in build order:
- `stylegan`: samples of our StyleGAN2 (`brushpen.gan`) trained on the real TRAIN patches only.
- `diffusion`: DDIM samples of a small pixel DDPM (`fake_models.small_unet`, x0-prediction)
  trained on the real TRAIN patches at `diffusion_resolution`, resized to the patch size with
  Lanczos when that differs (in the card).
- `decoder`: real patches passed through a small autoencoder with a transposed-conv decoder
  (`ae-tconv`) or a nearest-upsample + conv decoder (`ae-upsample`); trained on TRAIN patches.
- `dcgan`: samples of a DCGAN whose generator up-samples only with transposed convolutions.
- `ddpm`: the diffusion family's model under DDPM's stochastic ancestral sampler.
- `vae`: real patches encoded by a convolutional VAE, a latent drawn from the posterior and
  decoded by its bilinear-upsample + conv decoder.
- `sr-shuffle`, `sr-interp`: real patches bicubic-down-sampled by 2 or 4 and restored by a
  pixel-shuffle SR network or an interpolate-then-convolve one (`brushpen.safety.fake_nets`).
- `splice`: a generated region (a StyleGAN or diffusion sample, or the autoencoder's version of
  the same patch) pasted into a real patch through a mask (`brushpen.safety.splice`).
- `inpaint`: a feathered mask over 5-40% of a real patch, filled by the diffusion model
  conditioned on the rest of the patch (RePaint-style DDIM), pasted back.
- `emoji`: a sample of our emoji64 StyleGAN, scaled and pasted into a real patch through its own
  foreground mask.
`fake_generators` trains or reuses each generator; `fake_families` builds the families added
for issue 16 that remake or paste into real patches (vae, sr-*, inpaint, emoji).
Splits: fakes made from a real patch (decoder, vae, sr-*, splice, inpaint, emoji) inherit its
split; samples from noise (stylegan, diffusion, dcgan, ddpm) get theirs from a seeded shuffle.
Per family, the train split gets `count` fakes and val/test the same share of their real size,
so real and fake stay roughly balanced per split.

**Re-encoding.** Every fake, and a copy of every real patch (`OUT/real/<split>/`), is passed
through `photos.apply_encoding` with an encoding drawn by `photos.draw_encoding` from a
`random.Random` seeded by the file's path, then stored as lossless PNG. So real and fake share
one JPEG/PNG mix and one file format; the detector trainer reads `OUT/real` for the reals and
does not re-encode again (its own augmentation aside).

**Manifest** (`OUT/manifest.jsonl`, one JSON object per line, every key always present):
`path` (relative to OUT), `family` (`real` or a family above), `label` (0 real, 1 fake),
`generator` (e.g. `ae-tconv`, `splice:stylegan`, `inpaint:ddim`), `split`, `encoding` (`jpeg` or
`png`), `quality` (JPEG quality or null), `source` (the real patch it was made from, relative to
the real set, or null), `mask` (splice, inpaint and emoji: the mask PNG relative to OUT, 255 =
generated, in `<family>/<split>/masks/`; else null), `mask_area` (mean of mask/255, or null).
`OUT/card.json` and `card.md` record per family the counts, the generator's training command,
its state (kimg or steps) and the time taken. Finished families are recorded in
`OUT/.work/<family>.json` and finished files are skipped, so a re-run resumes.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from tqdm import tqdm

from brushpen.errors import BadInput
from brushpen.gan.pipeline import to_uint8
from brushpen.safety import fake_generators as gens
from brushpen.safety.fake_common import FAMILIES, ROW_KEYS, FakesConfig, RealPatch, draw_hosts, encoding_for, \
    load_chw, load_rgb, png_bytes, read_real, row, split_counts, write_encoded
from brushpen.safety.fake_families import build_local, build_remade
from brushpen.safety.fake_models import reconstruct
from brushpen.safety.photos import SPLITS
from brushpen.safety.splice import draw_mask, paste
from brushpen.store import atomic_write_bytes, atomic_write_json, atomic_write_text

ENCODING_NOTE = ("every real and fake patch re-encoded once with brushpen.safety.photos.draw_encoding/"
                 "apply_encoding (50% JPEG q70-95 4:2:0, else PNG round trip), seeded by its path, "
                 "stored as PNG; reals in OUT/real")


# ---- the families ---------------------------------------------------------------------------

def build_real_copy(cfg: FakesConfig, real: list[RealPatch], _ctx: dict) -> list[dict]:
    rows = []
    for p in tqdm(real, desc="real copy", unit="img", disable=not cfg.progress):
        rel = f"real/{p.split}/{Path(p.file).name}"
        enc = encoding_for(rel, cfg.seed)
        if not (cfg.out / rel).is_file():
            write_encoded(cfg.out, rel, load_rgb(cfg.real / p.file), cfg.seed)
        rows.append(row(rel, "real", "camera", p.split, enc, source=p.file))
    return rows


def build_sampled(cfg: FakesConfig, family: str, real: list[RealPatch], sample: Callable[[int, int], list],
                  generator: str) -> list[dict]:
    """Families drawn from noise: `sample(n, batch_index)` gives n images; splits by seeded shuffle.
    A lossless copy of each sample goes to .work/raw for the splices."""
    counts = split_counts(cfg, real)
    plan = [s for s in SPLITS for _ in range(counts[s])]
    random.Random(f"{cfg.seed}:{family}:splits").shuffle(plan)
    rels = [f"{family}/{s}/{family}-{i:05d}.png" for i, s in enumerate(plan)]
    raw = cfg.out / ".work" / "raw"
    for b in tqdm(range(0, len(plan), cfg.batch), desc=family, unit="batch", disable=not cfg.progress):
        chunk = rels[b:b + cfg.batch]
        if all((cfg.out / r).is_file() and (raw / r).is_file() for r in chunk):
            continue
        for rel, image in zip(chunk, sample(len(chunk), b // cfg.batch)):
            atomic_write_bytes(raw / rel, png_bytes(image))
            write_encoded(cfg.out, rel, image, cfg.seed)
    return [row(r, family, generator, s, encoding_for(r, cfg.seed)) for r, s in zip(rels, plan)]


def build_decoder(cfg: FakesConfig, real: list[RealPatch], ctx: dict) -> list[dict]:
    rows = []
    for split in SPLITS:
        hosts = draw_hosts(cfg, "decoder", real, split)
        for kind in ("tconv", "upsample"):
            todo = [(i, p) for i, p in enumerate(hosts) if i % 2 == (kind == "upsample")]
            rels = [f"decoder/{split}/decoder-{i:05d}-{kind}.png" for i, _ in todo]
            for b in tqdm(range(0, len(todo), cfg.batch), desc=f"decoder {kind} {split}", unit="batch",
                          disable=not cfg.progress):
                chunk = list(zip(rels[b:b + cfg.batch], todo[b:b + cfg.batch]))
                if all((cfg.out / r).is_file() for r, _ in chunk):
                    continue
                x = torch.stack([torch.from_numpy(load_chw(cfg.real / p.file)) for _, (_, p) in chunk])
                for (rel, _), a in zip(chunk, to_uint8(reconstruct(ctx[f"ae-{kind}"], x))):
                    write_encoded(cfg.out, rel, Image.fromarray(a), cfg.seed)
            rows += [row(r, "decoder", f"ae-{kind}", split, encoding_for(r, cfg.seed), source=p.file)
                     for r, (_, p) in zip(rels, todo)]
    return sorted(rows, key=lambda r: r["path"])


def build_splice(cfg: FakesConfig, real: list[RealPatch], ctx: dict) -> list[dict]:
    raw = cfg.out / ".work" / "raw"
    donors = {s: {f: sorted((raw / f / s).glob("*.png")) for f in ("stylegan", "diffusion")} for s in SPLITS}
    kinds = [k for k in ("stylegan", "diffusion") if any(donors[s][k] for s in SPLITS)]
    kinds += ["decoder"] if "ae-tconv" in ctx else []
    if not kinds:
        raise BadInput("splices need generated regions: build stylegan, diffusion or decoder first")
    rows = []
    for split in SPLITS:
        hosts = draw_hosts(cfg, "splice", real, split)
        for i, host in enumerate(tqdm(hosts, desc=f"splice {split}", unit="img", disable=not cfg.progress)):
            rng = random.Random(f"{cfg.seed}:splice:{split}:{i}")
            kind = rng.choice([k for k in kinds if k == "decoder" or donors[split][k]])
            upsampler = rng.choice(("tconv", "upsample"))
            donor_file = rng.choice(donors[split][kind]) if kind != "decoder" else None
            mask, info = draw_mask(ctx["size"], rng)
            rel = f"splice/{split}/splice-{i:05d}.png"
            mask_rel = f"splice/{split}/masks/splice-{i:05d}.png"
            generator = f"splice:{kind}" + (f"-{upsampler}" if kind == "decoder" else "")
            if not ((cfg.out / rel).is_file() and (cfg.out / mask_rel).is_file()):
                host_im = load_rgb(cfg.real / host.file)
                if kind == "decoder":
                    x = torch.from_numpy(load_chw(cfg.real / host.file))[None]
                    donor = Image.fromarray(to_uint8(reconstruct(ctx[f"ae-{upsampler}"], x))[0])
                else:
                    donor = load_rgb(donor_file)
                atomic_write_bytes(cfg.out / mask_rel, png_bytes(mask))
                write_encoded(cfg.out, rel, paste(host_im, donor, mask), cfg.seed)
            rows.append(row(rel, "splice", generator, split, encoding_for(rel, cfg.seed), source=host.file,
                            mask=mask_rel, mask_area=info["mask_area"]))
    return rows


# ---- the build ------------------------------------------------------------------------------

def _builders(cfg: FakesConfig, real: list[RealPatch], ctx: dict) -> dict[str, Callable[[], list[dict]]]:
    """Each family's build: train or reuse its generator (recording `ctx["training"]`), make its fakes."""
    size = ctx["size"]

    def sampled(family: str, sampler: Callable) -> Callable[[], list[dict]]:
        return lambda: build_sampled(cfg, family, real, *sampler(cfg, size, ctx))

    def remade(family: str) -> Callable[[], list[dict]]:
        return lambda: build_remade(cfg, family, real, gens.remaker(cfg, family, ctx))

    def local(family: str, filler: Callable) -> Callable[[], list[dict]]:
        return lambda: build_local(cfg, family, real, filler(cfg, size, ctx))

    return {"stylegan": sampled("stylegan", gens.stylegan_sampler),
            "diffusion": sampled("diffusion", gens.diffusion_sampler),
            "decoder": lambda: (gens.load_decoders(cfg, ctx), build_decoder(cfg, real, ctx))[1],
            "dcgan": sampled("dcgan", gens.dcgan_sampler),
            "ddpm": sampled("ddpm", gens.ddpm_sampler),
            "vae": remade("vae"), "sr-shuffle": remade("sr-shuffle"), "sr-interp": remade("sr-interp"),
            "splice": lambda: (gens.load_decoders(cfg, ctx, optional=True), _no_training(ctx),
                               build_splice(cfg, real, ctx))[-1],
            "inpaint": local("inpaint", gens.inpaint_filler),
            "emoji": local("emoji", gens.emoji_filler)}


def build_fakes(cfg: FakesConfig) -> dict:
    """Build (or resume) every asked family and the real copy; write manifest.jsonl and the card."""
    cfg.validate()
    cfg.out, cfg.real = Path(cfg.out), Path(cfg.real)
    real = read_real(cfg.real)
    start = time.monotonic()
    ctx: dict = {"size": load_rgb(cfg.real / real[0].file).width}
    card_path = cfg.out / "card.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.is_file() else {"families": {}}
    settings = {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                for k, v in asdict(cfg).items() if k not in ("families", "progress", "threads", "out")}
    builders = _builders(cfg, real, ctx)
    steps = [("real", lambda: build_real_copy(cfg, real, ctx))] if cfg.real_copy else []
    steps += [(f, builders[f]) for f in FAMILIES if f in cfg.families]  # FAMILIES is the build order
    for family, build in steps:
        _build_family(cfg, family, build, _family_settings(family, settings), ctx, card)
    card["elapsed_s"] = round(time.monotonic() - start, 1)
    _write_outputs(cfg, card)
    return card


def _build_family(cfg: FakesConfig, family: str, build: Callable[[], list[dict]], key: dict, ctx: dict,
                  card: dict) -> None:
    """One family, unless it already finished under the same settings (`key`); its rows and its
    card entry (counts, training) are kept in OUT/.work/<family>.json, so a later run, or another
    build process working on other families of the same OUT, writes the whole card again."""
    record_path = cfg.out / ".work" / f"{family}.json"
    old = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
    if old.get("settings") == key and old.get("done"):
        if "card" in old:
            card["families"][family] = old["card"]
        return
    if old and old.get("settings") != key:  # other settings: this family's files are stale
        for d in (cfg.out / family, cfg.out / ".work" / "raw" / family):
            shutil.rmtree(d, ignore_errors=True)
    atomic_write_json(record_path, {"settings": key, "done": False, "rows": []})
    t0 = time.monotonic()
    ctx.pop("training", None)
    rows = build()
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    entry = {"counts": counts, "generators": sorted({r["generator"] for r in rows}),
             "build_seconds": round(time.monotonic() - t0, 1), "training": ctx.get("training", {})}
    atomic_write_json(record_path, {"settings": key, "done": True, "rows": rows, "card": entry})
    card["families"][family] = entry
    _write_outputs(cfg, card)


def _no_training(ctx: dict) -> None:
    ctx["training"] = {"state": "no generator of its own: regions from the stylegan, diffusion and "
                                "decoder families' generators (see their rows)"}


# What each family's pixels depend on; a change there rebuilds that family. Splices depend on
# every donor generator; their list is every setting there was before the issue-16 families, so
# that adding those did not rebuild the splices.
_DEPENDS = {"real": ("real", "seed"),
            "stylegan": ("real", "seed", "count", "stylegan_kimg", "stylegan_channels", "train_batch", "batch"),
            "diffusion": ("real", "seed", "count", "diffusion_steps", "diffusion_resolution", "ddim_steps",
                          "train_batch", "batch"),
            "decoder": ("real", "seed", "count", "decoder_steps", "train_batch", "batch"),
            "dcgan": ("real", "seed", "count", "dcgan_steps", "train_batch", "batch"),
            "ddpm": ("real", "seed", "count", "diffusion_steps", "diffusion_resolution", "ddpm_steps",
                     "train_batch", "batch"),
            "vae": ("real", "seed", "count", "vae_steps", "train_batch", "batch"),
            "sr-shuffle": ("real", "seed", "count", "sr_steps", "train_batch", "batch"),
            "sr-interp": ("real", "seed", "count", "sr_steps", "train_batch", "batch"),
            "splice": ("real", "seed", "count", "models", "stylegan_kimg", "stylegan_channels", "diffusion_steps",
                       "diffusion_resolution", "ddim_steps", "decoder_steps", "train_batch", "batch", "real_copy"),
            "inpaint": ("real", "seed", "count", "diffusion_steps", "diffusion_resolution", "ddim_steps",
                        "inpaint_area", "train_batch", "batch"),
            "emoji": ("real", "seed", "count", "emoji_model", "batch")}


def _family_settings(family: str, settings: dict) -> dict:
    return {k: settings[k] for k in _DEPENDS[family]}


def _write_outputs(cfg: FakesConfig, card: dict) -> None:
    """manifest.jsonl from every finished family record, then card.json and card.md."""
    rows = []
    for family in ("real", *FAMILIES):
        path = cfg.out / ".work" / f"{family}.json"
        if path.is_file():  # an unfinished family has no rows yet
            rows += json.loads(path.read_text(encoding="utf-8"))["rows"]
    atomic_write_text(cfg.out / "manifest.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    card.update(real=str(cfg.real), seed=cfg.seed, count=cfg.count, encoding=ENCODING_NOTE,
                manifest_keys=list(ROW_KEYS), rows=len(rows),
                families={f: card["families"][f] for f in ("real", *FAMILIES) if f in card["families"]})
    atomic_write_json(cfg.out / "card.json", card)
    atomic_write_text(cfg.out / "card.md", render_card(card))


def render_card(card: dict) -> str:
    lines = ["# Detector fakes", "", f"Real set: `{card['real']}`; seed {card['seed']}; "
             f"{card['count']} per family in train. Re-encoding: {card['encoding']}.", "",
             "| family | train | val | test | generators | generator state | train s | build s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, f in card["families"].items():
        t, c = f.get("training", {}), f["counts"]
        lines.append(f"| {name} | {c.get('train', 0)} | {c.get('val', 0)} | {c.get('test', 0)} | "
                     f"{', '.join(f['generators'])} | {t.get('state', '-')}"
                     f"{'; ' + t['sampler'] if 'sampler' in t else ''} | {t.get('seconds', '-')} | "
                     f"{f['build_seconds']} |")
    lines += ["", "Training commands:", ""]
    for name, f in card["families"].items():
        for cmd in f.get("training", {}).get("commands", []):
            lines.append(f"- {name}: `{cmd}`")
    return "\n".join(lines) + "\n"
