"""Dead sinks shut down in parallel: each spends its ``close_timeout`` at the same time as the others,
not one after another. Shown without timing anything: the sinks' transports meet at a barrier that only
opens when every one of them is closing at once."""

from __future__ import annotations

import threading
from pathlib import Path

from etwsensor.sinks import SinkSet, SpooledSink, Transport
from etwsensor.sinks.base import DeliveryError, Outgoing
from etwsensor.sinks.formatted import with_format
from etwsensor.sinks.spool import Spool
from tests.sinks.kit import FAST, make_alert

SINKS = 3
# A close that waits for one sink after another gives up on the first one only after
# close_timeout + connect_timeout + timeout + 1 = 21.3 s: longer than the barrier waits (15 s), so a
# sequential close breaks the barrier instead of passing it. A parallel one passes it at once.
SETTINGS = FAST.model_copy(update={"close_timeout": 0.3, "connect_timeout": 10.0, "timeout": 10.0})
BARRIER_TIMEOUT = 15.0


class DeadReceiver(Transport):
    """A far end that is down; closing waits at the barrier for the other sinks to be closing too."""

    def __init__(self, barrier: threading.Barrier) -> None:
        self.barrier = barrier
        self.met_the_others = False

    def deliver(self, batch: list[Outgoing]) -> None:
        raise DeliveryError("connection refused")

    def finish(self, timeout: float) -> bool:
        try:
            self.barrier.wait(BARRIER_TIMEOUT)
            self.met_the_others = True
        except threading.BrokenBarrierError:
            pass
        return False


def test_dead_sinks_close_in_parallel(tmp_path: Path) -> None:
    barrier = threading.Barrier(SINKS)
    transports = [DeadReceiver(barrier) for _ in range(SINKS)]
    sinks = SinkSet(
        [
            with_format(  # as open_sinks wraps them (#format=…): the close must reach the inner sink
                SpooledSink(f"dead{i}", t, Spool(tmp_path / f"s{i}", 1 << 20, 1 << 16), SETTINGS), "ecs"
            )
            for i, t in enumerate(transports)
        ]
    )
    sinks.send(make_alert(1))
    sinks.close()
    assert all(t.met_the_others for t in transports), "the sinks closed one after another"
    state = sinks.state()
    assert state["pending"] == SINKS and state["delivered"] == 0  # the alert stays spooled in each

