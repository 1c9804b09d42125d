"""Seeded, batched, streamable generation and the cleaning of raw model text into copy.

Every row of a batch carries its own seed: a logits processor applies the warpers (temperature,
top-k, top-p) and draws the next token from that row's own `torch.Generator`, then hands
`generate` a one-hot score, so the greedy step picks exactly the drawn token. The global torch RNG
is never touched, and a row's tokens depend on its prompt, seed and settings rather than on the
order in which rows were sampled. Many prompts run as one left-padded `generate` call, with the KV
cache on, under `torch.inference_mode`; rows that share one prompt (the variants or drafts of a
brief) run it once and copy its cache. Streaming observes that same call through a batch-aware
`TextIteratorStreamer`, so streamed and non-streamed text for one seed are the same tokens.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from queue import Queue
from typing import Any, Iterator

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers import TextIteratorStreamer

from brushpen.text.base import TextModel

# One generate at a time per process: the CPU is the bottleneck, and overlapping calls only thrash it.
_GENERATE_LOCK = threading.Lock()
TEMPLATE_TOKENS = re.compile(r"<\|[a-z_]+\|>|</?s>|\[/?INST\]")
LABEL = re.compile(r"^(?:\*\*)?(?:subject(?: line)?|headline|tagline|description|post|social media post|ad"
                   r"|advertisement|answer|copy|제목|헤드라인|태그라인|설명|게시물|광고)\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*",
                   re.IGNORECASE)
QUOTES = "\"'“”‘’*"
SENTENCE_END = re.compile(r"[.!?…](?:[\"')\]”’]*)(?=\s|$)")


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 80
    temperature: float = 0.8   # 0 = greedy
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.15


@dataclass(frozen=True)
class Row:
    """One sequence to generate: its full prompt, its seed and the strings that end it."""

    prompt: str
    seed: int
    stops: tuple[str, ...] = ()
    single_line: bool = False


@dataclass
class RawText:
    text: str        # decoded new tokens, special tokens removed
    ended: bool      # reached EOS or a stop string (False: ran into max_new_tokens)


class SeededSampler(LogitsProcessor):
    """Draw each row's next token from its own generator; return scores that make greedy pick it."""

    def __init__(self, seeds: list[int], s: Sampling):
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        self.temperature = s.temperature
        self.top_k = s.top_k if s.top_k and s.top_k > 0 else None
        self.top_p = s.top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.temperature == 0:
            return scores  # greedy: leave the scores to argmax
        scaled = scores.float() / self.temperature
        # Top-k first, then top-p among those k only: sorting 50 candidates, not the 49k vocabulary.
        k = min(self.top_k or scaled.shape[1], scaled.shape[1])
        vals, idx = scaled.topk(k, dim=-1)  # sorted, highest first
        probs = torch.softmax(vals, dim=-1)
        if self.top_p < 1.0:
            # Keep the smallest head whose mass reaches top_p (the first token always stays).
            keep = (probs.cumsum(dim=-1) - probs) < self.top_p
            probs = probs * keep
        cdf = probs.cumsum(dim=-1)
        u = torch.stack([torch.rand((), generator=g) for g in self.generators]).unsqueeze(1)
        # side="right" skips zero-probability tokens: their cdf step is flat.
        pos = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=k - 1)
        picked = idx.gather(1, pos)
        onehot = torch.full_like(scores, float("-inf"))
        return onehot.scatter_(1, picked, 0.0)


class StopOnStrings(StoppingCriteria):
    """Per-row stop: any of the row's stop strings, or a newline after text for single-line copy."""

    def __init__(self, tokenizer: Any, rows: list[Row], prompt_len: int):
        self.tokenizer, self.rows, self.prompt_len = tokenizer, rows, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        for i, row in enumerate(self.rows):
            text = self.tokenizer.decode(input_ids[i, self.prompt_len:], skip_special_tokens=True)
            done[i] = stop_index(text, row) is not None
        return done


class StopOnCancel(StoppingCriteria):
    """Every row stops at the next decode step once `cancel` is set (a streaming client went away)."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.cancel.is_set(), dtype=torch.bool)


def stop_index(text: str, row: Row) -> int | None:
    """Where the copy in `text` ends because of a stop string or newline, or None if it has not."""
    hits = [text.find(s) for s in row.stops if s and s in text]
    if row.single_line:
        body = text.lstrip()
        nl = body.find("\n")
        if nl >= 0 and LABEL.sub("", body[:nl]).strip():  # a label alone on a line does not end it
            hits.append(len(text) - len(body) + nl)
    return min(hits) if hits else None


class BatchStreamer(TextIteratorStreamer):
    """A TextIteratorStreamer for a whole batch: queues (row, text so far, ended) after every step.

    A row ends at EOS or at one of its stops, and its text is then cut exactly as `generate_rows`
    cuts it; `generate` only pads a finished row, so it is neither decoded nor queued again.
    """

    def __init__(self, tokenizer: Any, rows: list[Row], timeout: float | None = 600.0):
        super().__init__(tokenizer, skip_prompt=True, timeout=timeout)
        self.rows = rows
        self.tokens: list[list[int]] = [[] for _ in rows]
        self.ended = [False] * len(rows)

    def put(self, value: torch.Tensor) -> None:
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        eos = self.tokenizer.eos_token_id
        for i, ids in enumerate(value.reshape(len(self.rows), -1).tolist()):
            if self.ended[i]:
                continue
            if eos is not None and eos in ids:
                ids, self.ended[i] = ids[:ids.index(eos)], True
            self.tokens[i].extend(ids)
            text = self.tokenizer.decode(self.tokens[i], skip_special_tokens=True)
            cut = stop_index(text, self.rows[i])
            if cut is not None:
                text, self.ended[i] = text[:cut], True
            self.text_queue.put((i, text, self.ended[i]), timeout=self.timeout)

    def end(self) -> None:
        self.next_tokens_are_prompt = True
        self.text_queue.put(self.stop_signal, timeout=self.timeout)


def generate_rows(tm: TextModel, rows: list[Row], s: Sampling, streamer: BatchStreamer | None = None,
                  cancel: threading.Event | None = None) -> list[RawText]:
    """All rows in one left-padded generate call; the raw text of each, cut at its stop. Setting
    `cancel` ends the call at the next decode step (the texts so far come back)."""
    tok, model = tm.tokenizer, tm.model
    enc = tok([r.prompt for r in rows], return_tensors="pt", padding=True, add_special_tokens=False)
    enc, max_new_tokens = fit_context(enc, s.max_new_tokens, getattr(model.config, "max_position_embeddings", None))
    prompt_len = enc["input_ids"].shape[1]
    eos = tok.eos_token_id
    with _GENERATE_LOCK, torch.inference_mode():
        shared = _shared_prompt_cache(model, rows, enc)
        out = model.generate(
            **enc, **shared, do_sample=False, max_new_tokens=max_new_tokens, use_cache=True,
            repetition_penalty=s.repetition_penalty if s.repetition_penalty != 1.0 else None,
            logits_processor=LogitsProcessorList([SeededSampler([r.seed for r in rows], s)]),
            stopping_criteria=StoppingCriteriaList([StopOnStrings(tok, rows, prompt_len)]
                                                   + ([StopOnCancel(cancel)] if cancel is not None else [])),
            pad_token_id=tok.pad_token_id, eos_token_id=eos, streamer=streamer,
            temperature=None, top_p=None, top_k=None)
    results = []
    for i, row in enumerate(rows):
        new = out[i, prompt_len:].tolist()
        hit_eos = eos is not None and eos in new
        if hit_eos:
            new = new[:new.index(eos)]
        text = tok.decode(new, skip_special_tokens=True)
        cut = stop_index(text, row)
        results.append(RawText(text[:cut] if cut is not None else text, hit_eos or cut is not None))
    return results


def _shared_prompt_cache(model: Any, rows: list[Row], enc: dict) -> dict:
    """When every row has the same prompt (the drafts or variants of one brief), run the prompt once
    and hand `generate` its KV cache copied for every row, so only the last prompt token runs per
    row: prefill is most of a draft batch's time. Torch models only (the ONNX runtime keeps its own
    cache); `{}` otherwise."""
    from transformers import DynamicCache, PreTrainedModel

    ids = enc["input_ids"]
    if len(rows) < 2 or ids.shape[1] < 2 or not isinstance(model, PreTrainedModel) \
            or any(r.prompt != rows[0].prompt for r in rows):
        return {}
    cache = DynamicCache()
    model(input_ids=ids[:1, :-1], attention_mask=enc["attention_mask"][:1, :-1], cache=cache, use_cache=True)
    cache.batch_repeat_interleave(len(rows))
    return {"cache": cache}


def fit_context(enc: dict, max_new_tokens: int, limit: int | None) -> tuple[dict, int]:
    """Left-padded prompts and a token budget that fit in `limit` positions together.

    Past its trained positions a small model (a 128-token LM pretrained here) produces noise. When
    prompt and budget overflow the window, the prompt keeps up to half of it, or more if the budget
    leaves room, cut from the left (prompts put the brief last); the new-token budget is the rest
    of the window. Models with long windows, such as the 8k SmolLM2 base, are never touched.
    """
    prompt_len = enc["input_ids"].shape[1]
    if not limit or prompt_len + max_new_tokens <= limit:
        return enc, max_new_tokens
    keep = max(limit - max_new_tokens, min(prompt_len, limit // 2))
    return {k: v[:, -keep:] for k, v in enc.items()}, min(max_new_tokens, limit - keep)


def clean(raw: str, single_line: bool, ended: bool = True) -> str:
    """Copy from raw model text: no template tokens, labels or wrapping quotes; ends at a natural end.

    With `ended=False` (still streaming, or cut by max_new_tokens) multi-line copy is trimmed back to
    its last full sentence when it has one, and a trailing run of quote marks is held back.
    """
    text = TEMPLATE_TOKENS.sub("", raw).replace("\r", "")
    text = text.lstrip()
    if text.lower().startswith("assistant\n"):
        text = text[len("assistant\n"):]
    text = LABEL.sub("", text, count=1)
    if single_line:
        text = text.split("\n", 1)[0]
    quoted = text[:1] in QUOTES and text[:1] != ""
    text = text.lstrip(QUOTES + " ")
    if not ended and not single_line:
        ends = list(SENTENCE_END.finditer(text))
        if ends:
            text = text[:ends[-1].end()]
    text = text.rstrip()
    if quoted or not ended:
        text = text.rstrip(QUOTES + " ")
    elif text.endswith(("**",)):
        text = text.rstrip("* ")
    return re.sub(r"[ \t]+", " ", text).strip()


def stream_rows(tm: TextModel, rows: list[Row], s: Sampling, cancel: threading.Event | None = None) -> Iterator[tuple]:
    """Run `generate_rows` in a thread; yield (row, raw text so far, ended) as tokens arrive, then the results.

    Once a row has ended (EOS or a stop), its text is the text of its final `RawText`. The last item
    yielded is (-1, list[RawText]), the very value `generate_rows` returned. Closing this iterator
    early (or setting `cancel`) stops the generation at its next decode step, and the close waits
    for the generating thread to end, so no work outlives its consumer.
    """
    streamer = BatchStreamer(tm.tokenizer, rows)
    box: dict[str, Any] = {}
    cancel = cancel if cancel is not None else threading.Event()

    def work() -> None:
        try:
            box["result"] = generate_rows(tm, rows, s, streamer, cancel)
        except BaseException as e:  # surfaced in the caller's thread below
            box["error"] = e
            streamer.end()

    thread = threading.Thread(target=work, name="brushpen-copy-stream", daemon=True)
    thread.start()
    queue: Queue = streamer.text_queue
    try:
        while True:
            item = queue.get(timeout=streamer.timeout)
            if item is streamer.stop_signal:
                break
            yield item
    except GeneratorExit:  # the consumer left: stop generating, and end only once the thread has
        cancel.set()
        thread.join()
        raise
    thread.join()
    if "error" in box:
        raise box["error"]
    yield -1, box["result"]
