"""The ``Sink`` contract and the spooled delivery loop shared by the network sinks.

A network sink never talks to the far end from the pipeline's thread: ``send`` appends the alert
to the sink's spool (one ``write``) and returns; a worker thread reads the spool in order, delivers
batches through a ``Transport``, and commits them out of the spool once the far end has them.
A failure rewinds to the last commit and retries with exponential backoff and jitter, forever:
the spool, bounded on disk, is what absorbs an outage, and a restart resumes from it.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol, runtime_checkable

import msgspec

from etwsensor.logging import get_logger
from etwsensor.redact import scrub
from etwsensor.sinks.config import SinkSettings
from etwsensor.sinks.spool import Spool, SpoolPosition

log = get_logger("etwsensor.sinks")

_IDLE_TICK = 1.0  # seconds: the worker re-checks its state at least this often
DEAD_LETTERS = "dead-letters.ndjson"  # beside the spool's segments: alerts the receiver refused
_O_BINARY = getattr(os, "O_BINARY", 0)


@runtime_checkable
class Sink(Protocol):
    """Where alerts go. ``send`` never raises because the far end is down and never blocks on it."""

    name: str  # the URL without credentials

    def send(self, alert: Mapping[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def state(self) -> dict[str, Any]: ...


def empty_state(name: str) -> dict[str, Any]:
    """The keys every ``Sink.state()`` has, for the closing summary."""
    return {
        "sink": name, "delivered": 0, "spooled": 0, "pending": 0, "dropped": 0, "corrupt": 0,
        "down": False, "last_error": None,
    }  # fmt: skip


UNDELIVERED_KEYS = ("dropped", "pending", "corrupt", "lost", "dead_letters")


def undelivered(state: Mapping[str, Any]) -> int:
    """Alerts a sink's state says did not reach the far end: dropped, still spooled, lost to damage,
    or dead-lettered (the ``UNDELIVERED`` exit code). A reader that closed stdout is not counted."""
    return sum(int(state.get(key) or 0) for key in UNDELIVERED_KEYS)


def _json_default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


_encode = msgspec.json.Encoder(enc_hook=_json_default).encode  # ~6x the stdlib, same bytes for alerts


def alert_json(alert: Mapping[str, Any], ascii_only: bool = True) -> bytes:
    """One compact line of JSON. ASCII by default: RFC 5424 then needs no BOM and no charset guessing."""
    line = _encode(alert)
    if ascii_only and not line.isascii():  # msgspec writes UTF-8: escape it the stdlib way
        return json.dumps(alert, separators=(",", ":"), default=_json_default).encode()
    return line


class DeliveryError(Exception):
    """The far end did not take a batch. ``retry_after``: what the far end asked for (HTTP Retry-After)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class ConnectionLost(DeliveryError):
    """The far end closed the connection before this batch; nothing of the batch was written."""


class Rejected(DeliveryError):
    """The far end refused the batch as data (HTTP 400/413/422): sending the same bytes again cannot
    help. The sink splits the batch to find the alert(s) refused and dead-letters them."""


class Refused(DeliveryError):
    """The far end refuses this sender (HTTP 401/403: credentials; 404 or a redirect: the URL): no alert
    can get through until a human fixes the configuration. The sink stops; its alerts stay spooled."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One alert on its way: the exact JSON bytes (sent as is) and the parsed object (for envelopes)."""

    raw: bytes
    alert: dict[str, Any]


class Transport(ABC):
    """How one kind of sink moves a batch to the far end. Called from the worker thread only."""

    # 0: a successful ``deliver`` means the far end has the batch (HTTP 2xx). Otherwise the seconds a
    # connection must stay healthy after a write before its alerts count as delivered (TCP syslog).
    confirm_window: float = 0.0

    @abstractmethod
    def deliver(self, batch: list[Outgoing]) -> None:
        """Deliver the whole batch or raise ``DeliveryError``; bounded by the configured timeouts."""

    def still_connected(self) -> bool:
        """For ``confirm_window`` transports: the connection has not been closed or reset by the far end."""
        return True

    def finish(self, timeout: float) -> bool:
        """Close; True when the far end confirmed having everything written (e.g. a clean TCP close)."""
        return True


@dataclass(slots=True)
class _Unconfirmed:
    sent_at: float
    end: SpoolPosition | None  # None: sent from memory (the spool refused them), not from the spool
    consumed: int
    alerts: int
    held: list[bytes] = field(default_factory=list)  # from memory: back to memory if not confirmed


class SpooledSink:
    """A network sink: spool in front, a worker thread and a ``Transport`` behind."""

    def __init__(self, name: str, transport: Transport, spool: Spool, settings: SinkSettings) -> None:
        self.name = name
        self._transport = transport
        self._spool = spool
        self._settings = settings
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._counters = threading.Lock()
        self._first_unread_at = 0.0  # monotonic time the oldest unread entry arrived
        self._sync_wanted = False  # appended since the worker's last fsync
        self._closing = False
        self._closed = False
        self._deadline = math.inf
        self._flushers = 0
        self._sent_index = 0  # spool entries handed to the far end (same axis as spool.appended)
        self._unconfirmed: deque[_Unconfirmed] = deque()
        self._failures = 0  # failed attempts in a row
        self._failed_at = -math.inf
        self._next_try = 0.0
        self._down = False
        self._delivered = 0
        self._spooled = spool.pending_at_open
        self._spooled_mark = spool.appended
        self._dropped = 0
        self._corrupt = 0
        self._lost = 0  # neither delivered nor spooled: memory full, or still in memory at exit
        self._dead_letters = 0
        self._stopped = False  # Refused: no more attempts this run
        self._dead_letter_path = spool.directory / DEAD_LETTERS
        # Alerts the spool refused (full disk, or its bound): the spool is a buffer, not a gate, so they
        # go straight to the far end from memory, in order, while it is up.
        self._memory: deque[bytes] = deque()
        self._held_unconfirmed = 0  # sent from memory, waiting for the confirm window (still held)
        self._memory_warned = False
        self._last_error: str | None = None
        if spool.pending_at_open:
            log.info("delivering alerts spooled by an earlier run first", sink=name,
                     count=spool.pending_at_open)  # fmt: skip
        self._thread = threading.Thread(target=self._run, name=f"etwsensor-sink {name}", daemon=True)
        self._thread.start()

    # --- the pipeline's side --------------------------------------------------------------------------

    def send(self, alert: Mapping[str, Any]) -> None:
        if self._closing:
            self._count_drop("send() after close()")
            return
        try:
            payload = alert_json(alert)
        except (TypeError, ValueError) as exc:  # circular or otherwise unencodable: a bug upstream
            self._count_drop(f"alert is not JSON-encodable: {exc}")
            return
        reason = "alerts already held in memory" if self._memory else self._spool.offer(payload)
        if reason is not None:
            self._hold(payload, reason)
            return
        unread = self._spool.unread
        if unread == 1:
            self._first_unread_at = time.monotonic()
        if unread == 1 or unread == self._settings.batch_size or not self._sync_wanted:
            self._sync_wanted = True  # the worker fsyncs on waking, also while the far end is down
            self._wake.set()
        if self._failures:
            with self._counters:
                self._spooled += 1
                self._spooled_mark = self._spool.appended

    def flush(self) -> None:
        """Wait (at most ``close_timeout``) until every alert sent so far was handed to the far end,
        or the far end failed or is down; either way it is on disk."""
        start = time.monotonic()
        target = self._spool.appended
        with self._progress:
            self._flushers += 1
        self._wake.set()
        with self._progress:
            self._progress.wait_for(
                lambda: (
                    self._sent_index >= target
                    or self._failed_at >= start
                    or self._down
                    or not self._thread.is_alive()
                ),
                timeout=self._settings.close_timeout,
            )
            self._flushers -= 1
        self._spool.sync()

    def begin_close(self) -> None:
        """Start closing without waiting: several sinks then use their ``close_timeout`` in parallel."""
        if self._closing:
            return
        self._deadline = time.monotonic() + self._settings.close_timeout
        self._closing = True
        self._wake.set()

    def close(self) -> None:
        """Deliver for up to ``close_timeout``, then leave the rest in the spool for the next run."""
        if self._closed:
            return
        self.begin_close()
        s = self._settings
        self._thread.join(s.close_timeout + s.connect_timeout + s.timeout + 1.0)
        if self._thread.is_alive():  # a write is stuck past its own timeout: the spool keeps the alerts
            log.warning("sink did not stop in time; undelivered alerts stay spooled", sink=self.name)
            self._spool.sync()
        self._closed = True

    def state(self) -> dict[str, Any]:
        state = empty_state(self.name)
        error = self._last_error or self._spool.last_error
        state.update(
            delivered=self._delivered, spooled=self._spooled, pending=self._spool.pending,
            dropped=self._dropped + self._spool.dropped, corrupt=self._corrupt + self._spool.corrupt,
            down=self._down, last_error=scrub(error) if error else None,
            lost=self._lost + self._spool.lost + (len(self._memory) if self._closed else 0),
            held_in_memory=0 if self._closed else len(self._memory) + self._held_unconfirmed,
            dead_letters=self._dead_letters, stopped=self._stopped,
        )  # fmt: skip
        if self._dead_letters:
            state["dead_letter_file"] = str(self._dead_letter_path)
        if self._spool.damage:
            state["spool_damage"] = list(self._spool.damage)
        return state

    def _hold(self, payload: bytes, reason: str) -> None:
        """Keep an alert the spool refused in memory for the worker, up to ``memory_max_alerts``;
        past that it is lost, and counted."""
        with self._counters:
            if len(self._memory) + self._held_unconfirmed >= self._settings.memory_max_alerts:
                self._lost += 1
                lost = True
            else:
                self._memory.append(payload)
                lost = False
        if not self._memory_warned:
            self._memory_warned = True
            log.error("spool refused alerts; holding them in memory for delivery", sink=self.name,
                      reason=scrub(reason), max_alerts=self._settings.memory_max_alerts)  # fmt: skip
        if lost:
            self._last_error = f"alerts lost: spool refused them ({reason}) and memory is full"
        self._wake.set()

    def _count_drop(self, reason: str) -> None:
        with self._counters:
            self._dropped += 1
        log.error("alert dropped", sink=self.name, reason=reason)

    # --- the worker -----------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait(self._sleep_time())
                self._wake.clear()
                try:
                    if self._step():
                        return
                except OSError as exc:  # the spool's disk: retried like a delivery failure
                    self._fail(DeliveryError(f"spool: {exc.strerror or exc}"))
                except Exception as exc:  # a bug must not silently stop delivery
                    log.exception("sink worker error", sink=self.name)
                    self._fail(DeliveryError(f"internal error: {exc!r}"))
                finally:
                    with self._progress:
                        self._progress.notify_all()
        finally:
            self._finish()
            with self._progress:
                self._progress.notify_all()

    def _sleep_time(self) -> float:
        now = time.monotonic()
        wait = _IDLE_TICK
        if self._stopped:
            return 0.0 if self._closing else _IDLE_TICK
        if self._closing:
            if not self._spool.unread and not self._memory:
                return 0.0  # done: go and finish
            wait = min(wait, self._deadline - now)
        if self._memory and not self._spool.unread:
            wait = min(wait, self._next_try - now)
        if self._spool.unread:
            hurry = self._flushers or self._closing
            due = max(self._next_try, 0.0 if hurry else self._first_unread_at + self._settings.batch_interval)
            wait = min(wait, due - now)
        if self._unconfirmed:
            wait = min(wait, self._unconfirmed[0].sent_at + self._transport.confirm_window - now)
        return max(wait, 0.0)

    def _step(self) -> bool:
        """One round: confirm, maybe send one batch. True when closing is done."""
        now = time.monotonic()
        self._sync_wanted = False
        self._spool.sync()  # what is about to be sent (and everything before it) is durable
        self._confirm(now)
        if self._stopped:
            return self._closing
        if self._closing and ((self._spool.unread == 0 and not self._memory) or now >= self._deadline):
            return True
        unread = self._spool.unread
        if not unread and self._memory and now >= self._next_try:
            self._deliver_from_memory()
            return False
        if not unread or now < self._next_try:
            return False
        s = self._settings
        hurry = self._flushers or self._closing
        if unread < s.batch_size and not hurry and now - self._first_unread_at < s.batch_interval:
            return False
        batch = self._spool.read(s.batch_size)
        outgoing: list[Outgoing] = []
        for raw in batch.payloads:
            try:
                alert = json.loads(raw)
            except ValueError:
                alert = None
            if isinstance(alert, dict):
                outgoing.append(Outgoing(raw, alert))
            else:
                self._corrupt += 1
        settled = self._dead_letters + self._lost
        if outgoing and not self._deliver(outgoing):
            return False
        taken = len(outgoing) - (self._dead_letters + self._lost - settled)  # not dead-lettered
        self._sent_index = self._spool.read_index
        self._recovered()
        if self._transport.confirm_window == 0:
            self._spool.commit(batch.end, batch.consumed)
            self._delivered += taken
        else:
            self._unconfirmed.append(_Unconfirmed(now, batch.end, batch.consumed, taken))
        if self._spool.unread or self._memory:
            self._wake.set()
        return False

    def _recovered(self) -> None:
        if self._failures:
            if self._down:
                log.info(
                    "sink is back; delivering spooled alerts", sink=self.name, pending=self._spool.pending
                )
            self._failures = 0
            self._down = False

    def _deliver_from_memory(self) -> None:
        """One batch of the alerts held in memory; they leave memory once the far end has them."""
        with self._counters:
            raws = [self._memory[i] for i in range(min(len(self._memory), self._settings.batch_size))]
        outgoing = [Outgoing(raw, json.loads(raw)) for raw in raws]
        settled = self._dead_letters + self._lost
        if not self._deliver(outgoing):
            return
        window = self._transport.confirm_window
        with self._counters:
            for _ in raws:
                self._memory.popleft()
            if window:
                self._held_unconfirmed += len(raws)
        taken = len(raws) - (self._dead_letters + self._lost - settled)
        if window:  # like the spool's: delivered once the connection stayed up for the window
            self._unconfirmed.append(_Unconfirmed(time.monotonic(), None, 0, taken, raws))
        else:
            self._delivered += taken
        self._recovered()
        if self._memory:
            self._wake.set()

    def _deliver(self, outgoing: list[Outgoing]) -> bool:
        """True when the batch is done with: delivered, or its refused alerts dead-lettered."""
        try:
            self._transport.deliver(outgoing)
            return True
        except Rejected as exc:
            return self._isolate(outgoing, exc)
        except Refused as exc:
            self._stop(exc)
            return False
        except ConnectionLost as exc:
            if self._unconfirmed:  # what went out on the old connection may be lost: send it again
                self._fail(exc)
                return False
        except DeliveryError as exc:
            self._fail(exc)
            return False
        try:  # e.g. an idle connection the receiver timed out, with nothing outstanding on it
            self._transport.deliver(outgoing)
            return True
        except DeliveryError as exc:
            self._fail(exc)
            return False

    def _isolate(self, outgoing: list[Outgoing], exc: Rejected) -> bool:
        """Split a refused batch in halves until each refused alert stands alone, then dead-letter it;
        the others are delivered. A retryable failure meanwhile fails the whole batch (re-sent later:
        what was already delivered of it comes again, as with any retry)."""
        if len(outgoing) == 1:
            self._dead_letter(outgoing[0], exc)
            return True
        mid = len(outgoing) // 2
        for half in (outgoing[:mid], outgoing[mid:]):
            try:
                self._transport.deliver(half)
            except Rejected as again:
                if not self._isolate(half, again):
                    return False
            except Refused as refused:
                self._stop(refused)
                return False
            except DeliveryError as failed:
                self._fail(failed)
                return False
        return True

    def _dead_letter(self, item: Outgoing, exc: DeliveryError) -> None:
        """Append a refused alert, with the receiver's answer, to dead-letters.ndjson beside the spool."""
        head = json.dumps(
            {"time": datetime.now(UTC).isoformat(), "sink": self.name, "answer": scrub(str(exc))},
            separators=(",", ":"),
        ).encode()
        line = head[:-1] + b',"alert":' + item.raw + b"}\n"
        try:
            fd = os.open(self._dead_letter_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _O_BINARY, 0o600)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except OSError as err:
            self._lost += 1
            log.error("refused alert lost: dead-letter file not writable", sink=self.name,
                      error=err.strerror or str(err))  # fmt: skip
            return
        self._dead_letters += 1
        log.error("alert refused by the receiver; moved to the dead-letter file", sink=self.name,
                  answer=scrub(str(exc)), file=str(self._dead_letter_path))  # fmt: skip

    def _stop(self, exc: DeliveryError) -> None:
        """The far end refuses this sender: stop trying (its alerts stay spooled for the next run)."""
        self._spool.rewind()
        self._sent_index = self._spool.read_index
        self._unsend()
        self._stopped = self._down = True
        self._last_error = scrub(str(exc))
        log.error("sink stopped: the receiver refuses this sender; fix the configuration, alerts stay "
                  "spooled for the next run", sink=self.name, error=self._last_error)  # fmt: skip

    def _confirm(self, now: float) -> None:
        """Commit what stayed on a healthy connection for the confirm window."""
        window = self._transport.confirm_window
        if not self._unconfirmed or self._unconfirmed[0].sent_at + window > now:
            return
        if not self._transport.still_connected():
            self._fail(DeliveryError("connection closed by the receiver"))
            return
        self._commit_unconfirmed(lambda u: u.sent_at + window <= now)

    def _commit_unconfirmed(self, due: Any) -> None:
        end: SpoolPosition | None = None
        consumed = alerts = held = 0
        while self._unconfirmed and due(self._unconfirmed[0]):
            done = self._unconfirmed.popleft()
            if done.end is not None:
                end = done.end
                consumed += done.consumed
            alerts += done.alerts
            held += len(done.held)
        if end is not None:
            self._spool.commit(end, consumed)
        if held:
            with self._counters:
                self._held_unconfirmed -= held
        self._delivered += alerts

    def _unsend(self) -> None:
        """Forget what was sent and not confirmed: the spool's entries are re-read from its last commit,
        the alerts sent from memory go back to the front of memory, in order (both are sent again)."""
        held = [raw for u in self._unconfirmed for raw in u.held]
        self._unconfirmed.clear()
        if held:
            with self._counters:
                self._memory.extendleft(reversed(held))
                self._held_unconfirmed -= len(held)

    def _fail(self, exc: DeliveryError) -> None:
        """Rewind to the last commit and back off; everything not committed is sent again later."""
        self._spool.rewind()
        self._sent_index = self._spool.read_index
        self._unsend()
        self._failures += 1
        self._failed_at = now = time.monotonic()
        self._last_error = str(exc)
        s = self._settings
        ceiling = min(s.retry_backoff_max, s.retry_backoff * 2 ** min(self._failures - 1, 30))
        backoff = ceiling / 2 + random.uniform(0, ceiling / 2)  # "equal jitter": spread, but never ~0
        if exc.retry_after is not None:
            backoff = max(backoff, min(exc.retry_after, s.retry_backoff_max))
        self._next_try = now + backoff
        with self._counters:
            undelivered_from = max(self._spooled_mark, self._spool.appended - self._spool.pending)
            self._spooled += self._spool.appended - undelivered_from
            self._spooled_mark = self._spool.appended
        if self._failures > s.retries and not self._down:
            self._down = True
            log.warning("sink down; alerts are spooled and retried", sink=self.name, error=str(exc),
                        pending=self._spool.pending, retry_in=round(backoff, 3))  # fmt: skip
        else:
            log.debug("delivery failed, will retry", sink=self.name, error=str(exc), attempt=self._failures)

    def _finish(self) -> None:
        try:
            confirmed = self._transport.finish(min(self._settings.timeout, 5.0))
        except Exception as exc:  # closing must release the spool whatever the transport does
            log.error("sink transport close failed", sink=self.name, error=scrub(repr(exc)))
            confirmed = False
        try:
            if confirmed:
                self._commit_unconfirmed(lambda _u: True)
            else:  # unconfirmed alerts from memory: spooled for the next run if there is room, else lost
                self._unsend()
            while self._memory and self._spool.offer(self._memory[0]) is None:  # room again?
                self._memory.popleft()
            self._spool.sync()
        except Exception as exc:  # the worker must end cleanly and release the spool
            log.error("sink close failed", sink=self.name, error=scrub(repr(exc)))
        if self._memory:
            log.error("alerts lost: neither delivered nor spooled", sink=self.name, count=len(self._memory))
        self._spool.close()
        if self._spool.pending:
            log.warning("undelivered alerts stay spooled for the next run", sink=self.name,
                        pending=self._spool.pending, spool=str(self._spool.directory))  # fmt: skip
