"""The facts worker: reads and parses files on its own thread, within a byte-rate and size budget.

Requests are paths (as rows name them); results are ``ImageFacts``, handed back through ``done()``
by the pipeline thread, which alone touches the row-side cache. Results are cached here by
(path, size, mtime, file id): asking again for an unchanged file costs one stat and yields nothing new.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from etwsensor.enrich.facts import ImageFacts, Signatures, compute_facts
from etwsensor.enrich.files import FileStat, Locator, stat_of


@dataclass(frozen=True)
class Budget:
    """``max_bytes_per_second``: how fast files are read and hashed (0: no limit);
    ``max_file_size``: larger files get their size only (error ``too_large``)."""

    max_bytes_per_second: float = 32 * 1024 * 1024
    max_file_size: int = 64 * 1024 * 1024


class FactsWorker:
    """One daemon thread computing facts for requested paths. ``start``/``close`` around its use;
    ``synchronous=True`` computes in the caller's thread instead (offline replay: no time bound)."""

    def __init__(
        self,
        locator: Locator,
        budget: Budget | None = None,
        cache_size: int = 8192,
        max_pending: int = 4096,
        synchronous: bool = False,
        signatures: Signatures | None = None,
    ) -> None:
        self.locator = locator
        self.signatures = signatures  # None: bundled roots, no catalogs
        self.budget = budget or Budget()
        self.synchronous = synchronous
        self._cache: OrderedDict[str, tuple[FileStat, ImageFacts]] = OrderedDict()
        self._cache_size = cache_size
        self._max_pending = max_pending
        self._requests: deque[str] = deque()
        self._queued: set[str] = set()
        self._results: list[ImageFacts] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._next_read = 0.0  # monotonic time before which the budget allows no more reading
        # counters (read by the summary)
        self.requested = 0
        self.dropped = 0  # requests refused because too many were waiting
        self.computed = 0
        self.bytes_read = 0
        self.cache_hits = 0
        self.errors: dict[str, int] = {}

    # --- pipeline side -------------------------------------------------------------------------

    def start(self) -> None:
        if self.synchronous or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="etwsensor-facts", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def request(self, path: str) -> bool:
        """Queue ``path`` (once while it waits); False when the queue is full (counted)."""
        if self.synchronous:
            self.requested += 1
            self._results.append(self._compute(path))
            return True
        with self._cond:
            if path in self._queued:
                return True
            if len(self._requests) >= self._max_pending:
                self.dropped += 1
                return False
            self.requested += 1
            self._queued.add(path)
            self._requests.append(path)
            self._cond.notify_all()
        return True

    def done(self) -> list[ImageFacts]:
        """Results ready since the last call, one per request."""
        with self._cond:
            out, self._results = self._results, []
        return out

    def wait(self, paths: set[str], deadline: float) -> None:
        """Return when none of ``paths`` is still queued or being computed, or at ``deadline``
        (time.monotonic())."""
        with self._cond:
            while paths & self._queued:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    # --- worker side ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._requests and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                path = self._requests.popleft()
            try:
                result = self._compute(path)
            except Exception:  # never let one file stop the worker
                result = ImageFacts(path=path, error="unreadable")
                self._count("unreadable")
            with self._cond:
                self._results.append(result)
                self._queued.discard(path)
                self._cond.notify_all()

    def _compute(self, path: str) -> ImageFacts:
        """Facts of ``path`` now (from the cache when the file has not changed)."""
        local = self.locator.locate(path)
        st = stat_of(local) if local is not None else None
        if local is None or st is None:
            return self._deliver(path, FileStat(-1, -1, -1), ImageFacts(path=path, error="not_found"))
        key = path.lower()
        cached = self._cache.get(key)
        if cached is not None and cached[0] == st:
            self.cache_hits += 1
            self._cache.move_to_end(key)
            return cached[1] if cached[1].path == path else _renamed(cached[1], path)
        if st.size > self.budget.max_file_size:
            return self._deliver(path, st, ImageFacts(path=path, size=st.size, error="too_large"))
        self._pace(st.size)
        try:
            data = local.read_bytes()
        except OSError:
            return self._deliver(path, st, ImageFacts(path=path, size=st.size, error="unreadable"))
        self.bytes_read += len(data)
        self.computed += 1
        return self._deliver(path, st, compute_facts(path, data, self.signatures))

    def _deliver(self, path: str, st: FileStat, facts: ImageFacts) -> ImageFacts:
        key = path.lower()
        if facts.error:
            self._count(facts.error)
        self._cache[key] = (st, facts)
        self._cache.move_to_end(key)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return facts

    def _count(self, error: str) -> None:
        self.errors[error] = self.errors.get(error, 0) + 1

    def _pace(self, size: int) -> None:
        """Sleep so that reading stays under ``max_bytes_per_second`` (a token bucket of one file)."""
        rate = self.budget.max_bytes_per_second
        if rate <= 0 or self.synchronous:
            return
        now = time.monotonic()
        if self._next_read > now:
            time.sleep(self._next_read - now)
            now = self._next_read
        self._next_read = now + size / rate

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = {
            "requested": self.requested,
            "computed": self.computed,
            "bytes_read": self.bytes_read,
            "cache_hits": self.cache_hits,
            "dropped_requests": self.dropped,
            "errors": dict(self.errors),
        }
        if self.signatures is not None:
            out["trusted_roots"] = list(self.signatures.trust.sources)
            if self.signatures.catalogs is not None:
                out["catalogs"] = self.signatures.catalogs.stats()
        return out


def _renamed(facts: ImageFacts, path: str) -> ImageFacts:
    """The same file asked for under another spelling of its path."""
    import msgspec

    return msgspec.structs.replace(facts, path=path)
