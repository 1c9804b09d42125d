"""`brushpen models list` and `brushpen models show NAME`."""

from __future__ import annotations

import argparse
import json

from brushpen.store import list_models, resolve_model


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


def run_list(args: argparse.Namespace) -> int:
    models = list_models()
    if args.json:
        print(json.dumps([{"family": m.family, "name": m.name, "size_bytes": m.size_bytes,
                           "metrics": m.metrics, "adapters": m.adapters} for m in models], indent=2))
        return 0
    if not models:
        print("no models in the store")
        return 0
    print(f"{'family':8} {'name':20} {'size':>9}  key metric")
    for m in models:
        print(f"{m.family:8} {m.name:20} {_size(m.size_bytes):>9}  {m.key_metric()}")
        for a in m.adapters:
            print(f"{'':8}   + adapter {a}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from brushpen.store import read_metrics

    path = resolve_model(args.name)
    print(path)
    print((path / "card.md").read_text(encoding="utf-8") if (path / "card.md").exists() else "(no card)")
    print(json.dumps(read_metrics(path), indent=2, sort_keys=True))
    return 0
