"""Calibration and the figures the detector is judged by, in plain numpy (no scikit-learn here).

**Temperature.** `fit_temperature` finds the T minimising the validation negative log-likelihood of
sigmoid(logit / T) (a 1-D search over log T; temperature scaling never changes the ranking, so AUC
is untouched, only how confident the probabilities are).

**Bands** (`choose_thresholds`), on the calibrated validation probabilities:
- `t_fake`: the smallest threshold at which at most `fpr` (default 1%) of REAL validation photos
  score >= t_fake. So a "fake" verdict wrongly hits about 1 real photo in 100.
- `t_real`: the largest threshold at which at most `fnr` (default 1%) of FAKE validation images
  score < t_real. So a "real" verdict wrongly clears about 1 fake in 100.
- If the classes overlap so much that t_real > t_fake, both collapse to t_fake (no uncertain band,
  the FPR rule wins). Between them lies `uncertain`: send it to a human.

**Metrics** per generator family (`family_metrics`): ROC AUC (Mann-Whitney, ties counted half),
average precision (step-wise, as scikit-learn's `average_precision_score`), balanced accuracy at
`t_fake` ((TPR + TNR) / 2, since fakes of one family are fewer than reals) and TPR at 1% FPR (the
threshold taken from the evaluated reals themselves).
"""

from __future__ import annotations

import numpy as np

from brushpen.safety.detector import Calibration


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = sigmoid(logits / temperature).clip(1e-12, 1 - 1e-12)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """argmin_T NLL on a log grid from 0.05 to 20, then refined around the best point."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    best = min(grid, key=lambda t: nll(logits, labels, t))
    fine = best * np.exp(np.linspace(-0.05, 0.05, 41))
    return float(min(fine, key=lambda t: nll(logits, labels, t)))


def threshold_at_fpr(real_scores: np.ndarray, fpr: float) -> float:
    """Smallest t with mean(real >= t) <= fpr (a score strictly above the allowed tail)."""
    s = np.sort(np.asarray(real_scores, np.float64))[::-1]
    k = int(np.floor(fpr * len(s)))          # this many reals may score at or above t
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], np.inf))


def threshold_at_fnr(fake_scores: np.ndarray, fnr: float) -> float:
    """Largest t with mean(fake < t) <= fnr."""
    s = np.sort(np.asarray(fake_scores, np.float64))
    k = int(np.floor(fnr * len(s)))          # this many fakes may score below t
    return float(s[min(k, len(s) - 1)])


def calibrate(logits: np.ndarray, labels: np.ndarray, fpr: float = 0.01, fnr: float = 0.01) -> Calibration:
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    if labels.min(initial=1) != 0 or labels.max(initial=0) != 1:
        raise ValueError("calibration needs real and fake validation images")
    t = fit_temperature(logits, labels)
    p = sigmoid(logits / t)
    t_fake = threshold_at_fpr(p[labels == 0], fpr)
    t_real = min(threshold_at_fnr(p[labels == 1], fnr), t_fake)
    rule = (f"temperature fitted by NLL on validation; t_fake = lowest threshold with <= {fpr:.0%} of real "
            f"validation photos at or above it; t_real = highest threshold with <= {fnr:.0%} of validation "
            f"fakes below it (capped at t_fake)")
    return Calibration(temperature=t, t_real=t_real, t_fake=t_fake, rule=rule,
                       fitted_on={"real": int((labels == 0).sum()), "fake": int((labels == 1).sum()),
                                  "fpr": fpr, "fnr": fnr, "nll_before": nll(logits, labels, 1.0),
                                  "nll_after": nll(logits, labels, t)})


# ---- metrics ----------------------------------------------------------------------------------------

def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([neg, pos]), kind="mergesort")
    allv = np.concatenate([neg, pos])[order]
    ranks = np.empty(len(allv))
    # Average ranks over ties, so equal scores count as half a win.
    _, first, counts = np.unique(allv, return_index=True, return_counts=True)
    for f, c in zip(first, counts):
        ranks[f:f + c] = f + (c + 1) / 2.0
    pos_ranks = np.empty(len(allv))
    pos_ranks[order] = ranks
    r_pos = pos_ranks[len(neg):].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    if labels.sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    # Evaluate only at the last index of each run of equal scores (thresholds between distinct values).
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    precision = tp[last] / (last + 1)
    recall = tp[last] / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = 0.01) -> float:
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    t = threshold_at_fpr(scores[labels == 0], fpr)
    return float(np.mean(scores[labels == 1] >= t))


def family_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    tpr = float(np.mean(scores[labels == 1] >= threshold))
    tnr = float(np.mean(scores[labels == 0] < threshold))
    return {"auc": roc_auc(scores, labels), "ap": average_precision(scores, labels),
            "acc": (tpr + tnr) / 2, "tpr_at_1fpr": tpr_at_fpr(scores, labels, 0.01),
            "n_real": int((labels == 0).sum()), "n_fake": int((labels == 1).sum())}
