"""Builders of the fake families made from real host patches that issue 16 added (`fakes` runs them).

- `build_remade` (vae, sr-shuffle, sr-interp): each host patch remade whole by a generator (a
  `fake_generators.Remaker`), e.g. decoded from a posterior sample or restored from a down-sample.
- `build_local` (inpaint, emoji): a generated donor pasted into each host through a mask (a
  `fake_generators.Filler`); the mask goes to `<family>/<split>/masks/` as the splice family's
  does, so the detector's localisation head trains on it, and every pixel outside it is real.
Each fake inherits its host's split. Work goes in batches of `cfg.batch` hosts whose randomness
(a torch generator per batch, a `random.Random` per host) is seeded by family, split and index,
so a batch whose files all exist is skipped and a re-run resumes with the same pixels.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from brushpen.gan.pipeline import to_uint8
from brushpen.safety.fake_common import FakesConfig, RealPatch, draw_hosts, encoding_for, load_chw, load_rgb, \
    png_bytes, row, seed_of, write_encoded
from brushpen.safety.fake_generators import Filler, Remaker
from brushpen.safety.photos import SPLITS
from brushpen.safety.splice import paste
from brushpen.store import atomic_write_bytes


def _batches(cfg: FakesConfig, family: str, split: str, n: int) -> tqdm:
    return tqdm(range(0, n, cfg.batch), desc=f"{family} {split}", unit="batch", disable=not cfg.progress)


def _generator(cfg: FakesConfig, family: str, split: str, first: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed_of(f"{cfg.seed}:{family}:{split}:{first}"))


def build_remade(cfg: FakesConfig, family: str, real: list[RealPatch], remaker: Remaker) -> list[dict]:
    """Whole-patch fakes remade from real host patches by `remaker`."""
    rows = []
    for split in SPLITS:
        hosts = draw_hosts(cfg, family, real, split)
        rels = [f"{family}/{split}/{family}-{i:05d}.png" for i in range(len(hosts))]
        for b in _batches(cfg, family, split, len(hosts)):
            idx = list(range(b, min(b + cfg.batch, len(hosts))))
            if all((cfg.out / rels[i]).is_file() for i in idx):
                continue
            x = torch.stack([torch.from_numpy(load_chw(cfg.real / hosts[i].file)) for i in idx])
            fakes = remaker.apply(x, idx, _generator(cfg, family, split, b))
            assert fakes.shape == x.shape, (fakes.shape, x.shape)
            for i, a in zip(idx, to_uint8(fakes)):
                write_encoded(cfg.out, rels[i], Image.fromarray(a), cfg.seed)
        rows += [row(rels[i], family, remaker.name(i), split, encoding_for(rels[i], cfg.seed), source=h.file)
                 for i, h in enumerate(hosts)]
    return rows


def _local_paths(family: str, split: str, i: int) -> tuple[str, str]:
    return f"{family}/{split}/{family}-{i:05d}.png", f"{family}/{split}/masks/{family}-{i:05d}.png"


def build_local(cfg: FakesConfig, family: str, real: list[RealPatch], filler: Filler) -> list[dict]:
    """Local fakes: `filler`'s donor pasted into each real host patch through its mask."""
    rows = []
    for split in SPLITS:
        hosts = draw_hosts(cfg, family, real, split)
        for b in _batches(cfg, family, split, len(hosts)):
            idx = list(range(b, min(b + cfg.batch, len(hosts))))
            if not all((cfg.out / p).is_file() for i in idx for p in _local_paths(family, split, i)):
                _make_local(cfg, family, split, [(i, hosts[i]) for i in idx], filler)
        rows += [_local_row(cfg, family, filler.name, split, i, h) for i, h in enumerate(hosts)]
    return rows


def _make_local(cfg: FakesConfig, family: str, split: str, chunk: list[tuple[int, RealPatch]],
                filler: Filler) -> None:
    images = [load_rgb(cfg.real / h.file) for _, h in chunk]
    rngs = [random.Random(f"{cfg.seed}:{family}:{split}:{i}") for i, _ in chunk]
    made = filler.fill(images, rngs, _generator(cfg, family, split, chunk[0][0]))
    for (i, _), host, (donor, mask) in zip(chunk, images, made):
        rel, mask_rel = _local_paths(family, split, i)
        atomic_write_bytes(cfg.out / mask_rel, png_bytes(mask))   # the mask first: the image marks it done
        write_encoded(cfg.out, rel, paste(host, donor, mask), cfg.seed)


def _local_row(cfg: FakesConfig, family: str, generator: str, split: str, i: int, host: RealPatch) -> dict:
    rel, mask_rel = _local_paths(family, split, i)
    with Image.open(cfg.out / mask_rel) as m:
        area = float((np.asarray(m, np.float32) / 255).mean())
    return row(rel, family, generator, split, encoding_for(rel, cfg.seed), source=host.file, mask=mask_rel,
               mask_area=round(area, 4))
