from __future__ import annotations

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
from ibsr_helpers.tracking import (
    Tracker,
    flatten_config,
    load_runs,
    mlflow_ui_command,
    tracking_uri,
)

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


CONFIG = {"model": {"name": "unet", "channels": [16, 32, 64]}, "seed": 0, "notes": "x" * LONG}


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

    return MlflowClient(tracking_uri=tracker.uri)


def test_flatten_config_nests_with_dots_and_stringifies():
    flat = flatten_config({"model": {"name": "unet", "channels": [16, 32]}, "seed": 0})
    assert flat == {"model.name": "unet", "model.channels": "[16, 32]", "seed": "0"}
    with pytest.raises(IBSRError, match="mapping"):
        flatten_config([1, 2])


def test_params_metrics_artifacts_read_back(runs_root, tmp_path, no_network):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello artifacts\n")
    tracker = Tracker(runs_root / "unet2d", experiment="roundtrip")
    tracker.start("unet2d", tags={"profile": "quick"})
    tracker.log_params(CONFIG)
    for step in range(5):
        tracker.log_metrics({"train_loss": 1.0 / (step + 1)}, step)
    tracker.log_artifact(notes)
    tracker.end("FINISHED")
    assert no_network == []
    assert tracker.uri == "sqlite:///" + (runs_root / "mlflow.db").as_posix()

    client = _client(tracker)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "unet2d"
    assert run.data.tags["profile"] == "quick"
    assert run.data.tags["ibsr.run_dir"] == str(runs_root / "unet2d")
    params = run.data.params
    assert params["model.name"] == "unet" and params["seed"] == "0"
    assert params["model.channels"] == "[16, 32, 64]"
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert len(params["notes"]) == MAX_PARAM_VAL_LENGTH < LONG  # MLflow truncates itself
    history = client.get_metric_history(tracker.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(s, 1.0 / (s + 1)) for s in range(5)]
    on_disk = runs_root / "mlartifacts"
    assert [p.read_text() for p in on_disk.rglob("notes.txt")] == ["hello artifacts\n"]


def test_resume_continues_the_same_run(runs_root):
    first = Tracker(runs_root / "resumable", experiment="resume")
    run_id = first.start("resumable")
    first.log_params({"epochs": 2})
    first.log_metrics({"loss": 1.0}, step=0)
    first.end("KILLED")  # a Colab disconnect; the engine keeps run_id in last.pt

    second = Tracker(runs_root / "resumable", experiment="resume")
    assert second.start("resumable", run_id=run_id) == run_id
    second.log_metrics({"loss": 0.8}, step=1)
    second.end("FINISHED")
    client = _client(second)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"epochs": "2"}
    history = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.8)]

    gone = Tracker(runs_root / "resumable", experiment="resume")
    assert gone.start("resumable", run_id="0" * 32) != "0" * 32  # unknown id: a new run
    gone.end()


def test_disabled_tracker_writes_nothing(tmp_path):
    tracker = Tracker(tmp_path / "runs" / "quiet", experiment="e", enabled=False)
    assert tracker.start("quiet") is None
    tracker.log_params(CONFIG)
    tracker.log_metrics({"loss": 1.0}, step=0)
    tracker.log_artifact(tmp_path / "does-not-matter.txt")
    tracker.end()
    assert list(tmp_path.iterdir()) == []


def test_dagshub_only_when_both_variables_are_set(monkeypatch, tmp_path, no_network):
    runs = tmp_path / "runs"
    local = "sqlite:///" + (runs / "mlflow.db").as_posix()
    assert tracking_uri(runs) == local
    monkeypatch.setenv("DAGSHUB_USER_TOKEN", "tok123")
    assert tracking_uri(runs) == local
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
    monkeypatch.setenv("DAGSHUB_REPO", "student/ibsr-course")
    assert tracking_uri(runs) == "https://dagshub.com/student/ibsr-course.mlflow"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "tok123"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "tok123"
    monkeypatch.setenv("DAGSHUB_REPO", "no-slash")
    with pytest.raises(IBSRError, match="owner/name"):
        tracking_uri(runs)
    assert no_network == [] and not runs.exists()


def test_mlflow_ui_command_points_at_the_shared_store(runs_root, tmp_path):
    tracker = Tracker(runs_root / "ui", experiment="ui")
    tracker.start("ui")
    tracker.end()
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


def test_load_runs_compares_runs(runs_root):
    for name, lr, dice in (("slow", 0.001, 0.80), ("fast", 0.01, 0.85)):
        tracker = Tracker(runs_root / name, experiment="compare")
        tracker.start(name)
        tracker.log_params({"optim": {"lr": lr}})
        tracker.log_metrics({"val_mean_dice": dice - 0.1}, step=0)
        tracker.log_metrics({"val_mean_dice": dice}, step=1)
        tracker.end()
    table = load_runs(runs_root / "fast", experiment="compare")
    assert isinstance(table, pd.DataFrame)
    assert list(table["tags.mlflow.runName"]) == ["fast", "slow"]  # newest first
    assert list(table["params.optim.lr"]) == ["0.01", "0.001"]
    assert table["metrics.val_mean_dice"].tolist() == pytest.approx([0.85, 0.80])
    assert set(table["status"]) == {"FINISHED"}
    assert set(table["run_id"]) < set(load_runs(runs_root)["run_id"])
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
    tracker = Tracker("runs/net", experiment="net")
    tracker.start("net", tags={"t": "v"})
    tracker.log_params({"a": {"b": 1}})
    tracker.log_metrics({"loss": 0.5}, step=0)
    tracker.log_artifact("artifact.txt")
    tracker.end()
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
