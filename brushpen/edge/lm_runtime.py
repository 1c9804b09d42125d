"""The copywriter LM under onnxruntime: a decoder loop with the same `generate` call as transformers.

`OrtCausalLM` runs an exported graph (`edge/model.onnx` or `model.int8.onnx`, see `edge.lm`) and
offers the subset of `PreTrainedModel.generate` that `text.sampling.generate_rows` uses: left-padded
batches, the KV cache, logits processors, stopping criteria, EOS/pad handling and a streamer. It
follows transformers' greedy loop step by step (processors on the fp32 scores of the last position,
argmax, finished rows padded, the mask grown by one, positions from the mask's running sum), so the
seeded sampler and the repetition penalty of the torch path run unchanged on torch tensors built
from onnxruntime's logits: the same seed and settings give the same tokens up to numerical ties.

`load_ort_text_model` gives a `TextModel` whose `model` is an `OrtCausalLM`; the copy service swaps
it in for the `onnx` and `onnx-int8` backends.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from brushpen.adapters import split_ref
from brushpen.edge.common import VARIANT_FILES, available_backends, check_backend, find_edge_dir, load_session
from brushpen.errors import BadParameter, BrokenModel
from brushpen.text.base import BASE_ALIASES, BASE_NAME, TextModel, resolve_text_model


class OrtCausalLM:
    """An exported LM graph with a `generate` compatible with the calls the copy path makes."""

    def __init__(self, onnx_path: Path, threads: int | None = None):
        self.path = Path(onnx_path)
        self.session, self.info = load_session(self.path, threads=threads or torch.get_num_threads())
        extra = self.info.extra
        try:
            self.num_layers, self.num_kv_heads = int(extra["num_layers"]), int(extra["num_kv_heads"])
            self.head_dim, self.vocab_size = int(extra["head_dim"]), int(extra["vocab_size"])
        except (KeyError, TypeError, ValueError) as e:
            raise BrokenModel(f"{self.path.with_suffix('.json').name} lacks the LM shape ({e}): "
                              "re-run `brushpen export`") from None
        if len(self.info.inputs) != 4 + 2 * self.num_layers:
            raise BrokenModel(f"{self.path.name}: its description lists {len(self.info.inputs)} inputs for "
                              f"{self.num_layers} layers: re-run `brushpen export`")
        self.config = SimpleNamespace(max_position_embeddings=extra.get("max_positions"))
        self.past_names = [t.name for t in self.info.inputs[4:]]
        # One onnxruntime run at a time per graph: the CPU is the bottleneck, as on the torch path.
        self.lock = threading.Lock()

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.num_kv_heads, 0, self.head_dim), np.float32) for _ in self.past_names]

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: list[np.ndarray], num_logits: int = 1) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits of the last `num_logits` positions (batch, num_logits, vocab) and the grown cache."""
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64),
                "position_ids": position_ids.astype(np.int64), "num_logits": np.array([num_logits], np.int64)}
        feed.update(zip(self.past_names, past))
        with self.lock:
            out = self.session.run(None, feed)
        return out[0], out[1:]

    def shared_prefill(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray,
                       batch: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Prefill of a batch whose rows are one prompt (a brief's drafts): run it once, copy the result
        to every row. The int8 kernels quantize each row on its own, so a row's numbers are the same."""
        logits, past = self.forward(ids[:1], mask[:1], pos[:1], self.empty_past(1))
        return np.repeat(logits, batch, axis=0), [np.repeat(p, batch, axis=0) for p in past]

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at every position of a (left-padded) batch in one call, as `model(ids).logits` gives."""
        ids = input_ids.numpy()
        mask = np.ones_like(ids) if attention_mask is None else attention_mask.numpy()
        out, _ = self.forward(ids, mask, positions(mask), self.empty_past(ids.shape[0]), ids.shape[1])
        return torch.from_numpy(out)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                 max_new_tokens: int = 20, repetition_penalty: float | None = None,
                 logits_processor: Any = None, stopping_criteria: Any = None, pad_token_id: int | None = None,
                 eos_token_id: int | None = None, streamer: Any = None, do_sample: bool = False,
                 **ignored: Any) -> torch.Tensor:
        """Greedy decoding after the processors, as transformers' `generate(do_sample=False)` does."""
        from transformers import RepetitionPenaltyLogitsProcessor

        if do_sample:
            raise ValueError("OrtCausalLM draws through logits processors (SeededSampler), not do_sample")
        for key, value in ignored.items():  # only transformers' "off" values are accepted silently
            if value not in (None, True) or key not in ("use_cache", "temperature", "top_p", "top_k"):
                raise TypeError(f"OrtCausalLM.generate does not take {key}={value!r}")
        processors = ([RepetitionPenaltyLogitsProcessor(repetition_penalty)] if repetition_penalty else []) \
            + list(logits_processor or [])
        ids = input_ids.clone()
        mask = (torch.ones_like(ids) if attention_mask is None else attention_mask.clone()).long()
        batch = ids.shape[0]
        unfinished = torch.ones(batch, dtype=torch.bool)
        if streamer is not None:
            streamer.put(ids)
        # Prefill: the whole prompt against an empty cache; after that one token per step.
        step_ids, step_pos = ids.numpy(), positions(mask.numpy())
        past = self.empty_past(batch)
        for step in range(max_new_tokens):
            if step == 0 and batch > 1 and bool((ids == ids[:1]).all()) and bool((mask == mask[:1]).all()):
                logits, past = self.shared_prefill(step_ids, mask.numpy(), step_pos, batch)
            else:
                logits, past = self.forward(step_ids, mask.numpy(), step_pos, past)
            scores = torch.from_numpy(logits[:, -1, :]).float()
            for proc in processors:
                scores = proc(ids, scores)
            tokens = scores.argmax(dim=-1)
            if eos_token_id is not None and pad_token_id is not None:
                tokens = torch.where(unfinished, tokens, torch.tensor(pad_token_id))
            ids = torch.cat([ids, tokens[:, None]], dim=-1)
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype)], dim=-1)
            if streamer is not None:
                streamer.put(tokens)
            if eos_token_id is not None:
                unfinished &= tokens != eos_token_id
            for crit in stopping_criteria or []:
                unfinished &= ~crit(ids, scores)
            if not unfinished.any():
                break
            step_ids = tokens[:, None].numpy()
            step_pos = mask.sum(-1, keepdim=True).numpy() - 1
        if streamer is not None:
            streamer.end()
        return ids


def positions(mask: np.ndarray) -> np.ndarray:
    """Position ids of a left-padded batch: count only real tokens (padding gets 1, as transformers)."""
    pos = np.cumsum(mask, axis=-1) - 1
    return np.where(mask == 0, 1, pos).astype(np.int64)


def greedy_tokens(model: Any, tokenizer: Any, prompts: list[str], new_tokens: int) -> list[list[int]]:
    """`new_tokens` greedy tokens per prompt (EOS suppressed, so every row runs the full length), as one
    left-padded batch through `model.generate`: a Hugging Face model and an `OrtCausalLM` alike."""
    from transformers import LogitsProcessor

    eos = tokenizer.eos_token_id

    class NoEOS(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, eos] = float("-inf")
            return scores

    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=new_tokens, logits_processor=[NoEOS()],
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, use_cache=True,
                             temperature=None, top_p=None, top_k=None)
    return out[:, enc["input_ids"].shape[1]:].tolist()


def variant_path(model_dir: Path, backend: str) -> Path:
    """The graph file of an ONNX backend of this model; a clear error when it was never exported."""
    if backend == "student":
        raise BadParameter("the copywriter LM has no student backend: use torch, onnx or onnx-int8")
    check_backend(backend, available_backends(model_dir))
    return find_edge_dir(model_dir) / VARIANT_FILES[backend]


def load_ort_text_model(name: str | os.PathLike | None, backend: str) -> TextModel:
    """The text model `name` with an onnxruntime graph in place of the torch model (tokenizer unchanged)."""
    if name is not None and not Path(name).expanduser().is_dir() and split_ref(str(name))[1] is not None:
        raise BadParameter(f"'{name}' names a LoRA adapter, and the ONNX graphs are exported from base models "
                           f"only: use backend 'torch' with an adapter")
    folder = resolve_text_model(name).resolve()
    path = variant_path(folder, backend)
    label = BASE_NAME if name is None or str(name) in BASE_ALIASES else str(name)
    return TextModel(label, folder, _session(str(path), path.stat().st_mtime_ns, torch.get_num_threads()),
                     tokenizer_only(str(folder)))


@lru_cache(maxsize=4)
def tokenizer_only(folder: str) -> Any:
    """The model's tokenizer alone, set up as `text.base` sets it: the torch weights stay on disk, so
    an onnx backend costs the graph's memory only."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


@lru_cache(maxsize=4)
def _session(path: str, mtime_ns: int, threads: int) -> OrtCausalLM:
    # Keyed on mtime too, so a re-export is picked up without a restart.
    return OrtCausalLM(Path(path), threads=threads)
