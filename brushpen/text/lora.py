"""Brand-voice LoRA for the copywriter: train a peft adapter on brief -> copy examples.

`finetune(TextFinetuneRequest)` puts peft LoRA on every attention and MLP projection (q, k, v, o,
gate, up, down) of a causal LM and trains only those low-rank updates with accelerate. Each copy
example is rendered with the same chat template the copy service uses (`brushpen.text.prompts`), and
the loss counts only the answer's tokens, so the adapter learns the serving format. A held-out split
gives the copy-token loss and perplexity before, during and after training. Training resumes from a
checkpoint of safetensors + JSON (`brushpen.checkpoint`). The adapter is saved with peft's
`save_pretrained` under the base's store folder, `weights/text/<base>/adapters/NAME/`, with
`adapter.json` (tying it to the base's weight hash), `card.md` and `metrics.json`. Serving an
adapter (`load_adapted`) is loading a model, so it lives in `brushpen.text.base`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from brushpen.adapters import AdapterInfo, FinetuneEvent, FinetuneResult, check_name, write_info
from brushpen.config import apply_threads, get_settings
from brushpen.errors import BadParameter
from brushpen.finetune_loop import run_steps
from brushpen.store import atomic_write_json, atomic_write_text, publish_dir, staging_dir
from brushpen.text.base import (ADAPTER_WEIGHTS, BASE_NAME, _load_folder, adapters_home, base_sha256, is_base_alias,
                                resolve_text_model)
from brushpen.text.lora_data import _collate, copy_token_nll, encode, labelled_loss, read_examples, split_heldout

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TextLoraConfig:
    rank: int = 8
    alpha: float | None = None      # None: 2 x rank, a common default that keeps alpha/rank fixed
    dropout: float = 0.05
    targets: tuple[str, ...] = TARGETS

    def peft(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha or 2 * self.rank, lora_dropout=self.dropout,
                          target_modules=list(self.targets), task_type="CAUSAL_LM")


@dataclass
class TextFinetuneRequest:
    base: str = BASE_NAME
    data: Path | str = ""            # JSONL of {"brief","kind","copy"} (optional tone, audience) or {"text"}
    out: str = ""                    # the adapter's name
    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.05
    epochs: float = 3.0
    lr: float = 2e-4
    batch_size: int = 8
    max_steps: int | None = None     # caps epochs x steps-per-epoch
    warmup: int = 10
    heldout: Path | str | None = None   # a held-out JSONL; None: hold out `heldout_fraction` of `data`
    heldout_fraction: float = 0.1
    eval_every: int = 50
    seed: int = 0
    max_len: int = 256
    resume: bool = False
    threads: int | None = None
    command: str = ""                # the command line, for the card

    def validate(self) -> None:
        check_name(self.out)
        if not 1 <= self.rank <= 256:
            raise BadParameter(f"rank must lie in 1..256, got {self.rank}")
        if not 0 < self.epochs <= 100:
            raise BadParameter(f"epochs must lie in (0, 100], got {self.epochs}")
        if not 0 < self.lr < 1:
            raise BadParameter(f"lr must lie in (0, 1), got {self.lr}")
        if self.batch_size < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise BadParameter("batch_size and max_steps must be >= 1")
        if not 0 <= self.dropout < 1:
            raise BadParameter(f"dropout must lie in [0, 1), got {self.dropout}")


# ---- training ----------------------------------------------------------------------------------

def _lora_params(model: Any) -> Any:
    """The trainable LoRA tensors as one module, so the checkpoint saves them and not the 135 M base."""
    import torch

    return torch.nn.ParameterDict({n.replace(".", "__"): p for n, p in model.named_parameters() if p.requires_grad})


def work_dir(req: TextFinetuneRequest) -> Path:
    return get_settings().home / "finetune" / "text" / Path(str(req.base)).name / req.out


def _lr_at(req: TextFinetuneRequest, step: int, total: int) -> float:
    if step < req.warmup:
        return req.lr * (step + 1) / req.warmup
    frac = (step - req.warmup) / max(1, total - req.warmup)
    return req.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(frac, 1.0))))   # cosine down to lr/10


def _order(n: int, epoch: int, seed: int) -> list[int]:
    import random

    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def finetune(req: TextFinetuneRequest, progress: Callable[[FinetuneEvent], None] | None = None) -> FinetuneResult:
    """Train a LoRA adapter on `req.data` and save it under the base's `adapters/NAME/`."""
    import torch
    from accelerate import Accelerator
    from peft import get_peft_model

    req.validate()
    apply_threads(req.threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = resolve_text_model(None if is_base_alias(req.base) else req.base)
    home = adapters_home(req.base)
    examples = read_examples(Path(req.data))
    if req.heldout:
        train, heldout = examples, read_examples(Path(req.heldout))
    else:
        train, heldout = split_heldout(examples, req.heldout_fraction, req.seed)
    model, tokenizer = _load_folder.__wrapped__(str(folder.resolve()))
    train_enc = [encode(tokenizer, e, req.max_len) for e in train]
    held_enc = [encode(tokenizer, e, req.max_len) for e in heldout]

    torch.manual_seed(req.seed)   # LoRA's A matrices start random; B starts at zero
    lcfg = TextLoraConfig(req.rank, req.alpha, req.dropout)
    model = get_peft_model(model, lcfg.peft())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    steps_per_epoch = math.ceil(len(train_enc) / req.batch_size)
    total = max(1, math.ceil(req.epochs * steps_per_epoch))
    total = min(total, req.max_steps) if req.max_steps else total
    acc = Accelerator(cpu=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=req.lr, weight_decay=0.0)
    model, opt = acc.prepare(model, opt)

    lora_params = _lora_params(acc.unwrap_model(model))
    state: dict = {"train_seconds": 0.0, "history": []}
    losses: list[float] = []   # this checkpoint interval's; a resume starts at a checkpoint, where it is empty

    def emit(step: int, loss: float | None, message: str, **metrics: float) -> None:
        if progress is not None:
            progress(FinetuneEvent(step, total, loss, message, metrics))

    def measure_before(st: dict) -> None:
        before = copy_token_nll(acc.unwrap_model(model), held_enc, req.batch_size)
        st["history"].append({"step": 0, **before})
        emit(0, None, f"held-out loss before {before['heldout_loss']:.4f} (perplexity {before['perplexity']:.2f})",
             **before)

    def train_step(step: int) -> float:
        epoch, pos = divmod(step * req.batch_size, len(train_enc))
        order = _order(len(train_enc), epoch, req.seed)
        batch = [train_enc[i] for i in order[pos:pos + req.batch_size]]
        t0 = time.perf_counter()
        torch.manual_seed(req.seed * 1_000_003 + step)   # dropout masks, the same on a resumed run
        for group in opt.param_groups:
            group["lr"] = _lr_at(req, step, total)
        loss = labelled_loss(model, *_collate(batch, tokenizer.pad_token_id))
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["train_seconds"] += time.perf_counter() - t0
        losses.append(loss.item())
        return losses[-1]

    def evaluate(st: dict) -> None:
        model.eval()
        row = {"step": st["step"], "train_loss": sum(losses) / len(losses),
               **copy_token_nll(acc.unwrap_model(model), held_enc, req.batch_size)}
        model.train()
        st["history"].append(row)
        losses.clear()
        emit(st["step"], row["train_loss"], f"step {st['step']}: held-out loss {row['heldout_loss']:.4f} "
             f"(perplexity {row['perplexity']:.2f})", **{k: v for k, v in row.items() if k != "step"})

    model.train()
    run_steps(train_step, total=total, every=req.eval_every, ckpt_dir=work_dir(req) / "checkpoint",
              resume=req.resume, modules={"lora": lora_params}, optimizers={"lora": opt}, state=state,
              progress=progress, on_start=measure_before, on_checkpoint=evaluate,
              describe=lambda st, loss: f"step {st['step']}/{total} loss {loss:.4f} "
                                        f"{st['train_seconds'] / max(1, st['step']):.2f} s/step")

    info = AdapterInfo(base=f"text/{BASE_NAME}" if is_base_alias(req.base) else str(req.base),
                       base_sha256=base_sha256(folder), family="text", rank=req.rank,
                       trainable_params=trainable, targets=list(lcfg.targets), alpha=lcfg.alpha or 2 * req.rank,
                       extra={"dropout": req.dropout})
    metrics = _metrics(req, state, trainable, len(train_enc), len(held_enc), total)
    path = save_adapter(acc.unwrap_model(model), home, req.out, info, metrics, card(req, info, metrics))
    metrics["adapter_bytes"] = (path / ADAPTER_WEIGHTS).stat().st_size
    atomic_write_json(path / "metrics.json", metrics)
    base_name = BASE_NAME if is_base_alias(req.base) else str(req.base)
    return FinetuneResult(f"{base_name}:{req.out}", path, metrics)


def _metrics(req: TextFinetuneRequest, state: dict, trainable: int, n_train: int, n_held: int, total: int) -> dict:
    import torch

    first, last = state["history"][0], state["history"][-1]
    return {"heldout_loss": last["heldout_loss"], "perplexity": last["perplexity"],
            "heldout_loss_before": first["heldout_loss"], "perplexity_before": first["perplexity"],
            "heldout_tokens": last["tokens"], "steps": state["step"], "total_steps": total,
            "train_examples": n_train, "heldout_examples": n_held, "trainable_params": trainable,
            "rank": req.rank, "train_seconds": round(state["train_seconds"], 1),
            "s_per_step": round(state["train_seconds"] / max(1, state["step"]), 2),
            "threads": torch.get_num_threads(), "history": state["history"]}


def save_adapter(model: Any, home: Path, name: str, info: AdapterInfo, metrics: dict, card_text: str) -> Path:
    """peft's adapter_config.json + adapter_model.safetensors, adapter.json, metrics.json and card.md,
    written to a staging folder and swapped into place."""
    final = Path(home) / "adapters" / check_name(name)
    stage = staging_dir(final)
    model.save_pretrained(str(stage), safe_serialization=True)
    (stage / "README.md").unlink(missing_ok=True)   # peft's empty model-card template; card.md is ours
    os.chmod(stage / ADAPTER_WEIGHTS, 0o644)
    write_info(stage, info)
    atomic_write_json(stage / "metrics.json", metrics)
    atomic_write_text(stage / "card.md", card_text)
    return publish_dir(stage, final)


def card(req: TextFinetuneRequest, info: AdapterInfo, metrics: dict) -> str:
    data = Path(req.data)
    described = data.parent / "dataset.json"
    sources = json.loads(described.read_text(encoding="utf-8")).get("sources", {}) if described.is_file() else {}
    lines = [f"# {req.out}: a brand-voice LoRA adapter for {info.base}", "",
             f"A peft LoRA adapter (rank {info.rank}, alpha {info.alpha:g}) on {', '.join(info.targets)}. "
             f"Use it with `brushpen copy --adapter {req.out}` or the API model `{BASE_NAME if is_base_alias(req.base) else req.base}:{req.out}`.",
             "", "## Data", f"- `{data.name}`: {metrics['train_examples']} training and {metrics['heldout_examples']} "
             "held-out examples" + (f" (`{Path(req.heldout).name}`)" if req.heldout else
                                    f" ({req.heldout_fraction:g} held out, seed {req.seed})")]
    for key, src in sources.items():
        version = src.get("version") or ", ".join(f"{k} {v}" for k, v in (src.get("corpus") or {}).items())
        lines.append(f"- {key}: {src.get('package')} {version} ({src.get('licence')}): {src.get('how')}")
    lines += ["", "## Command", "```", req.command.replace(str(Path.home()), "~") or f"brushpen finetune text --base {req.base} --data {req.data} "
              f"--out {req.out} --rank {req.rank} --epochs {req.epochs:g} --lr {req.lr:g}", "```", "",
              "## Metrics (copy tokens of the held-out split)",
              f"- loss {metrics['heldout_loss_before']:.4f} -> {metrics['heldout_loss']:.4f}; perplexity "
              f"{metrics['perplexity_before']:.2f} -> {metrics['perplexity']:.2f}",
              f"- {metrics['steps']} steps of batch {req.batch_size}, lr {req.lr:g}, {metrics['train_seconds']:.0f} s "
              f"on {metrics['threads']} thread(s) ({metrics['s_per_step']:.2f} s/step)",
              f"- trainable parameters: {metrics['trainable_params']:,}", "",
              "## Licence", "Apache-2.0, as the base SmolLM2-135M-Instruct. Data: "
              + ("; ".join(f"{key}: {src.get('licence')}" for key, src in sources.items()) or "the user's own"), ""]
    return "\n".join(lines)
