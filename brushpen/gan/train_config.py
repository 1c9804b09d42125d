"""`TrainConfig`: every knob of a StyleGAN2 training run, each with its reason (SG2-ADA's habit).

The CLI's `gan train` flags take their defaults from here (one source of defaults), and
`finetune gan` fills it from its own request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from brushpen.errors import BadParameter

EMA_KIMG_PER_32 = 10.0  # the EMA half-life at batch 32; it scales with the batch (SG2-ADA)
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass
class TrainConfig:
    """Every knob of a run. Defaults suit a 64x64 dataset of a few thousand images on a CPU."""

    data: Path
    out: Path
    resolution: int = 64
    kimg: float = 100.0                 # train until this many thousand real images were shown
    batch: int = 32                     # total over all processes
    channels: list[int] | None = None   # width per resolution 4..R; None = networks.default_channels
    z_dim: int = 256
    w_dim: int = 256
    mapping_layers: int = 4
    cond: bool = False                  # train on the dataset's class labels
    lr: float = 0.0025
    lr_g: float | None = None           # G's own lr (fine-tuning: G slower than D); None = lr
    beta2: float = 0.99
    r1_gamma: float | None = None       # None = 0.0002 * R^2 / batch (the ADA heuristic)
    r1_interval: int = 16
    pl_weight: float = 0.0              # path-length regularization; 2.0 in the paper, 0 = off
    pl_interval: int = 4
    style_mixing: float = 0.5           # probability of a second w after a random crossover
    ema_kimg: float | None = None       # EMA half-life; None = batch * 10/32 (10 at batch 32, SG2-ADA)
    ema_rampup: float | None = 0.05     # early on, half-life <= rampup * images seen
    augment: str = "ada"                # ada | fixed | none
    augment_p: float = 0.0              # initial (ada) or constant (fixed) probability
    ada_target: float = 0.6
    ada_interval: int = 4               # steps between p updates
    ada_kimg: float = 100.0             # p can go 0 -> 1 in this many kimg
    snapshot_kimg: float = 4.0          # checkpoint + store model + samples every this many kimg
    tick_kimg: float = 1.0              # a progress line every this many kimg
    seed: int = 0
    max_images: int | None = None
    mirror: bool = False
    resume: bool = False
    checkpoint_dir: Path | None = None  # default: OUT/checkpoint
    stop_after_steps: int | None = None  # end early after this many steps, no snapshot (tests: a "kill")
    minutes: float | None = None        # wall-clock budget: stop at a snapshot once spent, whatever kimg says
    snapshot_minutes: float | None = None  # also snapshot every this many minutes (fast GPU runs)
    threads: int | None = None
    # Speed on CUDA; the CPU always trains in fp32 (bf16 matmul is unusably slow there).
    precision: str = "fp32"             # fp32 | tf32 (TF32 matmuls/convs) | bf16 (autocast, R1 and PL in fp32)
    channels_last: bool = False         # NHWC memory layout for G, D and the images
    compile: bool = False               # torch.compile G's synthesis and D's main pass (R1 stays eager)
    compact_checkpoint: bool = False    # Adam's second moments saved in bf16 (half the size)
    extra: dict = field(default_factory=dict)

    def r1(self) -> float:
        """R1 weight. At a large batch pin it with r1_gamma: the heuristic shrinks it as 1/batch."""
        return self.r1_gamma if self.r1_gamma is not None else 0.0002 * self.resolution**2 / self.batch

    def ema(self) -> float:
        return self.ema_kimg if self.ema_kimg is not None else self.batch * EMA_KIMG_PER_32 / 32

    def ckpt_dir(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(self.out) / "checkpoint"

    def validate(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise BadParameter("resolution must be a power of two >= 8")
        if self.batch < 1 or self.kimg <= 0:
            raise BadParameter("batch must be >= 1 and kimg > 0")
        if self.augment not in ("ada", "fixed", "none"):
            raise BadParameter("augment must be ada, fixed or none")
        if self.precision not in PRECISIONS:
            raise BadParameter(f"precision must be one of {', '.join(PRECISIONS)}")
        if (self.minutes is not None and self.minutes <= 0) or \
                (self.snapshot_minutes is not None and self.snapshot_minutes <= 0):
            raise BadParameter("minutes and snapshot_minutes must be > 0")
