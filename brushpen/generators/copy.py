"""Marketing copy as a service: a brief in, `n` cleaned, distinct variants with their settings out.

`generate_copy` backs `brushpen copy` (and, later, the API and the studio); `stream_copy` is the same
work as events for live display; `generate_copy_batch` runs many briefs in one left-padded batch;
`count_tokens`, `prompt_tokens` and `hit_token_cap` measure a request and its variants in tokens.
Variant i of a request is drawn with seed `seed + i`. A variant that comes out empty, repeats
another or hits the blocklist is redrawn with a fresh seed (`seed + n·attempt + i`), at most
`MAX_ATTEMPTS` times, then dropped with a note. Temperature 0 is greedy decoding: it gives one
variant, so it needs n=1.
"""

from __future__ import annotations

import random
import threading
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Iterator

from brushpen.adapters import check_name, split_ref
from brushpen.edge.common import check_backend
from brushpen.edge.lm_runtime import load_ort_text_model
from brushpen.errors import BadParameter
from brushpen.store import list_models
from brushpen.text import prompts
from brushpen.text.base import BASE_NAME, TextModel, load_text_model
from brushpen.text.filter import Blocklist, check_brief, load_blocklist
from brushpen.text.sampling import RawText, Row, Sampling, clean, generate_rows, stream_rows

MAX_BRIEF_CHARS = 2000
MAX_VARIANTS = 16
MAX_NEW_TOKENS = 512
MAX_ATTEMPTS = 3


@dataclass
class CopyRequest:
    brief: str
    kind: str = "headline"
    tone: str | None = None
    audience: str | None = None
    n: int = 3
    max_new_tokens: int = 80
    # Tuned on tests/data/briefs.json by benchmarks/copy_tune.py (BENCHMARKS.md, 3 seeds pooled):
    # the 0.8 / 0.95 / 1.15 scored lowest (0.82); 0.3 / 0.9 / 50 / 1.05 highest (0.89).
    temperature: float = 0.3
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.05
    seed: int | None = None
    model: str | None = None          # None: the shipped SmolLM2 base
    stop: list[str] = field(default_factory=list)
    backend: str = "torch"            # torch, onnx or onnx-int8 (the last two after `brushpen export`)
    adapter: str | None = None        # a LoRA adapter of the model (`brushpen finetune text`); or model=BASE:NAME

    def validate(self) -> None:
        if not isinstance(self.brief, str) or not _visible(self.brief):
            raise BadParameter("the brief is empty: describe the product or offer to write copy for")
        if len(self.brief) > MAX_BRIEF_CHARS:
            raise BadParameter(f"the brief is {len(self.brief):,} characters; the limit is {MAX_BRIEF_CHARS:,}")
        prompts.kind_spec(self.kind)
        for name in ("tone", "audience"):
            value = getattr(self, name)
            if value is not None and len(value) > 200:
                raise BadParameter(f"{name} is longer than 200 characters")
        if not 1 <= self.n <= MAX_VARIANTS:
            raise BadParameter(f"n must lie in 1..{MAX_VARIANTS}, got {self.n}")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise BadParameter(f"max_new_tokens must lie in 1..{MAX_NEW_TOKENS}, got {self.max_new_tokens}")
        if not 0 <= self.temperature <= 5:
            raise BadParameter(f"temperature must lie in 0..5 (0 = greedy), got {self.temperature}")
        if self.temperature == 0 and self.n > 1:
            raise BadParameter("temperature 0 is greedy decoding and gives a single variant: use n=1, "
                               "or a temperature above 0 for several")
        if not 0 < self.top_p <= 1:
            raise BadParameter(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise BadParameter(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.repetition_penalty <= 3:
            raise BadParameter(f"repetition_penalty must lie in (0, 3], got {self.repetition_penalty}")
        if self.seed is not None and self.seed < 0:
            raise BadParameter(f"seed must be >= 0, got {self.seed}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise BadParameter("stop strings must be non-empty")
        check_backend(self.backend)  # a known name; whether this model has it is checked on load


@dataclass
class CopyVariant:
    text: str
    seed: int


@dataclass
class CopyResult:
    variants: list[CopyVariant]
    settings: dict          # the request as run: model name, resolved seed, every sampling knob
    notes: list[str] = field(default_factory=list)   # dropped or redrawn variants, and why

    @property
    def texts(self) -> list[str]:
        return [v.text for v in self.variants]

    def to_json(self) -> dict:
        return {"variants": [asdict(v) for v in self.variants], "settings": self.settings, "notes": self.notes}


@dataclass
class CopyEvent:
    """One step of `stream_copy`: `delta` appends text to a variant, `replace` swaps a variant's whole
    text (a redraw, or a trim at the end), `drop` removes it, `done` carries the final result.

    `final` marks the event after which a variant's tokens are all in (a `delta` may then carry no
    text); a display can print that variant as complete. Only the filter can still change it: a
    later `replace` (redrawn) or `drop` before `done`.
    """

    kind: str
    variant: int = -1
    text: str = ""
    result: CopyResult | None = None
    final: bool = False


# ---- shared plumbing -------------------------------------------------------------------------

def _visible(text: str) -> str:
    """The text without whitespace and invisible format characters (zero-width space, joiners,
    BOM...): a brief made only of those is empty."""
    return "".join(c for c in text if not c.isspace() and unicodedata.category(c) != "Cf")


def _prepare(req: CopyRequest) -> tuple[TextModel, int, Blocklist]:
    req.validate()
    blocklist = load_blocklist()
    check_brief(req.brief, blocklist)
    tm = _load(req)
    seed = req.seed if req.seed is not None else random.randrange(2**31)
    return tm, seed, blocklist


def _load(req: CopyRequest) -> TextModel:
    """The model of a request on its backend: torch, or an exported graph under onnxruntime."""
    if req.backend == "torch":
        return load_text_model(_model_ref(req))
    if req.adapter or ":" in str(req.model or ""):
        raise BadParameter("LoRA adapters run on the torch backend (the ONNX graphs are of the base model)")
    return load_ort_text_model(req.model, req.backend)


def _model_ref(req: CopyRequest) -> str | None:
    """`model`, or `BASE:ADAPTER` when the request names an adapter."""
    if not req.adapter:
        return req.model
    base, named = split_ref(req.model or BASE_NAME)
    if named and named != req.adapter:
        raise BadParameter(f"model '{req.model}' already names adapter '{named}', and adapter is '{req.adapter}'")
    return f"{base}:{check_name(req.adapter)}"


def copy_models() -> list[str]:
    """Model names a copy request can take, for pickers: the base, text models in the store, and
    every LoRA adapter as BASE:NAME."""
    names = [BASE_NAME]
    for m in list_models():
        if m.family == "text":
            base = BASE_NAME if m.name == BASE_NAME else m.ref
            names += ([] if base == BASE_NAME else [base]) + [f"{base}:{a}" for a in m.adapters]
    return names


def check_request(req: CopyRequest) -> None:
    """Refuse a bad request before any model loads: its own fields, and a brief on the blocklist."""
    req.validate()
    check_brief(req.brief, load_blocklist())


def check_backend_available(req: CopyRequest) -> None:
    """Refuse now, not mid-stream, an ONNX backend the model was never exported to (loads the graph)."""
    if req.backend != "torch":
        _load(req)


# ---- token counts (the API's `usage` and `finish_reason`) ------------------------------------

def count_tokens(model: str | None, text: str) -> int:
    """Tokens of `text` under a copy model's tokenizer (the torch model's, whatever the backend)."""
    return len(load_text_model(model).tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_tokens(req: CopyRequest) -> int:
    """Tokens of the prompt a request's brief becomes."""
    tok = load_text_model(req.model).tokenizer
    return count_tokens(req.model, prompts.build_prompt(tok, req.brief, req.kind, req.tone, req.audience))


def hit_token_cap(req: CopyRequest, text: str) -> bool:
    """Whether a variant was most likely cut by `max_new_tokens`. The variants are cleaned text,
    so this is an estimate: one within a token of the cap counts as cut."""
    return count_tokens(req.model, text) >= req.max_new_tokens - 1


def _sampling(req: CopyRequest) -> Sampling:
    return Sampling(req.max_new_tokens, req.temperature, req.top_p, req.top_k, req.repetition_penalty)


def _row(tm: TextModel, req: CopyRequest, seed: int) -> Row:
    prompt = prompts.build_prompt(tm.tokenizer, req.brief, req.kind, req.tone, req.audience)
    return Row(prompt, seed, tuple(req.stop), prompts.kind_spec(req.kind).single_line)


def _settings(req: CopyRequest, tm: TextModel, seed: int) -> dict:
    return {**asdict(req), "model": tm.name, "seed": seed}


class _Collector:
    """Accepts cleaned variants for one request, refusing empties, repeats and blocked text."""

    def __init__(self, req: CopyRequest, blocklist: Blocklist):
        self.req, self.blocklist = req, blocklist
        self.single_line = prompts.kind_spec(req.kind).single_line
        self.texts: list[str | None] = [None] * req.n
        self.seeds: list[int] = [0] * req.n
        self.reasons: list[str] = [""] * req.n
        self.notes: list[str] = []

    def offer(self, i: int, raw: RawText, seed: int) -> bool:
        text = clean(raw.text, self.single_line, raw.ended)
        taken = {t.lower() for j, t in enumerate(self.texts) if t is not None and j != i}
        blocked = self.blocklist.hits(text)
        if not text:
            self.reasons[i] = "came out empty"
        elif text.lower() in taken:
            self.reasons[i] = "repeated another variant"
        elif blocked:
            self.reasons[i] = f"hit the blocklist ({', '.join(blocked)})"
        else:
            self.texts[i], self.seeds[i] = text, seed
            return True
        self.texts[i] = None
        return False

    def missing(self) -> list[int]:
        return [i for i, t in enumerate(self.texts) if t is None]

    def result(self, settings: dict) -> CopyResult:
        for i in self.missing():
            self.notes.append(f"variant {i + 1} dropped: it {self.reasons[i]} {MAX_ATTEMPTS} times")
        variants = [CopyVariant(t, s) for t, s in zip(self.texts, self.seeds) if t is not None]
        return CopyResult(variants, settings, self.notes)


def _redraw_seed(base: int, n: int, attempt: int, i: int) -> int:
    return base + n * attempt + i


# ---- the service functions -------------------------------------------------------------------

def generate_copy(req: CopyRequest) -> CopyResult:
    """`n` cleaned, distinct variants for one brief."""
    return generate_copy_batch([req])[0]


def generate_copy_batch(reqs: list[CopyRequest]) -> list[CopyResult]:
    """Many briefs at once: requests sharing a model and sampling settings run as one padded batch."""
    prepared = [_prepare(r) for r in reqs]  # validate everything before any work
    results: list[CopyResult | None] = [None] * len(reqs)
    groups: dict[tuple, list[int]] = {}
    for k, (req, (tm, _, _)) in enumerate(zip(reqs, prepared)):
        groups.setdefault((str(tm.path), req.backend, _sampling(req)), []).append(k)
    for (_, _, sampling), members in groups.items():
        tm = prepared[members[0]][0]
        collectors = {k: _Collector(reqs[k], prepared[k][2]) for k in members}
        for attempt in range(MAX_ATTEMPTS):
            todo = [(k, i, _redraw_seed(prepared[k][1], reqs[k].n, attempt, i))
                    for k in members for i in (range(reqs[k].n) if attempt == 0 else collectors[k].missing())]
            if not todo:
                break
            raws = generate_rows(tm, [_row(tm, reqs[k], seed) for k, _, seed in todo], sampling)
            for (k, i, seed), raw in zip(todo, raws):
                collectors[k].offer(i, raw, seed)
        for k in members:
            results[k] = collectors[k].result(_settings(reqs[k], tm, prepared[k][1]))
    return results  # type: ignore[return-value]


def stream_copy(req: CopyRequest, cancel: threading.Event | None = None) -> Iterator[CopyEvent]:
    """The work of `generate_copy` as events: text deltas while tokens arrive, then fixes and `done`.

    Applying the events in order (append deltas, swap on `replace`, remove on `drop`) gives exactly
    the variants of the final result, which equal `generate_copy`'s for the same request and seed.
    Setting `cancel` (or closing the iterator) stops the work at the next decode step, redraws
    included, and ends the events without `done`.
    """
    tm, seed, blocklist = _prepare(req)
    sampling = _sampling(req)
    single_line = prompts.kind_spec(req.kind).single_line
    collector = _Collector(req, blocklist)
    shown = [""] * req.n
    final = [False] * req.n
    raws: list[RawText] = []
    for item in stream_rows(tm, [_row(tm, req, seed + i) for i in range(req.n)], sampling, cancel):
        if item[0] < 0:
            raws = item[1]
            break
        i, raw_text, ended = item
        # While a row runs, show only text that cannot change any more: as if the variant were cut here.
        partial = clean(raw_text, single_line, ended=ended)
        if partial.startswith(shown[i]) and len(partial) > len(shown[i]):
            yield CopyEvent("delta", i, partial[len(shown[i]):], final=ended)
        elif ended and partial != shown[i]:
            yield CopyEvent("replace", i, partial, final=True)
        elif ended:
            yield CopyEvent("delta", i, "", final=True)
        shown[i] = partial if ended or partial.startswith(shown[i]) else shown[i]
        final[i] = ended
    if cancel is not None and cancel.is_set():
        return
    for i, raw in enumerate(raws):
        collector.offer(i, raw, seed + i)
    for attempt in range(1, MAX_ATTEMPTS):
        todo = collector.missing()
        if not todo:
            break
        redraws = generate_rows(tm, [_row(tm, req, _redraw_seed(seed, req.n, attempt, i)) for i in todo], sampling,
                                cancel=cancel)
        if cancel is not None and cancel.is_set():
            return
        for i, raw in zip(todo, redraws):
            collector.offer(i, raw, _redraw_seed(seed, req.n, attempt, i))
    for i, text in enumerate(collector.texts):
        if text is None:
            yield CopyEvent("drop", i, final=True)
        elif text != shown[i]:
            if text.startswith(shown[i]):
                yield CopyEvent("delta", i, text[len(shown[i]):], final=True)
            else:
                yield CopyEvent("replace", i, text, final=True)
        elif not final[i]:  # ran into max_new_tokens: complete only now
            yield CopyEvent("delta", i, "", final=True)
    yield CopyEvent("done", result=collector.result(_settings(req, tm, seed)))
