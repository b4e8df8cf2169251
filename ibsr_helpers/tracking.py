"""Experiment tracking: a local MLflow store (default), DagsHub (opt-in) or nothing.

Every run folder ``runs/<run_name>/`` shares ONE SQLite store, ``runs/mlflow.db``, and one
artifact folder, ``runs/mlartifacts/``, so all trainings appear side by side in one MLflow UI
(:func:`mlflow_ui_command`) or one table (:func:`load_runs`). The tracker writes the run id to
``runs/<run_name>/tracking.json`` so a training restarted after an interruption continues the
same MLflow run (``start(resume=True)``).

DagsHub is used only when both ``DAGSHUB_USER_TOKEN`` and ``DAGSHUB_REPO`` (``owner/name``) are
set; the token reaches MLflow through ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``,
with no interactive login. Otherwise nothing contacts the network: importing this module turns
MLflow's usage telemetry off (``MLFLOW_DISABLE_TELEMETRY=true`` unless already set).

Example:
    >>> with Tracker("runs/unet2d", experiment="ibsr18") as tracker:  # doctest: +SKIP
    ...     tracker.log_params({"model": {"name": "unet", "channels": [16, 32]}})
    ...     tracker.log_metrics({"train/loss": 0.42}, step=1)

"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shlex
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ibsr_helpers.errors import IBSRError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

__all__ = ["Tracker", "mlflow_ui_command", "load_runs", "flatten_config", "BACKENDS"]

BACKENDS = ("mlflow", "dagshub", "auto", "none")
STORE_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"
STATE_NAME = "tracking.json"
DAGSHUB_ENV = ("DAGSHUB_USER_TOKEN", "DAGSHUB_REPO")
RUN_DIR_TAG = "ibsr.run_dir"
_STATUSES = ("FINISHED", "FAILED", "KILLED")
_REMOTE_PARAM_LIMIT = 500  # the smallest limits MLflow servers have enforced since 1.28,
_REMOTE_TAG_LIMIT = 5000  # used for DagsHub, whose server version is unknown
_MAX_KEY_LENGTH = 250  # MLflow's limit on param, metric and tag names
_BATCH = 100  # MLflow's limit on params (and tags) per log_batch request
_QUIET_LOGGERS = ("alembic", "mlflow.store")

# MLflow >= 3 fetches a telemetry config over the network when it is imported; the course
# promises no network access unless DagsHub is asked for. A user's explicit setting wins.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class Tracker:
    """MLflow (default), DagsHub (opt-in via env) or nothing.

    Args:
        run_dir: This run's folder, e.g. ``runs/unet2d``; the shared store is
            ``run_dir.parent / "mlflow.db"``.
        experiment: MLflow experiment name, e.g. ``"ibsr18"``.
        backend: ``"mlflow"`` (local SQLite store), ``"dagshub"``, ``"auto"`` (DagsHub when
            both ``DAGSHUB_USER_TOKEN`` and ``DAGSHUB_REPO`` are set, else mlflow) or
            ``"none"`` (every method is a no-op). For DagsHub the token is put in
            ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` here (unless both are
            already set); nothing is sent before :meth:`start`.
        run_name: Name shown in the UI; defaults to the run folder's name.

    Attributes:
        backend: The resolved backend: ``"mlflow"``, ``"dagshub"`` or ``"none"``.
        run_id: The MLflow run id once started (None before, and always for ``"none"``).
        tracking_uri: ``sqlite:///…/mlflow.db``, ``https://dagshub.com/<owner>/<name>.mlflow``
            or None for ``"none"``.

    Raises:
        IBSRError: If the backend is unknown, or ``"dagshub"`` is asked for while a DagsHub
            variable is missing or malformed.

    """

    def __init__(
        self,
        run_dir: str | Path,
        experiment: str,
        backend: str = "mlflow",
        run_name: str | None = None,
    ) -> None:
        if not experiment or not str(experiment).strip():
            raise IBSRError("the experiment name must not be empty")
        self.run_dir = Path(run_dir).expanduser().absolute()
        self.experiment = str(experiment)
        self.run_name = run_name or self.run_dir.name
        self.backend = _resolve_backend(backend)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.resumed = False
        self.tracking_uri: str | None = None
        self._client: MlflowClient | None = None
        self._active = False
        self._existing_params: dict[str, str] | None = None
        self._param_limit = _REMOTE_PARAM_LIMIT
        self._tag_limit = _REMOTE_TAG_LIMIT
        if self.backend == "mlflow":
            self.tracking_uri = sqlite_uri(self.run_dir.parent / STORE_NAME)
        elif self.backend == "dagshub":
            owner, name = _dagshub_repo()
            self.tracking_uri = f"https://dagshub.com/{owner}/{name}.mlflow"
            _set_dagshub_credentials(os.environ["DAGSHUB_USER_TOKEN"])

    @property
    def enabled(self) -> bool:
        """False for the ``"none"`` backend."""
        return self.backend != "none"

    @property
    def state_file(self) -> Path:
        """``run_dir / "tracking.json"``: run id and tracking uri kept for resuming."""
        return self.run_dir / STATE_NAME

    def start(self, resume: bool = False) -> Tracker:
        """Open the store and start (or continue) a run.

        Args:
            resume: Continue the run recorded in ``tracking.json`` (status back to RUNNING,
                metrics go on at later steps). Without that file, or when it points to another
                store or to a run that no longer exists, a new run is started (with a warning
                in the latter cases).

        Returns:
            ``self``, so ``tracker = Tracker(...).start()`` works.

        Raises:
            IBSRError: If the tracker is already started or ``tracking.json`` is unreadable.

        """
        if not self.enabled:
            return self
        if self._active:
            raise IBSRError("the tracker is already started; call end() first", self.run_dir)
        client = self._open_client()
        self.experiment_id = self._get_or_create_experiment(client)
        run = self._resumable_run(client) if resume else None
        if run is not None:
            if run.info.status != "RUNNING":
                client.update_run(run.info.run_id, status="RUNNING")
            self.resumed = True
            self._existing_params = dict(run.data.params)
        else:
            run = client.create_run(
                self.experiment_id,
                run_name=self.run_name,
                tags={RUN_DIR_TAG: str(self.run_dir)},
            )
            self.resumed = False
            self._existing_params = None
        self.run_id = run.info.run_id
        self._active = True
        self._write_state()
        return self

    def log_params(self, config: Mapping[str, Any] | Any) -> None:
        """Log a (nested) configuration as flat ``"a.b.c": "value"`` parameters.

        Values are ``str()``-ed and cut to MLflow's length limit (6000 characters locally,
        500 on a remote server) with a ``...[truncated]`` marker. When a resumed run already
        has a parameter with another value, MLflow forbids changing it: the new value is
        skipped with a warning.

        Args:
            config: A dict (nested dicts allowed) or a dataclass instance.

        Raises:
            IBSRError: If the tracker is not started or ``config`` is not a mapping.

        """
        if not self.enabled:
            return
        client = self._require_active()
        flat = {
            _clean_key(key): _truncate(value, self._param_limit)
            for key, value in flatten_config(config).items()
        }
        if self._existing_params is not None:
            changed = sorted(
                k
                for k, v in flat.items()
                if k in self._existing_params and self._existing_params[k] != v
            )
            if changed:
                warnings.warn(
                    f"resumed run {self.run_id} keeps its earlier values of {', '.join(changed)}"
                    " (MLflow does not allow changing a logged parameter)",
                    stacklevel=2,
                )
            flat = {k: v for k, v in flat.items() if k not in self._existing_params}
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(params), _BATCH):
            client.log_batch(self.run_id, params=params[i : i + _BATCH])
        if self._existing_params is not None:
            self._existing_params.update(flat)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at one step (epoch or iteration).

        Args:
            metrics: Name to number, e.g. ``{"train/loss": 0.3, "val/dice_WM": 0.91}``;
                0-d tensors and NumPy scalars are accepted.
            step: The step, an integer >= 0.

        Raises:
            IBSRError: If the tracker is not started or a value is not a number.

        """
        if not self.enabled:
            return
        client = self._require_active()
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        entries = []
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise IBSRError(f"metric {key!r} is not a number: {value!r}") from None
            entries.append(Metric(_clean_key(key), number, timestamp, int(step)))
        if entries:
            client.log_batch(self.run_id, metrics=entries)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file (or a folder's contents) into the run's artifacts.

        Args:
            path: The file or folder to store.
            artifact_path: Sub-folder inside the run's artifacts, e.g. ``"figures"``.

        Raises:
            IBSRError: If the tracker is not started or ``path`` does not exist.

        """
        if not self.enabled:
            return
        client = self._require_active()
        path = Path(path)
        if path.is_dir():
            client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.is_file():
            client.log_artifact(self.run_id, str(path), artifact_path)
        else:
            raise IBSRError("artifact not found", path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values ``str()``-ed and cut to MLflow's limit).

        Args:
            tags: Tag name to value, e.g. ``{"profile": "quick"}``.

        Raises:
            IBSRError: If the tracker is not started.

        """
        if not self.enabled:
            return
        client = self._require_active()
        from mlflow.entities import RunTag

        entries = [RunTag(_clean_key(k), _truncate(v, self._tag_limit)) for k, v in tags.items()]
        for i in range(0, len(entries), _BATCH):
            client.log_batch(self.run_id, tags=entries[i : i + _BATCH])

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run finished, failed or killed; a second call does nothing.

        Args:
            status: ``"FINISHED"``, ``"FAILED"`` or ``"KILLED"``.

        Raises:
            IBSRError: If ``status`` is not one of those.

        """
        status = status.upper()
        if status not in _STATUSES:
            raise IBSRError(
                f"unknown run status {status!r}; expected one of {', '.join(_STATUSES)}"
            )
        if not self.enabled or not self._active:
            return
        self._client.set_terminated(self.run_id, status=status)
        self._active = False

    def __enter__(self) -> Tracker:
        if not self._active:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, Exception):
            status = "FAILED"
        else:  # KeyboardInterrupt, SystemExit
            status = "KILLED"
        try:
            self.end(status)
        except Exception as err:
            if exc_type is None:
                raise
            warnings.warn(f"could not mark the run {status}: {err}", stacklevel=2)

    def __repr__(self) -> str:
        return (
            f"Tracker(backend={self.backend!r}, experiment={self.experiment!r}, "
            f"run_name={self.run_name!r}, run_id={self.run_id!r})"
        )

    # -- internals -------------------------------------------------------------------------

    def _require_active(self) -> MlflowClient:
        if not self._active:
            raise IBSRError("the tracker is not started; call start() or use `with Tracker(...)`")
        return self._client

    def _open_client(self) -> MlflowClient:
        if self._client is None:
            if self.backend == "mlflow":
                self.run_dir.parent.mkdir(parents=True, exist_ok=True)
            self._client = _client(self.tracking_uri)
            if self.backend == "mlflow":
                from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

                self._param_limit = MAX_PARAM_VAL_LENGTH
                self._tag_limit = MAX_TAG_VAL_LENGTH
        return self._client

    def _get_or_create_experiment(self, client: MlflowClient) -> str:
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            location = None
            if self.backend == "mlflow":
                location = (self.run_dir.parent / ARTIFACTS_NAME).as_uri()
            return client.create_experiment(self.experiment, artifact_location=location)
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id

    def _resumable_run(self, client: MlflowClient) -> Any:
        state = self._read_state()
        if state is None:
            return None
        if state.get("tracking_uri") != self.tracking_uri:
            warnings.warn(
                f"{self.state_file} belongs to another store ({state.get('tracking_uri')}); "
                "starting a new run",
                stacklevel=3,
            )
            return None
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(str(state.get("run_id")))
        except MlflowException:
            run = None
        if run is None or run.info.lifecycle_stage == "deleted":
            warnings.warn(
                f"run {state.get('run_id')} from {self.state_file} no longer exists; "
                "starting a new run",
                stacklevel=3,
            )
            return None
        return run

    def _read_state(self) -> dict[str, Any] | None:
        if not self.state_file.is_file():
            return None
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IBSRError(
                f"unreadable tracking state ({exc}); delete it to start afresh", self.state_file
            ) from None
        if not isinstance(state, dict):
            raise IBSRError(
                "tracking state is not a JSON object; delete it to start afresh", self.state_file
            )
        return state

    def _write_state(self) -> None:
        state = {
            "backend": self.backend,
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
            "run_name": self.run_name,
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.state_file)  # atomic: a disconnect never leaves half a file


def flatten_config(config: Mapping[str, Any] | Any, prefix: str = "") -> dict[str, str]:
    """Flatten a nested configuration to ``{"a.b.c": "value"}`` with ``str()``-ed values.

    Args:
        config: A dict (nested dicts and dataclasses allowed) or a dataclass instance.
        prefix: Prepended to every key (used by the recursion).

    Returns:
        Flat dict; an empty nested dict becomes ``"{}"`` so its key is not lost.

    Raises:
        IBSRError: If ``config`` is neither a mapping nor a dataclass instance.

    Example:
        >>> flatten_config({"optim": {"lr": 0.001, "betas": [0.9, 0.99]}, "seed": 0})
        {'optim.lr': '0.001', 'optim.betas': '[0.9, 0.99]', 'seed': '0'}

    """
    config = _as_mapping(config)
    if config is None:
        raise IBSRError("parameters must be a dict or a dataclass instance")
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        nested = _as_mapping(value)
        if nested:
            flat.update(flatten_config(nested, prefix=f"{name}."))
        else:
            flat[name] = "{}" if nested is not None else str(value)
    return flat


def sqlite_uri(path: str | Path) -> str:
    """Return the SQLAlchemy URI of a SQLite file: ``sqlite:////abs/path/mlflow.db``.

    Args:
        path: The database file (need not exist).

    """
    return "sqlite:///" + Path(path).expanduser().absolute().as_posix()


def mlflow_ui_command(run_dir_or_store: str | Path) -> str:
    """Return the shell command that opens the MLflow UI on the shared store.

    Args:
        run_dir_or_store: A run folder (``runs/unet2d``), the runs folder (``runs``), the
            ``mlflow.db`` file or a ``sqlite:///`` URI.

    Returns:
        E.g. ``"mlflow ui --backend-store-uri sqlite:////abs/runs/mlflow.db --workers 1"``.

    Raises:
        IBSRError: If no ``mlflow.db`` is found there.

    """
    uri = _find_store_uri(run_dir_or_store)
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)} --workers 1"


def load_runs(run_dir_or_store: str | Path, experiment: str | None = None) -> pd.DataFrame:
    """One row per run: id, name, status, times, ``params.*`` and latest ``metrics.*``.

    Args:
        run_dir_or_store: A run folder, the runs folder, the ``mlflow.db`` file or a tracking
            URI (``sqlite:///…`` or a DagsHub ``https://…mlflow`` address).
        experiment: Only this experiment's runs; all experiments when None.

    Returns:
        A DataFrame, newest run first, with columns ``run_id``, ``run_name``, ``experiment``,
        ``status``, ``start_time``, ``end_time``, ``run_dir``, then ``params.<key>`` (numbers
        converted where every value is one) and ``metrics.<key>`` (the last logged value).

    Raises:
        IBSRError: If no store is found or the experiment does not exist.

    """
    import pandas as pd

    client = _client(_find_store_uri(run_dir_or_store))
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if experiment is not None:
        ids = [i for i, name in experiments.items() if name == experiment]
        if not ids:
            known = ", ".join(sorted(experiments.values())) or "none"
            raise IBSRError(f"no experiment named {experiment!r} (known: {known})")
    else:
        ids = list(experiments)
    rows = []
    token = None
    while ids:
        page = client.search_runs(
            ids, max_results=1000, order_by=["attributes.start_time DESC"], page_token=token
        )
        for run in page:
            info, data = run.info, run.data
            row: dict[str, Any] = {
                "run_id": info.run_id,
                "run_name": info.run_name,
                "experiment": experiments.get(info.experiment_id),
                "status": info.status,
                "start_time": pd.to_datetime(info.start_time or None, unit="ms"),
                "end_time": pd.to_datetime(info.end_time or None, unit="ms"),
                "run_dir": data.tags.get(RUN_DIR_TAG),
            }
            row.update({f"params.{k}": v for k, v in sorted(data.params.items())})
            row.update({f"metrics.{k}": v for k, v in sorted(data.metrics.items())})
            rows.append(row)
        token = page.token
        if not token:
            break
    base = ["run_id", "run_name", "experiment", "status", "start_time", "end_time", "run_dir"]
    frame = pd.DataFrame(rows, columns=None if rows else base)
    for column in frame.columns:
        if column.startswith("params."):
            with contextlib.suppress(ValueError, TypeError):
                frame[column] = pd.to_numeric(frame[column])
    return frame.reset_index(drop=True)


# -- module internals ----------------------------------------------------------------------


def _resolve_backend(backend: str) -> str:
    name = str(backend).strip().lower()
    if name not in BACKENDS:
        raise IBSRError(
            f"unknown tracking backend {backend!r}; expected one of {', '.join(BACKENDS)}"
        )
    if name == "auto":
        return "dagshub" if all(os.environ.get(v) for v in DAGSHUB_ENV) else "mlflow"
    if name == "dagshub":
        missing = [v for v in DAGSHUB_ENV if not os.environ.get(v)]
        if missing:
            raise IBSRError(
                "the dagshub tracking backend needs the environment variables "
                f"{' and '.join(DAGSHUB_ENV)} (missing: {', '.join(missing)}); "
                "DAGSHUB_REPO is 'owner/name'"
            )
    return name


def _dagshub_repo() -> tuple[str, str]:
    raw = os.environ["DAGSHUB_REPO"].strip()
    repo = (
        raw.removeprefix("https://dagshub.com/")
        .strip("/")
        .removesuffix(".git")
        .removesuffix(".mlflow")
    )
    parts = repo.split("/")
    if len(parts) != 2 or not all(re.fullmatch(r"[\w.\-]+", p) for p in parts):
        raise IBSRError(f"DAGSHUB_REPO must be 'owner/name', got {raw!r}")
    return parts[0], parts[1]


def _set_dagshub_credentials(token: str) -> None:
    """Hand the token to MLflow's HTTP client (basic auth with the token as user and password).

    Credentials the user already set for MLflow are kept.
    """
    if os.environ.get("MLFLOW_TRACKING_USERNAME") and os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        return
    os.environ["MLFLOW_TRACKING_USERNAME"] = token
    os.environ["MLFLOW_TRACKING_PASSWORD"] = token


def _mlflow_imported() -> None:
    """Import MLflow with telemetry off, turning it off too if MLflow was imported earlier."""
    already = "mlflow" in sys.modules
    import mlflow  # noqa: F401

    if already and os.environ.get("MLFLOW_DISABLE_TELEMETRY", "").lower() in ("true", "1"):
        telemetry = getattr(mlflow, "telemetry", None) or sys.modules.get("mlflow.telemetry")
        with contextlib.suppress(Exception):  # absent before MLflow 3
            if telemetry.get_telemetry_client() is not None:
                telemetry.set_telemetry_client()


@contextlib.contextmanager
def _quiet_store_logs() -> Iterator[None]:
    """Silence alembic / MLflow INFO lines printed while a new SQLite store is created."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _client(tracking_uri: str) -> MlflowClient:
    _mlflow_imported()
    from mlflow.tracking import MlflowClient

    with _quiet_store_logs():
        return MlflowClient(tracking_uri=tracking_uri)


def _find_store_uri(run_dir_or_store: str | Path) -> str:
    text = str(run_dir_or_store)
    if re.match(r"^[a-z][a-z0-9+.\-]*://", text):
        if text.startswith("sqlite:///"):
            db = Path(text.removeprefix("sqlite:///"))  # "sqlite:////abs" -> "/abs"
            if not db.is_file():
                raise IBSRError("no MLflow store (mlflow.db) found", db)
        return text
    path = Path(text).expanduser().absolute()
    candidates = [path] if path.suffix == ".db" else [path / STORE_NAME, path.parent / STORE_NAME]
    for candidate in candidates:
        if candidate.is_file():
            return sqlite_uri(candidate)
    raise IBSRError(
        f"no MLflow store found (looked for {' and '.join(str(c) for c in candidates)}); "
        "train with tracking on first",
        path,
    )


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return None


def _clean_key(key: Any) -> str:
    """Make a name MLflow accepts on every OS: letters, digits, ``_-. /``; no empty segment."""
    name = re.sub(r"[^/\w.\- ]", "_", str(key))
    name = "/".join(part for part in name.split("/") if part not in ("", ".", ".."))
    return (name or "_")[:_MAX_KEY_LENGTH]


def _truncate(value: Any, limit: int) -> str:
    text = str(value)
    if len(text) <= limit:
        return text
    marker = "...[truncated]"
    if limit <= len(marker):
        return text[:limit]
    return text[: limit - len(marker)] + marker
