"""`brushpen detect ...`: the deepfake checker's commands.

Each sub-command has its own `_add_<name>(sub)` builder and `run_<name>(args)` function, so more
(train, eval, scan) slot into `register` with one line each:
- `build-fakes`: the detector's fake set (StyleGAN, DDIM and DDPM diffusion, decoder artefacts,
  DCGAN, VAE, pixel-shuffle and interpolating super-resolution, splices, inpainting, pasted
  emoji) from the real photo patches, with a re-encoded copy of the reals (brushpen.safety.fakes).
- `train-fake`: train one of the small fake generators (diffusion, decoder-tconv,
  decoder-upsample, dcgan, vae, sr-shuffle, sr-interp) on its own, e.g. in the background;
  build-fakes resumes or reuses it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from brushpen.cli import detect_model_cmd
from brushpen.config import apply_threads, get_settings


def register(sub: argparse._SubParsersAction) -> None:
    detect = sub.add_parser("detect", help="the deepfake checker: training data, models, scans")
    commands = detect.add_subparsers(dest="detect_cmd", required=True)
    _add_build_fakes(commands)
    _add_train_fake(commands)
    detect_model_cmd.add_commands(commands)   # scan, train, eval: the detector itself


# ---- build-fakes --------------------------------------------------------------------------------

def _add_build_fakes(commands: argparse._SubParsersAction) -> None:
    from brushpen.safety.fakes import FAMILIES, FakesConfig

    d = FakesConfig(real=Path("."), out=Path("."))
    b = commands.add_parser("build-fakes", help="generate the fake patches (every split) and a re-encoded real copy")
    b.add_argument("--real", type=Path, default=None, help="real patch set (default: $BRUSHPEN_HOME/data/photos)")
    b.add_argument("--out", type=Path, default=None, help="default: $BRUSHPEN_HOME/data/fakes")
    b.add_argument("--families", default=",".join(FAMILIES), help=f"comma list of {','.join(FAMILIES)}")
    b.add_argument("--count", type=int, default=d.count, help="fakes per family in the train split; "
                   "val/test get the same share of the real val/test size")
    b.add_argument("--seed", type=int, default=d.seed)
    b.add_argument("--models", type=Path, default=None,
                   help="where the fake generators train (default: $BRUSHPEN_HOME/fakes-models)")
    b.add_argument("--stylegan-kimg", type=float, default=d.stylegan_kimg)
    b.add_argument("--diffusion-steps", type=int, default=d.diffusion_steps, help="training steps (batch 32)")
    b.add_argument("--diffusion-resolution", type=int, default=d.diffusion_resolution,
                   help="the side the diffusion model trains and samples at (resized to the patch when smaller)")
    b.add_argument("--ddim-steps", type=int, default=d.ddim_steps, help="DDIM sampling steps")
    b.add_argument("--decoder-steps", type=int, default=d.decoder_steps, help="training steps per autoencoder")
    b.add_argument("--dcgan-steps", type=int, default=d.dcgan_steps, help="DCGAN training steps (D and G each)")
    b.add_argument("--vae-steps", type=int, default=d.vae_steps, help="VAE training steps")
    b.add_argument("--sr-steps", type=int, default=d.sr_steps, help="training steps per SR network")
    b.add_argument("--ddpm-steps", type=int, default=d.ddpm_steps, help="DDPM ancestral sampling steps")
    b.add_argument("--emoji-model", default=d.emoji_model, help="the store GAN the emoji family pastes from")
    b.add_argument("--no-real-copy", dest="real_copy", action="store_false",
                   help="skip OUT/real (the re-encoded copy of the real patches)")
    b.add_argument("--threads", type=int, default=1)
    b.set_defaults(func=run_build_fakes)


def run_build_fakes(args: argparse.Namespace) -> int:
    from brushpen.safety.fakes import FakesConfig, build_fakes

    apply_threads(args.threads)
    home = get_settings().home
    cfg = FakesConfig(real=args.real or home / "data" / "photos", out=args.out or home / "data" / "fakes",
                      families=tuple(f.strip() for f in args.families.split(",") if f.strip()),
                      count=args.count, seed=args.seed, models=args.models or home / "fakes-models",
                      stylegan_kimg=args.stylegan_kimg, diffusion_steps=args.diffusion_steps,
                      diffusion_resolution=args.diffusion_resolution,
                      ddim_steps=args.ddim_steps, decoder_steps=args.decoder_steps, dcgan_steps=args.dcgan_steps,
                      vae_steps=args.vae_steps, sr_steps=args.sr_steps, ddpm_steps=args.ddpm_steps,
                      emoji_model=args.emoji_model,
                      real_copy=args.real_copy, threads=args.threads)
    card = build_fakes(cfg)
    print(json.dumps({"out": str(cfg.out), "families": {k: v["counts"] for k, v in card["families"].items()},
                      "elapsed_s": card["elapsed_s"]}))
    return 0


# ---- train-fake ---------------------------------------------------------------------------------

def _add_train_fake(commands: argparse._SubParsersAction) -> None:
    from brushpen.safety.fake_models import KINDS

    t = commands.add_parser("train-fake", help=f"train one small fake generator ({', '.join(KINDS)}; resumable)")
    t.add_argument("--kind", choices=KINDS, required=True, help=f"one of {', '.join(KINDS)}")
    t.add_argument("--data", type=Path, required=True, help="folder of real TRAIN patches")
    t.add_argument("--out", type=Path, required=True, help="model folder, e.g. $BRUSHPEN_HOME/fakes-models/diffusion")
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--resolution", type=int, default=None, help="default: 32 for diffusion, 64 for the others "
                   "(the DCGAN generates at this size)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--snap", dest="snap_steps", type=int, default=50, help="steps between checkpoints")
    t.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    t.add_argument("--minutes", type=float, default=None, help="wall-clock budget: stop at the first snapshot past it")
    t.add_argument("--threads", type=int, default=1)
    t.set_defaults(func=run_train_fake)


def run_train_fake(args: argparse.Namespace) -> int:
    from brushpen.safety.fake_models import FakeModelConfig, train_fake_model

    apply_threads(args.threads)
    fields = {k: v for k, v in vars(args).items() if k in FakeModelConfig.__dataclass_fields__}
    command = "brushpen " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    record = train_fake_model(FakeModelConfig(**fields), command=command,
                              log=lambda m: print(m, flush=True))
    print(json.dumps({k: v for k, v in record.items() if k != "config"}))
    return 0
