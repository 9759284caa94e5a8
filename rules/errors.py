"""Errors of the rules engine: one root, a shallow hierarchy, and a positioned ``Issue`` per problem."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in a program document, positioned so an editor can underline it.

    ``line`` and ``column`` are 1-based and count characters (not bytes); they are ``None`` when the
    document format carries no positions (a Python dict, say).
    """

    message: str
    path: str = ""
    line: int | None = None
    column: int | None = None
    hint: str | None = None
    source_line: str | None = None

    def format(self, filename: str = "") -> str:
        """One line: ``file:line:col: path: message (hint)``."""
        where = filename
        if self.line is not None:
            where = f"{where}:{self.line}:{self.column or 1}" if where else f"{self.line}:{self.column or 1}"
        parts = [p for p in (where, self.path) if p]
        text = ": ".join([*parts, self.message])
        if self.hint:
            text += f" ({self.hint})"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


class RulesError(Exception):
    """Root of every error the rules engine raises."""


class ProgramError(RulesError):
    """A program document is invalid; ``issues`` holds every problem found in one pass."""

    def __init__(self, issues: list[Issue] | tuple[Issue, ...]) -> None:
        self.issues = tuple(issues)
        first = self.issues[0].format() if self.issues else "invalid program"
        more = f" (and {len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        super().__init__(first + more)


class EvaluationError(RulesError):
    """The inputs of an evaluation are unusable (a naive datetime, a negative quantity, ...)."""
