from __future__ import annotations

import dataclasses
import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from ibsr_helpers.errors import IBSRError
from ibsr_helpers.tracking import Tracker, flatten_config, load_runs, mlflow_ui_command

# MLflow is imported only through ibsr_helpers.tracking (lazily, with its telemetry off), so
# this test module itself never makes MLflow reach for the network.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated"  # inside MLflow's SQLAlchemy store
)
LONG = 7000  # longer than MLflow's 6000-character limit on parameter values
_ENV = (
    "DAGSHUB_USER_TOKEN",
    "DAGSHUB_REPO",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


@dataclasses.dataclass
class _Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)


CONFIG = {
    "model": {"name": "unet", "channels": [16, 32, 64], "norm": {}},
    "optim": _Optim(),
    "seed": 0,
    "data dir": Path("/data/IBSR18"),
    "notes": "x" * LONG,
}


@pytest.fixture(autouse=True)
def _no_dagshub_env(monkeypatch):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    """One store shared by the module's tests (creating a SQLite store takes ~1.5 s).

    The space in the name checks that paths are quoted and URIs encoded correctly.
    """
    return tmp_path_factory.mktemp("tracking") / "my runs"


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every connection or DNS lookup attempted in this process."""
    attempts: list[tuple] = []

    def refuse(name):
        def fn(*args, **kwargs):
            attempts.append((name, args[:2]))
            raise OSError(f"network access attempted: {name}{args[:2]}")

        return fn

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def _client(tracker: Tracker):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracker.tracking_uri)


def test_flatten_config_nests_with_dots_and_stringifies():
    flat = flatten_config(CONFIG)
    assert flat["model.name"] == "unet"
    assert flat["model.channels"] == "[16, 32, 64]"
    assert flat["model.norm"] == "{}"
    assert flat["optim.lr"] == "0.001"
    assert flat["optim.betas"] == "(0.9, 0.99)"
    assert flat["data dir"] == "/data/IBSR18"
    with pytest.raises(IBSRError, match="dict or a dataclass"):
        flatten_config([1, 2])


def test_params_metrics_artifacts_read_back(runs_root, tmp_path, no_network):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello artifacts\n")
    with Tracker(runs_root / "unet2d", experiment="roundtrip") as tracker:
        tracker.log_params(CONFIG)
        for step in range(5):
            tracker.log_metrics({"train/loss": 1.0 / (step + 1), "val/dice (WM)": step / 10}, step)
        tracker.log_artifact(notes)
        tracker.log_artifact(notes, artifact_path="figures")
        tracker.set_tags({"profile": "quick"})
    assert no_network == []
    assert tracker.tracking_uri == "sqlite:///" + (runs_root / "mlflow.db").as_posix()
    assert (runs_root / "mlflow.db").is_file()

    client = _client(tracker)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "unet2d"
    assert run.data.tags["profile"] == "quick"
    params = run.data.params
    assert params["model.name"] == "unet"
    assert params["optim.betas"] == "(0.9, 0.99)"
    assert params["seed"] == "0"
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert len(params["notes"]) == MAX_PARAM_VAL_LENGTH < LONG
    assert params["notes"].endswith("...[truncated]")
    history = client.get_metric_history(tracker.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(s, 1.0 / (s + 1)) for s in range(5)]
    # characters MLflow refuses in names are replaced, not rejected
    assert [m.step for m in client.get_metric_history(tracker.run_id, "val/dice _WM_")] == [
        0,
        1,
        2,
        3,
        4,
    ]

    listed = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert listed == {"notes.txt", "figures"}
    on_disk = runs_root / "mlartifacts" / tracker.run_id / "artifacts"
    assert (on_disk / "notes.txt").read_text() == "hello artifacts\n"
    assert (on_disk / "figures" / "notes.txt").is_file()

    state = json.loads((runs_root / "unet2d" / "tracking.json").read_text())
    assert state["run_id"] == tracker.run_id
    assert state["tracking_uri"] == tracker.tracking_uri


def test_resume_continues_the_same_run(runs_root):
    run_dir = runs_root / "resumable"
    first = Tracker(run_dir, experiment="resume").start(resume=True)  # no tracking.json yet
    assert not first.resumed
    first.log_params({"epochs": 2, "lr": 0.01})
    first.log_metrics({"loss": 1.0}, step=0)
    first.log_metrics({"loss": 0.8}, step=1)
    # the session dies here: no end(), the run stays RUNNING

    second = Tracker(run_dir, experiment="resume").start(resume=True)
    assert second.resumed
    assert second.run_id == first.run_id
    with pytest.warns(UserWarning, match="epochs"):
        second.log_params({"epochs": 4, "lr": 0.01, "resumed_from": 2})
    second.log_metrics({"loss": 0.6}, step=2)
    second.end("KILLED")

    third = Tracker(run_dir, experiment="resume").start(resume=True)
    assert third.run_id == first.run_id
    client = _client(third)
    assert client.get_run(third.run_id).info.status == "RUNNING"  # back from KILLED
    third.log_metrics({"loss": 0.5}, step=3)
    third.end()

    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"epochs": "2", "lr": "0.01", "resumed_from": "2"}
    history = client.get_metric_history(first.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 1.0),
        (1, 0.8),
        (2, 0.6),
        (3, 0.5),
    ]

    fresh = Tracker(run_dir, experiment="resume").start(resume=False)
    fresh.end()
    assert fresh.run_id != first.run_id
    assert json.loads((run_dir / "tracking.json").read_text())["run_id"] == fresh.run_id


def test_resume_with_a_broken_or_stale_state_file(runs_root):
    run_dir = runs_root / "stale"
    run_dir.mkdir(parents=True)
    (run_dir / "tracking.json").write_text("{not json")
    with pytest.raises(IBSRError, match="tracking.json"):
        Tracker(run_dir, experiment="resume").start(resume=True)

    (run_dir / "tracking.json").write_text(
        json.dumps({"tracking_uri": "sqlite:////elsewhere/mlflow.db", "run_id": "abc"})
    )
    with pytest.warns(UserWarning, match="another store"):
        tracker = Tracker(run_dir, experiment="resume").start(resume=True)
    tracker.end()
    assert not tracker.resumed


def test_with_block_marks_failed_and_killed_runs(runs_root):
    with pytest.raises(ValueError, match="boom"):
        with Tracker(runs_root / "crash", experiment="status") as failed:
            raise ValueError("boom")
    with pytest.raises(KeyboardInterrupt):
        with Tracker(runs_root / "stopped", experiment="status") as killed:
            raise KeyboardInterrupt
    client = _client(failed)
    assert client.get_run(failed.run_id).info.status == "FAILED"
    assert client.get_run(killed.run_id).info.status == "KILLED"


def test_misuse_raises_ibsr_errors(runs_root, tmp_path):
    tracker = Tracker(runs_root / "misuse", experiment="misuse")
    with pytest.raises(IBSRError, match="not started"):
        tracker.log_metrics({"loss": 1.0}, step=0)
    with tracker:
        with pytest.raises(IBSRError, match="already started"):
            tracker.start()
        with pytest.raises(IBSRError, match="'loss' is not a number"):
            tracker.log_metrics({"loss": "high"}, step=0)
        with pytest.raises(IBSRError, match="artifact not found"):
            tracker.log_artifact(tmp_path / "missing.png")
        with pytest.raises(IBSRError, match="unknown run status"):
            tracker.end("DONE")
    with pytest.raises(IBSRError, match="unknown tracking backend"):
        Tracker(tmp_path / "r", experiment="e", backend="wandb")


def test_none_backend_writes_nothing(tmp_path):
    runs = tmp_path / "runs"
    with Tracker(runs / "quiet", experiment="e", backend="none") as tracker:
        tracker.log_params(CONFIG)
        tracker.log_metrics({"loss": 1.0}, step=0)
        tracker.log_artifact(tmp_path / "does-not-matter.txt")
        tracker.set_tags({"a": "b"})
    tracker.start(resume=True)
    tracker.end()
    assert tracker.run_id is None
    assert tracker.tracking_uri is None
    assert list(tmp_path.iterdir()) == []


def test_dagshub_only_when_both_variables_are_set(monkeypatch, tmp_path, no_network):
    run_dir = tmp_path / "runs" / "r"
    assert Tracker(run_dir, "e", backend="auto").backend == "mlflow"
    with pytest.raises(IBSRError, match="DAGSHUB_USER_TOKEN and DAGSHUB_REPO"):
        Tracker(run_dir, "e", backend="dagshub")

    monkeypatch.setenv("DAGSHUB_USER_TOKEN", "tok123")
    assert Tracker(run_dir, "e", backend="auto").backend == "mlflow"
    with pytest.raises(IBSRError, match="missing: DAGSHUB_REPO"):
        Tracker(run_dir, "e", backend="dagshub")
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ

    monkeypatch.setenv("DAGSHUB_REPO", "student/ibsr-course")
    for backend in ("auto", "dagshub"):
        tracker = Tracker(run_dir, "e", backend=backend)
        assert tracker.backend == "dagshub"
        assert tracker.tracking_uri == "https://dagshub.com/student/ibsr-course.mlflow"
        assert tracker.run_id is None
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "tok123"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "tok123"
    assert Tracker(run_dir, "e", backend="mlflow").backend == "mlflow"

    monkeypatch.setenv("DAGSHUB_REPO", "no-slash")
    with pytest.raises(IBSRError, match="owner/name"):
        Tracker(run_dir, "e", backend="dagshub")
    assert no_network == []
    assert not (tmp_path / "runs").exists()


def test_mlflow_ui_command_points_at_the_shared_store(runs_root, tmp_path):
    Tracker(runs_root / "ui", experiment="ui").start().end()
    uri = "sqlite:///" + (runs_root / "mlflow.db").as_posix()
    for where in (runs_root / "ui", runs_root, runs_root / "mlflow.db"):
        command = mlflow_ui_command(where)
        assert shlex.split(command) == [
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--workers",
            "1",
        ]
    with pytest.raises(IBSRError, match="no MLflow store"):
        mlflow_ui_command(tmp_path / "nothing")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "mlflow.db").touch()
    assert mlflow_ui_command(tmp_path / "runs" / "unet") == (
        f"mlflow ui --backend-store-uri sqlite:///{tmp_path.as_posix()}/runs/mlflow.db --workers 1"
    )


def test_load_runs_compares_runs(runs_root):
    for name, lr, dice in (("slow", 0.001, 0.80), ("fast", 0.01, 0.85)):
        with Tracker(runs_root / name, experiment="compare") as tracker:
            tracker.log_params({"optim": {"lr": lr, "name": "adam"}})
            tracker.log_metrics({"val/dice": dice - 0.1}, step=0)
            tracker.log_metrics({"val/dice": dice}, step=1)
    table = load_runs(runs_root / "fast", experiment="compare")
    assert isinstance(table, pd.DataFrame)
    assert list(table["run_name"]) == ["fast", "slow"]  # newest first
    assert list(table["params.optim.lr"]) == [0.01, 0.001]  # numbers, not strings
    assert list(table["params.optim.name"]) == ["adam", "adam"]
    assert table["metrics.val/dice"].tolist() == pytest.approx([0.85, 0.80])
    assert list(table["run_dir"]) == [str(runs_root / "fast"), str(runs_root / "slow")]
    assert set(table["status"]) == {"FINISHED"}
    everything = load_runs(runs_root)
    assert set(table["run_id"]) < set(everything["run_id"])
    with pytest.raises(IBSRError, match="no experiment named 'nope'"):
        load_runs(runs_root, experiment="nope")


_NO_NETWORK_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys
    attempts = []
    def refuse(name):
        def fn(*args, **kwargs):
            attempts.append(name)
            raise OSError("network access attempted")
        return fn
    socket.socket.connect = refuse("connect")
    socket.create_connection = refuse("create_connection")
    socket.getaddrinfo = refuse("getaddrinfo")

    from ibsr_helpers.tracking import Tracker, load_runs  # imports mlflow lazily
    open("artifact.txt", "w").write("a")
    with Tracker("runs/net", experiment="net", backend="auto") as tracker:
        tracker.log_params({"a": {"b": 1}})
        tracker.log_metrics({"loss": 0.5}, step=0)
        tracker.log_artifact("artifact.txt")
        tracker.set_tags({"t": "v"})
    assert len(load_runs("runs")) == 1
    during = list(attempts)
    try:  # the guard itself must catch a real attempt
        socket.create_connection(("example.org", 80), timeout=0.1)
    except OSError:
        pass
    print(json.dumps({"during": during, "guard_works": attempts[-1:] == ["create_connection"]}))
    """
)


def test_no_network_access_without_dagshub_variables(tmp_path):
    """A fresh process with the socket module guarded before MLflow is imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSHUB_")}
    # variables that would switch MLflow's telemetry off by themselves and hide a regression
    for name in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "CI", "PYTEST_CURRENT_TEST"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", _NO_NETWORK_SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"during": [], "guard_works": True}
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    assert result.stderr.strip() == ""  # store creation is quiet
