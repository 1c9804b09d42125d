"""LoRA adapters for the deepfake detector: teach a shipped detector a new generator from a few examples.

**The low-rank update** is peft's LoRA (`inject_adapter_in_model` with explicit module names): every
conv of the body (3x3) and both heads (1x1) gets W + (alpha / r) * B @ A, where peft's conv LoRA is a
k x k conv A (C_in -> r, the layer's stride) followed by a 1x1 conv B (r -> C_out), B zero at init,
so a fresh adapter changes nothing. peft handles nn.Conv2d fine here (no grouped convs), so nothing
is hand-written but the key renaming when merging. BatchNorm stays in eval mode throughout: its
running statistics and affine weights are the base's, frozen, so with B = 0 the network is
bit-for-bit the base and the adapter alone carries the change.

**Merged or not.** `merge_lora` folds the update into a plain `Detector` (same architecture, exports
to ONNX like the base); the checker serves adapters merged (equal to the unmerged model to ~1e-6,
and as fast as the base).

**On disk** (`weights/safety/<base>/adapters/NAME/`): `adapter.safetensors` (the lora_A/lora_B
tensors, peft's key names without the adapter name), `adapter.json` (`brushpen.adapters.AdapterInfo`:
base, base weight hash, rank, alpha, targets, and `extra.calibration`, the adapter's own temperature
and verdict bands fitted on its validation split), `card.md` and `metrics.json`. `load_adapted`
refuses, with `BrokenModel`: an adapter trained on other base weights (hash), weights whose rank
disagrees with `adapter.json`, missing or unknown layers, unreadable files. It never writes to the
base folder. Fine-tuning (`finetune`) lives in `brushpen.safety.lora_train`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from brushpen.adapters import AdapterInfo, read_info, resolve_adapter, weights_sha256, write_info
from brushpen.errors import BadParameter, BrokenModel
from brushpen.safety.detector import Calibration, Detector, load_detector
from brushpen.store import atomic_write_json, atomic_write_text

WEIGHTS = "adapter.safetensors"
FAMILY = "safety"


def conv_names(model: Detector) -> list[str]:
    """Every conv of the detector (body convs, the classification and localisation heads)."""
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]


def add_lora(model: Detector, rank: int, alpha: float | None = None, targets: list[str] | None = None) -> Detector:
    """Inject LoRA (B = 0) into `model` in place; only the LoRA tensors stay trainable, BN is frozen."""
    if rank < 1:
        raise BadParameter(f"--rank must be >= 1, got {rank}")
    known = conv_names(model)
    targets = list(targets or known)
    unknown = sorted(set(targets) - set(known))
    if unknown:
        raise BrokenModel(f"LoRA targets {', '.join(unknown)} are not convs of this detector ({', '.join(known)})")
    config = LoraConfig(r=rank, lora_alpha=float(alpha if alpha is not None else rank), lora_dropout=0.0,
                        target_modules=targets, init_lora_weights=True, bias="none")
    inject_adapter_in_model(config, model)   # freezes every non-LoRA parameter
    return model.eval()                      # eval-mode BN: the base's running stats, never updated


def lora_state(model: Detector) -> dict[str, torch.Tensor]:
    """The LoRA tensors under adapter-free names: `body.0.0.lora_A.weight`, ..."""
    return {k.replace(".default.", "."): v.detach().cpu().contiguous()
            for k, v in model.state_dict().items() if ".lora_" in k}


def trainable_params(model: Detector) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge_lora(model: Detector) -> Detector:
    """A plain Detector with W + scale * B @ A folded into each conv; `model` itself is left as is."""
    work = copy.deepcopy(model)
    for m in work.modules():
        if isinstance(m, LoraLayer):
            try:
                m.merge(safe_merge=True)   # refuses NaN/inf rather than serving them
            except ValueError as e:
                raise BrokenModel(f"the adapter's weights are not finite: {e}") from e
    plain = {k.replace(".base_layer.", "."): v for k, v in work.state_dict().items() if ".lora_" not in k}
    merged = Detector(model.config, model.calibration)
    merged.load_state_dict(plain)
    return merged.eval()


# ---- the store ----------------------------------------------------------------------------------

def base_sha256(base_dir: Path) -> str:
    return weights_sha256([Path(base_dir) / "model.safetensors"])


def save_adapter(model: Detector, folder: Path, info: AdapterInfo, card: str, metrics: dict) -> Path:
    """Write the adapter's four files into `folder` (a staging folder: the caller publishes it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(lora_state(model), str(folder / WEIGHTS))
    (folder / WEIGHTS).chmod(0o644)
    write_info(folder, info)
    atomic_write_text(folder / "card.md", card)
    atomic_write_json(folder / "metrics.json", metrics)
    return folder


def _check_weights(tensors: dict[str, torch.Tensor], info: AdapterInfo, model: Detector, folder: Path) -> None:
    """Clear messages for the ways an adapter's tensors can disagree with its description or base."""
    expected = {f"{t}.lora_{ab}.weight" for t in info.targets for ab in "AB"}
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or extra:
        raise BrokenModel(f"adapter {folder.name}: weights do not match adapter.json "
                          f"(missing {missing[:4] or 'none'}, unexpected {extra[:4] or 'none'})")
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    if unknown := sorted(set(info.targets) - set(convs)):
        raise BrokenModel(f"adapter {folder.name} targets layers this detector lacks: {', '.join(unknown)}")
    for t in info.targets:
        a, b = tensors[f"{t}.lora_A.weight"], tensors[f"{t}.lora_B.weight"]
        if a.shape[0] != info.rank or b.shape[1] != info.rank:
            raise BrokenModel(f"adapter {folder.name}: rank mismatch at {t}: adapter.json says rank {info.rank}, "
                              f"the weights have rank {a.shape[0]}")
        conv = convs[t]
        if a.shape[1] != conv.in_channels or b.shape[0] != conv.out_channels:
            raise BrokenModel(f"adapter {folder.name}: layer {t} is {conv.in_channels}->{conv.out_channels} "
                              f"channels in the base, {a.shape[1]}->{b.shape[0]} in the adapter")


def load_adapted(base_dir: Path, folder: Path, merge: bool = True) -> Detector:
    """The base detector with the adapter applied (merged by default) and the adapter's calibration."""
    base_dir, folder = Path(base_dir), Path(folder)
    info = read_info(folder)
    if info.family != FAMILY:
        raise BrokenModel(f"adapter {folder.name} is a {info.family} adapter, not a detector adapter")
    sha = base_sha256(base_dir)
    if info.base_sha256 != sha:
        raise BrokenModel(f"adapter {folder.name} was trained on other weights than {base_dir.name} "
                          f"(base hash {info.base_sha256[:12]} vs {sha[:12]}): retrain it on this base")
    model = load_detector(base_dir)
    try:
        tensors = load_file(str(folder / WEIGHTS))
        calibration = Calibration(**info.extra["calibration"])
    except (OSError, SafetensorError, KeyError, TypeError) as e:
        raise BrokenModel(f"adapter {folder.name} is unreadable: {e}") from e
    if not isinstance(info.rank, int) or info.rank < 1 or not info.targets:
        raise BrokenModel(f"adapter {folder.name}: adapter.json gives no valid rank and targets")
    _check_weights(tensors, info, model, folder)
    add_lora(model, info.rank, info.alpha, info.targets)
    result = model.load_state_dict({k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
                                    for k, v in tensors.items()}, strict=False)
    if result.unexpected_keys:
        raise BrokenModel(f"adapter {folder.name}: unexpected tensors {result.unexpected_keys[:4]}")
    model.calibration = calibration
    return merge_lora(model) if merge else model


def load_ref(ref: str, merge: bool = True) -> Detector:
    """`detector:NAME` (or `safety/detector:NAME`, or a base folder path + `:NAME`) -> the adapted detector."""
    base_dir, folder = resolve_adapter(ref, family=FAMILY)
    if folder is None:
        return load_detector(base_dir)
    return load_adapted(base_dir, folder, merge)

