"""The install files agree with each other, and the console script is there."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[1]

#: Imports of ibsr_helpers that pyproject.toml's dependencies need not declare: top-level
#: module -> the extra that declares it (None: none can), each imported only inside the
#: function that needs it, so ``import ibsr_helpers.<module>`` works without it.
OPTIONAL_IMPORTS: dict[str, str | None] = {
    # google.colab exists only on Colab (not installable elsewhere); every use is behind
    # environment.in_colab().
    "google": None,
    # `ibsr-seg notebooks` (course.py) executes and exports the notebooks; `make course`
    # installs the dev extra, a student who only imports the helpers never needs them.
    "papermill": "dev",
    "nbconvert": "dev",
}


def _pins(lines):
    return {
        ln.split("==")[0].strip(): ln.split("==")[1].strip()
        for ln in lines
        if "==" in ln and not ln.strip().startswith("#")
    }


def test_environment_yml_matches_constraints():
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    assert constraints == {"torch": "2.13.0", "torchvision": "0.28.0"}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip) == constraints
    assert "-c constraints.txt" in pip and any(p.startswith("-e .") for p in pip)


def test_pyproject_declares_package_and_script():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "ibsr_helpers"
    assert meta["project"]["scripts"]["ibsr-seg"] == "ibsr_helpers.cli:main"
    deps = " ".join(meta["project"]["dependencies"])
    for needed in ("torch", "monai", "nibabel", "segmentation-models-pytorch", "mlflow", "nilearn"):
        assert needed in deps


def test_console_script_help():
    exe = Path(sys.executable).with_name("ibsr-seg")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for command in ("demo-data", "train", "predict", "evaluate", "grade"):
        assert command in r.stdout


def _third_party_imports() -> dict[str, list[tuple[str, bool]]]:
    """Top-level module -> (where, at module level?) for every import in ibsr_helpers."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted((ROOT / "ibsr_helpers").rglob("*.py")):  # subpackages too (plots/)
        rel = path.relative_to(ROOT / "ibsr_helpers").as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "ibsr_helpers":
                    continue
                where = (f"{rel}:{node.lineno}", id(node) in top_level)
                found.setdefault(top, []).append(where)
    return found


def test_every_imported_distribution_is_declared():
    """A fresh `pip install` has every package ibsr_helpers imports (bar OPTIONAL_IMPORTS)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}
    extras = {
        extra: {canonicalize_name(Requirement(d).name) for d in deps}
        for extra, deps in project["optional-dependencies"].items()
    }
    distributions = packages_distributions()
    imports = _third_party_imports()
    assert {"numpy", "torch", "psutil"} <= set(imports)  # the walk sees the package
    undeclared, unguarded = [], []
    for module, places in sorted(imports.items()):
        names = {canonicalize_name(d) for d in distributions.get(module, [])}
        if module in OPTIONAL_IMPORTS:
            extra = OPTIONAL_IMPORTS[module]
            assert extra is None or names & extras[extra], f"{module} not in the {extra} extra"
            unguarded += [f"{module} ({where})" for where, top in places if top]
        elif not names & declared:
            shown = ", ".join(sorted(names)) or "not installed here"
            undeclared.append(f"{module} ({shown}; imported at {places[0][0]})")
    assert not undeclared, f"imported but not in pyproject.toml's dependencies: {undeclared}"
    assert not unguarded, f"optional imports at module level: {unguarded}"
    assert set(OPTIONAL_IMPORTS) <= set(imports), "OPTIONAL_IMPORTS lists an unused module"


def test_no_nifti_tracked_in_git():
    r = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0 and not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist): nothing is tracked")
    assert r.returncode == 0, r.stderr
    tracked = r.stdout.splitlines()
    assert tracked, "git ls-files listed nothing"
    assert not [f for f in tracked if f.endswith((".nii", ".nii.gz", ".mgz", ".hdr", ".img"))]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make course" in readme


@pytest.mark.parametrize("failing", [None, "test", "lint"])
def test_ci_runs_the_tests_and_the_linter(tmp_path, failing):
    """.ci/run runs `make test` and `make lint` (a stand-in make), failing if either fails."""
    log = tmp_path / "make.log"
    fake = tmp_path / "bin" / "make"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n[ "$1" != "{failing}" ]\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60
    )
    assert log.read_text().split() == ["lint", "test"], r.stderr
    assert (r.returncode == 0) == (failing is None), r.stderr


def _package_imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere (functions and TYPE_CHECKING too)."""
    package = ROOT / "ibsr_helpers"
    names = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in names}
    for name, path in names.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in names:
                graph[name].add(node.module)
                graph[name] |= {f"{node.module}.{a.name}" for a in node.names} & set(names)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names} & set(names)
    return graph


def test_no_import_circle():
    """No module reaches itself through the package's imports (issue 36)."""
    graph = _package_imports()

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])
        return seen

    circles = sorted(name for name in graph if name in reach(name))
    assert not circles, f"modules in an import circle: {circles}"
    assert "ibsr_helpers.step" in graph["ibsr_helpers.profiling"]  # the check sees imports


def test_no_module_over_700_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "ibsr_helpers").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 700
    }
    assert not long, f"split these modules (one concept each): {long}"
