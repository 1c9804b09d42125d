"""LoRA for the StyleGAN2 generator: few-shot domain adaptation of a shipped model.

A LoRA adds a low-rank update to a raw weight: W' = W + (alpha / r) * (B @ A).view_as(W), with B
zero-initialised so an adapter starts as the identity. It is attached with
`torch.nn.utils.parametrize`, so the networks stay untouched: `module.weight` simply returns W'.
Targets are every `ModulatedConv2d` (the update lands on the conv weight before modulation and
demodulation), their `affine` style layers and the mapping network's layers.

Why not peft: peft targets `nn.Linear`/`nn.Conv2d` only. Our layers are equalized-learning-rate
modules that keep a raw N(0, 1) `weight` parameter and scale it at run time (`EqualLinear`,
`ModulatedConv2d`), and peft refuses them ("Target module EqualLinear() is not supported"). One
parametrization covers both kinds, and merging is `remove_parametrizations(leave_parametrized=True)`.
A is initialised N(0, 1), like the raw weights it updates, so Adam moves W' at the rate it moved W.

An adapter folder (`weights/gan/<base>/adapters/NAME/`) holds `adapter.safetensors` (the A and B
of each target, and the adapted `mapping.w_avg` used by truncation), `adapter.json`, `card.md`,
`metrics.json` and `samples.png`. `brushpen.gan.finetune.finetune` trains one.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.nn.utils import parametrize

from brushpen.adapters import AdapterInfo, read_info, resolve_adapter, weights_sha256, write_info
from brushpen.errors import BadParameter, BrokenModel
from brushpen.gan.networks import EqualLinear, ModulatedConv2d, StyleGANGenerator
from brushpen.store import (atomic_write_bytes, atomic_write_json, atomic_write_text, publish_dir, read_metrics,
                            staging_dir)

ADAPTER_FILE = "adapter.safetensors"
BUFFERS = ("mapping.w_avg",)   # adapted buffers saved with the adapter


class LoRAWeight(nn.Module):
    """The parametrization W -> W + scale * (B @ A).view_as(W); B starts at zero."""

    def __init__(self, shape: torch.Size, rank: int, alpha: float, generator: torch.Generator | None = None):
        super().__init__()
        fan_in = math.prod(shape[1:])
        self.lora_A = nn.Parameter(torch.randn(rank, fan_in, generator=generator))
        self.lora_B = nn.Parameter(torch.zeros(shape[0], rank))
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.lora_B @ self.lora_A).view_as(weight)


def default_targets(G: StyleGANGenerator) -> list[str]:
    """Module names that get a LoRA: modulated convs, their affine layers, the mapping layers."""
    names = []
    for name, module in G.named_modules():
        if isinstance(module, ModulatedConv2d):
            names += [name, f"{name}.affine"]
        elif name.startswith("mapping.layers.") and isinstance(module, EqualLinear):
            names.append(name)
    return names


def lora_modules(G: nn.Module) -> dict[str, LoRAWeight]:
    """target name -> its LoRAWeight, for every module carrying one."""
    out = {}
    for name, module in G.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, LoRAWeight):
                    out[name] = p
    return out


def apply_lora(G: StyleGANGenerator, rank: int, alpha: float | None = None, targets: list[str] | None = None,
               seed: int = 0) -> list[str]:
    """Attach LoRAs in place; freezes everything but the A and B matrices. Returns the targets."""
    if rank < 1:
        raise BrokenModel(f"LoRA rank must be at least 1, got {rank}")
    targets = list(targets) if targets is not None else default_targets(G)
    gen = torch.Generator().manual_seed(seed)
    G.requires_grad_(False)
    for name in targets:
        try:
            module = G.get_submodule(name)
        except AttributeError as e:
            raise BrokenModel(f"the generator has no layer '{name}' to adapt") from e
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim < 2:
            raise BrokenModel(f"layer '{name}' has no weight matrix to adapt")
        lora = LoRAWeight(weight.shape, rank, float(alpha if alpha is not None else rank), gen).to(weight)
        parametrize.register_parametrization(module, "weight", lora)
    for lora in lora_modules(G).values():
        lora.requires_grad_(True)
    return targets


def trainable_parameters(G: nn.Module) -> int:
    return sum(p.numel() for p in G.parameters() if p.requires_grad)


def merge(G: StyleGANGenerator) -> StyleGANGenerator:
    """Fold every LoRA into its weight, in place: a plain generator that saves and exports as any other."""
    for name in lora_modules(G):
        parametrize.remove_parametrizations(G.get_submodule(name), "weight", leave_parametrized=True)
    return G


def adapter_tensors(G: StyleGANGenerator) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, lora in lora_modules(G).items():
        tensors[f"{name}.lora_A"] = lora.lora_A.detach().cpu().contiguous().clone()
        tensors[f"{name}.lora_B"] = lora.lora_B.detach().cpu().contiguous().clone()
    for name in BUFFERS:
        tensors[name] = G.get_buffer(name).detach().cpu().clone()
    return tensors


def base_sha256(base_dir: Path) -> str:
    """The hash that ties an adapter to its base: over the base folder's own safetensors files."""
    files = sorted(Path(base_dir).glob("*.safetensors"))
    if not files:
        raise BrokenModel(f"{base_dir} holds no safetensors weights")
    return weights_sha256(files)


def save_adapter(G: StyleGANGenerator, folder: Path, base_dir: Path, base_name: str,
                 metrics: dict | None = None, card: str = "", samples_png: bytes | None = None,
                 extra: dict | None = None) -> Path:
    """Write the adapter folder whole (staging folder, then one swap): weights, adapter.json, card, metrics."""
    loras = lora_modules(G)
    if not loras:
        raise BrokenModel("this generator carries no LoRA to save")
    first = next(iter(loras.values()))
    tensors = adapter_tensors(G)
    stage = staging_dir(Path(folder))
    save_file(tensors, str(stage / ADAPTER_FILE))
    (stage / ADAPTER_FILE).chmod(0o644)   # safetensors writes 0600; the store's files are world-readable
    n_params = sum(v.numel() for k, v in tensors.items() if k.endswith((".lora_A", ".lora_B")))
    write_info(stage, AdapterInfo(base=f"gan/{base_name}", base_sha256=base_sha256(base_dir), family="gan",
                                  rank=first.rank, trainable_params=n_params, targets=list(loras),
                                  alpha=first.alpha, extra=dict(extra or {})))
    atomic_write_json(stage / "metrics.json", {**(metrics or {}), "trainable_params": n_params,
                                               "adapter_bytes": (stage / ADAPTER_FILE).stat().st_size})
    atomic_write_text(stage / "card.md", card or f"# {Path(folder).name}\n\nA LoRA adapter of {base_name}.\n")
    if samples_png is not None:
        atomic_write_bytes(stage / "samples.png", samples_png)
    return publish_dir(stage, Path(folder))


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    f = Path(folder) / ADAPTER_FILE
    if not f.exists():
        raise BrokenModel(f"adapter {Path(folder).name} is broken: {ADAPTER_FILE} is missing")
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise BrokenModel(f"adapter {Path(folder).name} is broken: {ADAPTER_FILE} is unreadable ({e})") from e


def load_adapter(G: StyleGANGenerator, folder: Path, expected_base_sha256: str | None = None) -> StyleGANGenerator:
    """Attach the adapter in `folder` to G (unmerged, in place), after checking it fits.

    BrokenModel for: a missing or unreadable file, an adapter of another family or other base
    weights, tensors whose rank differs from adapter.json, or layers the generator lacks.
    """
    folder = Path(folder)
    info = read_info(folder)
    name = folder.name
    if info.family != "gan":
        raise BrokenModel(f"adapter {name} is a {info.family} adapter, not a GAN one")
    if expected_base_sha256 is not None and info.base_sha256 != expected_base_sha256:
        raise BrokenModel(f"adapter {name} was trained on other weights ({info.base}, hash "
                          f"{info.base_sha256[:12]}) than this base ({expected_base_sha256[:12]}): retrain it")
    tensors = _read_tensors(folder)
    targets = sorted({k[:-len(".lora_A")] for k in tensors if k.endswith(".lora_A")})
    if sorted(info.targets) != targets or any(f"{t}.lora_B" not in tensors for t in targets):
        raise BrokenModel(f"adapter {name} is broken: its tensors do not match the layers adapter.json names")
    for t in targets:
        a, b = tensors[f"{t}.lora_A"], tensors[f"{t}.lora_B"]
        if a.shape[0] != info.rank or b.shape[1] != info.rank:
            raise BrokenModel(f"adapter {name}: rank mismatch at {t}: adapter.json says {info.rank}, "
                              f"the tensors have rank {a.shape[0]}/{b.shape[1]}")
    apply_lora(G, info.rank, info.alpha, targets)
    loras = lora_modules(G)
    with torch.no_grad():
        for t in targets:
            a, b, lora = tensors[f"{t}.lora_A"], tensors[f"{t}.lora_B"], loras[t]
            if a.shape != lora.lora_A.shape or b.shape != lora.lora_B.shape:
                raise BrokenModel(f"adapter {name} does not fit this generator at {t}: "
                                  f"{tuple(b.shape)}x{tuple(a.shape)} vs {tuple(lora.lora_B.shape)}x{tuple(lora.lora_A.shape)}")
            lora.lora_A.copy_(a)
            lora.lora_B.copy_(b)
        for buf in BUFFERS:
            if buf in tensors:
                G.get_buffer(buf).copy_(tensors[buf])
    return G


def load_adapted_generator(base_dir: Path, adapter_folder: Path | None, merged: bool = True) -> StyleGANGenerator:
    """The base generator with the adapter applied (merged by default: a plain, faster generator).

    The base folder is only read: the adapter lives in memory and in its own folder.
    """
    G = StyleGANGenerator.from_pretrained(base_dir).eval()
    if adapter_folder is None:
        return G
    load_adapter(G, adapter_folder, base_sha256(base_dir))
    G.requires_grad_(False)
    return merge(G) if merged else G


def merge_to_model(ref: str, out: Path) -> Path:
    """Write 'base:adapter' merged into an ordinary model folder (config.json, safetensors, card,
    metrics): it loads, serves and exports to ONNX (`brushpen export`) like any other generator."""
    base_dir, folder = resolve_adapter(ref, family="gan")
    if folder is None:
        raise BadParameter(f"'{ref}' names no adapter: give base:adapter")
    if Path(out).resolve() == base_dir.resolve():
        raise BadParameter("the merged model would overwrite its base: pick another name")
    G = load_adapted_generator(base_dir, folder)
    stage = staging_dir(Path(out))
    G.save_pretrained(stage)
    metrics = read_metrics(folder)
    atomic_write_json(stage / "metrics.json", {**metrics, "merged_from": ref})
    card = (folder / "card.md").read_text(encoding="utf-8") if (folder / "card.md").exists() else ""
    atomic_write_text(stage / "card.md", f"# {Path(out).name}\n\n`{ref}` merged into a plain generator "
                                         f"(`brushpen finetune gan-merge`). The adapter's card follows.\n\n{card}")
    return publish_dir(stage, Path(out))


def adapter_stamp(base_dir: Path, adapter_folder: Path) -> tuple:
    """Modification times of the files an adapted generator is built from (a cache key)."""
    files = sorted(Path(base_dir).glob("*.safetensors")) + [Path(base_dir) / "config.json"] + \
        [Path(adapter_folder) / n for n in (ADAPTER_FILE, "adapter.json")]
    return tuple(f.stat().st_mtime_ns if f.exists() else 0 for f in files)

