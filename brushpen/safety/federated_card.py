"""The card of a federated detector (`brushpen federate`): who trained it, how, and what it scored,
from its `federation.json` record."""

from __future__ import annotations

from typing import Any


def _f(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "-" if v is None else str(v)


def privacy_line(p: dict) -> str:
    line = "Privacy: the sites sent weights only, never images. "
    if p.get("dp"):
        line += (f"Central differential privacy: each site's update clipped to L2 norm {p['clip']:g}, Gaussian "
                 f"noise (multiplier {p['noise_multiplier']:g}) on the aggregate: (epsilon {p['epsilon']:.2f}, delta "
                 f"{p['delta']:g}) at the site level, by Opacus's RDP accountant. ")
    else:
        line += "No differential privacy: the published weights carry no formal bound. "
    return line + "No secure aggregation: the server saw each site's update."


def card(cfg: Any, record: dict) -> str:
    history = [h for h in record["history"] if h["round"] > 0]
    sites = sorted({s for h in history for s in h["sites"]})
    lines = [f"# {cfg.out}: a detector trained by federation", "",
             f"Trained with Flower by {len(sites)} site(s) ({', '.join(sites) or 'none'}) that kept their images: "
             f"{record['rounds']} round(s) of {cfg.local_steps} local steps, strategy `{cfg.strategy}`"
             + (f" (mu {cfg.proximal_mu:g})" if cfg.strategy == "fedprox" else "")
             + (f" (server lr {cfg.server_eta:g})" if cfg.strategy in ("fedadam", "fedyogi") else "")
             + (f" (server lr {cfg.server_eta:g}, momentum {cfg.server_momentum:g})" if cfg.strategy == "fedavgm"
                else "")
             + f", quorum {cfg.min_sites}, updates over {cfg.max_update:g}x rejected, seed {cfg.seed}"
             + (f"; the published weights are the mean of the last {cfg.average_last} rounds' global models"
                if getattr(cfg, "average_last", 1) > 1 else "") + ".",
             "", privacy_line(record.get("privacy") or {}), ""]
    if record.get("central"):
        c = record["central"]
        lines += ["## Central held-out set (test split)", "",
                  "| | " + " | ".join(k.removeprefix("auc_") for k in c if k != "auc") + " | all |",
                  "|---|" + "---|" * len(c),
                  "| AUC | " + " | ".join(_f(v) for k, v in c.items() if k != "auc") + f" | {_f(c['auc'])} |", ""]
    lines += ["## Rounds", "", "| round | central AUC | " + " | ".join(f"{s} val AUC" for s in sites)
              + " | rejected |", "|---|---|" + "---|" * len(sites) + "---|"]
    for h in history:
        cells = [_f(h["sites"].get(s, {}).get("val_auc")) for s in sites]
        rejected = "; ".join(f"{r['site']}: {r['reason']}" for r in h["rejected"])
        lines.append(f"| {h['round']} | {_f((h.get('central') or {}).get('auc'))} | " + " | ".join(cells)
                     + f" | {rejected} |")
    lines += ["", "Licence: as the sites' data; see each site's own records.", ""]
    return "\n".join(lines)
