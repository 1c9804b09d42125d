"""Federated training of the checker (`brushpen federate`, Flower): real federations over localhost,
every server and site its own process, on a tiny fake set (textures, and textures up-sampled two
ways: the families `bilinear` and `nearest`).

- two sites and a server with TLS produce a detector that moved from its start and beats chance;
- `federate simulate` splits one set by family, each site seeing one generator;
- a site killed mid-federation: the rounds go on with the quorum, and the site rejoins;
- a site sending wildly scaled or NaN weights is rejected every round and does not poison the model;
- a killed server resumes from its last saved round;
- partitions, and the update screen, on their own.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_detector import fake_of, texture

from brushpen.errors import BadInput, BadParameter
from conftest import PYTHON, subprocess_env

FAMILIES = ("bilinear", "nearest")


def _write(path: Path, image) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A build-fakes-like set (manifest.jsonl) and two site folders of plain real/ and fake/ images."""
    root = tmp_path_factory.mktemp("fed")
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 96), ("val", 32), ("test", 48)):
        for i in range(n):
            rows.append({"path": f"real/{split}/r{i:03d}.png", "label": 0, "family": "real", "split": split})
            _write(root / "set" / rows[-1]["path"], texture(rng))
            fam = FAMILIES[i % 2]
            rows.append({"path": f"{fam}/{split}/f{i:03d}.png", "label": 1, "family": fam, "split": split})
            _write(root / "set" / rows[-1]["path"], fake_of(texture(rng), i % 2))
    (root / "set" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for s in (1, 2, 3):   # plain folders, a fifth held out for validation by the site itself
        for i in range(40):
            _write(root / f"site{s}" / "real" / f"r{i:03d}.png", texture(rng))
            _write(root / f"site{s}" / "fake" / f"f{i:03d}.png", fake_of(texture(rng), (i + s) % 2))
    return {"root": root, "set": root / "set", "sites": [root / f"site{s}" for s in (1, 2, 3)]}


@pytest.fixture
def fed_env(tmp_path: Path) -> dict:
    return subprocess_env(BRUSHPEN_WEIGHTS=str(tmp_path / "weights"), BRUSHPEN_HOME=str(tmp_path / "home"))


def free_port() -> int:
    from brushpen.safety.federated_sim import free_port as pick

    return pick()


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_leftovers():
    """A test that fails half-way leaves no server or site running behind it."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start(env: dict, argv: list[str], name: str) -> subprocess.Popen:
    """A process whose stderr (Flower logs every message) goes to a file: a pipe nobody reads fills up."""
    log = Path(env["BRUSHPEN_HOME"]).parent / f"{name}.{time.monotonic_ns()}.log"
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    proc.log = log
    STARTED.append(proc)
    return proc


def server(env: dict, out: str, port: int, *args: str) -> subprocess.Popen:
    return start(env, [PYTHON, "-m", "brushpen.cli.main", "federate", "server", "--out", out, "--host", "127.0.0.1",
                       "--port", str(port), "--threads", "1", *args], "server")


def site(env: dict, port: int, folder: Path, name: str, *args: str) -> subprocess.Popen:
    return start(env, [PYTHON, "-m", "brushpen.cli.main", "federate", "site", "--server", f"127.0.0.1:{port}",
                       "--data", str(folder), "--name", name, "--batch", "16", "--threads", "1", *args], name)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, proc.log.read_text()[-3000:]
    return out


def record(env: dict, out: str) -> dict:
    return json.loads((Path(env["BRUSHPEN_WEIGHTS"]) / "safety" / out / "federation.json").read_text())


def saved_round(env: dict, out: str) -> int:
    state = Path(env["BRUSHPEN_HOME"]) / "federated" / out / "state.json"
    try:
        return json.loads(state.read_text())["round"]
    except (OSError, ValueError):
        return -1


def wait_until(check, timeout: float = 240, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        assert proc is None or proc.poll() is None, proc.log.read_text()[-3000:]
        time.sleep(0.2)


def test_two_sites_and_a_tls_server_train_a_detector(data: dict, fed_env: dict, tmp_path: Path) -> None:
    import torch

    from brushpen.safety.detector import Detector, load_detector
    from brushpen.safety.federated import get_weights

    certs = tmp_path / "certs"
    subprocess.run([PYTHON, "-m", "brushpen.cli.main", "federate", "certs", "--out", str(certs), "--host",
                    "127.0.0.1", "--host", "localhost"], env=fed_env, check=True, capture_output=True)
    assert oct((certs / "server.key").stat().st_mode & 0o777) == "0o600"
    port = free_port()
    srv = server(fed_env, "fed2", port, "--rounds", "2", "--local-steps", "30", "--central", str(data["set"]),
                 "--tls", str(certs))
    sites = [site(fed_env, port, data["sites"][i], f"clinic{i + 1}", "--ca", str(certs / "ca.pem")) for i in (0, 1)]
    summary = json.loads(finish(srv).strip().splitlines()[-1])
    for p in sites:
        finish(p)
    assert summary["model"] == "fed2" and summary["rounds"] == 2 and summary["rejected"] == 0
    rec = record(fed_env, "fed2")
    assert [h["round"] for h in rec["history"]] == [0, 1, 2]   # round 0: the starting model, scored centrally
    for h in rec["history"][1:]:
        assert set(h["sites"]) == {"clinic1", "clinic2"}
        for s in h["sites"].values():
            assert s["bytes_up"] > 100_000 and 0.0 <= s["val_auc"] <= 1.0 and s["examples"] > 0
    model = load_detector(Path(fed_env["BRUSHPEN_WEIGHTS"]) / "safety" / "fed2")
    torch.manual_seed(0)
    start = get_weights(Detector())
    moved = sum(float(np.abs(a - b).sum()) for a, b in zip(get_weights(model), start))
    assert moved > 1.0   # the weights moved from where the server started them
    assert rec["central"]["auc"] > 0.6 and model.calibration.rule != "uncalibrated"
    metrics = json.loads((Path(fed_env["BRUSHPEN_WEIGHTS"]) / "safety" / "fed2" / "metrics.json").read_text())
    assert metrics["auc"] == round(rec["central"]["auc"], 4) and metrics["rounds"] == 2   # `models list` shows it
    card = (Path(fed_env["BRUSHPEN_WEIGHTS"]) / "safety" / "fed2" / "card.md").read_text()
    assert "clinic1, clinic2" in card and "`fedavg`" in card and "| 2 |" in card
    # the same name again is refused: the store's detector is never overwritten
    again = subprocess.run([PYTHON, "-m", "brushpen.cli.main", "federate", "server", "--out", "fed2", "--port",
                            str(free_port())], env=fed_env, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "saved rounds" in again.stderr


def test_simulate_splits_by_family(data: dict, fed_env: dict) -> None:
    out = subprocess.run([PYTHON, "-m", "brushpen.cli.main", "federate", "simulate", "--data", str(data["set"]),
                          "--sites", "2", "--partition", "by-family", "--rounds", "2", "--local-steps", "20",
                          "--batch", "16", "--strategy", "fedprox", "--out", "sim", "--threads", "1",
                          "--dp-noise", "0.8", "--dp-clip", "0.5"],
                         env=fed_env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    # each site sees one generator; the reals are shared out by hash
    assert re.search(r"site1: \d\d real, 64 fake \(bilinear\)", out.stderr), out.stderr
    assert re.search(r"site2: \d\d real, 64 fake \(nearest\)", out.stderr), out.stderr
    rec = record(fed_env, "sim")
    assert rec["config"]["strategy"] == "fedprox" and rec["rounds"] == 2
    # central DP: Flower's clipping and noise, epsilon from Opacus's accountant, growing by round
    from brushpen.safety.federated_flower import FederationConfig, epsilon

    dp = FederationConfig(out="x", dp_noise=0.8, dp_clip=0.5)
    assert rec["privacy"]["dp"] and rec["privacy"]["epsilon"] == pytest.approx(epsilon(dp, 2))
    assert [h["epsilon"] for h in rec["history"][1:]] == pytest.approx([epsilon(dp, 1), epsilon(dp, 2)])
    assert epsilon(dp, 1) < epsilon(dp, 2) < epsilon(FederationConfig(out="x", dp_noise=0.4), 2)
    card = (Path(fed_env["BRUSHPEN_WEIGHTS"]) / "safety" / "sim" / "card.md").read_text()
    assert "Central differential privacy" in card and "No secure aggregation" in card
    assert set(rec["history"][-1]["sites"]) == {"site1", "site2"}
    assert {"auc", "auc_bilinear", "auc_nearest"} <= set(rec["central"])


def test_a_killed_site_leaves_the_quorum_and_rejoins(data: dict, fed_env: dict) -> None:
    port = free_port()
    srv = server(fed_env, "drop", port, "--rounds", "12", "--local-steps", "40", "--min-sites", "2",
                 "--expect-sites", "3")
    keep = [site(fed_env, port, data["sites"][i], f"s{i + 1}") for i in (0, 1)]
    victim = site(fed_env, port, data["sites"][2], "s3")
    wait_until(lambda: saved_round(fed_env, "drop") >= 1, proc=srv)
    victim.send_signal(signal.SIGKILL)   # mid-federation, most likely mid-round
    victim.wait()
    back = site(fed_env, port, data["sites"][2], "s3")   # rejoins once it has loaded its images
    finish(srv)
    for p in (*keep, back):
        finish(p)
    history = [h for h in record(fed_env, "drop")["history"] if h["round"] > 0]
    assert len(history) == 12 and "s3" in history[0]["sites"]
    fitted = [set(h["sites"]) for h in history]
    assert any(s == {"s1", "s2"} for s in fitted)                      # rounds went on without s3
    assert any("s3" in s for s in fitted[fitted.index({"s1", "s2"}) + 1:])   # and s3 came back


ADVERSARY = """
import sys, time, grpc, numpy as np
from flwr.client import NumPyClient, start_client
mode = sys.argv[2]
class Bad(NumPyClient):
    def get_parameters(self, config):
        return []
    def fit(self, parameters, config):
        out = [p * 1e4 + 1.0 for p in parameters] if mode == "scale" else [np.full_like(p, np.nan) for p in parameters]
        return out, 1000, {"site": "mallory-" + mode, "loss": 0.1}
    def evaluate(self, parameters, config):
        return 0.5, 10, {"site": "mallory-" + mode, "auc": 0.5}
for _ in range(120):   # until the server is up
    try:
        start_client(server_address=sys.argv[1], client=Bad().to_client(), insecure=True)
        break
    except grpc.RpcError:
        time.sleep(1)
"""


def test_poisoned_updates_are_rejected(data: dict, fed_env: dict, tmp_path: Path) -> None:
    """Two honest sites and two attackers (weights x 1e4, and NaN): every bad update is logged and dropped."""
    script = tmp_path / "adversary.py"
    script.write_text(ADVERSARY)
    port = free_port()
    srv = server(fed_env, "poison", port, "--rounds", "2", "--local-steps", "30", "--min-sites", "2",
                 "--expect-sites", "4", "--central", str(data["set"]))
    honest = [site(fed_env, port, data["sites"][i], f"h{i + 1}") for i in (0, 1)]
    bad = [start(fed_env, [sys.executable, str(script), f"127.0.0.1:{port}", m], m) for m in ("scale", "nan")]
    out = finish(srv)
    for p in (*honest, *bad):
        p.wait(timeout=60)
    rec = record(fed_env, "poison")
    for h in rec["history"][1:]:
        rejected = {r["site"]: r["reason"] for r in h["rejected"]}
        assert set(rejected) == {"mallory-scale", "mallory-nan"}, rejected
        assert "not finite" in rejected["mallory-nan"] and "over" in rejected["mallory-scale"]
    assert json.loads(out.strip().splitlines()[-1])["rejected"] == 4
    assert all(set(h["sites"]) >= {"h1", "h2"} for h in rec["history"][1:])
    assert rec["central"]["auc"] > 0.6   # the honest sites' model, unpoisoned


def test_a_killed_server_resumes_from_its_last_round(data: dict, fed_env: dict) -> None:
    port = free_port()
    srv = server(fed_env, "restart", port, "--rounds", "4", "--local-steps", "30")
    sites = [site(fed_env, port, data["sites"][i], f"r{i + 1}", "--wait", "120") for i in (0, 1)]
    wait_until(lambda: saved_round(fed_env, "restart") >= 2, proc=srv)
    srv.send_signal(signal.SIGKILL)
    srv.wait()
    done = saved_round(fed_env, "restart")
    again = server(fed_env, "restart", port, "--rounds", "4", "--local-steps", "30", "--resume")
    finish(again)
    for p in sites:   # the sites waited for the server and reconnected
        finish(p)
    history = [h for h in record(fed_env, "restart")["history"] if h["round"] > 0]
    assert [h["round"] for h in history] == [1, 2, 3, 4] and 2 <= done < 4
    assert set(history[-1]["sites"]) == {"r1", "r2"}


def test_partitions_and_the_update_screen(data: dict) -> None:
    from brushpen.safety.federated import partition, site_samples
    from brushpen.safety.federated_flower import screen

    samples = site_samples(data["set"])
    iid = partition(samples, 3, "iid")
    paths = [s.path for part in iid for s in part]
    assert len(paths) == len(set(paths)) == sum(s.split != "test" for s in samples)   # disjoint, test kept out
    for split in ("train", "val"):   # an equal share of each split's reals and fakes, whatever the seed
        for label in (0, 1):
            for seed in range(5):
                counts = [sum(s.split == split and s.label == label for s in p)
                          for p in partition(samples, 3, "iid", seed)]
                assert max(counts) - min(counts) <= 1, (split, label, seed, counts)
    by_family = partition(samples, 2, "by-family")
    assert [{s.family for s in p if s.label == 1} for p in by_family] == [{"bilinear"}, {"nearest"}]
    with pytest.raises(BadParameter, match="one fake family per site"):
        partition(samples, 3, "by-family")
    with pytest.raises(BadParameter, match="photo source per site"):
        partition(samples, 2, "by-source")   # textures come from no photo package
    with pytest.raises(BadInput, match="no (real|fake) images"):
        partition(samples, 100, "iid")
    g = [np.ones((8, 8), np.float32), np.zeros(3, np.float32)]
    updates = [[g[0] + 0.01, g[1]], [g[0] - 0.02, g[1] + 0.01], [g[0] * 1e4, g[1]],
               [np.full_like(g[0], np.nan), g[1]], [g[0]]]
    reasons = screen(g, updates, 10.0)
    assert reasons[:2] == [None, None] and "over" in reasons[2] and "not finite" in reasons[3]
    assert "wrong shapes" in reasons[4]


@pytest.mark.parametrize("kind", ["fedadam", "fedavgm"])
def test_adaptive_strategies_average_the_batchnorm_statistics(kind: str) -> None:
    """FedAdam and FedAvgM move the parameters by their server step, but BatchNorm's running
    statistics, which are measurements, take the sites' example-weighted average as under FedAvg."""
    from types import SimpleNamespace

    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    from brushpen.safety.detector import Detector
    from brushpen.safety.federated import get_weights, weight_names
    from brushpen.safety.federated_flower import FederationConfig, Recorder, make_strategy

    cfg = FederationConfig(out="unit", strategy=kind, min_sites=2, server_lr=0.01 if kind == "fedadam" else 2.0)
    start = get_weights(Detector(cfg.model))
    names = weight_names(Detector(cfg.model))
    stats = [i for i, n in enumerate(names) if n.endswith(("running_mean", "running_var"))]
    params = [i for i, n in enumerate(names) if i not in stats]
    assert stats and params
    strategy = make_strategy(cfg, Recorder(cfg, start, 0, []), None)
    strategy.global_weights = start
    results = []
    for k, (value, n) in enumerate(((1.0, 10), (3.0, 30))):
        sent = [w + 0.01 * (k + 1) for w in start]
        for i in stats:
            sent[i] = np.full_like(start[i], value)
        results.append((SimpleNamespace(cid=f"site{k}"),
                        FitRes(Status(Code.OK, ""), ndarrays_to_parameters(sent), n,
                               {"site": f"site{k}", "loss": 0.5})))
    new, _ = strategy.aggregate_fit(1, results, [])
    new = parameters_to_ndarrays(new)
    for i in stats:
        assert np.allclose(new[i], 2.5), names[i]   # (1 x 10 + 3 x 30) / 40
    plain = 0.25 * 0.01 + 0.75 * 0.02   # FedAvg's move of every parameter
    moved = [float(np.mean(new[i] - start[i])) for i in params]
    assert all(abs(m - plain) > 1e-4 for m in moved), "the parameters were averaged, not stepped by the server"
    if kind == "fedavgm":   # rate 2, no momentum yet in round 1: twice FedAvg's move
        assert np.allclose(moved, 2 * plain, atol=1e-5)
        assert np.allclose(parameters_to_ndarrays(strategy.initial_parameters)[stats[0]], 2.5)   # its own copy
    else:
        assert np.allclose(strategy.current_weights[stats[0]], 2.5)   # Adam's own copy agrees


def test_average_last_serves_the_mean_of_the_last_rounds_global_models() -> None:
    """`--average-last K`: the served, saved and published model is the mean of the last K rounds'
    global models, taken once per round (evaluate_fn and configure_evaluate both report it)."""
    from brushpen.safety.federated_flower import FederationConfig, Recorder

    start = [np.zeros(3, np.float32), np.zeros((), np.int64)]
    rec = Recorder(FederationConfig(out="unit", average_last=3), start, 0, [])
    for r, value in enumerate((3.0, 6.0, 9.0, 12.0), start=1):
        got = rec.observe(r, [np.full(3, value, np.float32), np.array(2 * r, np.int64)])
        assert rec.observe(r, [np.full(3, 100.0, np.float32), np.array(0, np.int64)]) is got   # once a round
    assert np.allclose(rec.weights[0], 9.0) and rec.weights[0].dtype == np.float32   # (6 + 9 + 12) / 3
    assert rec.weights[1] == 6 and rec.weights[1].dtype == np.int64                    # (4 + 6 + 8) / 3
    single = Recorder(FederationConfig(out="unit"), start, 0, [])
    single.observe(1, [np.full(3, 5.0, np.float32), np.array(1, np.int64)])
    assert np.allclose(single.weights[0], 5.0)
    with pytest.raises(BadParameter, match="average-last"):
        FederationConfig(out="unit", average_last=0).check()
