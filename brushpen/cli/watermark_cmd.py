"""`brushpen watermark embed FILE` and `brushpen watermark read FILE...`: put the invisible
provenance mark into an image, and read it back (model tag, image id, confidence)."""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from brushpen.errors import BadInput
from brushpen.store import atomic_write_bytes, list_models


def register(sub: argparse._SubParsersAction) -> None:
    wm = sub.add_parser("watermark", help="embed or read the invisible provenance watermark")
    cmds = wm.add_subparsers(dest="watermark_cmd", required=True)
    e = cmds.add_parser("embed", help="write a marked PNG copy of an image")
    e.add_argument("file", type=Path)
    e.add_argument("--out", type=Path, default=None, help="output PNG (default: FILE.marked.png)")
    e.add_argument("--model", default=None,
                   help="model name the mark names (default: the one in a brushpen PNG's settings)")
    e.add_argument("--id", dest="image_id", type=int, default=None,
                   help="32-bit image id (default: a hash of a brushpen PNG's settings, else random)")
    e.set_defaults(func=run_embed)
    r = cmds.add_parser("read", help="read the mark back from images")
    r.add_argument("files", type=Path, nargs="+")
    r.add_argument("--json", action="store_true", help="one JSON object per file")
    r.set_defaults(func=run_read)


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (FileNotFoundError, IsADirectoryError) as e:
        raise BadInput(f"{path}: no such file") from e
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"{path}: not a readable image: {e}") from e


def run_embed(args: argparse.Namespace) -> int:
    from brushpen.generators.images import read_png_settings
    from brushpen.safety.watermark import Payload, embed, model_tag, payload_for

    image = _open(args.file)
    settings = read_png_settings(args.file)
    if args.model is None and args.image_id is None and settings.get("model"):
        payload = payload_for(settings)
    else:
        image_id = args.image_id if args.image_id is not None else random.randrange(2**32)
        payload = Payload(model=model_tag(args.model or settings.get("model") or "unknown"), image_id=image_id)
    marked = embed(image, payload)
    # Keep the settings chunks: the checker reads both the mark and the PNG `parameters`.
    info = PngImagePlugin.PngInfo()
    for key in ("parameters", "brushpen"):
        if isinstance(image.info.get(key), str):
            info.add_text(key, image.info[key])
    buf = io.BytesIO()
    marked.save(buf, format="PNG", pnginfo=info)
    out = args.out or args.file.with_name(args.file.stem + ".marked.png")
    atomic_write_bytes(out, buf.getvalue())
    print(f"{out}  model tag {payload.model}  image id {payload.image_id}")
    return 0


def run_read(args: argparse.Namespace) -> int:
    from brushpen.safety.watermark import extract, model_tag

    # Generated PNGs name a GAN by its folder and a diffusers model by its store reference.
    names = {model_tag(n): n for m in list_models() for n in (m.ref, m.name)}
    status = 0
    for path in args.files:
        try:
            det = extract(_open(path))
        except BadInput as e:   # one bad file must not stop the others
            print(json.dumps({"path": str(path), "error": str(e)}) if args.json else f"{path}: error: {e}")
            status = 2
            continue
        p = det.payload
        row = {"path": str(path), "found": det.found, "confidence": round(det.confidence, 3),
               "bit_agreement": det.bit_agreement, "model_tag": p.model if p else None,
               "model": names.get(p.model) if p else None, "image_id": p.image_id if p else None}
        if args.json:
            print(json.dumps(row))
        elif p:
            print(f"{path}: brushpen mark found: model {row['model'] or '?'} (tag {p.model}), "
                  f"image id {p.image_id}, confidence {det.confidence:.2f}")
        else:
            print(f"{path}: no brushpen mark (confidence {det.confidence:.2f})")
    return status
