"""The training engine shared by 2D slice, 3D full-volume and 3D patch training.

A run is a sequence of named steps, in the shape of MONAI's engines and their events
(``monai.engines.SupervisedTrainer``), without ignite:

0. :meth:`Trainer.connect`: join the process group under ``torchrun``;
1. :meth:`Trainer.check_folder`: record the data (``data.json``: kind, subjects,
   fingerprint), resolve the config into the run's plan (:mod:`ibsr_helpers.plan`), and
   compare it with what the run folder holds: another run is refused, a finished one is
   returned as it is (``resume=True``);
2. :meth:`Trainer.prepare_data`: read every training subject once and take it through the
   one preprocessing (:func:`ibsr_helpers.preprocessing.prepare`);

From step 2 on, the modules below the engine get their spec of the plan
(:attr:`Trainer.specs`: preprocessing, network, input, optimisation, validation), never
the config itself.
3. :meth:`Trainer.build`: model and training step (:mod:`ibsr_helpers.step`); with
   ``train.minutes`` set, :meth:`Trainer.fit_to_minutes` times a few steps first and fits
   the plan's epochs to that many minutes of training on this machine;
4. :meth:`Trainer.restore`: continue from ``last.pt`` (``resume=True``);
5. per epoch :meth:`Trainer.train_epoch`;
6. :meth:`Trainer.fire`: the handlers (:mod:`ibsr_helpers.handlers`) at the run's events:
   validation, checkpoints, MLflow and progress by default (:func:`standard_handlers`),
   figures when the caller adds them. The engine itself imports no figure module.

:func:`train` runs them all. The run folder holds ``config.json`` (the plan: what was
trained), ``data.json``, ``history.json`` (per epoch: loss, learning rate, minutes spent
training so far; per validation: Dice, and HD95 with ``train.val_hd95``), ``last.pt``
(model, optimiser, scheduler, scaler, epoch, MLflow run id, ``finished``) and ``best.pt``;
both checkpoints load with ``torch.load(weights_only=True)``.

A run interrupted at any point (a Colab disconnect) restarts with ``resume=True``: it
reloads ``last.pt`` and continues the same run, curve and MLflow run. Each epoch draws
its samples from ``seed + epoch``, so a resumed run sees what an uninterrupted one would.
Under ``torchrun --nproc_per_node N`` the same code trains with DistributedDataParallel;
ranks draw different samples, only rank 0 calls the handlers (validates, logs, writes).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ibsr_helpers.data import Volume, describe_source, discover, load_split
from ibsr_helpers.environment import get_device, seed_everything, set_rng_state
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.handlers import Checkpoint, Handler, Progress, Validation
from ibsr_helpers.io import load_nifti
from ibsr_helpers.models import build_network
from ibsr_helpers.pipeline import build_pipeline
from ibsr_helpers.plan import PLAN, Specs, fit_budget, plan_difference, resolve_spacing, specs
from ibsr_helpers.preprocessing import Prepared, prepare
from ibsr_helpers.profiling import time_train_steps
from ibsr_helpers.provenance import (
    DATA_RECORD,
    data_record,
    describe_record,
    record_difference,
)
from ibsr_helpers.step import build_train_step
from ibsr_helpers.tracking import Tracking

__all__ = ["TrainResult", "Trainer", "run_folder", "standard_handlers", "train"]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: The run folder.
        history: Per-epoch curves (``epoch``, ``train_loss``, ``lr``, ``val_dice_<tissue>``,
            ``val_mean_dice``; validation entries are listed at ``val_epoch``).
        best_dice: Best validation mean Dice.
        best_epoch: Epoch (0-based) of the best checkpoint.
        seconds: Wall time of this call.
        trained: False when the folder already held this run, finished (nothing trained).
    """

    run_dir: Path
    history: dict[str, list[float]] = field(default_factory=dict)
    best_dice: float = -1.0
    best_epoch: int = -1
    seconds: float = 0.0
    trained: bool = True


def _check_volume_boxes(plan: Specs, volumes: Sequence[Prepared]) -> None:
    """Whole-volume training batches boxes together, and UNETR takes one size only.

    Raises:
        IBSRError: Naming the brains whose box outgrew ``data.roi``, with the size needed.
    """
    if plan.sampling.mode != "volume":
        return
    sizes = {v.id: tuple(v.image.shape) for v in volumes}
    fixed = plan.model.fixed_size  # UNETR's img_size; None: a network of any size
    odd = [i for i, s in sizes.items() if s != (fixed or max(sizes.values()))]
    if odd and (fixed or plan.input.batch_size > 1):
        need = tuple(int(max(s[k] for s in sizes.values())) for k in range(3))
        raise IBSRError(
            f"the brains of {', '.join(odd[:4])} need a box of {need} voxels, larger than "
            f"data.roi {list(plan.preprocessing.roi)}: "
            + (
                "UNETR takes exactly img_size; raise data.roi and model.img_size"
                if fixed
                else "whole volumes of different sizes cannot share a batch; raise data.roi"
            )
        )


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# --------------------------------------------------------------------------- the engine


class Trainer:
    """One training run, step by step (see the module docstring for the steps).

    Args:
        config: From :func:`ibsr_helpers.config.load_config` (never changed: the engine
            trains its plan, :attr:`config`, see :mod:`ibsr_helpers.plan`).
        data_dir: IBSR18 or demo data folder (needs ``train`` and ``val`` subjects).
        out_dir: The run folder (created).
        resume: Continue from ``out_dir/last.pt``; a finished run returns at once.
        progress: Show tqdm bars.
        other_data: What to do when ``out_dir`` holds a run trained on other data:
            ``"refuse"`` (an error naming both) or ``"retrain"`` (move that run aside to
            ``<out_dir>-<kind>-<fingerprint>``, say so, and train afresh).
        handlers: Called at the run's events, in order (:mod:`ibsr_helpers.handlers`);
            none by default here (:func:`train` adds the standard ones).
    """

    def __init__(
        self,
        config: dict[str, Any],
        data_dir: str | Path,
        out_dir: str | Path,
        resume: bool = False,
        progress: bool = True,
        other_data: str = "refuse",
        handlers: Sequence[Handler] | None = None,
    ) -> None:
        if other_data not in ("refuse", "retrain"):
            raise IBSRError(f"other_data must be 'refuse' or 'retrain', got {other_data!r}")
        self.asked = copy.deepcopy(config)
        self.config = copy.deepcopy(config)  # the plan, once resolved by check_folder
        self.data_dir, self.out_dir = Path(data_dir), Path(out_dir)
        self.resume, self.progress, self.other_data = resume, progress, other_data
        self.data: dict[str, Any] = {}
        self.device = get_device(config.get("device"))
        self.started_dist, self.rank, self.world, self.main = False, 0, 1, True
        self.seed = seed_everything(int(self.config["seed"]))
        self.history: dict[str, list] = {"epoch": [], "train_loss": [], "lr": [], "val_epoch": []}
        self.best, self.best_epoch, self.start_epoch = -1.0, -1, 0
        self.best_seg: np.ndarray | None = None
        self.step_seconds: float | None = None  # measured by fit_to_minutes
        self.train_seconds = 0.0  # time spent in training steps, over resumes too
        self.train_set: list[Prepared] = []
        self.val_set: list[Volume] = []  # filled by the Validation handler
        self.resumed: dict[str, Any] = {}  # what last.pt held, for the handlers
        self.extra_state: dict[str, Any] = {}  # what handlers want saved in last.pt
        self.handlers: list[Handler] = list(handlers) if handlers is not None else []

    @property
    def specs(self) -> Specs:
        """The plan, one spec per concept (:func:`ibsr_helpers.plan.specs`)."""
        return specs(self.config)

    # 0 ---------------------------------------------------------------------------------
    def connect(self) -> None:
        """Join the process group under ``torchrun`` (one process per GPU or CPU rank)."""
        if self.device.type == "cuda" and "LOCAL_RANK" in os.environ:
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(self.device)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.started_dist = True
        self.rank, self.world = _dist_info()
        self.main = self.rank == 0

    # 1 ---------------------------------------------------------------------------------
    def check_folder(self) -> TrainResult | None:
        """Record the data, plan the run, and check what the run folder already holds.

        The data record (kind, subjects, fingerprint) and ``data.spacing`` need only the
        files' headers and bytes, not their voxels. A folder holding a run is compared with
        it: the data first, then the plan (the budget fitted with the stored step time).

        Returns:
            The finished run's result (``resume``), or None when there is training to do.

        Raises:
            IBSRError: If the folder holds a run and ``resume`` is false, holds a run trained
                on other data (``other_data="refuse"``), or one made with another config
                (naming the first differing setting).
        """
        self.data = data_record(self.data_dir)
        headers = [load_nifti(s.image) for s in discover(self.data_dir, ["train"])]
        self.config = resolve_spacing(self.asked, headers)
        last, stored = self.out_dir / "last.pt", self.out_dir / "config.json"
        if not last.exists():
            return None
        if not self.resume:
            raise IBSRError(
                "run folder already holds a run; pass --resume to continue it "
                "or choose another --out",
                self.out_dir,
            )
        record = self.out_dir / DATA_RECORD
        trained_on = json.loads(record.read_text()) if record.exists() else None
        other = record_difference(trained_on, self.data)
        if other is not None:
            if self.other_data == "retrain":
                self._set_aside(trained_on, other)
                return None
            raise IBSRError(
                f"run folder holds a run {other}; choose another --out (run folder) "
                "or delete this one",
                self.out_dir,
            )
        recorded = json.loads(stored.read_text())
        plan = fit_budget(self.config, recorded.get(PLAN, {}).get("step_seconds"))
        diff = plan_difference(plan, recorded)
        if diff is not None:
            raise IBSRError(
                f"run folder holds a run made with another config ({diff}); "
                "choose another --out (run folder) or delete this one",
                self.out_dir,
            )
        self.config = plan
        state = torch.load(last, map_location="cpu", weights_only=True)
        if not state.get("finished"):
            return None  # interrupted: continue it (or only complete its handlers)
        history = json.loads((self.out_dir / "history.json").read_text())
        return TrainResult(
            self.out_dir,
            history,
            float(state["best_dice"]),
            int(state["best_epoch"]),
            trained=False,
        )

    def _set_aside(self, trained_on: dict[str, Any] | None, other: str) -> None:
        """Move a run trained on other data out of the way (``other_data="retrain"``)."""
        tag = f"{trained_on['kind']}-{trained_on['fingerprint'][:8]}" if trained_on else "old"
        target = self.out_dir.with_name(f"{self.out_dir.name}-{tag}")
        n = 1
        while target.exists():
            n += 1
            target = self.out_dir.with_name(f"{self.out_dir.name}-{tag}-{n}")
        if self.main:
            self.out_dir.rename(target)
        print(
            f"note: {self.out_dir} held a run {other}; moved it to {target.name} and training "
            f"again on {describe_record(self.data)}",
            flush=True,
        )

    # 2 ---------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Read every training subject once and prepare it; build the training input."""
        plan = self.specs
        model, mode = plan.model, plan.sampling.mode
        if (model.dims == 2) != (mode == "slices"):
            raise IBSRError(f"model {model.name!r} is {model.dims}D but data.mode is {mode!r}")
        volumes = load_split(self.data_dir, "train", None, self.progress, shared=True)
        self.train_set = [prepare(v, plan.preprocessing) for v in volumes]
        _check_volume_boxes(plan, self.train_set)
        self.pipeline = build_pipeline(
            plan.input, self.train_set, self.device, self.seed, self.rank, self.world
        )

    # 3 ---------------------------------------------------------------------------------
    def build(self) -> None:
        """Model (DDP-wrapped when distributed), loss, optimiser, schedule, precision."""
        self.model = build_network(self.specs.model, self.device)
        net = self.model
        if self.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.step = build_train_step(self.specs.optim, self.model, self.device, net)
        self.net = net

    def fit_to_minutes(self, timed_steps: int = 10, warmup: int = 6) -> None:
        """Fit the plan's epochs to ``train.minutes`` of training here (:func:`fit_budget`).

        Times ``timed_steps`` real training steps (after ``warmup`` untimed ones) on the
        run's own batches, then puts the model's weights and the random state back as they
        were, so a run whose recipe already fits trains exactly as without a budget. When the
        recipe does not fit, the plan's ``train.steps_per_epoch`` becomes what fits
        (:func:`steps_for_minutes`), and the schedule and the sampler are rebuilt for it.
        Nothing happens without ``train.minutes``, or when the plan already has its step
        time (a resumed run keeps the steps it fitted).

        The first steps of a run are slow while oneDNN and the allocator settle: on a
        2-core Xeon with AMX, the 3D patch recipe's steps 3-8 took 0.49 s on average, steps
        7-16 0.38 s and the run's own 4,200 steps 0.35 s (2026-12-03); timed after two
        steps (0.52 s), that run trained 28 x 150 steps in 24.8 min of its 38.
        """
        tcfg = self.config["train"]
        minutes = tcfg.get("minutes")
        if not minutes or "step_seconds" in self.config.get(PLAN, {}):
            return
        weights = copy.deepcopy(self.model.state_dict())
        rng = torch.get_rng_state(), np.random.get_state()
        self.pipeline.set_epoch(0)
        batches = iter(self.pipeline.loader)

        def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal batches
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(self.pipeline.loader)
                batch = next(batches)
            return self.pipeline.to_device(batch)

        step_s = time_train_steps(self.step, next_batch, steps=timed_steps, warmup=warmup)["step_s"]
        del batches
        self.model.load_state_dict(weights)
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        if self.world > 1:  # every rank plans with the slowest rank's step time
            slowest = torch.tensor([step_s], device=self.device)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            step_s = float(slowest.item())
        asked, epochs = int(tcfg["steps_per_epoch"]), int(tcfg["epochs"])
        self.config = fit_budget(self.config, step_s)
        steps = int(self.config["train"]["steps_per_epoch"])
        self.step_seconds = step_s
        if self.main:
            fits = "fits" if steps == asked else f"does not fit: {epochs} x {steps} steps instead"
            tqdm.write(
                f"train.minutes {minutes}: a training step takes {step_s:.2f} s here "
                f"({self.step.precision.name}), so {epochs} x {asked} steps "
                f"(about {epochs * asked * step_s / 60:.0f} min) {fits}"
            )
        # a fresh optimiser and schedule: the timed steps leave no trace
        self.step = build_train_step(self.specs.optim, self.model, self.device, self.net)
        if steps != asked:
            self.pipeline = build_pipeline(
                self.specs.input, self.train_set, self.device, self.seed, self.rank, self.world
            )

    # 4 ---------------------------------------------------------------------------------
    def restore(self) -> None:
        """Continue from ``last.pt`` when resuming (weights, step, history, best score).

        What ``last.pt`` holds is kept in :attr:`resumed` for the handlers (the MLflow run
        id, say).
        """
        last = self.out_dir / "last.pt"
        if not (self.resume and last.exists()):
            return
        state = torch.load(last, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.step.load_state_dict(state)
        self.start_epoch = int(state["epoch"]) + 1
        self.best, self.best_epoch = float(state["best_dice"]), int(state["best_epoch"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        if "rng" in state:  # runs saved before 2026-12-07 lack it: their dropout draws differ
            set_rng_state(state["rng"])
        self.resumed = state
        if (self.out_dir / "history.json").exists():
            self.history = json.loads((self.out_dir / "history.json").read_text())
        if self.main and self.progress:
            epochs = int(self.config["train"]["epochs"])
            done = f"after epoch {self.start_epoch} of {epochs}"
            tqdm.write(f"{self.out_dir.name}: resumed from last.pt {done}")

    # 5 ---------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train for one epoch; record it in the history; returns ``{"train_loss", "lr"}``."""
        self.net.train()
        self.pipeline.set_epoch(epoch)
        epochs = int(self.config["train"]["epochs"])
        losses: list[float] = []
        start = time.perf_counter()
        bar = tqdm(
            self.pipeline.loader,
            desc=f"epoch {epoch + 1}/{epochs}",
            unit="step",
            disable=not (self.progress and self.main),
            leave=False,
        )
        for batch in bar:
            losses.append(self.step(*self.pipeline.to_device(batch)))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        self.train_seconds += time.perf_counter() - start
        record = {
            "train_loss": float(np.mean(losses)),
            "lr": float(self.step.scheduler.get_last_lr()[0]),
        }
        self.history["epoch"].append(epoch)
        self.history["train_loss"].append(record["train_loss"])
        self.history["lr"].append(record["lr"])
        self.history.setdefault("minutes", []).append(round(self.train_seconds / 60, 3))
        return record

    # 6 ---------------------------------------------------------------------------------
    def fire(self, event: str, *args: Any) -> None:
        """Call every handler's ``event`` in order (rank 0 only: the others only train)."""
        if self.main:
            for handler in self.handlers:
                getattr(handler, event)(self, *args)

    def tags(self) -> dict[str, str]:
        """What a tracker records about the run: data, device, precision, seed."""
        return {
            "data": describe_source(self.data_dir),
            "data_fingerprint": self.data["fingerprint"],
            "device": str(self.device),
            "precision": self.step.precision.name,
            "seed": str(self.seed),
            "world_size": str(self.world),
            **({"step_seconds": f"{self.step_seconds:.3f}"} if self.step_seconds else {}),
        }

    def run(self) -> TrainResult:
        """All the steps, the handlers called at the run's events."""
        start_time = time.time()
        try:
            self.connect()
            finished = self.check_folder()
            if finished is not None:
                finished.seconds = time.time() - start_time
                return finished
            if self.main:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            self.prepare_data()
            self.build()
            self.fit_to_minutes()
            if self.main:
                (self.out_dir / "config.json").write_text(json.dumps(self.config, indent=2))
                (self.out_dir / DATA_RECORD).write_text(json.dumps(self.data, indent=1))
            self.restore()
            status = "FAILED"
            try:
                self.fire("started")
                for epoch in range(self.start_epoch, int(self.config["train"]["epochs"])):
                    record = self.train_epoch(epoch)
                    self.fire("epoch_completed", epoch, record)
                self.fire("completed")
                status = "FINISHED"
            except KeyboardInterrupt:
                status = "KILLED"
                raise
            finally:
                self.fire("ended", status)
                if self.world > 1:
                    dist.barrier()
        finally:
            if self.started_dist:
                dist.destroy_process_group()
        return TrainResult(
            self.out_dir, self.history, self.best, self.best_epoch, time.time() - start_time
        )


def run_folder(runs_dir: str | Path, config: dict[str, Any], variant: str = "") -> Path:
    """The folder a config trains into by default: ``runs/<name>[-variant]-<profile>[-seedN]``.

    ``ibsr-seg train`` and every notebook name their runs this way, so notebook 06 finds
    what notebooks 03–05 trained.
    """
    seed = int(config.get("seed", 0))
    parts = [str(config["name"]), variant, str(config.get("profile") or "custom")]
    name = "-".join(p for p in parts if p) + (f"-seed{seed}" if seed else "")
    return Path(runs_dir) / name


def standard_handlers(progress: bool = True) -> list[Handler]:
    """The handlers :func:`train` uses unless told otherwise, in their order.

    Validation, then checkpoints (``best.pt`` follows validation), MLflow, and one line per
    epoch when ``progress``. Add the figures (``ibsr_helpers.plots.TrainingFigures``) or
    drop any of these: ``train(..., handlers=[*standard_handlers(), TrainingFigures()])``.
    """
    return [Validation(), Checkpoint(), Tracking(), *([Progress()] if progress else [])]


def train(
    config: dict[str, Any],
    data_dir: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    other_data: str = "refuse",
    handlers: Sequence[Handler] | None = None,
) -> TrainResult:
    """Train one model as the config says (all the :class:`Trainer` steps).

    Args:
        config: From :func:`ibsr_helpers.config.load_config`.
        data_dir: IBSR18 or demo data folder (needs ``train`` and ``val`` subjects).
        out_dir: The run folder (created).
        resume: Continue from ``out_dir/last.pt`` if it exists; a run that already
            finished with this config returns its result at once, without reading data.
        progress: Show tqdm bars.
        other_data: ``"refuse"`` a folder holding a run trained on other data, or
            ``"retrain"``: move that run aside, say so, and train afresh (the notebooks).
        handlers: Called at the run's events (default :func:`standard_handlers`).

    Returns:
        A :class:`TrainResult`.

    Raises:
        IBSRError: If the data has no training or validation subjects, or the run folder
            already holds a run and ``resume`` is false, holds a run trained on other data
            (``other_data="refuse"``), or holds a run made with another config (the message
            names the first differing setting).
    """
    chosen = standard_handlers(progress) if handlers is None else handlers
    return Trainer(config, data_dir, out_dir, resume, progress, other_data, chosen).run()
