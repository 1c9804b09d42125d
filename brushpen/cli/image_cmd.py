"""`brushpen image generate`: images from a store model, written as PNGs with their settings."""

from __future__ import annotations

import argparse
from pathlib import Path

from brushpen.config import apply_threads


def register(sub: argparse._SubParsersAction) -> None:
    img = sub.add_parser("image", help="generate images").add_subparsers(dest="image_cmd", required=True)
    g = img.add_parser("generate", help="generate PNGs (image i uses seed S+i)")
    g.add_argument("--model", default="emoji64")
    g.add_argument("--n", type=int, default=16)
    g.add_argument("--seed", type=int, default=None, help="first seed (random when omitted)")
    g.add_argument("--truncation", type=float, default=1.0, help="truncation psi: 0 = mean image, 1 = none")
    g.add_argument("--label", default=None, help="class for conditional models, e.g. flag, food, 'Animals & Nature'")
    g.add_argument("--mix-seed", type=int, default=None, help="style-mixing second seed")
    g.add_argument("--mix-cutoff", type=int, default=None, help="layer index where the second w takes over")
    g.add_argument("--noise", dest="noise_mode", choices=["const", "random", "none"], default="none",
                   help="per-pixel noise: none (default, smoothest), const (fixed) or random (seeded)")
    g.add_argument("--out", type=Path, default=Path("out"))
    g.add_argument("--grid", action="store_true", help="also write grid.png of all images")
    g.add_argument("--threads", type=int, default=None)
    g.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from brushpen.gan.pipeline import image_grid
    from brushpen.generators.images import ImageRequest, generate_images, save_images

    apply_threads(args.threads)
    req = ImageRequest(model=args.model, n=args.n, seed=args.seed, truncation_psi=args.truncation,
                       label=args.label, mix_seed=args.mix_seed, mix_cutoff=args.mix_cutoff,
                       noise_mode=args.noise_mode)
    images = generate_images(req)
    paths = save_images(images, args.out)
    for p in paths:
        print(p)
    if args.grid:
        grid = args.out / "grid.png"
        image_grid([i.image for i in images]).save(grid)
        print(grid)
    return 0
