"""Copy examples for LoRA fine-tuning: reading and checking the JSONL, rendering it in the serving
format, and the held-out copy-token loss.

A line is `{"brief", "kind", "copy"}` (optionally `tone`, `audience`) or `{"text"}`. A copy example is
rendered as the copy service renders a request (`prompts.build_prompt`, the model's chat template)
followed by the copy and the end-of-turn token; only the copy and that end token carry loss, so the
model learns what to answer, and to stop, not to predict the prompt. A `text` example is plain text
with loss on every token.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brushpen.errors import BadInput, BadParameter
from brushpen.text import prompts

MAX_FIELD_CHARS = 2000


@dataclass(frozen=True)
class Example:
    copy: str                       # the answer (or the whole text of a `text` example)
    brief: str | None = None        # None: a plain `text` example
    kind: str = "tagline"
    tone: str | None = None
    audience: str | None = None


def parse_line(line: str, where: str) -> Example:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadInput(f"{where}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise BadInput(f"{where}: nested too deeply to read") from None
    if not isinstance(row, dict):
        raise BadInput(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "text" in row and "copy" not in row:
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise BadInput(f"{where}: 'text' must be a non-empty string")
        return Example(copy=row["text"].strip())
    for key in ("brief", "copy"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise BadInput(f"{where}: expected non-empty string fields 'brief' and 'copy' (or one 'text'); "
                           f"'{key}' is {'missing' if key not in row else 'empty or not a string'}")
        if len(row[key]) > MAX_FIELD_CHARS:
            raise BadInput(f"{where}: '{key}' is longer than {MAX_FIELD_CHARS} characters")
    kind = row.get("kind", "tagline")
    try:
        prompts.kind_spec(kind)
    except BadParameter as e:
        raise BadInput(f"{where}: {e}") from None
    return Example(row["copy"].strip(), row["brief"].strip(), kind, row.get("tone"), row.get("audience"))


def read_examples(path: Path) -> list[Example]:
    """Every example of a JSONL file; a bad line is reported with its number."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"training data {path} does not exist")
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    out.append(parse_line(line, f"{path.name} line {number}"))
    except UnicodeDecodeError as e:
        raise BadInput(f"{path} is not UTF-8 text: {e}") from None
    if len(out) < 2:
        raise BadInput(f"{path} holds {len(out)} example(s); fine-tuning needs at least 2")
    return out


def split_heldout(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    if not 0 < fraction < 1:
        raise BadParameter(f"heldout_fraction must lie in (0, 1), got {fraction}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n = max(1, round(len(examples) * fraction))
    held = set(order[:n])
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def encode(tokenizer: Any, ex: Example, max_len: int = 256) -> tuple[list[int], list[int]]:
    """(input ids, labels) with -100 on every token that carries no loss; the prompt is cut from the
    left if the whole would pass `max_len`."""
    eos = tokenizer.eos_token or ""
    answer = tokenizer(ex.copy + eos, add_special_tokens=False)["input_ids"]
    if ex.brief is None:
        ids = answer[:max_len]
        return ids, list(ids)
    prompt = prompts.build_prompt(tokenizer, ex.brief, ex.kind, ex.tone, ex.audience)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer = answer[:max_len // 2]
    prompt_ids = prompt_ids[-(max_len - len(answer)):]
    return prompt_ids + answer, [-100] * len(prompt_ids) + answer


def copy_token_nll(model: Any, encoded: list[tuple[list[int], list[int]]], batch_size: int = 8) -> dict:
    """Mean loss (nats per copy token) and perplexity of the tokens that carry labels."""
    import torch

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            ids, mask, positions, labels = _collate(encoded[start:start + batch_size], pad=0)
            total += labelled_loss(model, ids, mask, positions, labels, reduction="sum").item()
            count += int((labels[:, 1:] != -100).sum())
    model.train(was_training)
    loss = total / max(1, count)
    return {"heldout_loss": loss, "perplexity": math.exp(loss), "tokens": count}


def _collate(batch: list[tuple[list[int], list[int]]], pad: int) -> tuple[Any, Any, Any, Any]:
    """Left-pad (ids, labels) pairs; padding is masked out and carries no loss.

    Left padding puts every row's answer at the end, so only the last few positions need the
    49k-way output layer (`logits_to_keep`): that layer is a fifth of the model's FLOPs per token,
    and the prompt's positions carry no loss. Position ids count from each row's first real token,
    as generation does.
    """
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (x, y) in enumerate(batch):
        ids[row, width - len(x):], labels[row, width - len(y):], mask[row, width - len(x):] = \
            torch.tensor(x), torch.tensor(y), 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions, labels


def labelled_loss(model: Any, ids: Any, mask: Any, positions: Any, labels: Any, reduction: str = "mean") -> Any:
    """Cross-entropy of the labelled tokens, computing logits only from the first labelled position on."""
    import torch.nn.functional as F

    labelled = (labels != -100).any(0).nonzero()
    # The first token has no prediction, so a fully labelled row starts its loss at position 1.
    keep = ids.shape[1] - max(1, int(labelled[0])) + 1 if len(labelled) else 2
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep,
                   use_cache=False).logits[:, :-1].float()
    target = labels[:, ids.shape[1] - keep + 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                           reduction=reduction)
