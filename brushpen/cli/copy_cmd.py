"""`brushpen copy "BRIEF"`: marketing copy variants from the text model, printed, streamed or as JSON."""

from __future__ import annotations

import argparse
import json
import sys

from brushpen.config import apply_threads
from brushpen.errors import BrushpenError

KINDS = ("headline", "tagline", "description", "social", "email-subject", "ad")


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("copy", help="write marketing copy variants for a brief")
    c.add_argument("brief", help="what the copy is for: product, offer, key facts")
    c.add_argument("--kind", choices=KINDS, default="headline")
    c.add_argument("--tone", default=None, help="e.g. playful, professional, urgent")
    c.add_argument("--audience", default=None, help="who reads it, e.g. 'busy parents'")
    c.add_argument("--n", type=int, default=None, help="variants (default 3; 1 at temperature 0)")
    c.add_argument("--max-new-tokens", type=int, default=80)
    c.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: tuned, see README)")
    c.add_argument("--top-p", type=float, default=None)
    c.add_argument("--top-k", type=int, default=None)
    c.add_argument("--repetition-penalty", type=float, default=None)
    c.add_argument("--seed", type=int, default=None, help="variant i uses seed S+i (random when omitted)")
    c.add_argument("--stop", action="append", default=[], help="extra stop string (repeatable)")
    c.add_argument("--model", default=None, help="smollm2-135m (default), text/NAME in the store, or a folder")
    c.add_argument("--adapter", default=None, help="LoRA adapter name (not yet available)")
    c.add_argument("--stream", action="store_true", help="print tokens as they come")
    c.add_argument("--json", action="store_true", help="print the variants with their settings and seeds")
    c.add_argument("--threads", type=int, default=None)
    c.set_defaults(func=run_copy)


def _request(args: argparse.Namespace):
    from brushpen.generators.copy import CopyRequest

    if args.adapter is not None:
        raise BrushpenError(f"--adapter {args.adapter}: adapters arrive with the LoRA issue; "
                            "brushpen copy runs the base model only for now")
    req = CopyRequest(brief=args.brief, kind=args.kind, tone=args.tone, audience=args.audience,
                      max_new_tokens=args.max_new_tokens, seed=args.seed, model=args.model, stop=args.stop)
    for name in ("temperature", "top_p", "top_k", "repetition_penalty"):
        if getattr(args, name) is not None:
            setattr(req, name, getattr(args, name))
    req.n = args.n if args.n is not None else (1 if req.temperature == 0 else 3)
    return req


def run_copy(args: argparse.Namespace) -> int:
    from brushpen.generators.copy import generate_copy, stream_copy

    req = _request(args)
    req.validate()  # before the model loads, so typos fail fast
    apply_threads(args.threads)
    if args.stream and not args.json:
        return _print_stream(stream_copy(req))
    result = generate_copy(req)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return 0
    for i, v in enumerate(result.variants, 1):
        print(f"{i}. {v.text}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _print_stream(events) -> int:
    """Variant 1 is printed live as its tokens arrive; the others follow when generation is done."""
    live = ""
    print("1. ", end="", flush=True)
    for ev in events:
        if ev.kind == "delta" and ev.variant == 0:
            live += ev.text
            print(ev.text, end="", flush=True)
        elif ev.kind == "done":
            print()
            variants = ev.result.variants
            first = variants[0].text if variants and variants[0].seed == ev.result.settings["seed"] else None
            if first != live:  # variant 1 was redrawn or dropped after it streamed
                print("   (variant 1 replaced, see below)")
            for i, v in enumerate(variants[1:] if first == live else variants, 2 if first == live else 1):
                print(f"{i}. {v.text}")
            for note in ev.result.notes:
                print(f"note: {note}", file=sys.stderr)
    return 0
