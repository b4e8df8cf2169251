"""Where a training config is read: the modules that know its layout (issue 36).

The CLI's ``train`` command loads a config; the plan (:mod:`ibsr_helpers.plan`) resolves it
into one spec per concept, and the modules below the engine take those specs. A traced
config records every package module that reads one of its settings.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ibsr_helpers import config as config_module
from ibsr_helpers.cli import main

ROOT = Path(__file__).resolve().parents[1]
READERS: set[str] = set()


def _reader() -> None:
    module = sys._getframe(2).f_globals.get("__name__", "")
    if module.startswith("ibsr_helpers"):
        READERS.add(module)


class Traced(dict):
    """A config that notes which package module reads it (nested sections too)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for key, value in self.items():
            if type(value) is dict:
                dict.__setitem__(self, key, Traced(value))

    def __getitem__(self, key):
        _reader()
        return super().__getitem__(key)

    def get(self, key, default=None):
        _reader()
        return super().get(key, default)

    def items(self):
        _reader()
        return super().items()

    def keys(self):
        _reader()
        return super().keys()

    def values(self):
        _reader()
        return super().values()

    def __iter__(self):
        _reader()
        return super().__iter__()


@pytest.mark.parametrize("name", ["unet2d", "unet3d_patches"])
def test_a_config_from_the_cli_train_command_enters_at_most_six_modules(
    name, demo_root, tmp_path, monkeypatch, capsys
) -> None:
    load = config_module.load_config
    monkeypatch.setattr(config_module, "load_config", lambda *a, **k: Traced(load(*a, **k)))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    READERS.clear()
    args = ["train", "--config", str(ROOT / "configs" / f"{name}.yaml"), "--profile", "smoke"]
    assert main([*args, "--data", str(demo_root), "--out", str(tmp_path / "run")]) == 0
    assert "best validation mean Dice" in capsys.readouterr().out
    readers = READERS | {"ibsr_helpers.config"}  # where it is made
    assert "ibsr_helpers.training" in readers  # the tracing sees the engine's reads
    assert len(readers) <= 6, f"the config is read in {len(readers)} modules: {sorted(readers)}"
    below = {"preprocessing", "models", "augmentation", "datasets", "pipeline", "step"}
    below |= {"handlers", "inference", "evaluation"}  # they take the plan's specs
    assert not readers & {f"ibsr_helpers.{m}" for m in below}, sorted(readers)
