"""The CPU-recipe benchmark's tables: every ensemble can be scored, no two runs share a folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cpu_recipes():
    spec = importlib.util.spec_from_file_location(
        "cpu_recipes", ROOT / "benchmarks" / "cpu_recipes.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_ensemble_member_is_a_recipe_or_experiment(cpu_recipes) -> None:
    known = set(cpu_recipes.RECIPES) | set(cpu_recipes.EXPERIMENTS)
    for ensemble, members in cpu_recipes.ENSEMBLES.items():
        assert set(members) <= known, f"{ensemble}: unknown {set(members) - known}"
        assert len(set(members)) == len(members), f"{ensemble} names a member twice"


def test_each_recipe_trains_into_its_own_folder(cpu_recipes, tmp_path) -> None:
    names = [*cpu_recipes.RECIPES, *cpu_recipes.EXPERIMENTS]
    folders = {cpu_recipes.recipe_run(n, tmp_path)[1] for n in names}
    assert len(folders) == len(names)
    config, folder, command = cpu_recipes.recipe_run("2D U-Net coronal, seed 1", tmp_path)
    assert config["seed"] == 1 and config["profile"] == "cpu"
    assert folder.name == "unet2d-coronal-cpu-seed1"
    assert command.endswith("--profile cpu --set seed=1 --out unet2d-coronal-cpu-seed1")


def test_readme_blocks_exist_and_an_unknown_one_stops_before_training(cpu_recipes, capsys) -> None:
    readme = (ROOT / "README.md").read_text()
    for block in ("cpu-results", "cpu-fullres-results"):
        assert f"<!-- {block}:start -->\n" in readme and f"\n<!-- {block}:end -->" in readme
    with pytest.raises(SystemExit) as stop:
        cpu_recipes.main(["--readme", "--block", "no-such-block", "--data", "/nonexistent"])
    assert stop.value.code == 2
    assert "no <!-- no-such-block:start -->" in capsys.readouterr().err
