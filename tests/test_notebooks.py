"""Every course notebook runs top to bottom (papermill), as `make course` runs it.

00 and 01 run in their real (quick) profile on IBSR18 where it is (else demo data; their
solutions run on demo data); the training notebooks run in the `smoke` profile (one tiny
epoch) or at `cpu+smoke` (SMOKE_RUNS) so the suite stays within its time budget; the
quick-profile training numbers are checked by tests/test_acceptance.py. The training
notebooks share one runs folder for the session, as `make course` shares ``runs/``, so 06
finds what 03 trained at cpu+smoke and trains the rest; it is a fresh temporary folder,
never the checkout's ``notebooks/runs``, so no run left there by an earlier session
stands in for training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ibsr_helpers.course import notebook_paths, run_notebook, solution_paths

NOTEBOOKS = {p.name[:2]: p for p in notebook_paths(Path(__file__).parents[1] / "notebooks")}
SOLUTIONS = {p.name[:2]: p for p in solution_paths(Path(__file__).parents[1] / "notebooks")}


def _outputs_text(path: Path) -> str:
    nb = json.loads(path.read_text())
    chunks = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            chunks.append("".join(out.get("text", "")))
            chunks.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(chunks)


def test_committed_outputs_are_a_recorded_ibsr18_run_of_this_code():
    """Outputs on GitHub come from `make record` on IBSR18, and go stale loudly."""
    from ibsr_helpers.course import RECORD_KEY, code_hash

    total = 0
    for path in NOTEBOOKS.values():
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1 and "PROFILE" in "".join(tagged[0]["source"]), path.name
        record = nb["metadata"].get(RECORD_KEY)
        if not record:  # not recorded yet (make record): then it carries no output at all
            assert not any(c.get("outputs") for c in code), f"{path.name}: unrecorded outputs"
            continue
        assert record["code_hash"] == code_hash(nb), f"{path.name}: code changed since make record"
        assert record["data"].startswith("IBSR18") and record["profile"] == "quick"
        assert any(c.get("outputs") for c in code), path.name
        assert "not IBSR18" not in _outputs_text(path), f"{path.name}: a demo-data banner"
        assert not any(c.get("metadata", {}).get("tags") == ["injected-parameters"] for c in code)
        total += path.stat().st_size
    assert total <= 12 * 2**20, f"{total / 2**20:.1f} MB of notebooks"


def test_record_refuses_demo_data_and_writes_nothing(demo_root):
    from ibsr_helpers.course import record_notebooks
    from ibsr_helpers.errors import IBSRError

    before = {p: p.read_text() for p in NOTEBOOKS.values()}
    with pytest.raises(IBSRError, match="not demo data"):
        record_notebooks(demo_root)
    assert before == {p: p.read_text() for p in NOTEBOOKS.values()}


def test_notebook_cell_ids_are_unique():
    # nbformat renames a repeated id with a warning on every run (and may refuse it later).
    for path in NOTEBOOKS.values():
        ids = [c.get("id") for c in json.loads(path.read_text())["cells"]]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        assert not repeated, f"{path.name}: repeated cell ids {repeated}"


@pytest.mark.slow
@pytest.mark.parametrize("number", ["00", "01"])
def test_setup_and_exploration_notebooks(number, any_root, tmp_path):
    from ibsr_helpers.data import is_demo_data

    out = run_notebook(NOTEBOOKS[number], tmp_path, {"PROFILE": "quick", "DATA_DIR": str(any_root)})
    text = _outputs_text(out)
    if is_demo_data(any_root):
        assert "demo data (MNI152-derived), not IBSR18" in text
    else:
        assert "IBSR18" in text and "not IBSR18" not in text


@pytest.fixture(scope="session")
def course_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's runs and reports folders for the training notebooks (in one parent)."""
    return tmp_path_factory.mktemp("course")


#: The training notebooks at the smoke profile, and at cpu+smoke (the cpu profiles on the
#: smoke grid) where a cpu profile changes what they train. No notebook's code branches on
#: the profile beyond "smoke" in PROFILE, so each runs once at the cheaper variant that
#: covers it: 03 at both (its models have cpu profiles); 06 at cpu+smoke only (the course's
#: runs at their cpu profiles, the cpu-ensemble recipe, and the volume models, which have no
#: cpu profile and fall back to quick, saying so: what notebook 04 does with PROFILE="cpu");
#: 02, 04 and 05 at smoke (02 and 05 only read the cpu profiles, which tests/test_recipes.py
#: loads).
SMOKE_RUNS = [
    *[(n, "smoke") for n in ("02", "03", "04", "05")],
    *[(n, "cpu+smoke") for n in ("03", "06")],
]


@pytest.mark.slow
@pytest.mark.parametrize(("number", "profile"), SMOKE_RUNS)
def test_training_notebooks_smoke(number, profile, any_root, course_folder, tmp_path):
    parameters = {"PROFILE": profile, "DATA_DIR": str(any_root)}
    if number != "02":
        parameters["RUNS_DIR"] = str(course_folder / "runs")
    if number == "06":
        parameters["REPORTS_DIR"] = str(course_folder / profile / "reports")
    out = run_notebook(NOTEBOOKS[number], tmp_path, parameters)
    text = _outputs_text(out)
    if profile == "cpu+smoke" and number == "06":  # the volume configs: said, not hidden
        assert "has no cpu profile" in text and "its quick profile is used" in text
    if number == "06":
        assert (course_folder / profile / "reports" / "results.md").is_file()
        assert "cpu-ensemble: cpu ensemble + TTA" in text  # the recipe's rows joined
        assert (course_folder / profile / "reports" / "submission.zip").is_file()
        assert "% on a tissue boundary" in _outputs_text(out)  # section 4's summary line


def test_numbers_in_notebook_prose_come_from_results_files():
    """A Dice-like number in a markdown cell must appear in a results file (or go)."""
    import re

    root = Path(__file__).parents[1]
    results = [root / "benchmarks" / "README.md", *sorted((root / "benchmarks/results").glob("*"))]
    corpus = "".join(p.read_text() for p in results) + (root / "README.md").read_text()
    stale = []
    for path in NOTEBOOKS.values():
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                text = "".join(cell["source"])
                found = re.findall(r"(?<![\d.])0\.\d{3,4}(?!\d)", text)
                stale += [f"{path.name}: {n}" for n in found if n not in corpus]
    assert not stale, f"numbers in no results file (compute them, or cite the file): {stale}"


def _exercises(path: Path) -> list[str]:
    """The numbers of a chapter's exercises (its "## Exercises" cell, items "1.", "2.", ...)."""
    import re

    cells = json.loads(path.read_text())["cells"]
    text = "".join("".join(c["source"]) for c in cells if "## Exercises" in "".join(c["source"]))
    return re.findall(r"^(\d+)\. ", text, re.MULTILINE)


def test_each_solutions_notebook_answers_every_exercise_of_its_chapter():
    import re

    assert SOLUTIONS, "no notebooks/solutions/NN_*_solutions.ipynb"
    for number, path in SOLUTIONS.items():
        chapter = NOTEBOOKS[number]
        assert path.name == f"{chapter.stem}_solutions.ipynb"
        cells = json.loads(path.read_text())["cells"]
        answered = [
            m
            for c in cells
            if c["cell_type"] == "markdown"
            for m in re.findall(r"^## Exercise (\d+)", "".join(c["source"]), re.MULTILINE)
        ]
        assert answered == _exercises(chapter), f"{path.name}: answers {answered}"
        expected = sum("*Expected" in "".join(c["source"]) for c in cells)
        assert expected == len(answered), f"{path.name}: an answer without what to expect"
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1 and "PROFILE" in "".join(tagged[0]["source"]), path.name
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), path.name
        widgets = json.loads(path.read_text())["metadata"].get("widgets")
        assert not widgets, f"{path.name}: widget state of a run it does not carry"
        chapter_text = chapter.read_text()
        assert f"solutions/{path.name}" in chapter_text, f"{chapter.name} links no solutions"


@pytest.mark.slow
@pytest.mark.parametrize("number", sorted(SOLUTIONS))
def test_solutions_run_at_smoke(number, demo_root, any_root, course_folder, tmp_path):
    """Every worked answer runs at smoke, so none can go stale.

    Answers that use runs (their parameters name RUNS_DIR) find the session's course runs
    on the data the training notebooks used, as a student's find the chapters' runs; the
    others run on demo data. Never the checkout's notebooks/runs.
    """
    from ibsr_helpers.data import describe_source

    uses_runs = "RUNS_DIR" in SOLUTIONS[number].read_text()
    root = any_root if uses_runs else demo_root
    parameters = {"PROFILE": "smoke", "DATA_DIR": str(root)}
    if uses_runs:
        parameters["RUNS_DIR"] = str(course_folder / "runs")
    out = run_notebook(SOLUTIONS[number], tmp_path, parameters)
    assert describe_source(root) in _outputs_text(out)
