"""Marketing copy as a service: a brief in, `n` cleaned, distinct variants with their settings out.

`generate_copy` backs `brushpen copy` (and, later, the API and the studio); `stream_copy` is the same
work as events for live display; `generate_copy_batch` runs many briefs in one left-padded batch;
`count_tokens`, `prompt_tokens` and `hit_token_cap` measure a request and its variants in tokens.

Deliberate mode (the default): draft, check, pick. `n × draft` candidates are drawn in one batched
`generate` call (candidate j with seed `seed + j`, so the plain variants are among them), each is
scored by the explainable checks of `brushpen.text.checks`, and the n best that pass every hard
check and differ from each other are returned, each with its checks. When fewer pass, the result
says so (`notes`) and holds the closest misses under `rejected` instead of passing junk off as copy.

Plain mode (`deliberate=False`): variant i is drawn with seed `seed + i`. A variant that comes out
empty, repeats another or hits the blocklist is redrawn with a fresh seed (`seed + n·attempt + i`),
at most `MAX_ATTEMPTS` times, then dropped with a note. Temperature 0 is greedy decoding: it gives
one variant, so it needs n=1 (and deliberate mode then checks that one draft).

A model named `engine/ID` runs on an OpenAI-compatible engine the user runs (`text.engine`): the
same prompts, checks, pick, redraws and events, with the drafts written by the engine.
"""

from __future__ import annotations

import json
import random
import threading
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterator

from brushpen.adapters import check_name, split_ref
from brushpen.edge.common import check_backend
from brushpen.edge.lm_runtime import load_ort_text_model, tokenizer_only
from brushpen.errors import BadParameter
from brushpen.store import list_models
from brushpen.text import checks, engine, prompts
from brushpen.text.base import (BASE_NAME, COPY_MODEL, TextModel, default_copy_model, is_base_alias,
                                load_text_model, resolve_text_model)
from brushpen.text.engine import EngineModel, is_engine_ref
from brushpen.text.filter import Blocklist, check_brief, load_blocklist
from brushpen.text.install import INSTALLABLE, installed
from brushpen.text.sampling import RawText, Row, Sampling, clean, generate_rows, stream_rows

MAX_BRIEF_CHARS = 2000
MAX_VARIANTS = 16
MAX_NEW_TOKENS = 512
MAX_ATTEMPTS = 3
# Candidates drafted per requested variant in deliberate mode. 4 keeps a 3-variant tagline under the
# issue's 5 s on one thread (BENCHMARKS.md, "Copy on the held-out panel").
DEFAULT_DRAFT = 4
MAX_DRAFT = 16
MAX_DRAFTS = 64     # n × draft: the candidates of one request
ROWS_PER_CALL = 64  # rows of one generate call when a batch of briefs drafts together
DRAFT_TOKENS_PER_WORD = 3
# Sampling temperatures, each tuned on tests/data/briefs.json (never on the held-out panel). Plain:
# benchmarks/copy_tune.py, 3 seeds pooled: the 0.8 / 0.95 / 1.15 scored lowest (0.82), 0.3 /
# 0.9 / 50 / 1.05 highest (0.89). Deliberate: benchmarks/copy_panel.py --panel tests/data/briefs.json,
# briefs with at least 2 of 3 usable at 0.3 / 0.7 / 1.0: 75% / 80% / 50% (BENCHMARKS.md); the checks
# need drafts that differ, which a low temperature does not give.
PLAIN_TEMPERATURE = 0.3
DELIBERATE_TEMPERATURE = 0.7
# Plain sampling per model, where it differs: the distilled copywriter's variants collapse into one at
# 0.3; on the same briefs, 8 / 13 / 15 of 20 came out good by the checks at 0.3 / 0.5 / 0.7
# (benchmarks/copy_panel.py --panel tests/data/briefs.json --no-deliberate; BENCHMARKS.md).
PLAIN_TEMPERATURES = {COPY_MODEL: 0.7}


def plain_temperature(model: str | None, adapter: str | None = None) -> float:
    """The tuned plain-sampling temperature of a copy model (or the model with `adapter`)."""
    if is_engine_ref(model):
        return PLAIN_TEMPERATURE
    base, named = split_ref(model or BASE_NAME)
    name = adapter or named
    ref = (BASE_NAME if is_base_alias(base) else base) + (f":{name}" if name else "")
    return PLAIN_TEMPERATURES.get(ref, PLAIN_TEMPERATURE)


@dataclass
class CopyRequest:
    brief: str
    kind: str = "headline"
    tone: str | None = None
    audience: str | None = None
    n: int = 3
    max_new_tokens: int = 80
    # None: DELIBERATE_TEMPERATURE in deliberate mode, the model's plain_temperature in plain sampling.
    temperature: float | None = None
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.05
    seed: int | None = None
    model: str | None = None          # None: default_copy_model(backend), the distilled copywriter on torch
    stop: list[str] = field(default_factory=list)
    backend: str = "torch"            # torch, onnx or onnx-int8 (the last two after `brushpen export`)
    adapter: str | None = None        # a LoRA adapter of the model (`brushpen finetune text`); or model=BASE:NAME
    deliberate: bool = True           # draft n × draft candidates, check them, keep the n best that pass
    lang: str = "en"                  # en or ko: the prompt's language and the checks' rules
    draft: int = DEFAULT_DRAFT        # candidates per requested variant in deliberate mode

    def __post_init__(self) -> None:
        if self.model is None and self.adapter is None and isinstance(self.backend, str):
            self.model = default_copy_model(self.backend)
        if self.temperature is None:
            self.temperature = (DELIBERATE_TEMPERATURE if self.deliberate
                                else plain_temperature(self.model, self.adapter))

    def validate(self) -> None:
        if not isinstance(self.brief, str) or not _visible(self.brief):
            raise BadParameter("the brief is empty: describe the product or offer to write copy for")
        if len(self.brief) > MAX_BRIEF_CHARS:
            raise BadParameter(f"the brief is {len(self.brief):,} characters; the limit is {MAX_BRIEF_CHARS:,}")
        prompts.kind_spec(self.kind)
        prompts.check_lang(self.lang)
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
        if not 1 <= self.draft <= MAX_DRAFT:
            raise BadParameter(f"draft must lie in 1..{MAX_DRAFT} candidates per variant, got {self.draft}")
        if self.deliberate and self.n * self.draft > MAX_DRAFTS:
            raise BadParameter(f"n × draft is {self.n * self.draft} candidates; the limit is {MAX_DRAFTS}: "
                               "ask for fewer variants or a smaller draft")
        check_backend(self.backend)  # a known name; whether this model has it is checked on load

    @property
    def drafts(self) -> int:
        """Candidates drawn in deliberate mode: n × draft, or the one greedy answer at temperature 0."""
        return self.n * self.draft if self.temperature > 0 else 1


@dataclass
class CopyVariant:
    text: str
    seed: int
    # Deliberate mode: every check's verdict ({name, passed, hard, detail}), in checks.check_copy's order.
    checks: list[dict] | None = None


@dataclass
class CopyResult:
    variants: list[CopyVariant]
    settings: dict          # the request as run: model name, resolved seed, every sampling knob
    notes: list[str] = field(default_factory=list)   # dropped or redrawn variants, and why
    # Deliberate mode: the best drafts that failed a check, at most n, with their checks (never blocked text).
    rejected: list[CopyVariant] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [v.text for v in self.variants]

    def to_json(self) -> dict:
        out = {"variants": [_variant_json(v) for v in self.variants], "settings": self.settings, "notes": self.notes}
        if self.settings.get("deliberate"):
            out["rejected"] = [_variant_json(v) for v in self.rejected]
        return out


def _variant_json(v: CopyVariant) -> dict:
    return {k: val for k, val in asdict(v).items() if not (k == "checks" and val is None)}


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


def _prepare(req: CopyRequest) -> tuple[TextModel | EngineModel, int, Blocklist]:
    req.validate()
    blocklist = load_blocklist()
    check_brief(req.brief, blocklist)
    tm = _load(req)
    seed = req.seed if req.seed is not None else random.randrange(2**31)
    return tm, seed, blocklist


def _load(req: CopyRequest) -> TextModel | EngineModel:
    """The model of a request on its backend: torch, an exported graph under onnxruntime, or an engine."""
    if is_engine_ref(req.model):
        if req.adapter:
            raise BadParameter(f"LoRA adapters run here, on the torch backend; '{req.model}' runs on its engine: "
                               f"load the adapter into the engine instead, or pick a local model")
        if req.backend != "torch":
            raise BadParameter(f"'{req.model}' runs on its engine, not on {req.backend}: leave backend unset")
        return engine.load_engine_model(req.model)
    if req.backend == "torch":
        return load_text_model(_model_ref(req))
    if req.adapter or ":" in str(req.model or ""):
        raise BadParameter(f"LoRA adapters ({_model_ref(req)}) run on the torch backend; the ONNX graphs are of "
                           f"the base model: pick model {BASE_NAME} for {req.backend}")
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
    """Model names a copy request can take, for pickers: the default first (`default_copy_model`),
    then the base, installed models, text models in the store, every LoRA adapter as BASE:NAME, and
    the models of the engine (`engine/ID`) when one is set."""
    names = [default_copy_model(), BASE_NAME] + [name for name in INSTALLABLE if installed(name)]
    for m in list_models():
        if m.family == "text":
            base = BASE_NAME if m.name == BASE_NAME else m.ref
            names += ([] if base == BASE_NAME else [base]) + [f"{base}:{a}" for a in m.adapters]
    return list(dict.fromkeys(names + engine.list_engine_models()))


def check_request(req: CopyRequest) -> None:
    """Refuse a bad request before any model loads: its own fields, and a brief on the blocklist."""
    req.validate()
    check_brief(req.brief, load_blocklist())


def check_backend_available(req: CopyRequest) -> None:
    """Refuse now, not mid-stream, an ONNX backend the model was never exported to (loads the graph)."""
    if req.backend != "torch":
        _load(req)


# ---- token counts (the API's `usage` and `finish_reason`) ------------------------------------

def _tokenizer(model: str | None):
    """A copy model's tokenizer (the torch model's, whatever the backend). An engine's tokenizer is
    not ours to load: its counts are estimates under the shipped base's tokenizer."""
    if is_engine_ref(model):
        return tokenizer_only(str(resolve_text_model(None)))
    return load_text_model(model).tokenizer


def count_tokens(model: str | None, text: str) -> int:
    """Tokens of `text` under a copy model's tokenizer (estimated for an engine's model)."""
    return len(_tokenizer(model)(text, add_special_tokens=False)["input_ids"])


def prompt_tokens(req: CopyRequest) -> int:
    """Tokens of the prompt a request's brief becomes."""
    tok = _tokenizer(req.model)
    return count_tokens(req.model, prompts.build_prompt(tok, req.brief, req.kind, req.tone, req.audience, req.lang))


def hit_token_cap(req: CopyRequest, text: str) -> bool:
    """Whether a variant was most likely cut by `max_new_tokens`. The variants are cleaned text,
    so this is an estimate: one within a token of the cap counts as cut."""
    return count_tokens(req.model, text) >= req.max_new_tokens - 1


def _sampling(req: CopyRequest) -> Sampling:
    return Sampling(_token_budget(req), req.temperature, req.top_p, req.top_k, req.repetition_penalty)


def _token_budget(req: CopyRequest) -> int:
    """`max_new_tokens`; in deliberate mode a word-limited kind's drafts stop at 3 tokens a word plus
    4 (an English word averages under 1.5), past which no draft fits the length check: one rambling
    draft no longer holds up the batch."""
    spec = checks.length_spec(req.kind)
    if req.deliberate and spec.unit == "words":
        # Korean: a word's worth of characters (3) takes about as many tokens as an English word.
        return min(req.max_new_tokens, DRAFT_TOKENS_PER_WORD * spec.hi + 4)
    return req.max_new_tokens


def _row(tm: TextModel | EngineModel, req: CopyRequest, seed: int) -> Row:
    if isinstance(tm, EngineModel):   # the engine applies its own chat template to the messages
        prompt = json.dumps(prompts.build_messages(req.brief, req.kind, req.tone, req.audience, req.lang))
    else:
        prompt = prompts.build_prompt(tm.tokenizer, req.brief, req.kind, req.tone, req.audience, req.lang)
    return Row(prompt, seed, tuple(req.stop), prompts.kind_spec(req.kind).single_line)


def _generate(tm: TextModel | EngineModel, rows: list[Row], sampling: Sampling,
              cancel: threading.Event | None = None) -> list[RawText]:
    if isinstance(tm, EngineModel):
        return engine.generate_rows(tm, rows, sampling, cancel)
    return generate_rows(tm, rows, sampling, cancel=cancel)


def _stream(tm: TextModel | EngineModel, rows: list[Row], sampling: Sampling,
            cancel: threading.Event | None) -> Iterator[tuple]:
    if isinstance(tm, EngineModel):
        return engine.stream_rows(tm, rows, sampling, cancel)
    return stream_rows(tm, rows, sampling, cancel)


def _settings(req: CopyRequest, tm: TextModel | EngineModel, seed: int) -> dict:
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


def _verdicts(cs: list[checks.Check]) -> list[dict]:
    return [{"name": c.name, "passed": c.passed, "hard": c.hard or c.name == "on_brief", "detail": c.detail}
            for c in cs]


def pick(req: CopyRequest, drafts: list[tuple[RawText, int]], blocklist: Blocklist, settings: dict) -> CopyResult:
    """Deliberate mode's last step: the n best distinct drafts that pass every check, best first.

    Drafts are cleaned, and empty, repeated and blocked ones set aside, as are one-line drafts cut
    by the token budget (a headline cut mid-phrase is not usable as written); the rest are checked and
    ranked by `checks.score` (usable ones first, then the mean check score; the lower seed breaks a
    tie). Walking down that ranking, a draft is picked when it is usable and not a near-duplicate of
    one picked before it. Fewer than n picks is said in `notes`, with the checks that failed most.
    """
    single_line = prompts.kind_spec(req.kind).single_line
    seen: set[str] = set()
    set_aside: Counter = Counter()
    pool = []
    for raw, seed in drafts:
        text = clean(raw.text, single_line, raw.ended)
        reason = ("came out empty" if not text else "ran out of tokens" if single_line and not raw.ended
                  else "repeated another draft" if text.lower() in seen
                  else "hit the blocklist" if blocklist.hits(text) else "")
        if reason:
            set_aside[reason] += 1
            continue
        seen.add(text.lower())
        cs = checks.check_copy(text, req.brief, req.kind, req.lang)
        pool.append((checks.score(cs), seed, text, cs))
    pool.sort(key=lambda p: (-p[0], p[1]))
    picked: list[CopyVariant] = []
    missed: list[CopyVariant] = []
    failed: Counter = Counter()
    for _, seed, text, cs in pool:
        if len(picked) < req.n:
            cs = checks.check_copy(text, req.brief, req.kind, req.lang, [v.text for v in picked])
            if checks.usable(cs):
                picked.append(CopyVariant(text, seed, _verdicts(cs)))
                continue
        failed.update(v["name"] for v in _verdicts(cs) if v["hard"] and not v["passed"])
        missed.append(CopyVariant(text, seed, _verdicts(cs)))
    notes = []
    if len(picked) < req.n:
        why = ", ".join(f"{name} {count}" for name, count in failed.most_common(3))
        aside = ", ".join(f"{count} {reason}" for reason, count in set_aside.items())
        notes.append(f"{len(picked)} of {req.n} variants passed the checks among {len(drafts)} drafts"
                     + (f" (failed checks: {why})" if why else "") + (f"; {aside}" if aside else "")
                     + ": see 'rejected' in --json for the closest misses, or raise --draft")
    return CopyResult(picked, settings, notes, missed[:req.n])


def _draft_rows(tm: TextModel | EngineModel, req: CopyRequest, seed: int) -> list[Row]:
    return [_row(tm, req, seed + j) for j in range(req.drafts)]


def _generate_chunked(tm: TextModel | EngineModel, rows: list[Row], sampling: Sampling,
                      cancel: threading.Event | None = None) -> list[RawText]:
    out: list[RawText] = []
    for start in range(0, len(rows), ROWS_PER_CALL):
        out += _generate(tm, rows[start:start + ROWS_PER_CALL], sampling, cancel)
    return out


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
    for (_, _, sampling), group in groups.items():
        tm = prepared[group[0]][0]
        deliberate = [k for k in group if reqs[k].deliberate]
        if deliberate:  # every brief's drafts in as few generate calls as possible
            rows = [(k, row) for k in deliberate for row in _draft_rows(tm, reqs[k], prepared[k][1])]
            raws = _generate_chunked(tm, [row for _, row in rows], sampling)
            for k in deliberate:
                drafts = [(raw, row.seed) for (owner, row), raw in zip(rows, raws) if owner == k]
                results[k] = pick(reqs[k], drafts, prepared[k][2], _settings(reqs[k], tm, prepared[k][1]))
        members = [k for k in group if not reqs[k].deliberate]
        collectors = {k: _Collector(reqs[k], prepared[k][2]) for k in members}
        for attempt in range(MAX_ATTEMPTS):
            todo = [(k, i, _redraw_seed(prepared[k][1], reqs[k].n, attempt, i))
                    for k in members for i in (range(reqs[k].n) if attempt == 0 else collectors[k].missing())]
            if not todo:
                break
            raws = _generate(tm, [_row(tm, reqs[k], seed) for k, _, seed in todo], sampling)
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
    if req.deliberate:
        yield from _stream_deliberate(req, tm, seed, blocklist, cancel)
        return
    single_line = prompts.kind_spec(req.kind).single_line
    collector = _Collector(req, blocklist)
    shown = [""] * req.n
    final = [False] * req.n
    raws: list[RawText] = []
    for item in _stream(tm, [_row(tm, req, seed + i) for i in range(req.n)], sampling, cancel):
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
        redraws = _generate(tm, [_row(tm, req, _redraw_seed(seed, req.n, attempt, i)) for i in todo], sampling,
                            cancel)
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


def _stream_deliberate(req: CopyRequest, tm: TextModel | EngineModel, seed: int, blocklist: Blocklist,
                       cancel: threading.Event | None) -> Iterator[CopyEvent]:
    """Deliberate mode as events: nothing can be shown before the drafts are checked, so each picked
    variant arrives whole, as one final delta; an unfilled slot is dropped."""
    raws = _generate_chunked(tm, _draft_rows(tm, req, seed), _sampling(req), cancel)
    if cancel is not None and cancel.is_set():
        return
    result = pick(req, [(raw, seed + j) for j, raw in enumerate(raws)], blocklist, _settings(req, tm, seed))
    for i in range(req.n):
        if i < len(result.variants):
            yield CopyEvent("delta", i, result.variants[i].text, final=True)
        else:
            yield CopyEvent("drop", i, final=True)
    yield CopyEvent("done", result=result)
