"""DistributedDataParallel on the CPU: two processes (gloo) run the real engine.

``torchrun --nproc_per_node 2`` starts a small script that calls
:func:`ibsr_helpers.training.train` unchanged, after wrapping three of the engine's
names to observe it: the sampler (which indices each rank draws), ``Pipeline.to_device``
(a checksum of every batch each rank trains on), ``handlers.save_atomic`` (who writes
checkpoints) and
``build_network`` (to keep the trained model).
At the end each rank saves the weights it ended with. The test then checks that the
ranks trained on different samples, ended with identical weights (DDP averages the
gradients, so every rank takes the same step) and that only rank 0 wrote files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

WORLD = 2
EPOCHS, STEPS, BATCH = 2, 3, 2

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path

    import torch

    from ibsr_helpers import handlers, pipeline, training
    from ibsr_helpers.datasets import EpochSampler

    data_dir, out_dir, log_dir = (Path(a) for a in sys.argv[1:4])
    rank = int(os.environ["RANK"])
    log = {"indices": [], "batches": [], "saves": []}

    class RecordingSampler(EpochSampler):
        def __iter__(self):
            drawn = list(super().__iter__())
            log["indices"].append(drawn)
            return iter(drawn)

    built = []
    to_device, save = pipeline.Pipeline.to_device, handlers.save_atomic
    build_model = training.build_network

    def recording_to_device(pipe, batch):
        image, label = to_device(pipe, batch)
        log["batches"].append([float(image.double().sum()), float((image.double() ** 2).sum())])
        return image, label

    def recording_save(obj, path):
        log["saves"].append(str(path))
        save(obj, path)

    def recording_build_model(*args, **kwargs):
        built.append(build_model(*args, **kwargs))
        return built[-1]

    pipeline.EpochSampler = RecordingSampler
    pipeline.Pipeline.to_device, handlers.save_atomic = recording_to_device, recording_save
    training.build_network = recording_build_model

    config = json.loads((log_dir / "config.json").read_text())
    training.train(config, data_dir, out_dir, progress=False)
    torch.save(built[0].state_dict(), log_dir / f"weights_rank{rank}.pt")
    (log_dir / f"log_rank{rank}.json").write_text(json.dumps(log))
""")


def _config() -> dict:
    from ibsr_helpers.config import load_config

    return load_config(
        {
            "name": "ddp-test",
            "device": "cpu",
            "tracking": "none",
            "seed": 3,
            "model": {"name": "unet3d", "channels": [4, 8, 16], "num_res_units": 1},
            "data": {
                "mode": "patches",
                "patch_size": [32, 32, 32],
                "patches_per_volume": 2,
                "sampler": "uniform",
                "augment": True,
            },
            "optim": {"lr": 0.01, "warmup_epochs": 0},
            "train": {
                "epochs": EPOCHS,
                "steps_per_epoch": STEPS,
                "batch_size": BATCH,
                "val_every": EPOCHS,
                "max_val_subjects": 1,
            },
            "inference": {"overlap": 0.0, "sw_batch_size": 16},
        },
        profile=None,
    )


def test_two_cpu_ranks_see_different_samples_and_end_identical(demo_root, tmp_path):
    out_dir, log_dir = tmp_path / "run", tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "config.json").write_text(json.dumps(_config()))
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        str(script),
        str(demo_root),
        str(out_dir),
        str(log_dir),
    ]
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1]
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    logs = [json.loads((log_dir / f"log_rank{r}.json").read_text()) for r in range(WORLD)]
    # Each rank drew its own share of every epoch's global draw, and trained on it.
    for log in logs:
        assert [len(idx) for idx in log["indices"]] == [STEPS * BATCH] * EPOCHS
        assert len(log["batches"]) == EPOCHS * STEPS
    from ibsr_helpers.data import discover
    from ibsr_helpers.datasets import EpochSampler

    n_train = len(discover(demo_root, splits=["train"]))
    for epoch in range(EPOCHS):
        whole = EpochSampler(n_train, STEPS * BATCH * WORLD, seed=3)
        whole.set_epoch(epoch)
        interleaved = [
            logs[i % WORLD]["indices"][epoch][i // WORLD] for i in range(STEPS * BATCH * WORLD)
        ]
        assert interleaved == list(whole)
    # Different samples: no batch of rank 1 equals any batch of rank 0 (random patches
    # and augmentation are seeded per rank, so even the same subject gives new patches).
    assert not {tuple(b) for b in logs[0]["batches"]} & {tuple(b) for b in logs[1]["batches"]}

    # Identical weights at the end, equal to the checkpoint rank 0 wrote.
    w0, w1 = (torch.load(log_dir / f"weights_rank{r}.pt", weights_only=True) for r in range(WORLD))
    assert w0.keys() == w1.keys()
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0, msg=key)
    last = torch.load(out_dir / "last.pt", weights_only=True)["model"]
    for key in w0:
        torch.testing.assert_close(last[key], w0[key], rtol=0, atol=0, msg=key)

    # Only rank 0 wrote checkpoints.
    assert logs[1]["saves"] == []
    assert {Path(p).name for p in logs[0]["saves"]} == {"last.pt", "best.pt"}
    assert sorted(p.name for p in out_dir.glob("*.pt")) == ["best.pt", "last.pt"]
