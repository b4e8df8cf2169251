"""Benchmark every model of the course: training step, throughput, inference, memory.

For each model, with the settings of its config file (``configs/``, quick profile on a
CPU, full profile on a GPU unless ``--profile`` says otherwise):

* the training step time (forward, loss, backward, AdamW) with the real input pipeline
  (the engine's dataset, augmentation and DataLoader), and with one batch already on the
  device; their ratio says how much the loader costs (1.0: nothing);
* throughput in slices, volumes or patches per second (what one step trains on);
* inference seconds per volume (one validation subject, preprocessing cached: the
  network, the sliding window and the way back onto the scan's grid), without and with
  flip TTA; and the same TTA prediction with the network swapped for a 1x1 convolution
  (``infer_host_tta_s``): what everything but the network costs (slicing or windows,
  softmax, flips, copies between devices, the way back, the labels), the floor no faster
  GPU lowers;
* peak memory: process RSS on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU.

Each model runs in its own process, so peak memories do not mix and one failure (out of
memory, say) leaves the others standing. Uses IBSR18 when found (``--data``,
``IBSR18_DIR``, ``data/IBSR18``), else demo data.

Usage::

    python benchmarks/bench_models.py                       # all models, auto device
    python benchmarks/bench_models.py --models unet3d unetr --device cuda --steps 20
    python benchmarks/bench_models.py --device cpu --steps 3 --out bench_cpu.csv
    python benchmarks/bench_models.py --models unet3d --profile cpu --set model.num_res_units=1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

#: Benchmark name -> (config file, overrides).
BENCHES: dict[str, tuple[str, list[str]]] = {
    "unet2d": ("unet2d.yaml", []),
    "efficientunet2d": ("efficientunet2d.yaml", []),
    "unet3d": ("unet3d_patches.yaml", []),
    "unet3d-volume": ("unet3d_volume.yaml", []),
    "segresnet": ("segresnet_volume.yaml", []),
    "unetr": ("unetr_volume.yaml", []),
}
DEFAULT_MODELS = ["unet2d", "efficientunet2d", "unet3d", "segresnet", "unetr"]
UNITS = {"slices": "slices", "volume": "volumes", "patches": "patches"}
N_TRAIN = 4  # training subjects loaded: enough for the loader to vary its samples


def measure(
    name: str,
    device_name: str,
    profile: str,
    steps: int,
    data: str | None,
    sets: list[str] | None = None,
) -> dict:
    """Measure one model in this process (``sets``: extra config overrides); one table row."""
    import torch

    from ibsr_helpers.config import load_config
    from ibsr_helpers.data import load_split, resolve_data_dir
    from ibsr_helpers.environment import get_device, seed_everything
    from ibsr_helpers.inference import Run, predict_volume
    from ibsr_helpers.models import build_network, count_parameters
    from ibsr_helpers.pipeline import build_pipeline
    from ibsr_helpers.plan import prepare_for, resolve_spacing, specs
    from ibsr_helpers.profiling import PeakMemory, time_train_steps
    from ibsr_helpers.step import build_train_step

    config_file, overrides = BENCHES[name]
    cfg = load_config(CONFIGS / config_file, profile, [*overrides, *(sets or [])])
    device = get_device(device_name)
    seed_everything(0)
    d, t = cfg["data"], cfg["train"]
    root, _ = resolve_data_dir(data)
    # The engine's own preprocessing, input pipeline, model placement and training step.
    train_vols = load_split(root, "train", N_TRAIN, progress=False)
    cfg = resolve_spacing(cfg, train_vols)  # the engine's plan: data.spacing as it trains
    train_set = prepare_for(cfg, train_vols)
    val_vol = load_split(root, "val", 1, progress=False)[0]
    prepare_for(cfg, [val_vol])
    plan = specs(cfg)
    pipe = build_pipeline(plan.input, train_set, device, samples=(steps + 2) * int(t["batch_size"]))
    model = build_network(plan.model, device)
    step = build_train_step(plan.optim, model, device)
    batches = iter(pipe.loader)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        return pipe.to_device(next(batches))

    real = time_train_steps(step, next_batch, steps=steps, warmup=1)
    fixed = next_batch()  # the loader holds warm-up + steps + 1 batches
    resident = time_train_steps(step, lambda: fixed, steps=steps, warmup=0)

    def seconds(run: Run, tta: bool) -> float:
        start = time.perf_counter()
        predict_volume(run, val_vol, tta=tta)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    run = Run(model.eval(), cfg)
    predict_volume(run, val_vol)  # warm-up: preprocessing cached, allocator, autotuning
    with PeakMemory(device) as peak:
        infer = {tta: seconds(run, tta) for tta in (False, True)}
    # the same TTA prediction through a 1x1 convolution: what the pipeline costs
    conv = torch.nn.Conv2d if plan.model.dims == 2 else torch.nn.Conv3d
    free = Run(conv(plan.model.in_channels, 4, 1).to(device).eval(), cfg)
    seconds(free, True)  # warm-up
    infer["host"] = seconds(free, True)
    size = (
        d["patch_size"]
        if d["mode"] == "patches"
        else (d["roi"] if d["mode"] == "volume" else f"{d['plane']} slice")
    )
    return {
        "model": name,
        "mode": d["mode"],
        "input": "x".join(map(str, size)) if isinstance(size, list) else size,
        "params_M": count_parameters(model) / 1e6,
        "precision": step.precision.name,
        "batch": int(real["batch"]),
        "unit": UNITS[d["mode"]],
        "step_s": real["step_s"],
        "step_s_resident": resident["step_s"],
        "loader_ratio": real["step_s"] / resident["step_s"],
        "items_per_s": real["batch"] / real["step_s"],
        "infer_s": infer[False],
        "infer_tta_s": infer[True],
        "infer_host_tta_s": infer["host"],
        "train_peak_MB": max(real["peak_mb"], resident["peak_mb"]),
        "infer_peak_MB": peak.mb,
        "memory": peak.kind,
        "profile": profile,
        "device": str(device),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=DEFAULT_MODELS,
        choices=list(BENCHES),
        help=f"default: {' '.join(DEFAULT_MODELS)}",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (default 5)")
    parser.add_argument(
        "--data", default=None, help="IBSR18 or demo folder (default: found or demo)"
    )
    parser.add_argument(
        "--profile", default=None, help="config profile (default: quick on CPU, full on CUDA)"
    )
    parser.add_argument("--out", default=None, help="also write the table to this CSV")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every model, as ibsr-seg train --set (repeatable)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    profile = args.profile or ("full" if device.startswith("cuda") else "quick")
    if args.child:  # one model, in a fresh process: print its row as JSON
        row = measure(args.child, device, profile, args.steps, args.data, args.set)
        print("ROW " + json.dumps(row), flush=True)
        return 0

    import pandas as pd

    from ibsr_helpers.data import describe_source, resolve_data_dir
    from ibsr_helpers.profiling import hardware_header

    root, _ = resolve_data_dir(args.data)
    header = hardware_header(
        data=describe_source(root),
        overrides=" ".join(args.set) or "none",
        device=f"{device}, profile {profile}, {args.steps} timed steps",
    )
    print(header + "\n", flush=True)

    rows = []
    for name in args.models:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--device",
            device,
            "--steps",
            str(args.steps),
            "--profile",
            profile,
            "--data",
            str(root),
            *(f"--set={o}" for o in args.set),
        ]
        start = time.time()
        done = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"}
        )
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("ROW ")]
        if done.returncode or not lines:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            print(f"{name}: FAILED (exit {done.returncode}): {tail[0]}", flush=True)
            rows.append({"model": name, "error": tail[0]})
            continue
        rows.append(json.loads(lines[-1][4:]))
        print(f"{name}: done in {time.time() - start:.0f} s", flush=True)

    table = pd.DataFrame(rows)
    with pd.option_context(
        "display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3g}".format
    ):
        print()
        print(
            table.drop(columns=[c for c in ("profile", "device") if c in table]).to_string(
                index=False
            )
        )
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
