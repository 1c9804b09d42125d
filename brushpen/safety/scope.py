"""Is an image one the checker can judge? A gate in front of the detector.

The detector knows camera photographs and fakes made of them. An emoji, a drawing, a screenshot
of text or a flat graphic is neither, and the detector's score on it means nothing (it used to
call them "real", confidently). Such inputs get the verdict `out-of-scope`, with the reason,
instead of a score the model cannot back.

The gate reads two statistics on a nearest-neighbour copy of at most `work_side` pixels a side
(nearest keeps exact pixel values; a smoothing resize would invent new ones):
- `flat`: the share of pixels identical to both their right and lower neighbours in all three
  channels. A camera photo has sensor noise and demosaicing almost everywhere, so few pixels
  repeat their neighbours exactly; graphics repeat them over whole areas.
- `mode`: the share of pixels in the single most frequent colour (a white page, a flat backdrop).
An image is out of scope when `flat` > `max_flat` or `mode` > `max_mode`. The thresholds were set
on the training photos, the photo builder's rejected drawings and Fluent emoji, and measured on
held-out sets (BENCHMARKS.md, "Out-of-scope gate"); they are deliberately loose on the photo side:
a clipped sky or a JPEG-flattened wall in a real photo must not make it out of scope, since a
fake of such a photo would then escape the detector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ScopeConfig:
    work_side: int = 384       # statistics on a nearest-neighbour copy of at most this side
    max_flat: float = 0.25     # share of pixels equal to their right and lower neighbours
    max_mode: float = 0.30     # share of pixels in the most frequent colour


@dataclass
class ScopeResult:
    in_scope: bool
    reason: str | None                     # why not, in words; None when in scope
    stats: dict[str, float] = field(default_factory=dict)


def scope_statistics(image: Image.Image, work_side: int = ScopeConfig.work_side) -> dict[str, float]:
    """`flat` and `mode` (see the module docstring) of an RGB image of any size."""
    w, h = image.size
    step = max(1, -(-max(w, h) // work_side))  # ceil: the copy's long side <= work_side
    small = image.resize((max(1, w // step), max(1, h // step)), Image.NEAREST) if step > 1 else image
    a = np.asarray(small.convert("RGB")).astype(np.int16)
    if min(a.shape[:2]) < 2:
        return {"flat": 0.0, "mode": 0.0}
    same = (a[:-1, :-1] == a[:-1, 1:]).all(-1) & (a[:-1, :-1] == a[1:, :-1]).all(-1)
    packed = (a[..., 0].astype(np.int32) << 16) | (a[..., 1].astype(np.int32) << 8) | a[..., 2]
    counts = np.unique(packed, return_counts=True)[1]
    return {"flat": float(same.mean()), "mode": float(counts.max() / packed.size)}


def check_scope(image: Image.Image, config: ScopeConfig = ScopeConfig()) -> ScopeResult:
    stats = scope_statistics(image, config.work_side)
    reasons = []
    if stats["flat"] > config.max_flat:
        reasons.append(f"{stats['flat']:.0%} of its pixels repeat their neighbours exactly (a camera photo has "
                       f"noise almost everywhere; over {config.max_flat:.0%} means a graphic, drawing or screenshot)")
    if stats["mode"] > config.max_mode:
        reasons.append(f"{stats['mode']:.0%} of its pixels are one colour (over {config.max_mode:.0%}: a flat "
                       f"background, as in an emoji, an icon or a page of text)")
    reason = "not a photograph: " + "; ".join(reasons) if reasons else None
    return ScopeResult(in_scope=not reasons, reason=reason, stats={k: round(v, 4) for k, v in stats.items()})
