"""`brushpen image generate` and `brushpen image info`: images from a store model, written as PNGs
with their settings, and those settings read back."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from brushpen.config import apply_threads
from brushpen.errors import BadInput
from brushpen.generators.requests import from_values
from brushpen.store import atomic_write_bytes


def register(sub: argparse._SubParsersAction) -> None:
    img = sub.add_parser("image", help="generate images").add_subparsers(dest="image_cmd", required=True)
    # Each option's dest is its ImageRequest field: the request is built from `vars(args)` by name, and
    # an option left out (None) takes the field's default, so the defaults live in ImageRequest alone.
    g = img.add_parser("generate", help="generate PNGs (image i uses seed S+i)",
                       epilog="Options left out take ImageRequest's defaults (brushpen/generators/images.py).")
    g.add_argument("--model", help="store name (default: the shipped GAN)")
    g.add_argument("--n", type=int, default=16)   # the command's own: a page of images, where a request makes 1
    g.add_argument("--seed", type=int, default=None, help="first seed (random when omitted)")
    g.add_argument("--truncation", dest="truncation_psi", type=float,
                   help="truncation psi: 0 = mean image, 1 = none")
    g.add_argument("--label", default=None, help="class for conditional models, e.g. flag, food, 'Animals & Nature'")
    g.add_argument("--mix-seed", type=int, default=None, help="style-mixing second seed")
    g.add_argument("--mix-cutoff", type=int, default=None, help="layer index where the second w takes over")
    g.add_argument("--noise", dest="noise_mode", choices=["const", "random", "none"],
                   help="per-pixel noise: none (default, smoothest), const (fixed) or random (seeded)")
    g.add_argument("--prompt", default=None,
                   help="text prompt (diffusers models); for a class-conditional GAN, a word naming the class")
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--steps", type=int, help="denoising steps (diffusers models)")
    g.add_argument("--guidance", type=float, help="classifier-free guidance scale (diffusers)")
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--scheduler", default=None, help="euler, euler-a, dpm++2m, ddim, pndm, lms, unipc")
    g.add_argument("--backend", choices=["torch", "onnx", "onnx-int8", "student"],
                   help="GAN runtime: torch, onnx / onnx-int8 (onnxruntime, noise off) or student (the "
                        "distilled half-width generator); the non-torch ones need `brushpen export` first")
    g.add_argument("--out", type=Path, default=Path("out"))
    g.add_argument("--grid", action="store_true", help="also write grid.png of all images")
    g.add_argument("--threads", type=int, default=None)
    g.set_defaults(func=run_generate)
    # As for generate: each dest is a WalkRequest field, and an option left out takes its default.
    walk = img.add_parser("walk", help="an animated GIF/WebP walking from one seed's image to another's",
                          epilog="Options left out take WalkRequest's defaults (brushpen/generators/images.py).")
    walk.add_argument("--model", help="store name (default: the shipped GAN)")
    walk.add_argument("--seed-a", type=int)
    walk.add_argument("--seed-b", type=int)
    walk.add_argument("--frames", type=int)
    walk.add_argument("--fps", type=int)
    walk.add_argument("--truncation", dest="truncation_psi", type=float)
    walk.add_argument("--label")
    walk.add_argument("--prompt", help="a word naming the class, for a class-conditional GAN")
    walk.add_argument("--out", type=Path, default=Path("out/walk.gif"), help=".gif or .webp (the format)")
    walk.add_argument("--threads", type=int, default=None)
    walk.set_defaults(func=run_walk)
    info = img.add_parser("info", help="print the settings a brushpen PNG was made with")
    info.add_argument("file", type=Path)
    info.add_argument("--json", action="store_true", help="the exact settings as JSON")
    info.set_defaults(func=run_info)


def run_generate(args: argparse.Namespace) -> int:
    from brushpen.gan.pipeline import image_grid
    from brushpen.generators.images import ImageRequest, generate_images, save_images

    apply_threads(args.threads)
    req = from_values(ImageRequest, vars(args), skip_none=True)
    with tqdm(total=0, unit="step", disable=None, leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        images = generate_images(req, progress)
    paths = save_images(images, args.out)
    for p in paths:
        print(p)
    if args.grid:
        grid = args.out / "grid.png"
        image_grid([i.image for i in images]).save(grid)
        print(grid)
    return 0


def run_info(args: argparse.Namespace) -> int:
    import json

    from brushpen.generators.images import format_parameters, read_png_settings

    if not args.file.is_file():
        raise BadInput(f"no such file: {args.file}")
    settings = read_png_settings(args.file)
    if not settings:
        print(f"{args.file} carries no generation settings")
        return 1
    if args.json or "parameters" in settings and len(settings) == 1:
        print(json.dumps(settings, indent=2, sort_keys=True) if args.json else settings["parameters"])
    else:
        print(format_parameters(settings))
    return 0


def run_walk(args: argparse.Namespace) -> int:
    from brushpen.generators.images import WalkRequest, seed_walk

    apply_threads(args.threads)
    fmt = "webp" if args.out.suffix.lower() == ".webp" else "gif"
    data = seed_walk(from_values(WalkRequest, {**vars(args), "format": fmt}, skip_none=True))
    print(atomic_write_bytes(args.out, data))
    return 0
