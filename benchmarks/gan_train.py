"""Training speed of brushpen's GAN trainer against NVlabs stylegan2-ada-pytorch, side by side.

Measures training img/s (batch 16, 64x64, fp32, unconditional, random uint8 images held in memory)
of `brushpen.gan.trainer.Trainer.train_step` (r1_interval 16, pl_weight 0, no augmentation) at the
anchor's widths 256,256,256,256,128 and, with `--channels`, at our shipped widths. The same run times
DESIGN.md's anchor: stylegan2-ada-pytorch's Generator/Discriminator (channel_base 8192, channel_max
256, reference ops, no fp16) stepped through its StyleGAN2Loss G-main and D-main phases with Adam and
the G_ema update, without R1 or path length. Its code is imported at run time from `--reference DIR`.
Every run does one step under FlopCounterMode (FLOPs/img, 2 per multiply-add, matmul and conv only),
`--warmup` steps, then `--steps` timed steps interleaved across runs; the figure is the median. Ours
is also shown with R1 amortized over 16 steps. % of peak = FLOPs/img x img/s / the fp32 GEMM peak,
the median GFLOP/s of a square matmul at the same thread count (the higher of the readings before
and after). If the reference cannot run, DESIGN.md's 1.04 img/s (1 thread) is printed, marked so.

    .venv/bin/python benchmarks/gan_train.py --reference /tmp/sg2ada --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
from brushpen.gan.data import ImageDataset  # noqa: E402
from brushpen.gan.trainer import Trainer, TrainConfig  # noqa: E402

ANCHOR_WIDTHS = [256, 256, 256, 256, 128]  # channel_base 8192 / channel_max 256 at res 4..64
DESIGN_ANCHOR_IMG_S = 1.04  # DESIGN.md: stylegan2-ada-pytorch, 1 thread, batch 16, no R1
R1_INTERVAL = 16
REF = "stylegan2-ada (anchor)"
Step = Callable[[bool], None]  # step(with_r1) runs one training step


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                platform.processor() or "unknown")


def timed(step: Step, with_r1: bool = False) -> float:
    t0 = time.perf_counter()
    step(with_r1)
    return time.perf_counter() - t0


def gemm_peak_gflops(n: int, reps: int) -> float:
    """Median GFLOP/s of an n x n fp32 matmul: the practical ceiling of conv/linear layers here."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = [timed(lambda _: a @ b) for _ in range(reps + 3)][3:]  # 3 warm-up products
    return 2 * n**3 / statistics.median(times) / 1e9


def make_ours(widths: list[int], args: argparse.Namespace, data: ImageDataset) -> Step:
    cfg = TrainConfig(data=Path("synthetic"), out=Path(tempfile.gettempdir()) / "gan_train_bench",
                      resolution=64, batch=args.batch, channels=widths, r1_interval=R1_INTERVAL,
                      pl_weight=0.0, augment="none", threads=args.threads, seed=0)
    trainer = Trainer(cfg, dataset=data, log=lambda _: None)

    def step(with_r1: bool) -> None:
        # The trainer runs R1 when step % r1_interval == 0: steer the counter to get one or the other.
        if (trainer.step % R1_INTERVAL == 0) != with_r1:
            trainer.step = (trainer.step // R1_INTERVAL + 1) * R1_INTERVAL if with_r1 else trainer.step + 1
        trainer.train_step()
    return step


def make_reference(ref_dir: Path, args: argparse.Namespace, data: ImageDataset) -> tuple[Step, str]:
    """The anchor's G-main + D-main step, with its networks and loss class imported from ref_dir."""
    if not (ref_dir / "training" / "networks.py").is_file():
        raise FileNotFoundError(f"{ref_dir} is not a stylegan2-ada-pytorch checkout")
    sys.path.insert(0, str(ref_dir))
    from torch_utils import misc  # type: ignore[import-not-found]
    from training.loss import StyleGAN2Loss  # type: ignore[import-not-found]
    from training.networks import Discriminator, Generator  # type: ignore[import-not-found]

    torch.manual_seed(0)
    common = dict(c_dim=0, img_resolution=64, img_channels=3)
    widths = dict(channel_base=8192, channel_max=256, num_fp16_res=0, conv_clamp=None)
    G = Generator(z_dim=args.ref_z_dim, w_dim=args.ref_w_dim, **common,
                  mapping_kwargs=dict(num_layers=args.ref_mapping), synthesis_kwargs=widths)
    D = Discriminator(**common, **widths, epilogue_kwargs=dict(mbstd_group_size=4))
    G, D = G.train().requires_grad_(False), D.train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    loss = StyleGAN2Loss(torch.device("cpu"), G.mapping, G.synthesis, D, augment_pipe=None,
                         style_mixing_prob=args.ref_style_mixing, r1_gamma=0, pl_weight=0)
    adam = dict(lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
    phases = [("Gmain", G, torch.optim.Adam(G.parameters(), **adam)),
              ("Dmain", D, torch.optim.Adam(D.parameters(), **adam))]
    rng, batch, ema_beta = torch.Generator().manual_seed(1), args.batch, 0.5 ** (args.batch / 10_000)
    no_label = torch.zeros(batch, 0)  # unconditional: c_dim 0

    def step(with_r1: bool) -> None:  # with_r1 is ignored: the anchor was measured without R1
        real = data.images[torch.randint(0, len(data), (batch,), generator=rng)].float() / 127.5 - 1
        for name, module, opt in phases:
            z = torch.randn(batch, G.z_dim, generator=rng)
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            loss.accumulate_gradients(name, real, no_label, z, no_label, sync=True, gain=1)
            module.requires_grad_(False)
            for p in module.parameters():
                if p.grad is not None:
                    misc.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
            opt.step()
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.lerp(p_ema, ema_beta))
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)

    desc = (f"z/w {args.ref_z_dim}/{args.ref_w_dim}, mapping {args.ref_mapping}, style mixing "
            f"{args.ref_style_mixing}, resnet D, skip G, mbstd 4, FIR up/down [1,3,3,1]")
    return step, desc


class GlobalOnly(contextlib.nullcontext):
    """FlopCounterMode's module tracker trips over parameter views made under no_grad; we need the total."""
    parents = {"Global"}


def count_flops(step: Step, with_r1: bool = False) -> float:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = GlobalOnly()  # type: ignore[assignment]
    with counter:
        step(with_r1)
    return float(counter.get_total_flops())


def summarize(rows: dict[str, dict], batch: int, peak: float) -> list[dict]:
    table = []
    for r in rows.values():
        sec = statistics.median(r["times"])
        cases = [("none", sec, r["gflop"])]
        if r.get("r1_times"):  # one step in R1_INTERVAL also runs R1: spread its extra cost over them
            r1_sec = statistics.median(r["r1_times"])
            cases.append((f"lazy /{R1_INTERVAL}", sec + (r1_sec - sec) / R1_INTERVAL,
                          r["gflop"] + (r["gflop_r1"] - r["gflop"]) / R1_INTERVAL))
        for r1, sec_step, gflop in cases:
            ips = batch / sec_step
            table.append({"run": r["run"], "r1": r1, "sec_per_step": sec_step, "img_per_s": ips,
                          "gflop_per_img": gflop, "gflops_achieved": gflop * ips,
                          "pct_peak": 100 * gflop * ips / peak})
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, help="checkout of NVlabs/stylegan2-ada-pytorch")
    p.add_argument("--channels", default="256,192,96,48,24",
                   help="also time ours at these widths (our shipped config); 'none' to skip")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per run, after the FLOP-count step")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run; the median is reported")
    p.add_argument("--r1-steps", type=int, default=2, help="timed R1 steps of ours, for the amortized figure")
    p.add_argument("--ref-mapping", type=int, default=8,
                   help="anchor mapping layers (8: networks.Generator's default; train.py --cfg auto uses 2)")
    p.add_argument("--ref-z-dim", type=int, default=512, help="anchor z_dim (train.py: 512)")
    p.add_argument("--ref-w-dim", type=int, default=512, help="anchor w_dim (train.py: 512)")
    p.add_argument("--ref-style-mixing", type=float, default=0.9, help="anchor style mixing (train.py: 0.9)")
    p.add_argument("--gemm-n", type=int, default=1024)
    p.add_argument("--gemm-reps", type=int, default=20)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    images = torch.randint(0, 256, (256, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = ImageDataset(images, labels=None, class_names=[], files=[], skipped=0)
    anchor_key = "ours " + ",".join(map(str, ANCHOR_WIDTHS))
    runs: dict[str, Step] = {anchor_key: make_ours(ANCHOR_WIDTHS, args, data)}
    ref_desc, ref_error = "", "no --reference given"
    if args.reference:
        try:
            runs[REF], ref_desc = make_reference(args.reference.resolve(), args, data)
        except Exception as e:  # any failure of third-party code: still report ours
            ref_error = f"{type(e).__name__}: {e}"
    if args.channels.lower() != "none" and args.channels != ",".join(map(str, ANCHOR_WIDTHS)):
        runs["ours " + args.channels] = make_ours([int(c) for c in args.channels.split(",")], args, data)

    peak_before = gemm_peak_gflops(args.gemm_n, args.gemm_reps)
    rows: dict[str, dict] = {}
    for name, step in list(runs.items()):
        try:
            rows[name] = {"run": name, "gflop": count_flops(step) / args.batch / 1e9, "times": []}
        except Exception as e:  # the reference may build and still fail on its first step
            if name != REF:
                raise
            ref_desc, ref_error = "", f"{type(e).__name__}: {e}"
            del runs[name]
    for _ in range(args.warmup):
        for step in runs.values():
            step(False)
    for _ in range(args.steps):  # interleaved, so that a busy machine slows every run alike
        for name, step in runs.items():
            rows[name]["times"].append(timed(step))
    for name, step in runs.items():
        if name != REF:
            rows[name]["gflop_r1"] = count_flops(step, True) / args.batch / 1e9
            rows[name]["r1_times"] = [timed(step, True) for _ in range(args.r1_steps)]
    peak_after = gemm_peak_gflops(args.gemm_n, args.gemm_reps)
    peak = max(peak_before, peak_after)  # a lower reading means another process took the core
    table = summarize(rows, args.batch, peak)

    print(f"GAN training speed, batch {args.batch}, 64x64, fp32, unconditional, random uint8 data, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU {cpu_name()}")
    print(f"  fp32 GEMM peak ({args.gemm_n}^2 matmul): {peak:.1f} GFLOP/s (before {peak_before:.1f}, after "
          f"{peak_after:.1f}); median of {args.steps} interleaved steps after 1 + {args.warmup} warm-up")
    print("  ours: z/w 256/256, mapping 4, style mixing 0.5, no augmentation")
    if ref_desc:
        print(f"  anchor: stylegan2-ada-pytorch from {args.reference}, widths 256,256,256,256,128, "
              f"reference ops, StyleGAN2Loss Gmain+Dmain, {ref_desc}")
    head = f"{'run':<26} {'R1':<8} {'s/step':>8} {'img/s':>7} {'GFLOP/img':>10} {'GFLOP/s':>8} {'% peak':>7}"
    print(f"\n{head}\n{'-' * len(head)}")
    for t in table:
        print(f"{t['run']:<26} {t['r1']:<8} {t['sec_per_step']:>8.2f} {t['img_per_s']:>7.2f} "
              f"{t['gflop_per_img']:>10.2f} {t['gflops_achieved']:>8.1f} {t['pct_peak']:>6.1f}%")

    no_r1 = {t["run"]: t["img_per_s"] for t in table if t["r1"] == "none"}
    if REF in no_r1:
        anchor, anchor_note = no_r1[REF], f"measured in this run, {args.threads} thread(s)"
        short = anchor_note
    else:
        anchor = DESIGN_ANCHOR_IMG_S
        anchor_note = ("anchor from DESIGN.md, NOT measured in this run (1 thread"
                       + ("" if args.threads == 1 else f", not comparable at {args.threads}")
                       + f"); reference not run: {ref_error}")
        print(f"\nanchor stylegan2-ada-pytorch: {anchor:.2f} img/s -- {anchor_note}")
        short = "anchor from DESIGN.md, not measured in this run"
    print(f"\nratio ours/anchor, both without R1 ({short}):")
    ratios = {name: ips / anchor for name, ips in no_r1.items() if name != REF}
    for name, ratio in ratios.items():
        print(f"  {name:<26} {ratio:6.2f}x" + ("   (same widths)" if name == anchor_key else ""))

    if args.json:
        result = {"benchmark": "gan_train", "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "cpu": cpu_name(), **{k: v for k, v in vars(args).items() if k != "json"},
                  "gemm_peak_gflops": peak, "gemm_peak_gflops_before": peak_before,
                  "gemm_peak_gflops_after": peak_after, "results": table, "anchor_img_per_s": anchor,
                  "anchor_source": anchor_note, "anchor_config": ref_desc, "ratio_ours_over_anchor": ratios,
                  "step_times": {name: r["times"] for name, r in rows.items()}}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
