"""How much GPU memory does each ``full`` profile need? An estimate made on the CPU.

Without a GPU at hand, each full profile's training step (the engine's own: model at full
size, its real input shapes, loss, AdamW) is run on the CPU in bf16 autocast, the
precision a GPU would use, at batch 1 and batch 2, and the peak resident memory above the
process's baseline is measured. Activations grow with the batch, weights and optimiser
state do not, so the step at the profile's own batch is estimated as

    memory(batch) = memory(1) + (batch - 1) * (memory(2) - memory(1))

This is an estimate, not a GPU measurement: a GPU adds its CUDA context (about 0.5 GB),
cuDNN workspaces and allocator slack; the configs quote the estimate with a margin.
Each measurement runs in its own process. Prints the hardware and one row per profile.

Usage::

    python benchmarks/bench_memory.py                    # every config's full profile
    python benchmarks/bench_memory.py --configs unet2d unetr_volume
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(stem: str, batch: int, data: str | None) -> dict:
    """Peak memory (MB) of one bf16 training step of ``stem``'s full profile at ``batch``."""
    import torch

    from ibsr_helpers.config import load_config
    from ibsr_helpers.data import load_split, resolve_data_dir
    from ibsr_helpers.models import build_network, count_parameters
    from ibsr_helpers.pipeline import build_pipeline
    from ibsr_helpers.plan import prepare_for, specs
    from ibsr_helpers.profiling import PeakMemory, time_train_steps
    from ibsr_helpers.step import build_train_step

    sets = ["device=cpu", "train.precision=bf16", f"train.batch_size={batch}"]
    sets += ["data.gpu_augment=false", "data.num_workers=0"]
    config = load_config(ROOT / "configs" / f"{stem}.yaml", "full", sets)
    root, _ = resolve_data_dir(data)
    volumes = prepare_for(config, load_split(root, "train", max(batch, 2), progress=False))
    plan = specs(config)
    pipe = build_pipeline(plan.input, volumes, torch.device("cpu"), samples=2 * batch)
    fixed = pipe.to_device(next(iter(pipe.loader)))
    with PeakMemory("cpu") as baseline:
        pass
    model = build_network(plan.model, "cpu")
    step = build_train_step(plan.optim, model, "cpu")
    cost = time_train_steps(step, lambda: fixed, steps=1, warmup=0)
    return {
        "config": stem,
        "batch": int(fixed[0].shape[0]),
        "input": "x".join(map(str, fixed[0].shape[1:])),
        "params_M": count_parameters(model) / 1e6,
        "step_s": cost["step_s"],
        "peak_MB": cost["peak_mb"] - baseline.mb,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    stems = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    parser.add_argument("--configs", nargs="+", default=stems, choices=stems)
    parser.add_argument("--data", default=None)
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("ROW " + json.dumps(measure(args.child[0], int(args.child[1]), args.data)))
        return 0

    from ibsr_helpers.config import load_config
    from ibsr_helpers.profiling import hardware_header

    print(hardware_header() + "\n")
    for stem in args.configs:
        rows = []
        for batch in (1, 2):
            cmd = [sys.executable, __file__, "--child", stem, str(batch)]
            cmd += ["--data", args.data] if args.data else []
            done = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("ROW ")]
            if done.returncode or not lines:
                print(f"{stem} batch {batch}: FAILED {done.stderr.strip().splitlines()[-1:]}")
                break
            rows.append(json.loads(lines[-1][4:]))
        if len(rows) < 2:
            continue
        full = load_config(ROOT / "configs" / f"{stem}.yaml", "full")
        batch = int(full["train"]["batch_size"]) * (
            int(full["data"]["patches_per_volume"]) if full["data"]["mode"] == "patches" else 1
        )
        one, two = rows[0]["peak_MB"], rows[1]["peak_MB"]
        estimate = one + (batch - 1) * max(two - one, 0.0)
        print(
            f"{stem}: input {rows[0]['input']}, {rows[0]['params_M']:.1f} M parameters; "
            f"bf16 step peak {one:.0f} MB at batch 1, {two:.0f} MB at batch 2 "
            f"({rows[0]['step_s']:.1f} s / {rows[1]['step_s']:.1f} s on this CPU); "
            f"full profile batch {batch}: about {estimate / 1024:.1f} GB",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
