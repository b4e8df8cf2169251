"""Experiment tracking with MLflow: a local SQLite store, or DagsHub when the environment says so.

Only what MLflow does not do itself is written here:

* **where**: every run folder ``runs/<name>/`` shares one store, ``runs/mlflow.db``, with
  artifacts in ``runs/mlartifacts/``, so all trainings appear side by side in one MLflow UI
  (:func:`mlflow_ui_command`) or one table (:func:`load_runs`);
* **DagsHub only from the environment**: with both ``DAGSHUB_USER_TOKEN`` and
  ``DAGSHUB_REPO`` (``owner/name``) set, runs go to
  ``https://dagshub.com/<owner>/<name>.mlflow``, the token reaching MLflow as
  ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (no interactive login);
* **no network otherwise**: MLflow's usage telemetry is switched off before it is
  imported (``MLFLOW_DISABLE_TELEMETRY=true`` unless set);
* a nested config logged as flat ``a.b.c`` parameters (:func:`flatten_config`).

The rest is MLflow's own: ``mlflow.start_run(run_id=…)`` continues a run after an
interruption (the engine keeps the run id in ``last.pt``), MLflow batches parameters and
truncates over-long values itself, and :func:`load_runs` is ``mlflow.search_runs``.

Example:
    >>> tracker = Tracker("runs/unet2d", experiment="ibsr18")          # doctest: +SKIP
    >>> run_id = tracker.start(run_name="unet2d")
    >>> tracker.log_params({"optim": {"lr": 0.002}}); tracker.log_metrics({"loss": 0.4}, 0)
    >>> tracker.end("FINISHED")
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ibsr_helpers.errors import IBSRError
from ibsr_helpers.handlers import Handler

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Tracker",
    "Tracking",
    "tracking_uri",
    "mlflow_ui_command",
    "load_runs",
    "flatten_config",
]

STORE_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"
DAGSHUB_ENV = ("DAGSHUB_USER_TOKEN", "DAGSHUB_REPO")
RUN_DIR_TAG = "ibsr.run_dir"


def _mlflow() -> ModuleType:
    """Import MLflow with its telemetry off (also when it was imported before us)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    already = "mlflow" in sys.modules
    import mlflow

    if already and os.environ["MLFLOW_DISABLE_TELEMETRY"].lower() in ("true", "1"):
        telemetry = sys.modules.get("mlflow.telemetry")
        with contextlib.suppress(Exception):
            if telemetry.get_telemetry_client() is not None:
                telemetry.set_telemetry_client()
    return mlflow


@contextlib.contextmanager
def _quiet_store() -> Iterator[None]:
    """Silence the alembic INFO lines MLflow prints while it creates a SQLite store."""
    loggers = [logging.getLogger(name) for name in ("alembic", "mlflow.store")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _dagshub_uri() -> str | None:
    """DagsHub's MLflow address from the environment (credentials handed to MLflow), or None."""
    token, repo = (os.environ.get(v, "").strip() for v in DAGSHUB_ENV)
    if not (token and repo):
        return None
    repo = repo.removeprefix("https://dagshub.com/").strip("/").removesuffix(".git")
    parts = repo.removesuffix(".mlflow").split("/")
    if len(parts) != 2 or not all(re.fullmatch(r"[\w.\-]+", p) for p in parts):
        raise IBSRError(f"DAGSHUB_REPO must be 'owner/name', got {os.environ['DAGSHUB_REPO']!r}")
    if not (
        os.environ.get("MLFLOW_TRACKING_USERNAME") and os.environ.get("MLFLOW_TRACKING_PASSWORD")
    ):
        os.environ["MLFLOW_TRACKING_USERNAME"] = token
        os.environ["MLFLOW_TRACKING_PASSWORD"] = token
    return f"https://dagshub.com/{parts[0]}/{parts[1]}.mlflow"


def _sqlite_uri(path: Path) -> str:
    return "sqlite:///" + Path(path).expanduser().absolute().as_posix()


def tracking_uri(runs_dir: str | Path) -> str:
    """Where runs under ``runs_dir`` are tracked: DagsHub if configured, else its SQLite store."""
    return _dagshub_uri() or _sqlite_uri(Path(runs_dir) / STORE_NAME)


def flatten_config(config: Mapping[str, Any]) -> dict[str, str]:
    """Flatten a nested config to ``{"a.b.c": "value"}`` (:func:`ibsr_helpers.config.leaves`).

    Example:
        >>> flatten_config({"optim": {"lr": 0.001, "betas": [0.9, 0.99]}, "seed": 0})
        {'optim.lr': '0.001', 'optim.betas': '[0.9, 0.99]', 'seed': '0'}
    """
    from ibsr_helpers.config import leaves

    if not isinstance(config, Mapping):
        raise IBSRError(f"a config must be a mapping, got {type(config).__name__}")
    return {key: str(value) for key, value in leaves(config).items()}


class Tracker:
    """One run's tracking (MLflow), or nothing when disabled.

    Args:
        run_dir: The run's folder, e.g. ``runs/unet2d``; the store is ``run_dir.parent``'s.
        experiment: MLflow experiment name, e.g. ``"ibsr18-2d"``.
        enabled: False makes every method a no-op (``tracking: none``, DDP ranks > 0).
    """

    def __init__(self, run_dir: str | Path, experiment: str, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir).expanduser().absolute()
        self.experiment = str(experiment)
        self.enabled = enabled
        self.uri = tracking_uri(self.run_dir.parent) if enabled else None
        self.run_id: str | None = None
        self._client: Any = None  # one MlflowClient for the run (MLflow's fluent calls
        # build a new one each time: about 0.1 s a call on a SQLite store)

    @property
    def client(self) -> Any:
        """The run's ``mlflow.MlflowClient`` (made on first use)."""
        if self._client is None:
            self._client = _mlflow().MlflowClient(self.uri)
        return self._client

    def start(
        self, run_name: str, run_id: str | None = None, tags: Mapping[str, str] | None = None
    ) -> str | None:
        """Start a run, or continue ``run_id`` (``mlflow.start_run(run_id=…)``).

        Returns:
            The run id (None when disabled).
        """
        if not self.enabled:
            return None
        mlflow = _mlflow()
        mlflow.set_tracking_uri(self.uri)
        with _quiet_store():
            experiment = mlflow.get_experiment_by_name(self.experiment)
            if experiment is None:
                location = None
                if self.uri.startswith("sqlite:"):
                    location = (self.run_dir.parent / ARTIFACTS_NAME).absolute().as_uri()
                experiment_id = mlflow.create_experiment(self.experiment, location)
            else:
                experiment_id = experiment.experiment_id
        if run_id is not None and not self._exists(mlflow, run_id):
            run_id = None  # the store was deleted or moved: start afresh
        run = mlflow.start_run(
            run_id=run_id,
            experiment_id=None if run_id else experiment_id,
            run_name=None if run_id else run_name,
            tags={RUN_DIR_TAG: str(self.run_dir), **(tags or {})},
            nested=mlflow.active_run() is not None,
        )
        self.run_id = run.info.run_id
        return self.run_id

    @staticmethod
    def _exists(mlflow: ModuleType, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return mlflow.get_run(run_id).info.lifecycle_stage != "deleted"
        except MlflowException:
            return False

    def log_params(self, config: Mapping[str, Any]) -> None:
        """Log a nested config as flat parameters (MLflow truncates long values)."""
        if self.run_id:
            from mlflow.entities import Param

            params = [Param(k, v) for k, v in flatten_config(config).items()]
            self.client.log_batch(self.run_id, params=params, synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at one step (the epoch)."""
        if self.run_id:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            values = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
            self.client.log_batch(self.run_id, metrics=values, synchronous=True)

    def log_artifact(self, path: str | Path) -> None:
        """Copy a file into the run's artifacts."""
        if self.run_id:
            self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run ``FINISHED``, ``FAILED`` or ``KILLED``."""
        if self.run_id:
            mlflow = _mlflow()
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                mlflow.end_run(status)
            else:
                self.client.set_terminated(self.run_id, status)


def _store_uri(where: str | Path) -> str:
    text = str(where)
    if re.match(r"^[a-z][a-z0-9+.\-]*://", text):
        return text
    path = Path(text).expanduser().absolute()
    candidates = [path] if path.suffix == ".db" else [path / STORE_NAME, path.parent / STORE_NAME]
    for candidate in candidates:
        if candidate.is_file():
            return _sqlite_uri(candidate)
    raise IBSRError(
        f"no MLflow store found (looked for {' and '.join(str(c) for c in candidates)}); "
        "train with tracking on first",
        path,
    )


def mlflow_ui_command(where: str | Path) -> str:
    """The shell command that opens the MLflow UI on a runs folder's store.

    Args:
        where: A run folder (``runs/unet2d``), the runs folder, the ``mlflow.db`` file or
            a tracking URI.
    """
    return f"mlflow ui --backend-store-uri {shlex.quote(_store_uri(where))} --workers 1"


def load_runs(where: str | Path, experiment: str | None = None) -> pd.DataFrame:
    """One row per run, newest first (``mlflow.search_runs``): params, last metrics, tags.

    Args:
        where: A run folder, the runs folder, the ``mlflow.db`` file or a tracking URI.
        experiment: Only this experiment's runs; every experiment when None.

    Raises:
        IBSRError: If no store is found or the experiment does not exist.
    """
    mlflow = _mlflow()
    mlflow.set_tracking_uri(_store_uri(where))
    names = [e.name for e in mlflow.search_experiments()]
    if experiment is not None and experiment not in names:
        raise IBSRError(f"no experiment named {experiment!r} (known: {', '.join(names) or 'none'})")
    return mlflow.search_runs(
        experiment_names=[experiment] if experiment else names,
        order_by=["attributes.start_time DESC"],
    )


#: The run folder's files a finished run logs to MLflow.
ARTIFACTS: tuple[str, ...] = (
    "best.pt",
    "curves.png",
    "val_overlay.png",
    "config.json",
    "history.json",
    "data.json",
)


class Tracking(Handler):
    """The training engine's MLflow handler: parameters, per-epoch metrics, the run's files.

    One MLflow run per run folder, continued after a resume (its id is kept in
    ``last.pt``); with ``tracking: none`` it does nothing.
    """

    def __init__(self) -> None:
        self.tracker: Tracker | None = None

    def started(self, trainer: Any) -> None:
        """Start (or continue) the MLflow run; log the plan's parameters on a new run."""
        config = trainer.config
        self.tracker = Tracker(
            trainer.out_dir,
            experiment=str(config.get("experiment", "ibsr18")),
            enabled=str(config.get("tracking", "mlflow")) != "none",
        )
        run_id = self.tracker.start(
            run_name=str(config.get("name", trainer.out_dir.name)),
            run_id=trainer.resumed.get("mlflow_run_id") or None,
            tags=trainer.tags(),
        )
        trainer.extra_state["mlflow_run_id"] = run_id or ""
        if trainer.start_epoch == 0:
            self.tracker.log_params(config)

    def epoch_completed(self, trainer: Any, epoch: int, record: dict[str, Any]) -> None:
        """Log the epoch's loss, learning rate and scores."""
        if self.tracker is not None:
            self.tracker.log_metrics(record, step=epoch)

    def ended(self, trainer: Any, status: str) -> None:
        """Log the run folder's files (a finished run), then end the MLflow run."""
        if self.tracker is None:
            return
        if status == "FINISHED":
            for name in ARTIFACTS:
                if (trainer.out_dir / name).exists():
                    self.tracker.log_artifact(trainer.out_dir / name)
        self.tracker.end(status)
