"""Cost of Sink.send() on the pipeline's thread: stdout, file, and syslog+tcp to a local discarding receiver.

    python scripts/bench_sinks.py [--alerts 20000]

Prints alerts/s and p50/p99 of one send() call per sink. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from etwsensor.sinks import Sink, SinkSettings, open_sink
from etwsensor.sinks.local import StdoutSink


def alert(n: int) -> dict[str, Any]:
    """A demo-sized alert (about 1.3 kB of JSON)."""
    return {
        "schema_version": "1.0", "alert_id": f"{n:032x}", "time": "2026-11-20T09:00:13.895857Z",
        "detected_at": "2026-11-28T00:31:25.822199Z",
        "host": {"name": "ws01.example", "device_id": "0001"},
        "rule": {"id": "6f3c1a52-0b7e-4c1e-9a51-1056001a0001", "name": "Keylogging (seed)", "version": "1",
                 "severity": "high", "confidence": "medium", "tactics": ["Collection", "CredentialAccess"],
                 "techniques": ["T1056.001"], "references": ["https://attack.mitre.org/techniques/T1056/001/"]},
        "reason": "Suspicious user32.dll load by unusual process", "table": "DeviceImageLoadEvents",
        "row": {"Timestamp": "2026-11-20T09:00:13.895857Z", "FileName": "user32.dll",
                "FolderPath": "C:\\Windows\\System32\\user32.dll", "InitiatingProcessFileName": "kl.exe",
                "InitiatingProcessFolderPath": "C:\\Users\\bob\\AppData\\Roaming\\kl.exe",
                "InitiatingProcessCommandLine": "kl.exe --hidden " + "x" * 600},
        "sensor": {"version": "0.1.0", "source": "demo.jsonl.zst"}, "suppressed_count": 0,
    }  # fmt: skip


def measure(sink: Sink, count: int) -> str:
    alerts = [alert(n) for n in range(count)]
    latencies: list[int] = []
    started = time.perf_counter()
    for a in alerts:
        t = time.perf_counter_ns()
        sink.send(a)
        latencies.append(time.perf_counter_ns() - t)
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2] / 1000, latencies[int(len(latencies) * 0.99)] / 1000
    return f"{sink.name}: {count / elapsed:,.0f} alerts/s, send() p50 {p50:.1f} µs, p99 {p99:.1f} µs"


def discarding_receiver() -> int:
    server = socket.create_server(("127.0.0.1", 0))

    def drain() -> None:
        conn, _ = server.accept()
        while conn.recv(1 << 20):
            pass

    threading.Thread(target=drain, daemon=True).start()
    return int(server.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20_000)
    count = parser.parse_args().alerts
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with tempfile.TemporaryDirectory() as tmp:
        stdout = StdoutSink(io.TextIOWrapper(open(os.devnull, "wb"), encoding="utf-8"))  # noqa: SIM115
        print(measure(stdout, count), "(to /dev/null)")
        file_sink = open_sink(f"file:{Path(tmp) / 'alerts.ndjson'}")
        print(measure(file_sink, count))
        file_sink.close()
        syslog = open_sink(f"syslog+tcp://127.0.0.1:{discarding_receiver()}", SinkSettings(), Path(tmp))
        line = measure(syslog, count)
        started = time.perf_counter()
        syslog.close()
        state = syslog.state()
        print(f"{line}; close() {time.perf_counter() - started:.2f} s, delivered {state['delivered']:,}")


if __name__ == "__main__":
    main()
