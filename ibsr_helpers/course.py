"""The course as a whole: its notebooks run in order (``make course``) or recorded, their headers.

Every notebook's first cells name the course's GitHub repository twice (the Colab badge
and the clone in the setup cell). The address lives in one place, ``pyproject.toml``'s
``[project.urls] Repository``; :func:`sync_repository` writes it into the notebooks
(``ibsr-seg notebooks --sync-repository``) and a test checks they agree.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

from ibsr_helpers.data import describe_source, project_root, resolve_data_dir
from ibsr_helpers.errors import IBSRError

__all__ = [
    "notebook_paths",
    "run_notebook",
    "run_course",
    "export_html",
    "update_readme",
    "has_readme_block",
    "replace_readme_block",
    "repository",
    "sync_repository",
    "solution_paths",
    "code_hash",
    "record_notebooks",
    "compact_png",
    "RECORD_KEY",
]

#: The notebook metadata key under which :func:`record_notebooks` says what it ran.
RECORD_KEY = "ibsr_record"

_BADGE = re.compile(r"colab\.research\.google\.com/github/[\w.\-]+/[\w.\-]+/blob/")
_REPO_LINE = re.compile(r'^REPO = "[^"]*"', re.MULTILINE)


def repository(root: str | Path | None = None) -> str:
    """The course's GitHub repository, ``owner/name``, from ``pyproject.toml``."""
    root = Path(root) if root else (project_root() or Path.cwd())
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    url = meta["project"]["urls"]["Repository"]
    return url.removeprefix("https://github.com/").strip("/")


def sync_repository(folder: str | Path | None = None, check: bool = False) -> list[Path]:
    """Write :func:`repository` into every notebook's (and solution's) Colab badge and setup cell.

    Args:
        folder: The notebooks folder (default: the checkout's).
        check: Only report the notebooks that disagree; change nothing.

    Returns:
        The notebooks changed (or, with ``check``, those that would be).
    """
    repo = repository()
    changed = []
    for path in [*notebook_paths(folder), *solution_paths(folder)]:
        text = path.read_text()
        nb = json.loads(text)
        for cell in nb["cells"][:3]:
            source = "".join(cell["source"])
            source = _BADGE.sub(f"colab.research.google.com/github/{repo}/blob/", source)
            source = _REPO_LINE.sub(f'REPO = "{repo}"', source)
            cell["source"] = [line for line in source.splitlines(keepends=True)]
        new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        if new != text:
            changed.append(path)
            if not check:
                path.write_text(new)
    return changed


def notebook_paths(folder: str | Path | None = None) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in order."""
    folder = Path(folder) if folder else (project_root() or Path.cwd()) / "notebooks"
    paths = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise IBSRError("no numbered notebooks (NN_name.ipynb) found", folder)
    return paths


def solution_paths(folder: str | Path | None = None) -> list[Path]:
    """The chapters' worked answers, ``solutions/NN_*_solutions.ipynb``, in order."""
    folder = Path(folder) if folder else (project_root() or Path.cwd()) / "notebooks"
    return sorted((folder / "solutions").glob("[0-9][0-9]_*_solutions.ipynb"))


def run_notebook(path: str | Path, out_dir: str | Path, parameters: dict) -> Path:
    """Execute one notebook with papermill, writing the executed copy to ``out_dir``.

    Runs with the notebook's folder as working directory, so relative paths behave as
    they do for a student.

    Raises:
        IBSRError: If a cell fails; the message names the executed copy to open.
    """
    import papermill as pm

    path = Path(path).resolve()
    out = Path(out_dir).resolve() / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(path),
            str(out),
            parameters=parameters,
            cwd=str(path.parent),
            kernel_name="python3",
            progress_bar=False,
        )
    except pm.PapermillExecutionError as exc:
        raise IBSRError(
            f"cell {exc.exec_count} failed: {exc.ename}: {exc.evalue} (executed copy: {out})", path
        ) from None
    return out


#: The figures notebook 06 saves that the README shows.
README_FIGURES: tuple[str, ...] = ("error_triplanar.png", "dice_boxplot.png", "subject_heatmap.png")


def _block(name: str) -> re.Pattern[str]:
    tag = re.escape(name)
    return re.compile(rf"(<!-- {tag}:start -->\n).*?(\n<!-- {tag}:end -->)", re.DOTALL)


def has_readme_block(readme: str | Path, name: str) -> bool:
    """Whether a README has the block ``<!-- NAME:start -->`` ... ``<!-- NAME:end -->``."""
    return bool(_block(name).search(Path(readme).read_text()))


def replace_readme_block(readme: str | Path, name: str, content: str) -> Path:
    """Replace what lies between a README's ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.

    Args:
        readme: The Markdown file.
        name: The block's name (``results``, ``cpu-results``, ...).
        content: The new text of the block (stripped of surrounding blank lines).

    Returns:
        The README's path.

    Raises:
        IBSRError: If the README has no such block (it is then left as it was).
    """
    readme = Path(readme)
    text = readme.read_text()
    block = _block(name)
    if not block.search(text):
        raise IBSRError(f"no <!-- {name}:start --> / <!-- {name}:end --> markers", readme)
    readme.write_text(block.sub(lambda m: m.group(1) + content.strip() + m.group(2), text))
    return readme


def update_readme(
    reports: str | Path, readme: str | Path = "README.md", images: str | Path = "images"
) -> list[Path]:
    """Put a course run's results into the README: its table, and its figures in ``images/``.

    The table (``reports/results.md``, with the date, hardware and command that made it)
    replaces what lies between ``<!-- results:start -->`` and ``<!-- results:end -->``;
    the recorded recipe results (:func:`ibsr_helpers.recipes.results_markdown`) replace
    the ``recipes`` block.

    Returns:
        The files written.

    Raises:
        IBSRError: If the reports folder has no results, or the README no markers.
    """
    import shutil

    reports, readme, images = Path(reports), Path(readme), Path(images)
    results = reports / "results.md"
    if not results.is_file():
        raise IBSRError("no results.md: run make course (notebook 06) first", reports)
    from ibsr_helpers.recipes import results_markdown

    for block in ("results", "recipes"):  # both there before either is written
        if not has_readme_block(readme, block):
            raise IBSRError(f"no <!-- {block}:start --> / <!-- {block}:end --> markers", readme)
    written = [replace_readme_block(readme, "results", results.read_text())]
    replace_readme_block(readme, "recipes", results_markdown())
    images.mkdir(parents=True, exist_ok=True)
    for name in README_FIGURES:
        if (reports / "figures" / name).is_file():
            written.append(Path(shutil.copy2(reports / "figures" / name, images / name)))
    return written


def _parameters_cell(path: Path) -> str:
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return "".join(cell["source"])
    return ""


def export_html(notebook: str | Path, out_dir: str | Path) -> Path:
    """Write an executed notebook as a standalone HTML page (nbconvert), for grading."""
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    body, _ = HTMLExporter().from_filename(str(notebook))
    out = Path(out_dir) / f"{notebook.stem}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    return out


def run_course(
    out_dir: str | Path = "reports",
    profile: str = "quick",
    data_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Execute every numbered notebook in order, into one folder an instructor grades from.

    Uses IBSR18 if it is found (``data_dir``, ``IBSR18_DIR`` or ``data/IBSR18``), else
    the demo data (made on first use), and says which. ``out_dir`` receives the executed
    notebooks, their HTML (``html/``), and what notebook 06 writes there: ``results.md``,
    ``results.csv``, ``figures/`` and ``submission/`` (+ ``submission.zip``).

    Returns:
        The executed notebooks.
    """
    root, _ = resolve_data_dir(data_dir)
    out_dir = Path(out_dir).resolve()
    print(f"course: profile {profile}, data: {describe_source(root)}")
    os.environ.setdefault("MPLBACKEND", "Agg")
    done = []
    for path in notebook_paths():
        if only and path.name[:2] not in only:
            continue
        t = time.time()
        print(f"  running {path.name} ...", flush=True)
        parameters = {"PROFILE": profile, "DATA_DIR": str(Path(root).resolve()), "SEED": seed}
        if "REPORTS_DIR" in _parameters_cell(path):
            parameters["REPORTS_DIR"] = str(out_dir)
        done.append(run_notebook(path, out_dir, parameters))
        html = export_html(done[-1], out_dir / "html")
        print(
            f"  {path.name} done in {time.time() - t:.0f} s -> {done[-1]}, {html.name}", flush=True
        )
    return done


def code_hash(notebook: dict) -> str:
    """SHA-256 (16 hex digits) of a notebook's code cells: what its outputs were made by."""
    import hashlib

    code = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    return hashlib.sha256("\n\x00".join(code).encode()).hexdigest()[:16]


def record_notebooks(
    data_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    reports: str | Path = "reports",
    max_mb: float = 12.0,
) -> list[Path]:
    """Run the notebooks on IBSR18 (quick profile) and keep their outputs in ``notebooks/``.

    Each notebook is executed as :func:`run_course` does; its outputs are then copied into
    the committed notebook cell by cell (the papermill parameters cell is not kept), and its
    metadata records the hash of the code that made them (:func:`code_hash`), the date,
    profile, data and commit; a test fails when the code no longer matches. Notebooks
    are written only once all of them ran, so a failure leaves the committed ones as they
    were.

    Args:
        data_dir: IBSR18 (demo data is refused: its outputs would say nothing about IBSR18).
        only: Notebook numbers to record (default all).
        reports: Receives what ``make course`` writes (the executed notebooks, their HTML,
            notebook 06's results table, figures and submission).
        max_mb: Refuse to write notebooks larger than this together.

    Returns:
        The notebooks written.

    Raises:
        IBSRError: On demo data, a failing cell, or outputs over ``max_mb``.
    """
    from ibsr_helpers.data import is_demo_data
    from ibsr_helpers.provenance import code_version

    root, _ = resolve_data_dir(data_dir)
    if is_demo_data(root):
        raise IBSRError("recorded outputs must come from IBSR18, not demo data", root)
    sources = {p.name: p for p in notebook_paths()}
    recorded = {
        sources[p.name]: _with_outputs(
            json.loads(sources[p.name].read_text()), json.loads(p.read_text())
        )
        for p in run_course(reports, "quick", root, only)
    }
    date, commit = time.strftime("%Y-%m-%d"), code_version()
    for nb in recorded.values():
        nb["metadata"][RECORD_KEY] = {
            "code_hash": code_hash(nb),
            "profile": "quick",
            "data": describe_source(root),
            "date": date,
            "commit": commit,
            "command": "make record",
        }
    texts = {p: json.dumps(nb, indent=1, ensure_ascii=False) + "\n" for p, nb in recorded.items()}
    total = sum(len(t.encode()) for t in texts.values()) / 2**20
    if total > max_mb:
        raise IBSRError(
            f"recorded notebooks take {total:.1f} MB, over {max_mb:g} MB; nothing written"
        )
    for path, text in texts.items():
        path.write_text(text)
    print(f"recorded {len(texts)} notebooks ({total:.1f} MB) on {describe_source(root)}")
    return list(texts)


def compact_png(encoded: str) -> str:
    """A base64 PNG re-encoded with a 256-colour palette, if that is smaller.

    Recorded figures are MRI slices in grey with a few overlay colours: a palette keeps
    them as they look at about half the bytes, so the notebooks on GitHub stay small.
    """
    import base64
    import io

    from PIL import Image

    raw = base64.b64decode(encoded)
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    buffer = io.BytesIO()
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
    small = buffer.getvalue()
    return base64.b64encode(small).decode() if len(small) < len(raw) else encoded


def _with_outputs(committed: dict, executed: dict) -> dict:
    """The committed notebook with the executed copy's outputs (figures compacted), by cell id."""
    ran = {c.get("id"): c for c in executed["cells"]}
    for cell in committed["cells"]:
        if cell["cell_type"] == "code":
            done = ran.get(cell.get("id"))
            if done is None:
                raise IBSRError(f"cell {cell.get('id')} missing from the executed notebook")
            cell["outputs"] = done.get("outputs", [])
            for output in cell["outputs"]:
                if "image/png" in output.get("data", {}):
                    output["data"]["image/png"] = compact_png(output["data"]["image/png"])
            cell["execution_count"] = done.get("execution_count")
    if "widgets" in executed.get("metadata", {}):
        committed["metadata"]["widgets"] = executed["metadata"]["widgets"]
    return committed
