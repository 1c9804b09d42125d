"""`brushpen copy "BRIEF"`: marketing copy variants from the text model, printed, streamed or as JSON."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Iterable, TextIO

from brushpen.config import apply_threads, use_engine

KINDS = ("headline", "tagline", "description", "social", "email-subject", "ad")


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("copy", help="write marketing copy variants for a brief")
    c.add_argument("brief", help="what the copy is for: product, offer, key facts")
    c.add_argument("--kind", choices=KINDS, default="headline")
    c.add_argument("--tone", default=None, help="e.g. playful, professional, urgent")
    c.add_argument("--audience", default=None, help="who reads it, e.g. 'busy parents'")
    c.add_argument("--n", type=int, default=None, help="variants (default 3; 1 at temperature 0)")
    c.add_argument("--max-new-tokens", type=int, default=80)
    c.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: tuned, see docs/cli.md)")
    c.add_argument("--top-p", type=float, default=None)
    c.add_argument("--top-k", type=int, default=None)
    c.add_argument("--repetition-penalty", type=float, default=None)
    c.add_argument("--seed", type=int, default=None, help="variant i uses seed S+i (random when omitted)")
    c.add_argument("--stop", action="append", default=[], help="extra stop string (repeatable)")
    c.add_argument("--model", default=None,
                   help="smollm2-135m:copy (default on torch: the distilled copywriter), smollm2-135m (the base; "
                   "the default on onnx), an installed model, text/NAME in the store, a folder, or engine/ID: "
                   "a model of the engine at --engine")
    c.add_argument("--adapter", default=None, help="a LoRA adapter of the model, from `brushpen finetune text --out NAME`")
    c.add_argument("--backend", default="torch", choices=("torch", "onnx", "onnx-int8"),
                   help="onnx / onnx-int8 run the graphs of `brushpen export MODEL --int8` under onnxruntime")
    c.add_argument("--lang", choices=("en", "ko"), default="en",
                   help="the copy's language: Korean prompts, and checks that count Korean length in characters")
    c.add_argument("--draft", type=int, default=None,
                   help="candidates drafted per variant, checked, the best kept (default 4)")
    c.add_argument("--no-deliberate", dest="deliberate", action="store_false",
                   help="plain sampling: no drafts, no checks (streams token by token)")
    c.add_argument("--stream", action="store_true",
                   help="print tokens as they come (with --no-deliberate; deliberate mode prints its picks at the end)")
    c.add_argument("--json", action="store_true",
                   help="print the variants with their settings, seeds and checks, and the rejected drafts")
    c.add_argument("--engine", default=None, metavar="URL",
                   help="an OpenAI-compatible engine (llama-server, vLLM, Ollama, ...) whose models "
                        "serve as engine/ID: its API root, e.g. http://127.0.0.1:8080/v1 "
                        "(default: $BRUSHPEN_ENGINE_URL)")
    c.add_argument("--threads", type=int, default=None)
    c.set_defaults(func=run_copy)


def _request(args: argparse.Namespace):
    from brushpen.generators.copy import CopyRequest

    req = CopyRequest(brief=args.brief, kind=args.kind, tone=args.tone, audience=args.audience,
                      max_new_tokens=args.max_new_tokens, seed=args.seed, model=args.model, stop=args.stop,
                      backend=args.backend, adapter=args.adapter, deliberate=args.deliberate,
                      lang=args.lang)
    for name in ("temperature", "top_p", "top_k", "repetition_penalty", "draft"):
        if getattr(args, name) is not None:
            setattr(req, name, getattr(args, name))
    req.n = args.n if args.n is not None else (1 if req.temperature == 0 else 3)
    return req


def run_copy(args: argparse.Namespace) -> int:
    from brushpen.generators.copy import generate_copy, stream_copy

    use_engine(args.engine)
    req = _request(args)
    req.validate()  # before the model loads, so typos fail fast
    apply_threads(args.threads)
    if args.stream and not args.json and not req.deliberate:  # deliberate mode shows nothing before its picks
        return _print_stream(stream_copy(req))
    result = generate_copy(req)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
        return 0
    _print_result(result, sys.stdout)
    return 0


def _print_result(result, out: TextIO) -> None:
    """The final variants as `brushpen copy` prints them, numbered from 1, notes on stderr."""
    for i, v in enumerate(result.variants, 1):
        print(f"{i}. {v.text}", file=out)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)


def _print_stream(events: Iterable, out: TextIO | None = None, tty: bool | None = None) -> int:
    """Every variant live: redrawn in place on a terminal, one line per finished variant otherwise."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    (_LiveBlock if tty else _PipeLines)(out).run(events)
    return 0


class _LiveBlock:
    """On a terminal: one line per variant, each showing the tail of its text, redrawn as tokens arrive.

    Lines are cut to the terminal width, so the block is exactly n rows and the cursor can move back
    over it; when generation is done the block is cleared and the final variants are printed as
    the non-streamed command prints them.
    """

    def __init__(self, out: TextIO):
        self.out, self.texts, self.rows = out, {}, 0
        self.width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)

    def line(self, i: int) -> str:
        text = " ".join(self.texts[i].split())
        room = self.width - len(f"{i + 1}. ")
        return f"{i + 1}. " + (text if len(text) <= room else "…" + text[len(text) - room + 1:])

    def draw(self, clear_only: bool = False) -> None:
        up = f"\x1b[{self.rows}F" if self.rows else ""  # back to the start of the block's first line
        body = "" if clear_only else "".join(f"{self.line(i)}\n" for i in sorted(self.texts))
        self.out.write(up + "\x1b[J" + body)  # clear to the end of the screen, then draw
        self.out.flush()
        self.rows = 0 if clear_only else len(self.texts)

    def run(self, events: Iterable) -> None:
        for ev in events:
            if ev.kind == "done":
                self.draw(clear_only=True)
                _print_result(ev.result, self.out)
                return
            _apply(self.texts, ev)
            self.draw()


class _PipeLines:
    """Not a terminal: variant 1 streams live on its line; each later variant is printed whole, in
    order, once its tokens are all in. Unless the filter redraws or drops a variant after it was
    printed, the output equals the non-streamed command's; if it does, the final list follows a
    marker line.
    """

    def __init__(self, out: TextIO):
        self.out, self.texts, self.final = out, {}, set()
        self.next = 0              # the variant to print next
        self.live = ""             # variant 1 as streamed
        self.printed: list[str] = []

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def run(self, events: Iterable) -> None:
        self.write("1. ")
        for ev in events:
            if ev.kind == "done":
                self.finish(ev.result)
                return
            _apply(self.texts, ev)
            if ev.final:
                self.final.add(ev.variant)
            if ev.variant == 0 and self.next == 0 and ev.kind == "delta":
                self.live += ev.text
                self.write(ev.text)
            self.print_finished()

    def print_finished(self) -> None:
        while self.next in self.final:
            k = self.next
            if k == 0:
                self.write("\n")
                self.printed.append(self.live)
            elif k in self.texts:  # a variant dropped before it was printed is skipped, as in the final list
                self.write(f"{len(self.printed) + 1}. {self.texts[k]}\n")
                self.printed.append(self.texts[k])
            self.next += 1

    def finish(self, result) -> None:
        if self.next == 0:
            self.write("\n")
        if self.printed != result.texts:
            self.write("(the filter redrew or dropped variants after they were shown; final list:)\n")
            _print_result(result, self.out)
        else:
            for note in result.notes:
                print(f"note: {note}", file=sys.stderr)


def _apply(texts: dict[int, str], ev) -> None:
    """Apply one stream event to the variant texts: append, swap or remove."""
    if ev.kind == "delta":
        texts[ev.variant] = texts.get(ev.variant, "") + ev.text
    elif ev.kind == "replace":
        texts[ev.variant] = ev.text
    elif ev.kind == "drop":
        texts.pop(ev.variant, None)
