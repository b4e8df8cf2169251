"""Each ``full`` profile on a GPU: seconds per training step, peak memory, inference time.

For every config's full profile, at its own batch and input shapes: the engine's input
pipeline, model, loss and AdamW in the precision the device picks, 3 warm-up steps, then
``--steps`` timed steps (CUDA synchronised); the peak memory PyTorch allocated and
reserved; the training time the profile's epochs x steps would take at that speed
(validation not counted); and whole-volume prediction with flip TTA, timed on the second
of two calls. The inputs are demo volumes of IBSR18's size (``ibsr_helpers.demo``) unless
``--data`` names IBSR18: step time and memory depend on the shapes, not the values.
Prints the hardware and one JSON line per profile; needs a CUDA GPU.

Usage::

    python benchmarks/bench_gpu.py --out gpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(path: Path, root: Path, steps: int) -> dict:
    """Step time, peak memory and TTA inference time of ``path``'s full profile."""
    import torch

    from ibsr_helpers.config import load_config
    from ibsr_helpers.data import load_split
    from ibsr_helpers.inference import Run, predict_volume
    from ibsr_helpers.models import build_model_from_config
    from ibsr_helpers.preprocessing import prepare_for
    from ibsr_helpers.training import build_pipeline, build_train_step

    config = load_config(path, "full", ["device=cuda", "data.num_workers=0"])
    device = torch.device("cuda")
    train = load_split(root, "train", 2, progress=False)
    val = load_split(root, "val", 1, progress=False)
    prepared = prepare_for(config, train)
    batch = int(config["train"]["batch_size"])
    pipe = build_pipeline(config, prepared, device, samples=(steps + 3) * batch)
    model = build_model_from_config(config, device)
    step = build_train_step(config, model, device)
    batches = iter(pipe.loader)
    for _ in range(3):
        step(*pipe.to_device(next(batches)))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    seconds = 0.0
    for _ in range(steps):
        image, label = pipe.to_device(next(batches))
        torch.cuda.synchronize()
        start = time.perf_counter()
        step(image, label)
        torch.cuda.synchronize()
        seconds += time.perf_counter() - start
    per_step = seconds / steps
    train_cfg = config["train"]
    total_steps = int(train_cfg["epochs"]) * int(train_cfg["steps_per_epoch"])
    run = Run(model.eval(), config)
    predict_volume(run, val[0], tta=True)
    torch.cuda.synchronize()
    start = time.perf_counter()
    predict_volume(run, val[0], tta=True)
    torch.cuda.synchronize()
    return {
        "config": path.stem,
        "batch": int(train_cfg["batch_size"]),
        "precision": step.precision.name
        if hasattr(step.precision, "name")
        else str(step.precision),
        "step_s": round(per_step, 4),
        "peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
        "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2),
        "train_steps": total_steps,
        "train_min_at_this_speed": round(total_steps * per_step / 60, 1),
        "predict_tta_s_per_volume": round(time.perf_counter() - start, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="IBSR18 folder (default: demo volumes)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per profile")
    parser.add_argument("--configs", nargs="*", default=None, help="config stems (default: all)")
    parser.add_argument("--out", default=None, help="also write the JSON lines here")
    args = parser.parse_args(argv)
    import torch

    from ibsr_helpers.demo import make_demo_dataset

    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU; none is visible")
    print(
        f"date {time.strftime('%Y-%m-%d %H:%M')}, GPU {torch.cuda.get_device_name()}, "
        f"torch {torch.__version__}"
    )
    root = (
        Path(args.data)
        if args.data
        else make_demo_dataset(Path(tempfile.mkdtemp()), n_subjects=4, seed=0, progress=False)
    )
    paths = sorted((ROOT / "configs").glob("*.yaml"))
    if args.configs:
        paths = [p for p in paths if p.stem in args.configs]
    lines = []
    for path in paths:
        try:
            row = measure(path, root, args.steps)
        except Exception as err:  # one profile's failure is a result too
            row = {"config": path.stem, "error": f"{type(err).__name__}: {err}"[:300]}
        torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
        lines.append(json.dumps(row))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
