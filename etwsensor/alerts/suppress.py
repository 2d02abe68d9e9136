"""Per-rule suppression: the same rule, reason and key columns within a window are counted, not repeated.

Time is the events' own time (the row Timestamp), so a replay suppresses exactly as the live run did.
The next alert of a suppressed key carries how many were held back (``suppressed_count``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

DEFAULT_KEY_COLUMNS = ("InitiatingProcessFolderPath", "FolderPath", "RegistryKey")
DEFAULT_WINDOW = timedelta(minutes=10)
_MAX_KEYS = 100_000  # bounded state: older keys are purged past this


@dataclass(frozen=True, slots=True)
class SuppressionPolicy:
    window: timedelta = DEFAULT_WINDOW
    key_columns: tuple[str, ...] = DEFAULT_KEY_COLUMNS


@dataclass(slots=True)
class _KeyState:
    last_sent: datetime
    held: int = 0


class Suppressor:
    def __init__(
        self, default: SuppressionPolicy | None = None, per_rule: dict[str, SuppressionPolicy] | None = None
    ) -> None:
        self.default = default or SuppressionPolicy()
        self.per_rule = per_rule or {}
        self._state: dict[tuple[Any, ...], _KeyState] = {}
        self.suppressed = Counter[str]()  # rule id -> alerts held back

    def admit(
        self, rule_id: str, reason: str | None, row: dict[str, Any], when: datetime | None
    ) -> int | None:
        """None: suppress this alert. Otherwise send it, with the returned suppressed_count."""
        policy = self.per_rule.get(rule_id, self.default)
        if policy.window <= timedelta(0) or when is None:
            return 0
        key = (rule_id, reason, *(row.get(c) for c in policy.key_columns))
        st = self._state.get(key)
        if st is None:
            if len(self._state) >= _MAX_KEYS:
                self._purge(when)
            self._state[key] = _KeyState(when)
            return 0
        if when - st.last_sent < policy.window:
            st.held += 1
            self.suppressed[rule_id] += 1
            return None
        held, st.last_sent, st.held = st.held, when, 0
        return held

    def _purge(self, now: datetime) -> None:
        longest = max([self.default.window, *(p.window for p in self.per_rule.values())])
        self._state = {k: s for k, s in self._state.items() if now - s.last_sent < longest}
