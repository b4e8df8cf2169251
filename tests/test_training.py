"""The engine on a tiny config: checkpoints, curves, MLflow, and resume after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ibsr_helpers import handlers, step, training
from ibsr_helpers.config import load_config
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.inference import load_run
from ibsr_helpers.plan import steps_for_minutes
from ibsr_helpers.tracking import tracking_uri


def _store(run_dir) -> str:
    return tracking_uri(run_dir.parent)


TINY = {
    "name": "tiny",
    "model": {"name": "unet2d", "encoder_depth": 3, "decoder_channels": [32, 16, 8]},
    "data": {"mode": "slices", "plane": "coronal"},
    "optim": {"lr": 0.003, "warmup_epochs": 0.5},
    "train": {
        "epochs": 3,
        "steps_per_epoch": 3,
        "batch_size": 2,
        "val_every": 3,
        "max_val_subjects": 1,
    },
    "tracking": "mlflow",
}


def _WITH_FIGURES():  # noqa: N802 - a constant's spelling: the standard set plus figures
    from ibsr_helpers.plots import TrainingFigures

    return [*training.standard_handlers(progress=False), TrainingFigures()]


def _config(**overrides):
    return load_config(TINY, None, [f"{k}={v}" for k, v in overrides.items()])


class _KillAfter(torch.nn.Module):
    """Wraps the loss and raises KeyboardInterrupt at its n-th call (a Colab disconnect)."""

    def __init__(self, loss: torch.nn.Module, n: int) -> None:
        super().__init__()
        self.loss, self.n, self.calls = loss, n, 0

    def forward(self, *args):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.loss(*args)


@pytest.fixture(scope="module")
def uninterrupted(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    return training.train(_config(), demo_root, out, progress=False, handlers=_WITH_FIGURES())


def _assert_same_last_weights(run_a: Path, run_b: Path) -> None:
    """Both runs' ``last.pt`` hold the same weights (to float tolerance)."""
    a = torch.load(run_a / "last.pt", weights_only=True)["model"]
    b = torch.load(run_b / "last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_run_folder_contents(uninterrupted):
    run = uninterrupted.run_dir
    for name in (
        "config.json",
        "history.json",
        "last.pt",
        "best.pt",
        "curves.png",
        "val_overlay.png",
    ):
        assert (run / name).is_file(), name
    h = json.loads((run / "history.json").read_text())
    assert h["epoch"] == [0, 1, 2] and h["val_epoch"] == [2]
    assert 0 <= h["val_mean_dice"][0] <= 1
    # checkpoints load with weights_only=True, config beside them as JSON
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["mlflow_run_id"] and state["finished"]
    config = load_run(run).config
    assert config["model"]["encoder_depth"] == 3
    assert config["data"]["spacing"] == [0.9375, 1.5, 0.9375]  # "auto" resolved and recorded


def test_mlflow_holds_params_metrics_artifacts(uninterrupted):
    from mlflow.tracking import MlflowClient

    run_id = torch.load(uninterrupted.run_dir / "last.pt", weights_only=True)["mlflow_run_id"]
    client = MlflowClient(tracking_uri=_store(uninterrupted.run_dir))
    run = client.get_run(run_id)
    assert run.data.params["model.name"] == "unet2d"
    assert run.data.params["train.epochs"] == "3"
    assert run.info.status == "FINISHED" and run.data.tags["precision"] in ("fp32", "bf16")
    history = client.get_metric_history(run_id, "train_loss")
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert client.get_metric_history(run_id, "val_mean_dice")
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"best.pt", "curves.png", "val_overlay.png", "config.json"} <= names


def test_resume_after_kill_matches_uninterrupted_run(
    uninterrupted, demo_root, tmp_path, monkeypatch
):
    out = tmp_path / "killed"
    real_build_loss = step.build_loss
    # Kill in the middle of epoch 2 (calls 1-3 are epoch 1, call 5 is epoch 2's second step).
    monkeypatch.setattr(step, "build_loss", lambda **kw: _KillAfter(real_build_loss(**kw), 5))
    with pytest.raises(KeyboardInterrupt):
        training.train(_config(), demo_root, out, progress=False)
    assert json.loads((out / "history.json").read_text())["epoch"] == [0]
    run_id = torch.load(out / "last.pt", weights_only=True)["mlflow_run_id"]

    monkeypatch.setattr(step, "build_loss", real_build_loss)
    with pytest.raises(IBSRError, match="--resume"):
        training.train(_config(), demo_root, out, progress=False)
    resumed = training.train(_config(), demo_root, out, resume=True, progress=False)

    assert resumed.history["epoch"] == [0, 1, 2]  # same number of epochs, no repeats
    np.testing.assert_allclose(
        resumed.history["train_loss"], uninterrupted.history["train_loss"], rtol=1e-4
    )
    np.testing.assert_allclose(
        resumed.history["val_mean_dice"], uninterrupted.history["val_mean_dice"], atol=1e-4
    )
    _assert_same_last_weights(out, uninterrupted.run_dir)
    # the same MLflow run continued, with a continuous curve, and finished
    assert torch.load(out / "last.pt", weights_only=True)["mlflow_run_id"] == run_id
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=_store(out))
    steps = sorted(m.step for m in client.get_metric_history(run_id, "train_loss"))
    assert steps == [0, 1, 2]
    assert client.get_run(run_id).info.status == "FINISHED"


class _StopAfterFirstEpoch(handlers.Handler):
    """The stop button between epochs (after ``last.pt`` is written)."""

    def epoch_completed(self, trainer, epoch, record) -> None:
        if epoch == 0:
            raise KeyboardInterrupt


def test_a_resumed_run_draws_the_dropout_an_uninterrupted_one_would(demo_root, tmp_path):
    """The EfficientNet encoder's stochastic depth draws from torch's generator: resumed,
    the run must continue that stream (its state is in last.pt), not a freshly seeded one."""
    path = Path(__file__).parents[1] / "configs" / "efficientunet2d.yaml"
    cfg = load_config(path, "smoke", ["train.epochs=3", "train.steps_per_epoch=3", "tracking=none"])
    whole = training.train(cfg, demo_root, tmp_path / "whole", progress=False)
    stopped = [*training.standard_handlers(progress=False), _StopAfterFirstEpoch()]
    with pytest.raises(KeyboardInterrupt):
        training.train(cfg, demo_root, tmp_path / "cut", progress=False, handlers=stopped)
    resumed = training.train(cfg, demo_root, tmp_path / "cut", resume=True, progress=False)
    assert resumed.history["epoch"] == [0, 1, 2]
    assert resumed.history["train_loss"] == whole.history["train_loss"]  # bit for bit
    _assert_same_last_weights(tmp_path / "cut", tmp_path / "whole")


def test_resume_of_finished_run_returns_without_reading_data(
    uninterrupted, demo_root, tmp_path, monkeypatch
):
    import shutil

    out = tmp_path / "done"
    shutil.copytree(uninterrupted.run_dir, out)

    def no_data(*args, **kwargs):
        raise AssertionError("a finished run read its data again")

    monkeypatch.setattr(training, "load_split", no_data)
    result = training.train(_config(), demo_root, out, resume=True, progress=False)
    assert result.history == uninterrupted.history and not result.trained
    assert result.best_dice == pytest.approx(uninterrupted.best_dice)
    assert result.best_epoch == uninterrupted.best_epoch


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"train.epochs": 4}, "train.epochs: 3 -> 4"),
        ({"optim.lr": 0.01}, "optim.lr: 0.003 -> 0.01"),
        ({"data.plane": "axial"}, "data.plane: coronal -> axial"),
    ],
)
def test_resume_refuses_a_folder_made_with_another_config(
    uninterrupted, demo_root, tmp_path, monkeypatch, change, named
):
    """Never the old result for a new config: one error naming the first differing key."""
    import shutil

    out = tmp_path / "other"
    shutil.copytree(uninterrupted.run_dir, out)
    monkeypatch.setattr(training, "load_split", lambda *a, **k: pytest.fail("read the data"))
    with pytest.raises(IBSRError, match="another config") as err:
        training.train(_config(**change), demo_root, out, resume=True, progress=False)
    assert named in str(err.value) and str(out) in str(err.value)


def test_plan_difference_compares_resolved_plans():
    from ibsr_helpers.plan import plan_difference, resolve_spacing

    class Scan:  # anything with an affine: the spacing needs no voxels
        affine = np.diag([1.0, 1.5, 1.0, 1.0])

    asked = {"data": {"spacing": "auto", "plane": "coronal"}, "seed": 0}
    plan = resolve_spacing(asked, [Scan()])
    assert asked["data"]["spacing"] == "auto"  # the caller's config is not rewritten
    assert plan["data"]["spacing"] == [1.0, 1.5, 1.0]
    assert plan["plan"]["asked"] == {"data.spacing": "auto"}
    assert plan_difference(resolve_spacing(asked, [Scan()]), plan) is None
    assert plan_difference({**plan, "seed": 1}, plan) == "seed: 0 -> 1"
    # a run made before a setting existed is another run, said so
    old = {"data": plan["data"], "seed": 0}
    assert plan_difference(plan, old) == "plan.asked.data.spacing: (not set) -> auto"


def _other_data(demo_root: Path, to: Path) -> Path:
    """A copy of the demo set whose first training image differs in one brain voxel."""
    import shutil

    import nibabel as nib

    from ibsr_helpers.data import discover

    shutil.copytree(demo_root, to)
    first = discover(to, ["train"])[0].image
    img = nib.load(first)
    voxels = np.asarray(img.dataobj).copy()
    voxels.flat[int(np.argmax(voxels))] += 1  # inside the brain: the same brain box
    nib.save(nib.Nifti1Image(voxels, img.affine, img.header), first)
    return to


def test_a_run_is_never_reused_on_other_data(uninterrupted, demo_root, tmp_path, capsys):
    """The run records its data; resuming it on other data is refused, naming both; the
    notebooks' ``other_data="retrain"`` moves it aside and trains again."""
    import shutil

    record = json.loads((uninterrupted.run_dir / "data.json").read_text())
    assert record["kind"] == "demo" and record["subjects"]["val"]
    other = _other_data(demo_root, tmp_path / "other-data")
    out = tmp_path / "run"
    shutil.copytree(uninterrupted.run_dir, out)
    with pytest.raises(IBSRError) as err:
        training.train(_config(), other, out, resume=True, progress=False)
    message = str(err.value)
    assert f"trained on {record['kind']}" in message and record["fingerprint"] in message
    assert "the data given is demo" in message and "\n" not in message

    result = training.train(
        _config(), other, out, resume=True, progress=False, other_data="retrain"
    )
    assert result.trained
    aside = tmp_path / f"run-demo-{record['fingerprint'][:8]}"
    assert (aside / "best.pt").is_file() and "moved it to" in capsys.readouterr().out
    assert json.loads((out / "data.json").read_text())["fingerprint"] != record["fingerprint"]


def test_overlay_reuses_the_validation_prediction(demo_root, tmp_path, monkeypatch):
    from ibsr_helpers import inference

    calls = []
    real = inference.predict_probabilities

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "predict_probabilities", counting)
    cfg = _config(**{"train.epochs": 1, "train.val_every": 1})
    training.train(cfg, demo_root, tmp_path / "one", progress=False, handlers=_WITH_FIGURES())
    assert len(calls) == 1  # one validation volume, predicted once
    assert (tmp_path / "one" / "val_overlay.png").is_file()


def test_handlers_are_the_callers_choice(demo_root, tmp_path):
    """No handler: the engine trains and writes its plan, nothing else (no checkpoint, no
    validation, no figures); a handler of one's own sees every event in order."""

    class Recorder(handlers.Handler):
        def __init__(self):
            self.events = []

        def started(self, trainer):
            self.events.append("started")

        def epoch_completed(self, trainer, epoch, record):
            self.events.append(f"epoch {epoch}: {sorted(record)}")

        def completed(self, trainer):
            self.events.append("completed")

        def ended(self, trainer, status):
            self.events.append(status)

    recorder = Recorder()
    cfg = _config(**{"train.epochs": 2, "tracking": "none"})
    result = training.train(cfg, demo_root, tmp_path / "bare", progress=False, handlers=[recorder])
    assert recorder.events == [
        "started",
        "epoch 0: ['lr', 'train_loss']",
        "epoch 1: ['lr', 'train_loss']",
        "completed",
        "FINISHED",
    ]
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["config.json", "data.json"]
    assert result.best_epoch == -1 and result.history["epoch"] == [0, 1]


def test_the_engine_imports_no_figures():
    """Figures are a handler the caller adds: the engine's modules never import plots."""
    import ast

    root = Path(training.__file__).parent
    for name in ("training", "handlers", "step", "pipeline", "plan", "tracking"):
        tree = ast.parse((root / f"{name}.py").read_text())
        imported = {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        } | {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in imported if m.startswith("ibsr_helpers.plots")}, name


def test_lr_schedule_warmup_then_cosine():
    f = step.lr_lambda(100, 10, 0.01)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.01)
    assert all(f(i) >= f(i + 1) for i in range(10, 100))


def test_steps_for_minutes_only_shortens_and_rounds_down():
    # 24 epochs at 2.6 s a step: 45 min hold 43 steps an epoch, rounded down to 40
    assert steps_for_minutes(45, 24, 2.6, 250) == 40
    assert steps_for_minutes(45, 24, 0.26, 250) == 250  # the recipe fits: unchanged
    assert steps_for_minutes(1, 10, 5.0, 250) == 1  # at least one step
    assert steps_for_minutes(2, 10, 1.0, 250) == 12  # under 20: not rounded


def test_a_budget_the_recipe_fits_trains_exactly_as_without(uninterrupted, demo_root, tmp_path):
    """The timed steps leave no trace: same losses, same weights, same steps."""
    out = tmp_path / "budget"
    result = training.train(_config(**{"train.minutes": 1000}), demo_root, out, progress=False)
    assert json.loads((out / "config.json").read_text())["train"]["steps_per_epoch"] == 3
    np.testing.assert_allclose(
        result.history["train_loss"], uninterrupted.history["train_loss"], rtol=1e-4
    )
    _assert_same_last_weights(out, uninterrupted.run_dir)


def test_a_tight_budget_shortens_the_epochs_and_resume_keeps_them(
    demo_root, tmp_path, monkeypatch, capsys
):
    """A 3-minute budget at (pretended) 30 s a step: 3 epochs x 2 steps instead of 3 x 3."""
    monkeypatch.setattr(training, "time_train_steps", lambda *a, **k: {"step_s": 30.0})
    calls = []
    real_build_loss = step.build_loss

    def counting(**kw):
        loss = real_build_loss(**kw)
        return lambda *args: calls.append(1) or loss(*args)

    monkeypatch.setattr(step, "build_loss", counting)
    cfg = _config(**{"train.minutes": 3, "tracking": "none"})
    out = tmp_path / "tight"
    result = training.train(cfg, demo_root, out, progress=True)
    shown = capsys.readouterr()
    assert "3 x 2 steps instead" in shown.out + shown.err
    plan = json.loads((out / "config.json").read_text())
    assert plan["train"]["steps_per_epoch"] == 2 and cfg["train"]["steps_per_epoch"] == 3
    assert plan["plan"] == {
        "asked": {"data.spacing": "auto", "train.steps_per_epoch": 3},
        "step_seconds": 30.0,
    }
    assert result.history["epoch"] == [0, 1, 2] and len(calls) == 6
    # resuming with the same budget is the same run, planned with the stored step time on
    # any machine; another budget is another run
    monkeypatch.setattr(training, "time_train_steps", lambda *a, **k: {"step_s": 0.001})
    again = training.train(cfg, demo_root, out, resume=True, progress=False)
    assert not again.trained
    with pytest.raises(IBSRError, match="train.minutes: 3 -> 4"):
        training.train(
            _config(**{"train.minutes": 4, "tracking": "none"}), demo_root, out, resume=True
        )


def test_model_and_mode_mismatch(demo_root, tmp_path):
    cfg = _config(**{"data.mode": "patches"})
    with pytest.raises(IBSRError, match="2D but data.mode is 'patches'"):
        training.train(cfg, demo_root, tmp_path / "x", progress=False)


def test_adamw_is_fused_on_the_cpu_and_steps_as_the_per_parameter_loop():
    torch.manual_seed(0)
    # float64: in float32 the two orders of the same arithmetic drift apart by float noise
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3), torch.nn.BatchNorm2d(8)).double()
    twin = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3), torch.nn.BatchNorm2d(8)).double()
    twin.load_state_dict(model.state_dict())
    start = [p.detach().clone() for p in model.parameters()]
    fused = step.adamw(model, lr=1e-2, weight_decay=1e-4)
    plain = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=1e-4)
    assert fused.defaults["fused"] is True
    x = torch.randn(4, 2, 9, 9, dtype=torch.float64)
    for _ in range(3):
        for net, opt in ((model, fused), (twin, plain)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b, a0 in zip(model.parameters(), twin.parameters(), start, strict=True):
        assert not torch.equal(a, a0)  # it stepped
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
