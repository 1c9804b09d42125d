"""Self-supervised pretraining from scratch: a small Llama-style causal LM on next-token prediction.

The run, as nanoGPT's `train.py` does it: train a byte-level BPE tokenizer on the training
documents, turn each split into one token stream (`<|bos|>` doc `<|eos|>` `<|bos|>` doc ...), draw
random `block_size` windows from the training stream with one seeded `torch.Generator`, and step
AdamW with linear warmup and cosine decay. Every `eval_every` steps the whole validation stream
is scored, an atomic checkpoint is written (safetensors + JSON, through `brushpen.checkpoint`), and the
store folder is refreshed: `config.json`, `model.safetensors`, the tokenizer files, `metrics.json`
and `card.md`, a normal Hugging Face folder for `AutoModelForCausalLM.from_pretrained`.
The validation loss is also given in bits per character (total nats / characters / ln 2), the
unit of the character n-gram baseline in `ngram`, which is scored on the same documents.
A killed run restarted with `resume=True` ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from brushpen.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from brushpen.errors import BadInput, BadParameter
from brushpen.store import atomic_write_bytes, atomic_write_json, atomic_write_text, staging_dir
from brushpen.text.corpus import Corpus, load_corpus
from brushpen.text.ngram import baseline_report
from brushpen.text.tokenizer import train_tokenizer, wrap

CARD_MARK = "<!-- written by brushpen text pretrain; edit freely, it is then left alone -->"


@dataclass
class PretrainConfig:
    """Every knob of a run. Defaults follow nanoGPT's CPU recipe for Shakespeare characters."""

    corpus: Path
    out: Path
    layers: int = 4
    heads: int = 4
    dim: int = 128
    block_size: int = 128
    steps: int = 2000
    batch: int = 16
    lr: float = 1e-3
    min_lr: float | None = None        # end of the cosine decay; None = lr / 10
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 200              # validation loss, checkpoint and store refresh
    val_fraction: float = 0.1          # held-out documents, unless the corpus has val.txt
    seed: int = 0
    resume: bool = False
    vocab_size: int = 512
    ngram_order: int = 5               # the character n-gram baseline; 0 = skip it
    threads: int | None = None
    checkpoint_dir: Path | None = None  # default: OUT/checkpoint
    stop_after_steps: int | None = None  # end early after this many steps (tests; a clean "kill")
    extra: dict = field(default_factory=dict)

    def ckpt_dir(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(self.out) / "checkpoint"

    def validate(self) -> None:
        for name in ("layers", "heads", "dim", "block_size", "steps", "batch", "eval_every"):
            if getattr(self, name) < 1:
                raise BadParameter(f"{name} must be >= 1")
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise BadParameter("dim must be a multiple of heads, with an even size per head (RoPE)")
        if self.lr <= 0 or self.warmup < 0:
            raise BadParameter("lr must be > 0 and warmup >= 0")


SHAPE_FIELDS = ("layers", "heads", "dim", "block_size", "vocab_size")


def _check_same_shape(cfg: PretrainConfig, saved: dict, ckpt: Path) -> None:
    diff = [f"--{k.replace('_', '-')} {saved[k]} (not {getattr(cfg, k)})"
            for k in SHAPE_FIELDS if k in saved and saved[k] != getattr(cfg, k)]
    if diff:
        raise BadParameter(f"cannot resume from {ckpt}: it was trained with {', '.join(diff)}; "
                           "pass the same sizes or a new --out")


def model_config(cfg: PretrainConfig, tok: PreTrainedTokenizerFast) -> LlamaConfig:
    # SwiGLU's hidden width is 8/3 of dim as in Llama, rounded up to a multiple of 32.
    ffn = -(-8 * cfg.dim // 3 // 32) * 32
    return LlamaConfig(vocab_size=len(tok), hidden_size=cfg.dim, intermediate_size=ffn,
                       num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                       num_key_value_heads=cfg.heads, max_position_embeddings=cfg.block_size,
                       rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def encode_stream(tok: PreTrainedTokenizerFast, docs: list[str]) -> torch.Tensor:
    """`<|bos|>` doc `<|eos|>` `<|bos|>` doc `<|eos|>` ... as one int64 tensor.

    Every document opens with `<|bos|>`, as an encoded prompt does, so generation starts from a
    state the model has seen thousands of times.
    """
    ids: list[int] = []
    for enc in tok.backend_tokenizer.encode_batch(docs, add_special_tokens=False):
        ids.append(tok.bos_token_id)
        ids += enc.ids
        ids.append(tok.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def flops_per_token(model: LlamaForCausalLM, block_size: int) -> float:
    """Training FLOPs per token: 6 per weight plus attention's 12·layers·dim·T (nanoGPT's estimate)."""
    c = model.config
    n = sum(p.numel() for p in model.parameters()) - c.vocab_size * c.hidden_size * (not c.tie_word_embeddings)
    return 6 * n + 12 * c.num_hidden_layers * c.hidden_size * block_size


@torch.no_grad()
def stream_nats(model: LlamaForCausalLM, stream: torch.Tensor, block_size: int,
                batch: int = 16) -> tuple[float, int]:
    """Total next-token NLL (nats) of every token of stream after the first, in windows of block_size."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    starts = list(range(0, len(stream) - 1, block_size))
    total, count = 0.0, 0
    full = [s for s in starts if s + block_size + 1 <= len(stream)]
    for i in range(0, len(full), batch):
        x = torch.stack([stream[s:s + block_size] for s in full[i:i + batch]]).to(device)
        y = torch.stack([stream[s + 1:s + block_size + 1] for s in full[i:i + batch]]).to(device)
        logits = model(input_ids=x, use_cache=False).logits
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
        count += y.numel()
    if len(full) < len(starts):  # the short tail window
        s = starts[-1]
        x, y = stream[s:-1][None].to(device), stream[s + 1:][None].to(device)
        logits = model(input_ids=x, use_cache=False).logits
        total += F.cross_entropy(logits[0].float(), y[0], reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total, count


def evaluate(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, docs: list[str],
             block_size: int, stream: torch.Tensor | None = None) -> dict[str, float]:
    """Validation loss (nats per token), perplexity and bits per character of docs.

    Characters are counted as in `ngram`: each document's characters plus one for its end.
    """
    stream = encode_stream(tok, docs) if stream is None else stream
    nats, tokens = stream_nats(model, stream, block_size)
    chars = sum(len(d) + 1 for d in docs)
    return {"val_loss": nats / tokens, "perplexity": math.exp(nats / tokens),
            "val_bpc": nats / chars / math.log(2), "val_tokens": tokens, "val_chars": chars}


class Pretrainer:
    def __init__(self, cfg: PretrainConfig, corpus: Corpus | None = None,
                 log: Callable[[str], None] | None = None, progress: bool = True):
        cfg.validate()
        self.cfg, self.progress = cfg, progress
        self.log = log or (lambda msg: tqdm.write(msg))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.acc = Accelerator(cpu=not torch.cuda.is_available())
        self.corpus = corpus or load_corpus(cfg.corpus, cfg.val_fraction, cfg.seed)
        self.step, self.train_seconds, self.history = 0, 0.0, []
        self.baseline: dict[str, float] = {}
        ckpt = find_checkpoint(cfg.ckpt_dir()) if cfg.resume else None
        if cfg.resume and ckpt is None:
            self.log(f"no checkpoint in {cfg.ckpt_dir()}: starting fresh")
        meta = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))["scalars"] if ckpt else None
        if meta:
            _check_same_shape(cfg, meta["config"], ckpt)
        # The tokenizer travels inside the checkpoint, so a resumed run keeps exactly its vocabulary.
        if meta:
            from tokenizers import Tokenizer

            self.tok = wrap(Tokenizer.from_str(meta["tokenizer"]), cfg.block_size)
        else:
            self.tok = train_tokenizer(self.corpus.train, cfg.vocab_size, cfg.block_size)
        self.train_stream = encode_stream(self.tok, self.corpus.train)
        self.val_stream = encode_stream(self.tok, self.corpus.val)
        if len(self.train_stream) <= cfg.block_size + 1:
            raise BadInput(f"the training split has {len(self.train_stream)} tokens: fewer than "
                           f"block_size + 2 = {cfg.block_size + 2}; use a bigger corpus or a smaller --block-size")

        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(model_config(cfg, self.tok))
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=cfg.lr, betas=(0.9, 0.99), eps=1e-8)
        self.model, self.opt = self.acc.prepare(model, opt)
        self.rng = torch.Generator().manual_seed(cfg.seed)
        if ckpt:
            rng, s = load_checkpoint(ckpt, {"model": self.acc.unwrap_model(self.model)}, {"model": self.opt})
            self.rng.set_state(rng["rank0"])
            self.step, self.train_seconds = s["step"], s["train_seconds"]
            self.history, self.baseline = s["history"], s["baseline"]
            self.log(f"resumed from {ckpt} at step {self.step}")
        self.params = sum(p.numel() for p in model.parameters())
        self.flops_per_token = flops_per_token(model, cfg.block_size)

    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        min_lr = cfg.lr / 10 if cfg.min_lr is None else cfg.min_lr
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return min_lr + 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))) * (cfg.lr - min_lr)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, data = self.cfg.block_size, self.train_stream
        ix = torch.randint(0, len(data) - B - 1, (self.cfg.batch,), generator=self.rng)
        x = torch.stack([data[i:i + B] for i in ix.tolist()])
        y = torch.stack([data[i + 1:i + B + 1] for i in ix.tolist()])
        return x.to(self.acc.device), y.to(self.acc.device)

    def train_step(self) -> float:
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        x, y = self.batch()
        # y is x shifted by one already, so the loss is taken here rather than via `labels=`
        # (which would shift a second time).
        logits = self.model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.opt.zero_grad(set_to_none=True)
        self.acc.backward(loss)
        if self.cfg.grad_clip:
            self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        return loss.item()

    # ---- the run ---------------------------------------------------------------------------

    def run(self) -> dict:
        cfg = self.cfg
        if cfg.ngram_order and not self.baseline:
            t0 = time.time()
            self.baseline = baseline_report(self.corpus.train, self.corpus.val, cfg.ngram_order)
            self.log(f"baselines on the validation split ({time.time() - t0:.1f} s): "
                     + "  ".join(f"{k} {v:.4f}" for k, v in self.baseline.items()))
        self.log(f"model: {self.params / 1e6:.2f} M parameters, vocab {len(self.tok)}, "
                 f"{len(self.train_stream)} train / {len(self.val_stream)} val tokens, "
                 f"{torch.get_num_threads()} thread(s) on {self.acc.device}")
        bar = tqdm(total=cfg.steps, initial=self.step, desc="pretrain", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        losses, steps_this_run = [], 0
        while self.step < cfg.steps:
            t0 = time.time()
            losses.append(self.train_step())
            self.train_seconds += time.time() - t0
            steps_this_run += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{self.lr_at(self.step - 1):.2e}")
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                self.eval_and_save(sum(losses) / len(losses))
                losses = []
            if cfg.stop_after_steps and steps_this_run >= cfg.stop_after_steps:
                break
        bar.close()
        return self.history[-1] if self.history else {"step": self.step}

    def eval_and_save(self, train_loss: float) -> dict:
        """Score the validation split, checkpoint, and refresh the store folder."""
        model = self.acc.unwrap_model(self.model)
        t0 = time.time()
        row = {"step": self.step, "train_loss": train_loss,
               **evaluate(model, self.tok, self.corpus.val, self.cfg.block_size, self.val_stream)}
        tokens = self.step * self.cfg.batch * self.cfg.block_size
        row.update({"eval_seconds": time.time() - t0, "train_seconds": self.train_seconds,
                    "tokens_per_s": tokens / max(self.train_seconds, 1e-9)})
        self.history.append({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()})
        self.log(f"step {self.step:6d}  train_loss {train_loss:.4f}  val_loss {row['val_loss']:.4f}  "
                 f"val_bpc {row['val_bpc']:.4f}  tok/s {row['tokens_per_s']:.0f}  "
                 f"eval {row['eval_seconds']:.1f} s")
        self.save_checkpoint()
        write_model_folder(model, self.tok, Path(self.cfg.out), self.metrics(), self.cfg, self.corpus)
        return row

    def save_checkpoint(self) -> None:
        save_checkpoint(self.cfg.ckpt_dir(), {"model": self.acc.unwrap_model(self.model)},
                        {"model": self.opt}, {"rank0": self.rng.get_state()},
                        {"step": self.step, "train_seconds": self.train_seconds,
                         "history": self.history, "baseline": self.baseline,
                         "tokenizer": self.tok.backend_tokenizer.to_str(),
                         "config": json.loads(json.dumps(asdict(self.cfg), default=str))})

    def metrics(self) -> dict:
        last = self.history[-1]
        gflops = last["tokens_per_s"] * self.flops_per_token / 1e9
        return {"val_loss": last["val_loss"], "perplexity": last["perplexity"],
                "val_bpc": last["val_bpc"], "step": self.step, "params": self.params,
                "tokens_seen": self.step * self.cfg.batch * self.cfg.block_size,
                "train_seconds": round(self.train_seconds, 1), "tokens_per_s": last["tokens_per_s"],
                "train_gflops": round(gflops, 2), "threads": torch.get_num_threads(),
                "baseline": self.baseline, "history": self.history}


def write_model_folder(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, out: Path,
                       metrics: dict, cfg: PretrainConfig, corpus: Corpus) -> Path:
    """Write a Hugging Face model folder into the store, file by file, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for junk in out.glob(".*.tmp"):  # temp files of a write that a kill interrupted
        junk.unlink(missing_ok=True)
    stage = staging_dir(out / "model")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Writing model shards" bar per eval is only noise
    try:
        model.save_pretrained(stage)
        tok.save_pretrained(stage)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    for f in sorted(stage.iterdir()):  # weights first, config last: config.json marks a model
        if f.is_file() and f.name != "config.json":
            atomic_write_bytes(out / f.name, f.read_bytes())
    atomic_write_bytes(out / "config.json", (stage / "config.json").read_bytes())
    shutil.rmtree(stage)
    atomic_write_json(out / "metrics.json", metrics)
    card = out / "card.md"
    if not card.exists() or card.read_text(encoding="utf-8").startswith(CARD_MARK):
        atomic_write_text(card, default_card(out.name, cfg, metrics, corpus))
    return out


def _tilde(path: Path | str) -> str:
    """A path as a user would type it: the home folder as `~`, so cards carry no user names."""
    home, text = str(Path.home()), str(path)
    return "~" + text[len(home):] if text == home or text.startswith(home + "/") else text


def command_line(cfg: PretrainConfig) -> str:
    return (f"brushpen text pretrain --corpus {_tilde(cfg.corpus)} --out {cfg.out} --layers {cfg.layers} "
            f"--heads {cfg.heads} --dim {cfg.dim} --block-size {cfg.block_size} --steps {cfg.steps} "
            f"--batch {cfg.batch} --lr {cfg.lr:g} --warmup {cfg.warmup} --eval-every {cfg.eval_every} "
            f"--vocab-size {cfg.vocab_size} --seed {cfg.seed}" + (f" --threads {cfg.threads}" if cfg.threads else ""))


def default_card(name: str, cfg: PretrainConfig, metrics: dict, corpus: Corpus) -> str:
    src = corpus.source
    packages = ", ".join(f"Debian `{p}` {v}" for p, v in src.get("packages", {}).items())
    counts = (f"{len(corpus.train):,} training and {len(corpus.val):,} validation documents, "
              f"{sum(map(len, corpus.val)):,} validation characters")
    rows = "\n".join(f"| {h['step']} | {h['train_seconds']:.0f} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | "
                     f"{h['perplexity']:.2f} | {h['val_bpc']:.4f} |" for h in metrics["history"])
    bpc = metrics["val_bpc"]
    base = "\n".join(f"| {k.removesuffix('_val_bpc')} (character) | {v:.4f} | {100 * (v - bpc) / v:+.1f} % |"
                      for k, v in metrics["baseline"].items())
    return (f"{CARD_MARK}\n# {name}\n\n"
            f"A small Llama-style causal LM pretrained from scratch with brushpen "
            f"({metrics['params'] / 1e6:.2f} M parameters, {cfg.layers} layers, {cfg.heads} heads, "
            f"dim {cfg.dim}, context {cfg.block_size}, byte-level BPE vocabulary of {cfg.vocab_size}), "
            f"a normal Hugging Face folder (`AutoModelForCausalLM` / `AutoTokenizer`).\n\n"
            f"## Use\n\nIt is a plain language model of its corpus, not an instruction-tuned one. "
            f"`brushpen copy --model text/{name} \"BRIEF\"` runs it, but the model does not follow the "
            f"copy prompt: it continues in the style of its training text, so expect corpus-like text "
            f"rather than usable marketing copy. It is here to show pretraining from scratch end to end; "
            f"the copywriter's default stays the instruct base.\n\n"
            f"## Data\n\n- `{_tilde(src.get('corpus', cfg.corpus))}` ({src.get('split', '')}): {counts}"
            + (f"\n- Source: {packages}, via `brushpen data fortunes`" if packages else "") + "\n\n"
            f"## Training\n\n```sh\n{command_line(cfg)}\n```\n\n"
            f"{metrics['step']} steps, {metrics['tokens_seen']:,} tokens, {metrics['train_seconds']:.0f} s of "
            f"training on {metrics['threads']} CPU thread(s) ({metrics['tokens_per_s']:.0f} tokens/s, "
            f"{metrics['train_gflops']} GFLOP/s). AdamW, linear warmup, cosine decay to lr/10; "
            f"`--resume` continues from `checkpoint/`.\n\n"
            f"## Validation\n\n| step | train s | train loss | val loss (nats/token) | perplexity | val bits/char |\n"
            f"|---|---|---|---|---|---|\n{rows}\n\n"
            f"Against character baselines fit on the training split and scored on the same validation "
            f"documents (bits per character; the last column is how much lower the LM's "
            f"{bpc:.4f} is):\n\n| model | val bits/char | LM lower by |\n|---|---|---|\n"
            f"| this LM | {bpc:.4f} | |\n{base or '| (baselines not run) | | |'}\n\n"
            f"## Licence\n\n- Weights: Apache-2.0, as brushpen.\n"
            f"- Training data: {src.get('licence', 'that of the corpus')}.\n")
