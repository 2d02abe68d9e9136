"""Rule errors carry their position so every failure prints as ``FILE:LINE:COL: message``."""

from __future__ import annotations

from dataclasses import dataclass


class CompileError(Exception):
    """A construct the streaming compiler refuses, or a name the schema does not have.

    ``anchor`` is the identifier to point at (a column, function or table name) and
    ``segment`` the ``let`` it was found in (None: the query body); the front end turns the
    pair into a line and column of the rule text.
    """

    def __init__(
        self,
        message: str,
        anchor: str | None = None,
        segment: str | None = None,
        position: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.anchor = anchor
        self.segment = segment
        self.position = position


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """One rule that did not load: where (1-based line and column) and why."""

    file: str
    line: int
    col: int
    message: str
    # False: the rule is fine but written for telemetry etwsensor does not produce (a Sigma rule for
    # another log source); reported by `rules check`, not an error for a run.
    applicable: bool = True

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"file": self.file, "line": self.line, "col": self.col}
        out["message"] = self.message
        if not self.applicable:
            out["applicable"] = False
        return out
