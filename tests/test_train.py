"""GAN training: exact resume, SIGKILL safety of checkpoints, measurable learning, and 2-process DDP."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from brushpen.checkpoint import find_checkpoint, load_checkpoint
from brushpen.gan.data import ImageDataset
from brushpen.gan.networks import StyleGANDiscriminator, StyleGANGenerator
from brushpen.gan.trainer import TrainConfig, Trainer, _lazy_adam
from brushpen.store import list_models
from conftest import PYTHON, REPO, subprocess_env

STEPS = 8  # run A's length; a checkpoint every 2 steps of 8 images


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=data, out=out, resolution=16, kimg=STEPS * 8 / 1000, batch=8,
                channels=[32, 16, 8], z_dim=16, w_dim=16, mapping_layers=2, cond=True,
                snapshot_kimg=0.016, r1_interval=2, pl_weight=2.0, pl_interval=2,
                augment_p=0.3, ada_interval=1, ada_kimg=1.0, tick_kimg=1000, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def quiet(_: str) -> None:
    pass


def assert_modules_equal(a: torch.nn.Module, b: torch.nn.Module, what: str) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), f"{what}.{name} differs"


# ---- a. resume exactness --------------------------------------------------------------------

@pytest.mark.parametrize("stop_after", [3, 4])
def test_resume_is_exact(shapes_dir: Path, tmp_path: Path, stop_after: int) -> None:
    a = Trainer(tiny_config(shapes_dir, tmp_path / "a"), log=quiet)
    result_a = a.run()
    assert result_a["step"] == STEPS and result_a["kimg"] == pytest.approx(STEPS * 8 / 1000)
    # ADA really moved p: a run where p stayed put would not test that p is restored.
    assert a.ada.p != pytest.approx(0.3)

    cfg_b = tiny_config(shapes_dir, tmp_path / "b", stop_after_steps=stop_after)
    first = Trainer(cfg_b, log=quiet)
    assert first.run()["step"] == stop_after
    state = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert state["scalars"]["step"] == stop_after // 2 * 2  # the last even step was checkpointed

    lines: list[str] = []
    cfg_b.stop_after_steps = None
    cfg_b.resume = True
    b = Trainer(cfg_b, log=lines.append)
    assert b.step == stop_after // 2 * 2
    assert any("resumed from" in line for line in lines)
    result_b = b.run()

    assert result_b == result_a
    for name in ("G", "D", "G_ema"):
        assert_modules_equal(getattr(a, name), getattr(b, name), name)
    assert a.ada.state() == b.ada.state()
    assert a.pl_mean == b.pl_mean and a.nimg == b.nimg
    assert torch.equal(a.rng.get_state(), b.rng.get_state())
    for opt in ("opt_G", "opt_D"):
        sa, sb = getattr(a, opt).state_dict(), getattr(b, opt).state_dict()
        for idx in sa["state"]:
            for key, value in sa["state"][idx].items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb["state"][idx][key])), (opt, idx, key)
    # The two store folders hold the same servable generator.
    wa = load_file(str(next((tmp_path / "a").glob("*.safetensors"))))
    wb = load_file(str(next((tmp_path / "b").glob("*.safetensors"))))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["kimg"] == result_a["kimg"]


def test_resume_without_checkpoint_starts_fresh(shapes_dir: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    t = Trainer(tiny_config(shapes_dir, tmp_path / "x", resume=True), log=lines.append)
    assert t.step == 0 and t.nimg == 0
    assert any("no checkpoint" in line for line in lines)


def test_store_model_written_by_training(shapes_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "weights"
    out = store / "gan" / "tiny"
    Trainer(tiny_config(shapes_dir, out, kimg=0.032), log=quiet).run()
    [model] = list_models(store)
    assert model.ref == "gan/tiny"
    assert model.metrics["kimg"] == pytest.approx(0.032)
    assert model.metrics["num_train_images"] == 64
    assert model.key_metric() == "kimg=0.032"
    G = StyleGANGenerator.from_pretrained(out)
    assert G.config.class_names == ["Circles", "Squares", "Flags"]
    assert (out / "samples.png").exists() and (out / "card.md").exists()
    from PIL import Image

    with Image.open(out / "samples.png") as grid:
        assert grid.size == (8 * 16, 8 * 16)  # 64 fixed seeds in an 8x8 grid


# ---- b. SIGKILL safety ----------------------------------------------------------------------

def assert_checkpoint_loads(ckpt_dir: Path) -> dict:
    """find_checkpoint gives a folder whose every file loads into fresh modules and optimizers."""
    found = find_checkpoint(ckpt_dir)
    assert found is not None, f"no complete checkpoint in {ckpt_dir.parent}: {os.listdir(ckpt_dir.parent)}"
    channels = [32, 16, 8]
    G = StyleGANGenerator(16, 16, 16, 2, channels, 3, ["a", "b", "c"])
    D = StyleGANDiscriminator(16, channels, 3)
    G_ema = StyleGANGenerator(16, 16, 16, 2, channels, 3, ["a", "b", "c"])
    opt_G, opt_D = _lazy_adam(G.parameters(), 0.0025, 0.99, 0), _lazy_adam(D.parameters(), 0.0025, 0.99, 16)
    before = G.mapping.layers[0].weight.clone()
    rng, scalars = load_checkpoint(found, {"G": G, "D": D, "G_ema": G_ema}, {"G": opt_G, "D": opt_D})
    assert not torch.equal(before, G.mapping.layers[0].weight)  # weights really came from disk
    assert scalars["step"] >= 2 and scalars["nimg"] == scalars["step"] * 8
    assert len(opt_G.state) == len(list(G.parameters()))  # Adam slots restored for every parameter
    torch.Generator().set_state(rng["rank0"])  # a valid generator state
    return scalars


def train_command(data: Path, out: Path, kimg: float, resume: bool) -> list[str]:
    cmd = [PYTHON, "-m", "brushpen.cli.main", "gan", "train", "--data", str(data), "--out", str(out),
           "--resolution", "16", "--channels", "32,16,8", "--z-dim", "16", "--w-dim", "16",
           "--map", "2", "--cond", "--batch", "8", "--kimg", str(kimg), "--snap", "0.016",
           "--tick", "0.2", "--threads", "1", "--pl-weight", "2", "--augment-p", "0.2"]
    return cmd + (["--resume"] if resume else [])


def test_sigkill_leaves_a_loadable_checkpoint_and_resume_finishes(shapes_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gan" / "killed"
    ckpt = out / "checkpoint"
    kimg = 0.4  # 50 steps: a few seconds at one thread
    rnd = random.Random(1234)
    last_step = 0
    for attempt in range(3):
        proc = subprocess.Popen(train_command(shapes_dir, out, kimg, resume=attempt > 0), env=subprocess_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.time() + 30
            # Wait for a checkpoint newer than the one resumed from, then kill at a random moment
            # (checkpoints are written every 2 steps, so the kill often lands inside a write).
            while time.time() < deadline and proc.poll() is None:
                found = find_checkpoint(ckpt)
                if found is not None:
                    try:
                        step = json.loads((found / "state.json").read_text())["scalars"]["step"]
                    except (OSError, ValueError):
                        step = last_step
                    if step > last_step:
                        break
                time.sleep(0.02)
            assert proc.poll() is None, f"training ended before it could be killed:\n{proc.stdout.read()}"
            time.sleep(rnd.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        print(f"kill {attempt}: left {sorted(p.name for p in out.iterdir())}")
        scalars = assert_checkpoint_loads(ckpt)
        assert scalars["step"] > last_step
        last_step = scalars["step"]
        assert last_step * 8 < kimg * 1000

    done = subprocess.run(train_command(shapes_dir, out, kimg, resume=True), env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {ckpt}" in done.stdout or f"resumed from {ckpt.parent / '.checkpoint.old'}" in done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kimg"] == pytest.approx(kimg)
    assert result["step"] == int(kimg * 1000 / 8)
    final = assert_checkpoint_loads(ckpt)
    assert final["step"] == result["step"]
    assert json.loads((out / "metrics.json").read_text())["kimg"] == pytest.approx(kimg)
    # The store still shows exactly one model, and it loads (kills may leave temp files beside it).
    assert [m.ref for m in list_models(tmp_path)] == ["gan/killed"]
    G = StyleGANGenerator.from_pretrained(out)
    assert G.num_classes == 3


# ---- c. the generator learns ----------------------------------------------------------------

def two_band_dataset(n: int = 256) -> ImageDataset:
    """Red top half over blue bottom half, each a solid colour with a little jitter."""
    g = torch.Generator().manual_seed(0)
    top = (torch.tensor([210.0, 40.0, 40.0]) + torch.randn(n, 3, generator=g) * 10).clamp(0, 255)
    bottom = (torch.tensor([40.0, 60.0, 210.0]) + torch.randn(n, 3, generator=g) * 10).clamp(0, 255)
    images = torch.cat([top[:, :, None, None].expand(n, 3, 8, 16),
                        bottom[:, :, None, None].expand(n, 3, 8, 16)], dim=2)
    return ImageDataset(images.round().to(torch.uint8).contiguous(), None, [],
                        [f"{i}.png" for i in range(n)], 0)


def band_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean colour of each half (6 numbers) and the mean within-half spatial std."""
    halves = (x[:, :, :8], x[:, :, 8:])
    means = torch.cat([h.mean(dim=[0, 2, 3]) for h in halves])
    within = torch.stack([h.std(dim=[2, 3]).mean() for h in halves]).mean()
    return means, within


@torch.no_grad()
def distance_to_data(G: StyleGANGenerator, real: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    z = torch.randn(256, G.z_dim, generator=torch.Generator().manual_seed(1))
    means, within = band_statistics(G(z, noise_mode="const").clamp(-1, 1))
    return float((means - real[0]).norm()), float(within - real[1])


def test_generator_learns_simple_statistics(tmp_path: Path) -> None:
    data = two_band_dataset()
    real = band_statistics(data.images.float() / 127.5 - 1)
    assert real[1] < 0.1  # the reals are nearly flat within each half
    steps = 300
    cfg = TrainConfig(data=tmp_path, out=tmp_path / "out", resolution=16, kimg=steps * 8 / 1000, batch=8,
                      channels=[32, 16, 8], z_dim=16, w_dim=16, mapping_layers=2, augment="none",
                      ema_kimg=0.1, snapshot_kimg=1e6, tick_kimg=1e6, threads=1, seed=0)
    trainer = Trainer(cfg, data, log=quiet)
    mean_before, spread_before = distance_to_data(trainer.G_ema, real)
    for _ in range(steps):
        trainer.train_step()
    mean_after, spread_after = distance_to_data(trainer.G_ema, real)
    # Untrained: colours far off (distance ~1.7 in [-1, 1] units) and noisy within each half.
    assert mean_before > 1.0 and spread_before > 0.3
    assert mean_after < 0.25 * mean_before, (mean_before, mean_after)
    assert spread_after < 0.6 * spread_before, (spread_before, spread_after)
    assert mean_after + spread_after < 0.35 * (mean_before + spread_before)


# ---- d. two processes -----------------------------------------------------------------------

def test_ddp_two_processes_stay_in_sync(shapes_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [str(REPO / ".venv" / "bin" / "torchrun"), "--standalone", "--nproc_per_node", "2",
           str(REPO / "tests" / "ddp_train_script.py"), str(shapes_dir), str(out), "6"]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "2 process(es)" in proc.stdout

    init = load_file(str(out / "init.safetensors"))
    ranks = [load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)]
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in results:
        assert r["world"] == 2 and r["per_rank"] == 4 and r["step"] == 6
        assert r["kimg"] == pytest.approx(0.048)  # 6 steps x 2 ranks x 4 images
        # The trainer's all-reduce averages: grads 1 and 2 -> 1.5; 1 and unset (zero) -> 0.5.
        assert r["synced_grads"] == {"first": [0.5], "rest": [1.5]}
    assert results[0]["augment_p"] == results[1]["augment_p"] != 0.2

    G = StyleGANGenerator(16, 16, 16, 2, [32, 16, 8], 3)
    D = StyleGANDiscriminator(16, [32, 16, 8], 3)
    params = [f"G.{n}" for n, _ in G.named_parameters()] + [f"D.{n}" for n, _ in D.named_parameters()]
    params += [f"G_ema.{n}" for n, _ in G.named_parameters()]
    assert set(params) <= set(ranks[0])
    for name in params:
        assert torch.equal(ranks[0][name], ranks[1][name]), f"ranks disagree on {name}"
        assert not torch.equal(ranks[0][name], init[name]), f"{name} never moved"
    # Each rank tracks w_avg from its own samples (as stylegan2-ada does); only rank 0's is saved.
    ckpt = load_file(str(out / "model" / "checkpoint" / "rng.safetensors"))
    assert set(ckpt) == {"rank0", "rank1"} and not torch.equal(ckpt["rank0"], ckpt["rank1"])
