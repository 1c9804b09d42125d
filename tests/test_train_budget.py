"""The GPU-ready trainer, checked on the CPU: wall-clock budgets, signals, stats.jsonl, compact and
store-only checkpoints, and the device-side random draws that keep resume exact."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from brushpen.errors import BadParameter
from brushpen.gan.augment import augment
from brushpen.gan.stats import StatsLog
from brushpen.gan.trainer import TrainConfig, Trainer
from conftest import PYTHON, subprocess_env, tiny_generator
from test_train import STEPS, assert_modules_equal, quiet, tiny_config, train_command


def lossy_records(path: Path) -> list[dict]:
    """stats.jsonl without its timing fields, which differ from run to run."""
    return [{k: v for k, v in r.items() if k not in ("img_per_s", "train_seconds")}
            for r in StatsLog(path).read()]


def test_minutes_budget_stops_at_a_snapshot_and_resume_equals_an_uninterrupted_run(
        shapes_dir: Path, tmp_path: Path) -> None:
    a = Trainer(tiny_config(shapes_dir, tmp_path / "a", tick_kimg=0.008), log=quiet)
    result_a = a.run()

    # A budget far shorter than one step: the run stops after its first step, at a snapshot,
    # although its snapshot schedule (every 2 steps) had none due yet.
    cfg = tiny_config(shapes_dir, tmp_path / "b", minutes=1e-5, tick_kimg=0.008)
    first = Trainer(cfg, log=quiet).run()
    assert first["stopped"] == "minutes" and first["step"] == 1
    state = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert state["scalars"]["step"] == 1
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["kimg"] == pytest.approx(0.008)

    cfg.minutes, cfg.resume = None, True
    b = Trainer(cfg, log=quiet)
    result_b = b.run()
    assert result_b == result_a and result_b["stopped"] == "done"
    for name in ("G", "D", "G_ema"):
        assert_modules_equal(getattr(a, name), getattr(b, name), name)
    assert torch.equal(a.rng.get_state(), b.rng.get_state())
    # One line per tick, each once, and the same losses as the uninterrupted run's.
    recs = lossy_records(tmp_path / "b" / "stats.jsonl")
    assert [r["step"] for r in recs] == list(range(1, STEPS + 1))
    assert recs == lossy_records(tmp_path / "a" / "stats.jsonl")
    assert {"kimg", "step", "img_per_s", "augment_p", "loss_G", "loss_D", "train_seconds"} <= \
        set(StatsLog(tmp_path / "a" / "stats.jsonl").read()[0])


def test_stats_log_drops_the_ticks_a_kill_lost(shapes_dir: Path, tmp_path: Path) -> None:
    # Ticks every step, checkpoints every 2 steps, "killed" after step 3: the tick of step 3 is
    # past the checkpoint, and the resumed run must not log it twice.
    cfg = tiny_config(shapes_dir, tmp_path / "k", tick_kimg=0.008, stop_after_steps=3)
    assert Trainer(cfg, log=quiet).run()["stopped"] == "steps"
    assert [r["step"] for r in StatsLog(tmp_path / "k" / "stats.jsonl").read()] == [1, 2, 3]
    cfg.stop_after_steps, cfg.resume = None, True
    Trainer(cfg, log=quiet).run()
    assert [r["step"] for r in StatsLog(tmp_path / "k" / "stats.jsonl").read()] == list(range(1, STEPS + 1))


def test_sigint_ends_the_cli_run_at_a_snapshot_with_exit_130(shapes_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gan" / "interrupted"
    cmd = train_command(shapes_dir, out, kimg=100, resume=False) + ["--tick", "0.008", "--snap", "1000"]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(StatsLog(out / "stats.jsonl").read()) < 3:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-2000:]
    result = json.loads(output.strip().splitlines()[-1])
    assert result["stopped"] == "signal" and result["step"] >= 3
    # The snapshot schedule (every 1000 kimg) had none due: the signal wrote this one.
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["scalars"]["step"] == result["step"]
    assert json.loads((out / "metrics.json").read_text())["kimg"] == pytest.approx(result["kimg"])


def test_checkpoint_drops_adam_first_moment_and_compact_halves_the_second(shapes_dir: Path, tmp_path: Path) -> None:
    Trainer(tiny_config(shapes_dir, tmp_path / "full", kimg=0.016), log=quiet).run()
    Trainer(tiny_config(shapes_dir, tmp_path / "compact", kimg=0.016, compact_checkpoint=True), log=quiet).run()
    full = load_file(str(tmp_path / "full" / "checkpoint" / "opt_D.safetensors"))
    compact = load_file(str(tmp_path / "compact" / "checkpoint" / "opt_D.safetensors"))
    assert full and not any(k.endswith(".exp_avg") for k in full)  # beta1 = 0: the slot is the last gradient
    sq = [k for k in full if k.endswith("exp_avg_sq")]
    assert sq and all(full[k].dtype == torch.float32 and compact[k].dtype == torch.bfloat16 for k in sq)
    for k in sq:
        torch.testing.assert_close(compact[k].float(), full[k], rtol=1e-2, atol=0)
    # A compact checkpoint resumes, with its moments cast back to fp32.
    cfg = tiny_config(shapes_dir, tmp_path / "compact", kimg=0.032, compact_checkpoint=True, resume=True)
    t = Trainer(cfg, log=quiet)
    assert t.step == 2
    assert all(s["exp_avg_sq"].dtype == torch.float32 for s in t.opt_D.state.values())
    assert t.run()["step"] == 4


def test_store_checkpoint_without_optimizer_or_rng_resumes_with_fresh_state(shapes_dir: Path, tmp_path: Path) -> None:
    """A store folder keeps G, G_ema, D and state.json only (training state lives under BRUSHPEN_HOME)."""
    Trainer(tiny_config(shapes_dir, tmp_path / "s", kimg=0.016), log=quiet).run()
    for name in ("opt_G", "opt_D", "rng"):
        (tmp_path / "s" / "checkpoint" / f"{name}.safetensors").unlink()
    lines: list[str] = []
    t = Trainer(tiny_config(shapes_dir, tmp_path / "s", kimg=0.032, resume=True), log=lines.append)
    assert t.step == 2 and len(t.opt_G.state) == 0
    assert any("fresh state for: opt_G, opt_D, rng (reseeded)" in line for line in lines)
    g_before = load_file(str(tmp_path / "s" / "checkpoint" / "G.safetensors"))
    assert all(torch.equal(v, t.G.state_dict()[k]) for k, v in g_before.items())
    assert t.run()["step"] == 4


def test_noise_drawn_outside_synthesis_matches_noise_drawn_inside() -> None:
    G = tiny_generator()
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(0))
    ws = G.map(z, torch.tensor([0, 1, 2, 0]))
    inside = G.synthesis(ws, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    outside = G.synthesis(ws, noises=G.draw_noise(4, g))
    assert torch.equal(inside, outside)
    assert not torch.equal(inside, G.synthesis(ws, generator=torch.Generator().manual_seed(6)))


def test_augment_draws_on_the_generator_device_and_keeps_its_stream() -> None:
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    a = augment(x, 0.7, generator=g1)
    b = augment(x.double(), 0.7, generator=g2).float()
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(g1.get_state(), g2.get_state())  # the same number of draws from the stream


def test_config_defaults_scale_with_the_batch_and_refuse_bad_values(shapes_dir: Path, tmp_path: Path) -> None:
    assert TrainConfig(data=shapes_dir, out=tmp_path).ema() == 10.0
    assert TrainConfig(data=shapes_dir, out=tmp_path, batch=512).ema() == 160.0  # SG2-ADA: batch * 10/32
    assert TrainConfig(data=shapes_dir, out=tmp_path, batch=512, r1_gamma=0.0256).r1() == 0.0256
    for bad in ({"precision": "fp8"}, {"minutes": 0}, {"snapshot_minutes": -1}):
        with pytest.raises(BadParameter):
            TrainConfig(data=shapes_dir, out=tmp_path, **bad).validate()
    # bf16 is CUDA-only: on the CPU the trainer says so and stays in fp32.
    lines: list[str] = []
    t = Trainer(tiny_config(shapes_dir, tmp_path / "p", precision="bf16", channels_last=True), log=lines.append)
    assert t.precision == "fp32" and "precision fp32" in lines[0]
    assert t.run()["stopped"] == "done"


def test_cli_flags_default_to_the_train_config(shapes_dir: Path, tmp_path: Path) -> None:
    """One source of defaults: flags left out are not passed, so TrainConfig's defaults apply."""
    out = tmp_path / "gan" / "defaults"
    # The gan-only entry point (what scripts/gpu/emoji64.sh runs) registers the same flags as `brushpen`.
    cmd = [PYTHON, "-m", "brushpen.cli.gan_cmd", "gan", "train", "--data", str(shapes_dir), "--out", str(out),
           "--resolution", "16", "--channels", "32,16,8", "--z-dim", "16", "--w-dim", "16", "--map", "2",
           "--batch", "8", "--minutes", "1e-6", "--threads", "1"]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["stopped"] == "minutes"
    saved = json.loads((out / "checkpoint" / "state.json").read_text())["scalars"]["config"]
    defaults = TrainConfig(data=shapes_dir, out=out)
    for name in ("kimg", "lr", "lr_g", "r1_gamma", "ema_kimg", "snapshot_kimg", "augment", "ada_kimg",
                 "style_mixing", "precision", "compile", "cond", "seed"):
        assert saved[name] == getattr(defaults, name), name
    from brushpen.cli.main import build_parser

    gan = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "gan")[1]
    help_text = gan._subparsers._group_actions[0].choices["train"].format_help()
    for flag in ("--minutes", "--snap-minutes", "--stop-after-steps", "--precision", "--compile", "--channels-last"):
        assert flag in help_text


def test_bf16_autocast_path_trains(shapes_dir: Path, tmp_path: Path) -> None:
    """The CUDA bf16 path, run on the CPU by switching it on by hand (slow there, so a tiny model):
    augmentation, the projection logit and the losses must all accept bf16 activations."""
    t = Trainer(tiny_config(shapes_dir, tmp_path / "bf16", kimg=0.024, channels_last=True), log=quiet)
    t.precision = "bf16"
    seen: list[torch.dtype] = []
    hook = t.G.blocks[1].layers[0].conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with t._autocast():
        t._generate(t._fake_labels())
    hook.remove()
    assert seen == [torch.bfloat16]  # the convolutions really ran in bf16
    before = t.G.mapping.layers[0].weight.clone()
    result = t.run()
    assert result["step"] == 3 and all(p.dtype == torch.float32 for p in t.G.parameters())
    assert not torch.equal(before, t.G.mapping.layers[0].weight)
    assert all(torch.isfinite(p).all() for p in t.G_ema.parameters())
