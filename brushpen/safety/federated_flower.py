"""Federated training of the checker on Flower (`flwr` 1.42): the server that aggregates and the
site client that trains, over Flower's gRPC transport (`brushpen federate server|site|simulate`).

- **Server** (`run_server`): a Flower strategy (FedAvg, FedProx, FedAvgM, FedAdam or FedYogi) wrapped by
  `Guarded`, which drops a site's update that is not finite or is wildly scaled (its norm over
  `max_update` x the median of the others', or over `max_update` x the global weights' own norm),
  logs why, and aggregates the rest when at least `min_sites` remain. After every round the global
  weights and the history (per-site validation AUC, the central held-out AUC per family, bytes,
  rejections) are saved under `$BRUSHPEN_HOME/federated/OUT/`, so a restarted server resumes from its
  last round. At the end the global detector is calibrated (on the central set's validation split,
  when one is given) and published in the store as `safety/OUT` with a card.
- **Site** (`run_site`): `federated.Site` behind a `flwr.client.NumPyClient`; its images never leave
  it, only weights. It waits for the server and reconnects after a restart.

Flower's newer SuperLink/SuperNode runtime ships apps as bundles run by Flower's own CLI, whose
pins (typer, fastapi, starlette) the studio cannot share; the gRPC server and client used here
(`start_server`, `start_client`) are the same Flower, kept by Flower for scripts like this one.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from brushpen.config import get_settings
from brushpen.errors import BadInput, BadParameter
from brushpen.safety.detector import Detector, DetectorConfig
from brushpen.safety.federated import Site, get_weights, set_weights, weight_names
from brushpen.store import atomic_write_bytes, atomic_write_json

STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi")
DEFAULT_SERVER_LR = {"fedavgm": 1.0, "fedadam": 0.01, "fedyogi": 0.01}
log = logging.getLogger("brushpen.federate")


@dataclass
class FederationConfig:
    """Every knob of a federation's server, with its default."""

    out: str                                  # the detector's name in the store (safety/OUT)
    rounds: int = 10
    local_steps: int = 50                     # each site's steps per round
    strategy: str = "fedavg"                  # STRATEGIES
    min_sites: int = 2                        # quorum: sites a round waits for and needs to aggregate
    expect_sites: int = 0                     # the first round waits for this many sites (0: the quorum)
    proximal_mu: float = 0.01                 # FedProx's pull towards the global weights
    server_lr: float | None = None            # FedAvgM/FedAdam/FedYogi's server step (None: DEFAULT_SERVER_LR)
    server_momentum: float = 0.9              # FedAvgM's momentum on the averaged update
    max_update: float = 10.0                  # rejection threshold, see `Guarded`
    average_last: int = 1                     # serve and publish the mean of the last K rounds' global models
    dp_noise: float = 0.0                     # central DP: Gaussian noise multiplier (0: off)
    dp_clip: float = 1.0                      # central DP: each site's update clipped to this L2 norm
    dp_delta: float = 1e-5                    # the delta of the (epsilon, delta) reported
    central: Path | None = None               # a build-fakes set: its test split scores every round
    round_timeout: float = 900.0              # a site silent this long in a round counts as failed
    host: str = "0.0.0.0"
    port: int = 9092
    tls: Path | None = None                   # a folder with ca.pem, server.pem and server.key
    resume: bool = False                      # continue from the last saved round
    seed: int = 0
    model: DetectorConfig = field(default_factory=DetectorConfig)

    def check(self) -> None:
        from brushpen.adapters import check_name

        check_name(self.out)
        if self.strategy not in STRATEGIES:
            raise BadParameter(f"unknown strategy '{self.strategy}': pick one of {', '.join(STRATEGIES)}")
        if self.rounds < 1 or self.local_steps < 1 or self.min_sites < 1 or self.expect_sites < 0:
            raise BadParameter("--rounds, --local-steps and --min-sites must be >= 1, --expect-sites >= 0")
        if self.server_lr is not None and not self.server_lr > 0 or not 0 <= self.server_momentum < 1:
            raise BadParameter("--server-lr must be > 0 and --server-momentum in [0, 1)")
        if self.average_last < 1:
            raise BadParameter("--average-last must be >= 1")
        if self.max_update <= 1:
            raise BadParameter("--max-update must be > 1")
        if self.dp_noise < 0 or self.dp_clip <= 0 or not 0 < self.dp_delta < 1:
            raise BadParameter("--dp-noise must be >= 0, --dp-clip > 0 and --dp-delta in (0, 1)")

    @property
    def server_eta(self) -> float | None:
        """The server optimiser's step: --server-lr, or the strategy's default (None: no server step)."""
        return self.server_lr or DEFAULT_SERVER_LR.get(self.strategy)

    @property
    def dp_sites(self) -> int:
        """The sites each DP round counts on (Flower calibrates the noise to a fixed number)."""
        return max(self.expect_sites, self.min_sites)


def epsilon(cfg: FederationConfig, rounds: int) -> float | None:
    """The epsilon spent at `cfg.dp_delta` after `rounds` rounds of central DP (Opacus's RDP
    accountant: every site takes part in every round, so the sampling rate is 1); None without DP.
    Site-level: it bounds what the model reveals about any one site's whole data set."""
    if cfg.dp_noise <= 0 or rounds <= 0:
        return None
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 256))
    rdp = compute_rdp(q=1.0, noise_multiplier=cfg.dp_noise, steps=rounds, orders=orders)
    eps, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=cfg.dp_delta)
    return float(eps)


def state_dir(out: str) -> Path:
    return get_settings().home / "federated" / out


def _save_state(out: str, weights: list[np.ndarray], record: dict) -> None:
    from safetensors.numpy import save

    folder = state_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "global.safetensors", save({f"{i:04d}": w for i, w in enumerate(weights)}))
    atomic_write_json(folder / "state.json", record)


def _load_state(out: str) -> tuple[list[np.ndarray], dict] | None:
    from safetensors.numpy import load_file

    folder = state_dir(out)
    if not (folder / "state.json").exists():
        return None
    tensors = load_file(folder / "global.safetensors")
    return [tensors[k] for k in sorted(tensors)], json.loads((folder / "state.json").read_text(encoding="utf-8"))


def update_norms(global_w: list[np.ndarray], updates: list[list[np.ndarray]]) -> list[float]:
    """The L2 norm of each site's change to the global weights (inf when not finite)."""
    out = []
    for w in updates:
        if len(w) != len(global_w) or any(a.shape != b.shape for a, b in zip(w, global_w)):
            out.append(float("inf"))
            continue
        sq = sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in zip(w, global_w))
        out.append(float(np.sqrt(sq)) if np.isfinite(sq) else float("inf"))
    return out


def screen(global_w: list[np.ndarray], updates: list[list[np.ndarray]], max_update: float) -> list[str | None]:
    """Why each update is rejected (None: kept): not finite, or its norm is over `max_update` x the
    median of the other sites' norms, or over `max_update` x the global weights' norm."""
    norms = update_norms(global_w, updates)
    scale = float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in global_w)))
    reasons: list[str | None] = []
    for i, n in enumerate(norms):
        others = [m for j, m in enumerate(norms) if j != i and np.isfinite(m)]
        ref = float(np.median(others)) if others else None
        if not np.isfinite(n):
            reasons.append("not finite (or the wrong shapes)")
        elif n > max_update * scale:
            reasons.append(f"update norm {n:.3g} is over {max_update:g} x the global weights' norm {scale:.3g}")
        elif ref is not None and ref > 0 and n > max_update * ref:
            reasons.append(f"update norm {n:.3g} is over {max_update:g} x the other sites' median {ref:.3g}")
        else:
            reasons.append(None)
    return reasons


class Central:
    """The server's own held-out set (a build-fakes set): its test split scores the global model
    every round, overall and per fake family; its validation split calibrates the final model."""

    def __init__(self, folder: Path, tile: int):
        from brushpen.safety.detector_data import gather, load_arrays

        samples = gather([], [Path(folder)])
        test = [s for s in samples if s.split == "test"]
        val = [s for s in samples if s.split == "val"]
        if {s.label for s in test} != {0, 1}:
            raise BadInput(f"the central set {folder} has no test split with both reals and fakes")
        self.images, _ = load_arrays(test, tile)
        self.labels = np.array([s.label for s in test])
        self.families = np.array([s.family for s in test])
        self.val_images, _ = load_arrays(val, tile) if val else (None, None)
        self.val_labels = np.array([s.label for s in val])

    def score(self, net: Detector) -> dict[str, float]:
        from brushpen.safety.calibrate import roc_auc
        from brushpen.safety.detector_train import logits_of

        logits = logits_of(net, self.images)
        out = {"auc": roc_auc(logits, self.labels)}
        for fam in sorted(set(self.families[self.labels == 1])):
            keep = (self.labels == 0) | (self.families == fam)
            out[f"auc_{fam}"] = roc_auc(logits[keep], self.labels[keep])
        return out


class Recorder:
    """The federation's history, one entry per round, saved with the global weights after each step."""

    def __init__(self, cfg: FederationConfig, weights: list[np.ndarray], done: int, history: list[dict]):
        self.cfg, self.weights, self.offset, self.history = cfg, weights, done, history
        self.recent: deque[list[np.ndarray]] = deque(maxlen=cfg.average_last)
        self.observed: int | None = None

    def observe(self, server_round: int, weights: list[np.ndarray]) -> list[np.ndarray]:
        """Take the round's new global model (after any DP noise); once per round. With `average_last`
        K > 1 the model served, saved and published is the mean of the last K rounds' global models,
        a side model that the sites never train from (averaging the end of the trajectory smooths
        the round-to-round swing of a non-IID federation). A restarted server starts its window anew
        and resumes training from the saved (averaged) model."""
        if self.observed != server_round:
            self.observed = server_round
            self.recent.append(weights)
            self.weights = weights if len(self.recent) == 1 else \
                [np.mean(ws, axis=0).astype(ws[0].dtype) for ws in zip(*self.recent)]
        return self.weights

    def entry(self, server_round: int) -> dict:
        number = self.offset + server_round
        if not self.history or self.history[-1]["round"] != number:
            self.history.append({"round": number, "sites": {}, "rejected": [], "central": None})
        return self.history[-1]

    def save(self, server_round: int) -> None:
        _save_state(self.cfg.out, self.weights, {"round": self.offset + server_round, "history": self.history,
                                                 "config": json.loads(json.dumps(asdict(self.cfg), default=str))})


def _site_of(metrics: dict, fallback: str) -> str:
    return str(metrics.get("site", fallback))


def make_strategy(cfg: FederationConfig, rec: Recorder, central: Central | None):
    """The chosen Flower strategy, guarded: bad updates dropped, a quorum required, every round saved."""
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import strategy as fs

    base = {"fedavg": fs.FedAvg, "fedprox": fs.FedProx, "fedavgm": fs.FedAvgM, "fedadam": fs.FedAdam,
            "fedyogi": fs.FedYogi}[cfg.strategy]
    eta = cfg.server_eta
    extra = {"proximal_mu": cfg.proximal_mu} if cfg.strategy == "fedprox" else \
        {"server_learning_rate": eta, "server_momentum": cfg.server_momentum} if cfg.strategy == "fedavgm" else \
        {"eta": eta, "tau": 1e-3} if cfg.strategy in ("fedadam", "fedyogi") else {}
    net = Detector(cfg.model)
    adaptive = cfg.strategy in ("fedavgm", "fedadam", "fedyogi")   # a server optimiser steps the model
    statistics = [i for i, name in enumerate(weight_names(net)) if name.endswith(("running_mean", "running_var"))]

    def evaluate_fn(server_round: int, weights: list[np.ndarray], config: dict) -> tuple[float, dict] | None:
        if central is None:
            return None
        if server_round > 0:
            weights = rec.observe(server_round, weights)   # the round's global model, noise and all
        set_weights(net, weights)
        scores = central.score(net)
        rec.entry(server_round)["central"] = scores
        if server_round > 0:
            rec.save(server_round)
        return 1.0 - scores["auc"], scores

    def mean_of(key: str) -> Callable:
        return lambda rows: {key: float(np.average([m[key] for _, m in rows], weights=[n for n, _ in rows]))} \
            if rows else {}

    class Guarded(base):
        def configure_fit(self, server_round, parameters, client_manager):
            self.global_weights = parameters_to_ndarrays(parameters)
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            entry = rec.entry(server_round)
            updates = [parameters_to_ndarrays(res.parameters) for _, res in results]
            reasons = screen(self.global_weights, updates, cfg.max_update)
            kept = []
            for (proxy, res), why in zip(results, reasons):
                site = _site_of(res.metrics, proxy.cid)
                entry["sites"].setdefault(site, {}).update(
                    train_loss=float(res.metrics.get("loss", float("nan"))), examples=res.num_examples,
                    bytes_up=sum(len(t) for t in res.parameters.tensors), seconds=res.metrics.get("seconds"))
                if why is None:
                    kept.append((proxy, res))
                else:
                    entry["rejected"].append({"site": site, "reason": why})
                    log.warning("round %s: rejected the update of %s: %s", entry["round"], site, why)
            entry["failures"] = len(failures)
            if len(kept) < cfg.min_sites:
                log.warning("round %s: %d usable updates, fewer than the quorum of %d: the global model stays",
                            entry["round"], len(kept), cfg.min_sites)
                return None, {}
            params, metrics = super().aggregate_fit(server_round, kept, failures)
            if adaptive and params is not None:
                params = self._average_statistics(params, kept)
            return params, metrics

        def _average_statistics(self, params, kept):
            """BatchNorm's running statistics are measurements, not parameters: a server optimiser would
            move them by its own step (FedAvgM's rate above 1 or its momentum can make a variance
            negative); they take the sites' weighted average, as in FedAvg."""
            weights = parameters_to_ndarrays(params)
            sent = [parameters_to_ndarrays(res.parameters) for _, res in kept]
            counts = [res.num_examples for _, res in kept]
            for i in statistics:
                weights[i] = np.average([w[i] for w in sent], axis=0, weights=counts).astype(weights[i].dtype)
            if cfg.strategy == "fedavgm":   # FedAvgM keeps its copy of the global model here
                self.initial_parameters = ndarrays_to_parameters(weights)
            else:                            # FedAdam and FedYogi here
                self.current_weights = weights
            return ndarrays_to_parameters(weights)

        def configure_evaluate(self, server_round, parameters, client_manager):
            # the round's new global model (after the DP wrapper's noise): what a restart resumes from
            rec.observe(server_round, parameters_to_ndarrays(parameters))
            rec.entry(server_round)["epsilon"] = epsilon(cfg, rec.offset + server_round)
            rec.save(server_round)
            return super().configure_evaluate(server_round, parameters, client_manager)

        def aggregate_evaluate(self, server_round, results, failures):
            entry = rec.entry(server_round)
            for proxy, res in results:
                entry["sites"].setdefault(_site_of(res.metrics, proxy.cid), {}).update(
                    val_auc=float(res.metrics["auc"]), val_examples=res.num_examples)
            rec.save(server_round)
            return super().aggregate_evaluate(server_round, results, failures)

    guarded = Guarded(min_fit_clients=cfg.min_sites, min_available_clients=cfg.min_sites,
                   min_evaluate_clients=cfg.min_sites, fraction_fit=1.0, fraction_evaluate=1.0,
                   initial_parameters=ndarrays_to_parameters(rec.weights), evaluate_fn=evaluate_fn,
                   on_fit_config_fn=lambda r: {"local_steps": cfg.local_steps, "round": rec.offset + r},
                   fit_metrics_aggregation_fn=mean_of("loss"), evaluate_metrics_aggregation_fn=mean_of("auc"),
                   **extra)
    if cfg.dp_noise <= 0:
        return guarded
    # Flower's central DP: each update clipped to dp_clip, Gaussian noise on the aggregate. It skips
    # a round that has a failed site, since its noise is calibrated to dp_sites sites.
    return fs.DifferentialPrivacyServerSideFixedClipping(guarded, noise_multiplier=cfg.dp_noise,
                                                         clipping_norm=cfg.dp_clip, num_sampled_clients=cfg.dp_sites)


def client_manager(expect: int):
    """Flower's client manager, but the first round waits for `expect` connected sites (later
    rounds for the quorum only, so a site that drops out does not stall the federation)."""
    from flwr.server import SimpleClientManager

    class FirstRoundWaits(SimpleClientManager):
        started = False

        def sample(self, num_clients, min_num_clients=None, criterion=None):
            if not self.started:
                self.started = True
                min_num_clients = max(min_num_clients or 0, expect)
                num_clients = max(num_clients, expect)
            return super().sample(num_clients, min_num_clients, criterion)

    return FirstRoundWaits()


def _tls_files(folder: Path, *names: str) -> tuple[bytes, ...]:
    missing = [n for n in names if not (Path(folder) / n).is_file()]
    if missing:
        raise BadParameter(f"--tls {folder} lacks {', '.join(missing)} (make them with `brushpen federate certs`)")
    return tuple((Path(folder) / n).read_bytes() for n in names)


def run_server(cfg: FederationConfig) -> dict:
    """Serve the federation until its rounds are done, then publish the detector; returns the record."""
    import torch
    from flwr.server import ServerConfig, start_server

    from brushpen.safety.detector_train import model_dir

    cfg.check()
    saved = _load_state(cfg.out)
    if saved is not None and not cfg.resume:
        raise BadParameter(f"the federation '{cfg.out}' has saved rounds: --resume to continue it, or another --out")
    if (model_dir(cfg.out) / "model.safetensors").exists():
        raise BadParameter(f"the store already holds a detector '{cfg.out}': pick another --out")
    torch.manual_seed(cfg.seed)
    weights, record = (get_weights(Detector(cfg.model)), {"round": 0, "history": []}) if saved is None else saved
    rec = Recorder(cfg, weights, int(record["round"]), list(record["history"]))
    central = Central(cfg.central, cfg.model.tile) if cfg.central else None
    remaining = cfg.rounds - rec.offset
    if remaining > 0:
        certificates = _tls_files(cfg.tls, "ca.pem", "server.pem", "server.key") if cfg.tls else None
        log.info("serving %d round(s) on %s:%d (%s)", remaining, cfg.host, cfg.port,
                 "TLS" if certificates else "no TLS")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            start_server(server_address=f"{cfg.host}:{cfg.port}", strategy=make_strategy(cfg, rec, central),
                         config=ServerConfig(num_rounds=remaining, round_timeout=cfg.round_timeout),
                         certificates=certificates, client_manager=client_manager(cfg.expect_sites))
    return publish(cfg, rec, central)


def publish(cfg: FederationConfig, rec: Recorder, central: Central | None) -> dict:
    """The global weights as the detector `safety/OUT`: calibrated on the central validation split
    when there is one, with `federation.json` (config and history) and a card."""
    from brushpen.safety.calibrate import calibrate
    from brushpen.safety.detector import save_detector
    from brushpen.safety.detector_train import logits_of, model_dir
    from brushpen.safety.federated_card import card

    net = Detector(cfg.model)
    set_weights(net, rec.weights)
    if central is not None and central.val_images is not None and len(set(central.val_labels)) == 2:
        net.calibration = calibrate(logits_of(net, central.val_images), central.val_labels, 0.01, 0.01)
    final = central.score(net) if central is not None else None
    folder = model_dir(cfg.out)
    save_detector(net, folder)
    rounds = sum(h["round"] > 0 for h in rec.history)
    privacy = {"dp": cfg.dp_noise > 0, "noise_multiplier": cfg.dp_noise, "clip": cfg.dp_clip,
               "delta": cfg.dp_delta, "epsilon": epsilon(cfg, rounds), "secure_aggregation": False}
    record = {"config": json.loads(json.dumps(asdict(cfg), default=str)), "privacy": privacy,
              "rounds": rounds, "history": rec.history, "central": final,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(folder / "federation.json", record)
    # what `models list` shows: the central held-out AUC (absent without a central set)
    atomic_write_json(folder / "metrics.json", {**({"auc": round(final["auc"], 4)} if final else {}),
                                                "rounds": rounds, "strategy": cfg.strategy,
                                                "epsilon": privacy["epsilon"]})
    (folder / "card.md").write_text(card(cfg, record), encoding="utf-8")
    return {"model": cfg.out, "path": str(folder), **record}


class SiteClient:
    """A site as a Flower NumPyClient: weights in, local steps, weights out; its images stay here."""

    def __new__(cls, site: Site):
        from flwr.client import NumPyClient

        class Client(NumPyClient):
            def get_parameters(self, config):
                return get_weights(site.model)

            def fit(self, parameters, config):
                t0 = site.last_seen = time.monotonic()
                weights, loss = site.fit(parameters, int(config.get("local_steps", 50)),
                                         float(config.get("proximal_mu", 0.0)))
                log.info("round %s: %d local steps, loss %.4f", config.get("round"), config.get("local_steps"), loss)
                return weights, site.n_train, {"site": site.name, "loss": loss,
                                               "seconds": round(time.monotonic() - t0, 2)}

            def evaluate(self, parameters, config):
                site.last_seen = time.monotonic()
                m = site.evaluate(parameters)
                return m["loss"], m["n"], {"site": site.name, "auc": m["auc"]}

        return Client()


def run_site(server: str, site: Site, ca: Path | None = None, wait_s: float = 600.0) -> None:
    """Join the federation at `server` (HOST:PORT) until it ends. While the server is not there
    (not started yet, or restarting) keep dialling, for `wait_s` seconds since the last message."""
    import grpc
    from flwr.client import start_client

    root = Path(ca).read_bytes() if ca else None
    client = SiteClient(site).to_client()
    site.last_seen = time.monotonic()
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                start_client(server_address=server, client=client, insecure=root is None, root_certificates=root)
            return   # the server ended the federation
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise BadInput(f"the federation server at {server} refused this site: {e.details()}") from None
            if time.monotonic() - site.last_seen > wait_s:
                raise BadInput(f"no federation server at {server} for {wait_s:.0f} s") from None
            log.info("no server at %s yet: retrying", server)
            time.sleep(2.0)
