"""Hot reload: rule folders and the config file are watched, and a new rule set is compiled aside.

A watcher thread looks at the files every ``interval`` seconds (names, sizes and modification times:
portable, cheap, and blind to nothing an editor or a deployment tool does) and wakes at once on
``request()`` (SIGHUP, a service control code). A change is compiled once the files have held still
for one interval, so a file caught half-written is not compiled. The whole rule set is compiled in
that thread, so the stream never waits for a compile; the pipeline swaps it in between two rows when
``ready`` is set, and the old set runs until then. A set with failures is not swapped in (unless
``accept_partial``, i.e. --skip-bad-rules): the old one keeps running and the failures are reported.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from etwsensor.logging import get_logger

if TYPE_CHECKING:
    from etwsensor.alerts.allowlist import Allowlist
    from etwsensor.rules.errors import RuleFailure
    from etwsensor.rules.ruleset import RuleSet

log = get_logger("etwsensor.rules.reload")

Signature = tuple[tuple[str, int, int], ...]


@dataclass(slots=True)
class ReloadOutcome:
    """One reload: the new rule set (None when it was refused), what failed, and the allowlist of a
    re-read config file (None: keep the current one)."""

    ruleset: RuleSet | None
    failures: list[RuleFailure] = field(default_factory=list)
    allowlist: Allowlist | None = None
    trigger: str = "change"


def files_signature(paths: Iterable[Path]) -> Signature:
    """(path, size, mtime_ns) of every file under ``paths``; a missing path counts as empty."""
    entries: list[tuple[str, int, int]] = []
    for root in paths:
        candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in candidates:
            try:
                st = p.stat()
            except OSError:
                continue
            entries.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(entries)


class RuleReloader:
    """Watches ``watched`` paths and compiles a new rule set with ``compile_rules`` on every change
    (the callable returns a ``ReloadOutcome`` whose ``ruleset`` is the compiled set)."""

    def __init__(
        self,
        watched: Iterable[Path],
        compile_rules: Callable[[], ReloadOutcome],
        interval: float = 1.0,
        accept_partial: bool = False,
    ) -> None:
        self.watched = [Path(p) for p in watched]
        self._compile = compile_rules
        self.interval = interval
        self.accept_partial = accept_partial  # --skip-bad-rules: a set with failures may still go live
        self.ready = False  # read by the pipeline between rows: a plain attribute, no lock
        self._outcome: ReloadOutcome | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._requested = False
        self._lock = threading.Lock()
        self._signature = files_signature(self.watched)
        self._settling: Signature = self._signature
        self.reloads = 0
        self.refused = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="etwsensor-rule-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def request(self) -> None:
        """Reload now even if no file changed (SIGHUP, a service control code). Safe in a signal handler."""
        self._requested = True
        self._wake.set()

    def take(self) -> ReloadOutcome | None:
        """The finished reload, once; the pipeline calls it when ``ready`` is set."""
        with self._lock:
            outcome, self._outcome = self._outcome, None
            self.ready = False
        return outcome

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            signature = files_signature(self.watched)
            requested, self._requested = self._requested, False
            if signature == self._signature and not requested:
                continue
            if not requested and signature != self._settling:
                self._settling = signature  # still being written? compile once it held for one interval
                continue
            self._signature = self._settling = signature
            self._reload("signal" if requested else "change")

    def _reload(self, trigger: str) -> None:
        try:
            outcome = self._compile()
        except Exception as exc:  # a config file that no longer parses, a bug: the old rules keep running
            log.warning("rule reload failed", error=str(exc))
            outcome = ReloadOutcome(None, [_failure(str(exc))])
        outcome.trigger = trigger
        rules = outcome.ruleset.rules if outcome.ruleset is not None else []
        if not rules or (outcome.failures and not self.accept_partial):
            outcome.ruleset, outcome.allowlist = None, None
        with self._lock:
            self._outcome = outcome
            self.ready = True
        if outcome.ruleset is None:
            self.refused += 1
        else:
            self.reloads += 1


def _failure(message: str) -> RuleFailure:
    from etwsensor.rules.errors import RuleFailure

    return RuleFailure("config", 1, 1, message)
