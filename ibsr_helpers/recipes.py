"""The recipe registry: named sets of trained models and how they combine, read from YAML.

A recipe (``configs/recipes/<name>.yaml``) names its members, each a config file, a
profile, ``--set`` overrides and a seed, and how they combine: each member alone, the
ensembles it lists (softmax outputs averaged), the one it reports and submits
(``result``), and whether that one also runs with flip TTA. The course's models, the CPU
recipes and the GPU recipes are all recipes; the notebooks, ``ibsr-seg recipe`` and the
benchmarks read them from here. :mod:`ibsr_helpers.cookbook` trains and grades them.

A member without a ``profile`` follows the profile asked for (the notebooks' ``PROFILE``);
a config without that profile falls back to ``quick``, with one printed line saying so.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ibsr_helpers.errors import IBSRError

__all__ = [
    "Member",
    "Recipe",
    "FALLBACK_PROFILE",
    "recipes_dir",
    "recipe_names",
    "load_recipe",
    "config_profiles",
    "member_profile",
    "member_config",
    "member_folder",
    "train_command",
    "results_file",
    "reached",
    "describe_recipe",
    "cpu_kind",
    "newest_rows",
    "results_markdown",
    "all_recipes",
]

#: The profile a config falls back to when it lacks the one asked for.
FALLBACK_PROFILE = "quick"
_MEMBER_KEYS = {"name", "config", "profile", "set", "seed", "variant", "notebook"}
_RECIPE_KEYS = {"description", "members", "ensembles", "result", "tta", "minutes"}
_MACHINES = ("cpu", "t4")


@dataclass(frozen=True)
class Member:
    """One trained model of a recipe.

    Attributes:
        name: What tables call it, e.g. ``2D U-Net sagittal``.
        config: The config file's stem under ``configs/``.
        profile: Its profile, or None to follow the profile asked for.
        overrides: ``key=value`` settings applied after the profile (``--set``).
        seed: Its seed, or None to follow the seed asked for.
        variant: The run folder's variant (``runs/<name>-<variant>-<profile>[-seedN]``).
        notebook: The notebook that trains it, if any (``"03"``).
    """

    name: str
    config: str
    profile: str | None = None
    overrides: tuple[str, ...] = ()
    seed: int | None = None
    variant: str = ""
    notebook: str | None = None


@dataclass(frozen=True)
class Recipe:
    """Members, their ensembles, and the predictor the recipe reports.

    Attributes:
        name: The file's stem, e.g. ``cpu-ensemble``.
        description: One line for ``ibsr-seg recipe list``.
        members: The trained models, in order.
        ensembles: Name -> member names whose outputs are averaged.
        result: The member or ensemble the recipe reports and submits.
        tta: Whether the result is also reported (and submitted) with flip TTA.
        minutes: Expected wall minutes per machine (``cpu``: 2 cores, ``t4``), None when
            not measured.
        path: The recipe file.
    """

    name: str
    description: str
    members: tuple[Member, ...]
    ensembles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    result: str = ""
    tta: bool = False
    minutes: Mapping[str, float | None] = field(default_factory=dict)
    path: Path | None = None

    def member(self, name: str) -> Member:
        """The member called ``name``."""
        for m in self.members:
            if m.name == name:
                return m
        raise IBSRError(f"recipe {self.name!r} has no member {name!r}", self.path)

    @property
    def result_name(self) -> str:
        """The row that is the recipe's result: ``result``, ``+ TTA`` when ``tta``."""
        return f"{self.result} + TTA" if self.tta else self.result

    def predictors(self) -> dict[str, tuple[tuple[str, ...], bool]]:
        """Every row the recipe reports: name -> (member names, flip TTA).

        Each member alone, each ensemble, then the result with TTA when ``tta``.
        """
        rows = {m.name: ((m.name,), False) for m in self.members}
        rows |= {name: (tuple(ms), False) for name, ms in self.ensembles.items()}
        if self.tta:
            rows[self.result_name] = (rows[self.result][0], True)
        return rows


def recipes_dir() -> Path:
    """The folder of recipe files: ``configs/recipes`` of the checkout (or the package's)."""
    from ibsr_helpers.data import project_root

    root = project_root() or project_root(__file__) or Path.cwd()
    return root / "configs" / "recipes"


def recipe_names() -> list[str]:
    """The recipes in :func:`recipes_dir`, sorted."""
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def _check_keys(found: Mapping[str, Any], known: set[str], what: str, path: Path) -> None:
    unknown = sorted(set(found) - known)
    if unknown:
        raise IBSRError(f"{what}: unknown key(s) {unknown}; known: {sorted(known)}", path)


def _member(raw: Any, path: Path) -> Member:
    if not isinstance(raw, dict) or "name" not in raw or "config" not in raw:
        raise IBSRError(f"each member needs a name and a config, got {raw!r}", path)
    _check_keys(raw, _MEMBER_KEYS, f"member {raw['name']!r}", path)
    overrides = raw.get("set") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise IBSRError(f"member {raw['name']!r}: set must be a list of key=value", path)
    seed = raw.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise IBSRError(f"member {raw['name']!r}: seed must be an integer, got {seed!r}", path)
    return Member(
        name=str(raw["name"]),
        config=str(raw["config"]),
        profile=raw.get("profile"),
        overrides=tuple(overrides),
        seed=seed,
        variant=str(raw.get("variant") or ""),
        notebook=None if raw.get("notebook") is None else str(raw["notebook"]),
    )


def _parse(raw: Any, name: str, path: Path) -> Recipe:
    if not isinstance(raw, dict):
        raise IBSRError("a recipe file must hold a mapping", path)
    _check_keys(raw, _RECIPE_KEYS, "recipe", path)
    members = tuple(_member(m, path) for m in raw.get("members") or [])
    if not members:
        raise IBSRError("a recipe needs at least one member", path)
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise IBSRError(f"two members share a name: {names}", path)
    ensembles = {str(k): tuple(v) for k, v in (raw.get("ensembles") or {}).items()}
    for ensemble, ms in ensembles.items():
        unknown = [m for m in ms if m not in names]
        if unknown or not ms:
            raise IBSRError(f"ensemble {ensemble!r}: no member(s) {unknown or 'listed'}", path)
    result = str(raw.get("result") or names[0])
    if result not in [*names, *ensembles]:
        raise IBSRError(f"result {result!r} is neither a member nor an ensemble", path)
    minutes = raw.get("minutes") or {}
    _check_keys(minutes, set(_MACHINES), "minutes", path)
    for m in members:
        if not (path.parent.parent / f"{m.config}.yaml").is_file():
            raise IBSRError(f"member {m.name!r}: no config file configs/{m.config}.yaml", path)
    return Recipe(
        name=name,
        description=str(raw.get("description") or ""),
        members=members,
        ensembles=ensembles,
        result=result,
        tta=bool(raw.get("tta", False)),
        minutes={k: minutes.get(k) for k in _MACHINES},
        path=path,
    )


def load_recipe(name: str | Path) -> Recipe:
    """Read a recipe by name (``cpu``) or path, checking every member and ensemble.

    Raises:
        IBSRError: If there is no such recipe (the message lists those there are), or
            the file names an unknown key, member, ensemble or config.
    """
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = recipes_dir() / f"{name}.yaml"
    if not path.is_file():
        raise IBSRError(f"no recipe {str(name)!r}; the recipes are {recipe_names()}", path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise IBSRError(f"not valid YAML ({str(exc).splitlines()[0]})", path) from None
    return _parse(raw, path.stem, path)


def config_profiles(path: str | Path) -> list[str]:
    """The profiles a config file defines."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return list((raw.get("profiles") or {}).keys())


def _config_path(member: Member) -> Path:
    return recipes_dir().parent / f"{member.config}.yaml"


def member_profile(member: Member, profile: str | None = None, say: bool = True) -> str:
    """The profile a member trains at: ``profile`` (an override), its own, or quick.

    A member without a profile of its own takes ``profile``; a config without that
    profile falls back to :data:`FALLBACK_PROFILE`, printing one line saying so. In a
    compound profile (``cpu+smoke``) each part falls back on its own.
    """
    wanted = profile or member.profile or FALLBACK_PROFILE
    have = config_profiles(_config_path(member))
    parts = [p if p in have else FALLBACK_PROFILE for p in wanted.split("+")]
    lacking = [p for p in wanted.split("+") if p not in have]
    if lacking and say:
        print(
            f"{member.name}: configs/{member.config}.yaml has no {' or '.join(lacking)} "
            f"profile (it has {', '.join(have)}); its {FALLBACK_PROFILE} profile is used"
        )
    return "+".join(parts)


def member_config(
    member: Member, profile: str | None = None, seed: int = 0, say: bool = True
) -> dict[str, Any]:
    """A member's full training config.

    Args:
        member: The member.
        profile: Overrides the member's own profile when given (``smoke`` for checks);
            a member without one always takes it. See :func:`member_profile`.
        seed: The seed of a member that names none.
        say: Print the line about a profile falling back.
    """
    from ibsr_helpers.config import load_config

    chosen = member_profile(member, profile, say)
    seed = member.seed if member.seed is not None else seed
    return load_config(_config_path(member), chosen, [f"seed={seed}", *member.overrides])


def member_folder(member: Member, runs_dir: str | Path, config: Mapping[str, Any]) -> Path:
    """The run folder of a member: as ``ibsr-seg train`` and the notebooks name it."""
    from ibsr_helpers.training import run_folder

    return run_folder(runs_dir, dict(config), member.variant)


def train_command(member: Member, config: Mapping[str, Any], folder: Path) -> str:
    """The ``ibsr-seg train`` command that trains a member into ``folder``."""
    sets = [*member.overrides, *([f"seed={config['seed']}"] if config.get("seed") else [])]
    return (
        f"ibsr-seg train --config configs/{member.config}.yaml --profile {config['profile']}"
        + "".join(f" --set {s}" for s in sets)
        + f" --out {folder} --resume"
    )


def results_file() -> Path:
    """The recorded results of recipe runs: ``benchmarks/results/recipes.csv``."""
    return recipes_dir().parent.parent / "benchmarks" / "results" / "recipes.csv"


def reached(name: str, path: str | Path | None = None) -> list[dict[str, str]]:
    """The recorded results of a recipe (rows of :func:`results_file`), oldest first."""
    path = Path(path) if path else results_file()
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row["recipe"] == name]


def cpu_kind(hardware: str) -> str | None:
    """Whether a recorded row's CPU computes bf16 natively: ``bf16``, ``fp32``, or None if unsaid.

    Reads the ``(bf16: ...)`` of a ``recipes.csv`` hardware field, as :func:`_record` and
    older rows wrote it (``native`` or ``True``; ``none ...`` or ``False``).
    """
    found = re.search(r"bf16: (\w+)", hardware)
    if not found:
        return None
    return "bf16" if found.group(1) in ("native", "True") else "fp32"


def newest_rows(rows: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
    """The newest row of each recipe on each kind of CPU (:func:`cpu_kind`), by recipe name.

    A row whose hardware does not say whether its CPU has bf16 gives way to any newer row of
    the same recipe.
    """
    kept = [
        row
        for i, row in enumerate(rows)
        if not any(
            later["recipe"] == row["recipe"]
            and cpu_kind(row["hardware"]) in (None, cpu_kind(later["hardware"]))
            for later in rows[i + 1 :]
        )
    ]
    return sorted(kept, key=lambda r: r["recipe"])  # a stable sort: oldest first within a recipe


def results_markdown(path: str | Path | None = None) -> str:
    """The newest recorded result of each recipe per kind of CPU (the README's ``recipes`` block).

    Every row stays in the CSV; the table keeps the newest per recipe and CPU kind
    (:func:`newest_rows`) and says how many older rows it leaves to the file.
    """
    path = Path(path) if path else results_file()
    rows: list[dict[str, str]] = []
    if path.is_file():
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    shown = newest_rows(rows)
    older = len(rows) - len(shown)
    lines = [
        f"Recorded in `{path.parent.name}/{path.name}` (`ibsr-seg recipe run NAME --record`"
        " appends a row); validation mean Dice over the 5 validation subjects; the newest row"
        " of each recipe on a CPU with and without native bf16"
        + (f" ({older} older rows in the file)." if older else "."),
        "",
        "| recipe | mean Dice | CSF Dice | minutes | date | hardware | made by |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in shown:
        lines.append(
            f"| `{r['recipe']}` | **{r['mean_dice']}** | {r['csf_dice']} | {r['minutes'] or '–'} "
            f"| {r['date']} | {r['hardware']} | {r['made_by']} |"
        )
    return "\n".join(lines)


def _minutes(value: float | None, where: str) -> str:
    return f"about {value:g} min on {where}" if value else f"not measured on {where}"


def describe_recipe(recipe: Recipe, results: str | Path | None = None) -> str:
    """A recipe in a few lines: members, result, what it reached, expected minutes."""
    lines = [f"{recipe.name}: {recipe.description}"]
    for m in recipe.members:
        profile = m.profile or f"the profile asked for, default {FALLBACK_PROFILE}"
        sets = f", {' '.join(m.overrides)}" if m.overrides else ""
        seed = f", seed {m.seed}" if m.seed is not None else ""
        lines.append(f"  member {m.name}: configs/{m.config}.yaml, {profile}{sets}{seed}")
    for name, ms in recipe.ensembles.items():
        lines.append(f"  ensemble {name}: {' + '.join(ms)}")
    lines.append(f"  result: {recipe.result_name}")
    rows = reached(recipe.name, results)
    if rows:
        for row in rows[-2:]:
            lines.append(
                f"  reached: validation mean Dice {row['mean_dice']} (CSF {row['csf_dice']})"
                + (f" in {row['minutes']} min" if row["minutes"] else "")
                + f", {row['date']}, {row['hardware']}; {row['made_by']}"
            )
    else:
        lines.append("  reached: not run yet")
    lines.append(
        f"  expected: {_minutes(recipe.minutes.get('cpu'), 'a 2-core CPU')}, "
        f"{_minutes(recipe.minutes.get('t4'), 'a T4')}"
    )
    return "\n".join(lines)


def all_recipes(names: Sequence[str] | None = None) -> dict[str, Recipe]:
    """Every recipe (or those named), by name."""
    return {n: load_recipe(n) for n in (names or recipe_names())}
