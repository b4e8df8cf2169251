"""The course as a whole: repository address in one place, the grading folder, the README."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ibsr_helpers import course
from ibsr_helpers.errors import IBSRError

ROOT = Path(__file__).parents[1]


def test_every_notebook_names_the_repository_of_pyproject():
    repo = course.repository(ROOT)
    assert repo.count("/") == 1
    assert course.sync_repository(check=True) == [], "run: ibsr-seg notebooks --sync-repository"
    for path in [*course.notebook_paths(), *course.solution_paths()]:
        head = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"][:3])
        where = path.relative_to(ROOT).as_posix()
        assert f"colab.research.google.com/github/{repo}/blob/main/{where}" in head
        assert f'REPO = "{repo}"' in head


def test_sync_repository_rewrites_badge_and_clone(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    src = course.notebook_paths()[0]
    copy = folder / src.name
    copy.write_text(src.read_text().replace(course.repository(), "someone/elsewhere"))
    assert course.sync_repository(folder, check=True) == [copy]
    assert course.sync_repository(folder) == [copy]
    assert "someone/elsewhere" not in copy.read_text()
    assert course.sync_repository(folder, check=True) == []


def test_update_readme_puts_the_results_between_the_markers(tmp_path):
    reports = tmp_path / "reports"
    (reports / "figures").mkdir(parents=True)
    (reports / "results.md").write_text("- **date**: today\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    (reports / "figures" / "dice_boxplot.png").write_bytes(b"png")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n<!-- results:start -->\nstale\n<!-- results:end -->\n"
        "<!-- recipes:start -->\nstale too\n<!-- recipes:end -->\nafter\n"
    )
    written = course.update_readme(reports, readme, tmp_path / "images")
    text = readme.read_text()
    assert "stale" not in text and "| 1 | 2 |" in text and text.endswith("after\n")
    assert "| `cpu-ensemble` | **0.9405** |" in text  # the recorded recipe results
    assert (tmp_path / "images" / "dice_boxplot.png").read_bytes() == b"png"
    assert len(written) == 2
    for text in ("no markers", "<!-- results:start -->\nA\n<!-- results:end -->\n"):
        readme.write_text(text)
        with pytest.raises(IBSRError, match="markers"):
            course.update_readme(reports, readme, tmp_path / "images")
        assert readme.read_text() == text  # left as it was
    with pytest.raises(IBSRError, match="no results.md"):
        course.update_readme(tmp_path / "nothing", readme)


def test_replace_readme_block_changes_only_the_named_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- results:start -->\nA\n<!-- results:end -->\n"
        "<!-- cpu-results:start -->\nB\n<!-- cpu-results:end -->\n"
    )
    assert course.has_readme_block(readme, "cpu-results")
    assert not course.has_readme_block(readme, "cpu")
    course.replace_readme_block(readme, "cpu-results", "\n| new |\n\n")
    assert readme.read_text() == (
        "<!-- results:start -->\nA\n<!-- results:end -->\n"
        "<!-- cpu-results:start -->\n| new |\n<!-- cpu-results:end -->\n"
    )
    with pytest.raises(IBSRError, match="cpu-fullres-results"):
        course.replace_readme_block(readme, "cpu-fullres-results", "x")


def test_export_html(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("1 + 1")]
    path = tmp_path / "07_demo.ipynb"
    nbformat.write(nb, str(path))
    html = course.export_html(path, tmp_path / "html")
    assert html.name == "07_demo.html" and "Title" in html.read_text()


def test_readme_is_for_its_readers_and_its_recipe_table_is_current():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    order = [
        "## Quick start",
        "## For students",
        "make lab",
        "## For instructors",
        "## Your own scans",
        "view_files(",
        "## Results",
        "## Development",
    ]
    positions = [readme.index(s) for s in order]
    assert positions == sorted(positions)
    from ibsr_helpers.recipes import results_markdown

    block = readme.split("<!-- recipes:start -->\n")[1].split("\n<!-- recipes:end -->")[0]
    assert block == results_markdown(), "run make readme-results (ibsr-seg report)"
    assert "make clean-runs" in readme and "clean-runs:" in (ROOT / "Makefile").read_text()


def test_recording_keeps_figures_as_they_look_in_fewer_bytes():
    import base64
    import io

    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.imshow(rng.normal(size=(64, 64)).cumsum(0), cmap="gray")
    ax.imshow(np.where(rng.random((64, 64)) > 0.7, 1.0, np.nan), cmap="autumn", alpha=0.4)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    png = base64.b64encode(buffer.getvalue()).decode()
    cell = {"cell_type": "code", "id": "a", "source": [], "outputs": []}
    ran = {**cell, "outputs": [{"output_type": "display_data", "data": {"image/png": png}}]}
    recorded = course._with_outputs({"cells": [cell], "metadata": {}}, {"cells": [ran]})
    kept = recorded["cells"][0]["outputs"][0]["data"]["image/png"]
    assert len(kept) < 0.8 * len(png)
    before = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"), float)
    after = np.asarray(Image.open(io.BytesIO(base64.b64decode(kept))).convert("RGB"), float)
    assert after.shape == before.shape and np.abs(after - before).mean() < 2.0
    assert len(course.compact_png(kept)) <= len(kept)  # never made larger
