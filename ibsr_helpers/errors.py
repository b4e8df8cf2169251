"""The one exception type the project raises for bad user input."""

from __future__ import annotations

from pathlib import Path


class IBSRError(Exception):
    """Bad user input: a missing, corrupt or inconsistent file or setting.

    The message always names the file (or setting) and the problem, so the CLI can print
    it on one line without a traceback.

    Args:
        problem: What is wrong, in a short sentence.
        path: The file or folder concerned, if any.
    """

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.problem = problem
        self.path = Path(path) if path is not None else None
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)
