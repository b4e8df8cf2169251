"""The recipe registry: every recipe loads, bad files say why, a recipe run resumes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ibsr_helpers import cookbook, data, recipes
from ibsr_helpers.cli import main
from ibsr_helpers.errors import IBSRError

ROOT = Path(__file__).resolve().parents[1]


def test_the_recipes_the_product_promises_exist_and_load() -> None:
    names = recipes.recipe_names()
    assert {"course", "cpu", "cpu-ensemble", "gpu", "gpu-ensemble"} <= set(names)
    for name in names:
        recipe = recipes.load_recipe(name)
        assert recipe.description and recipe.result_name in recipe.predictors()


@pytest.mark.parametrize("profile", [None, "quick", "cpu", "full", "smoke"])
def test_every_member_loads_at_every_profile(profile, capsys) -> None:
    for recipe in recipes.all_recipes().values():
        for member in recipe.members:
            config = recipes.member_config(member, profile)
            asked = profile or member.profile or "quick"
            assert config["profile"] in (asked, recipes.FALLBACK_PROFILE)
            if config["profile"] != asked:  # a fallback is never silent
                assert f"has no {asked} profile" in capsys.readouterr().out


def test_cpu_and_gpu_recipes_carry_the_levers() -> None:
    for name, profile in (("cpu", "cpu"), ("gpu", "full")):
        (member,) = recipes.load_recipe(name).members
        config = recipes.member_config(member)
        assert config["profile"] == profile and config["data"]["plane"] == "sagittal"
        assert config["model"]["full_resolution_skip"] is True
        assert config["data"]["context"] == 2 and config["data"]["sampler"] == "class_balanced"
        assert config["data"]["augment"] is True


def test_members_sharing_a_run_folder_share_a_config(tmp_path) -> None:
    seen: dict[Path, dict] = {}
    for recipe in recipes.all_recipes().values():
        folders = set()
        for member in recipe.members:
            config = recipes.member_config(member, say=False)
            folder = recipes.member_folder(member, tmp_path, config)
            assert folder not in folders, f"{recipe.name}: two members train into {folder}"
            folders.add(folder)
            assert seen.setdefault(folder, config) == config, folder


def test_train_command_reproduces_the_member(tmp_path) -> None:
    recipe = recipes.load_recipe("cpu-ensemble")
    member = recipe.member("2D U-Net sagittal, full-resolution skip, seed 1")
    config = recipes.member_config(member)
    folder = recipes.member_folder(member, tmp_path, config)
    assert folder.name == "unet2d-sagittal-fullres-cpu-seed1"
    command = recipes.train_command(member, config, folder)
    assert command.startswith("ibsr-seg train --config configs/unet2d.yaml --profile cpu")
    assert "--set data.plane=sagittal --set model.full_resolution_skip=true --set seed=1" in command


BAD = {
    "an unknown key": ("members: [{name: a, config: unet2d}]\ncombine: mean\n", "unknown key"),
    "an unknown member": (
        "members: [{name: a, config: unet2d}]\nensembles: {e: [a, b]}\n",
        "ensemble 'e': no member",
    ),
    "an unknown result": ("members: [{name: a, config: unet2d}]\nresult: z\n", "result 'z'"),
    "a missing config": ("members: [{name: a, config: nonet}]\n", "configs/nonet.yaml"),
    "no members": ("description: x\n", "at least one member"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_recipe_file_is_refused_naming_the_problem(case, tmp_path, monkeypatch) -> None:
    text, problem = BAD[case]
    folder = tmp_path / "configs" / "recipes"
    folder.mkdir(parents=True)
    (tmp_path / "configs" / "unet2d.yaml").write_text((ROOT / "configs/unet2d.yaml").read_text())
    (folder / "bad.yaml").write_text(text)
    with pytest.raises(IBSRError, match=problem) as error:
        recipes.load_recipe(folder / "bad.yaml")
    assert "bad.yaml" in str(error.value)


def test_an_unknown_recipe_lists_the_known_ones(capsys) -> None:
    assert main(["recipe", "run", "cpuu"]) == 2
    err = capsys.readouterr().err
    assert "no recipe 'cpuu'" in err and "'cpu-ensemble'" in err


def test_recipe_list_shows_members_results_and_minutes(capsys, tmp_path) -> None:
    assert main(["recipe", "list"]) == 0
    out = capsys.readouterr().out
    for name in recipes.recipe_names():
        assert f"\n{name}: " in f"\n{out}"
    assert "member 2D U-Net sagittal, full-resolution skip, seed 1" in out
    assert "about 45 min on a 2-core CPU" in out
    table = tmp_path / "recipes.csv"
    table.write_text(
        "recipe,mean_dice,csf_dice,minutes,date,hardware,made_by\n"
        "cpu,0.9,0.8,40,2026-01-01,some CPU,a test\n"
    )
    text = recipes.describe_recipe(recipes.load_recipe("cpu"), table)
    assert "reached: validation mean Dice 0.9 (CSF 0.8) in 40 min, 2026-01-01, some CPU" in text
    assert "reached: not run yet" in recipes.describe_recipe(recipes.load_recipe("gpu"), table)


def test_readme_table_keeps_the_newest_row_per_recipe_and_cpu_kind(tmp_path) -> None:
    table = tmp_path / "recipes.csv"
    table.write_text(
        "recipe,mean_dice,csf_dice,minutes,date,hardware,made_by\n"
        "cpu,0.91,0.8,40,2026-01-01,old CPU,no bf16 said\n"
        "cpu,0.92,0.8,40,2026-01-02,Zen 3 (bf16: False),old fp32\n"
        "cpu,0.93,0.8,40,2026-01-03,Zen 4 (bf16: True),old bf16\n"
        "course,0.90,0.8,30,2026-01-03,Zen 3 (bf16: none (fp32 on the CPU)),course fp32\n"
        "cpu,0.94,0.8,40,2026-01-04,Zen 3 (bf16: none (fp32 on the CPU)),new fp32\n"
        "cpu,0.95,0.8,40,2026-01-05,Zen 5 (bf16: native),new bf16\n"
    )
    text = recipes.results_markdown(table)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[-1] for row in rows] == ["course fp32 |", "new fp32 |", "new bf16 |"]
    assert "(3 older rows in the file)" in text
    assert recipes.cpu_kind("AMD EPYC (bf16: native), 2 cores") == "bf16"
    assert recipes.cpu_kind("AMD EPYC (bf16: none (fp32 on the CPU))") == "fp32"
    assert recipes.cpu_kind("AMD EPYC, 2 cores") is None


@pytest.mark.slow
def test_recipe_run_trains_predicts_grades_and_resumes(demo_root, tmp_path, capsys) -> None:
    runs, out = tmp_path / "runs", tmp_path / "out"
    args = ["recipe", "run", "cpu", "--profile", "smoke", "--data", str(demo_root)]
    assert main([*args, "--out", str(out), "--runs", str(runs)]) == 0
    first = capsys.readouterr().out
    assert "1 of 1 runs to train" in first and "trained now" in first
    md = (out / "results.md").read_text()
    assert "ibsr-seg recipe run cpu --profile smoke" in md and "bf16" in md
    assert "--set model.full_resolution_skip=true" in md
    assert (out / "submission.zip").is_file()
    assert sorted(p.name for p in (out / "submission").rglob("*.nii.gz")) == [
        f"{s}_seg.nii.gz" for s in sorted(p.name for p in (demo_root).glob("*/Test_Set/*"))
    ]
    assert main([*args, "--out", str(out), "--runs", str(runs)]) == 0
    second = capsys.readouterr().out
    assert "to train" not in second and "(found on demo" in second
    recipe = recipes.load_recipe("cpu-ensemble")
    found = cookbook.gather(recipe, demo_root, runs, "smoke", train_missing=False, progress=False)
    assert list(found.folders) == ["2D U-Net sagittal, full-resolution skip"]
    assert len(found.missing) == 3
    assert "2D U-Net coronal not trained yet (ibsr-seg train" in capsys.readouterr().out
    with pytest.raises(IBSRError, match="2D U-Net coronal.*not trained yet"):
        cookbook.score_recipe(recipe, found, [])
    # notebook 06's rows of a gathered recipe: every predictor, prefixed, scored
    cpu = recipes.load_recipe("cpu")
    gathered = cookbook.gather(cpu, demo_root, runs, "smoke", train_missing=False, progress=False)
    volumes = data.load_split(demo_root, "val", limit=1)
    segmentations: dict = {}
    scored = cookbook.score_recipe(cpu, gathered, volumes, segmentations)
    assert scored.names == [f"cpu: {n}" for n in cpu.predictors()]
    assert set(scored.scores["name"]) == set(scored.names) == set(segmentations)
    assert all(0 <= d <= 1 for d in scored.scores["dice"])
    untested = [n for n in scored.names if not cpu.predictors()[n.removeprefix("cpu: ")][1]]
    assert list(scored.members) == untested
    assert all(m in scored.runs for ms in scored.members.values() for m in ms)


def test_a_recipe_run_needs_the_course_layout(tmp_path) -> None:
    with pytest.raises(IBSRError, match="course layout"):
        cookbook.split_folder(tmp_path, "val")


def test_the_benchmark_keeps_no_registry_of_its_own(capsys) -> None:
    spec = importlib.util.spec_from_file_location("cpu_recipes", ROOT / "benchmarks/cpu_recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert not {"RECIPES", "EXPERIMENTS", "ENSEMBLES"} & set(vars(module))
    with pytest.raises(IBSRError, match="no recipe 'nope'"):  # before any training
        module.main(["--recipes", "nope", "--data", "/nonexistent"])


def test_training_is_announced_with_its_expected_minutes(capsys) -> None:
    recipe = recipes.load_recipe("cpu-ensemble")
    names = [m.name for m in recipe.members]
    for profile, expected in (
        (None, "about 167 min for the 4 with a training budget"),
        (None, "about 170 min on a 2-core CPU for the whole recipe"),
        ("smoke", "expected: not estimated"),
    ):
        configs = {m.name: recipes.member_config(m, profile) for m in recipe.members}
        cookbook._announce(recipe, names, configs, profile)
        out = capsys.readouterr().out
        assert "4 of 4 runs to train" in out and expected in out, out


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_a_cpu_at_smoke(demo_root, tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--data", str(demo_root), "--out", str(tmp_path), "--profile", "smoke"]
    assert module.main([*args, "--minutes", "0.5", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "3D U-Net patches, full-resolution skip (smoke profile" in out
    assert "0.93 reached after" in out and "with flip TTA" in out and "s per volume" in out
    assert "HD95 CSF" in out
    history = {"epoch": [0, 1, 2], "minutes": [1.0, 2.0, 3.0], "val_epoch": [1, 2]}
    assert module.minutes_to({**history, "val_mean_dice": [0.92, 0.935]}, 0.93) == 3.0
    assert module.minutes_to({**history, "val_mean_dice": [0.92, 0.925]}, 0.93) is None
