"""The exit codes of every ``etwsensor`` command: one table, shown in ``--help`` and the README.

When several apply to one run, the highest number wins (undelivered alerts outrank damaged input,
which outranks a rule that failed to load), so a script that tests ``$? -ne 0`` and one that tests
for a particular code both see the most serious problem.
"""

from __future__ import annotations

OK = 0
"""Done: every input read, every rule loaded, every alert delivered."""

RULE_ERRORS = 1
"""A check failed: a rule the user asked for does not compile or load (``rules check``, or ``replay``
and ``trace`` without ``--skip-bad-rules``; the other rules still ran)."""

USAGE = 2
"""Usage or environment error, found before any work: a bad option, a path that does not exist, an
unreadable input or configuration, an invalid sink URL or proxy. Nothing was processed."""

DAMAGED_INPUT = 3
"""An input was damaged (truncated, corrupt, not UTF-8, nested too deeply…): the damage is reported
with its file and line or record number, and what could be read was still processed."""

UNDELIVERED = 4
"""Alerts were not delivered: dropped (a full disk, a closed output), rejected by the receiver
(dead-lettered), lost, or still spooled at exit for the next run."""

INTERRUPTED = 130
"""Stopped by Ctrl-C (128 + SIGINT, the shell convention); the summary so far is printed."""

TABLE: tuple[tuple[int, str], ...] = (
    (OK, "done: inputs read, rules loaded, alerts delivered"),
    (RULE_ERRORS, "a rule failed to compile or load (the others ran; --skip-bad-rules: not an error)"),
    (USAGE, "usage error: bad option, missing path, unreadable input or config, invalid sink or proxy"),
    (DAMAGED_INPUT, "an input was damaged; reported with file and line/record, the rest was processed"),
    (UNDELIVERED, "alerts not delivered: dropped, dead-lettered, lost, or still spooled at exit"),
    (INTERRUPTED, "interrupted (Ctrl-C); the summary so far is printed"),
)


SKIP_BAD_RULES_HELP = "Run the rules that load; a broken rule is then not an error (exit 0, not 1)."


def worst(*codes: int) -> int:
    """The exit code of a run where each of ``codes`` applies: the highest wins."""
    return max(codes, default=OK)


def help_text() -> str:
    """The table for ``--help`` (click keeps ``\\b`` paragraphs as written)."""
    lines = "\n".join(f"  {code:>3}  {text}" for code, text in TABLE)
    return f"\b\nExit codes (when several apply, the highest wins):\n{lines}"
