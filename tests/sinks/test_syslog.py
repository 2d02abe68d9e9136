"""Syslog sinks against a real rsyslogd: RFC 5424 fields, octet-counted framing, TLS, and no loss when
either the receiver or the sender restarts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from etwsensor.sinks import open_sink
from etwsensor.sinks.syslog import SYSLOG_SEVERITY, format_message, frame, msgid
from tests.sinks.kit import FAST, Rsyslog, TlsFiles, make_alert, wait_until

LOCAL0 = 16


def test_rfc5424_fields_as_rsyslog_parses_them(rsyslog: Callable[..., Rsyslog], tmp_path: Path) -> None:
    server = rsyslog()
    sink = open_sink(f"syslog+tcp://127.0.0.1:{server.port}", FAST, spool_dir=tmp_path)
    alerts = [make_alert(n) for n in range(8)]
    alerts.append(make_alert(8, rule={**alerts[0]["rule"], "id": "custom-rule-with-a-long-id-over-32-chars",
                                      "severity": "bogus"}))  # fmt: skip
    alerts.append(make_alert(9, row={"CommandLine": "x" * 20_000}))  # larger than rsyslog's default 8k
    alerts.append(make_alert(10, host={"name": "", "device_id": "d"}))  # no host name: ours
    for alert in alerts:
        sink.send(alert)
    sink.close()
    assert sink.state()["delivered"] == len(alerts) and sink.state()["pending"] == 0

    records = server.records()
    assert len(records) == len(alerts)  # octet counting kept every message whole, even the 20 kB one
    for alert, record in zip(alerts, records, strict=True):
        assert json.loads(record["msg"]) == alert  # non-ASCII survives as JSON escapes
        severity = SYSLOG_SEVERITY.get(alert["rule"]["severity"], 4)
        assert int(record["pri"]) == LOCAL0 * 8 + severity
        assert record["version"] == "1"
        assert record["app_name"] == "etwsensor"
        assert record["procid"] == str(os.getpid())
        assert record["structured_data"] == "-"
        assert record["timestamp"] == "2026-11-28T00:00:01.000000Z"
        assert record["raw"].startswith(f"<{LOCAL0 * 8 + severity}>1 2026-11-28T00:00:01.000000Z ")
    assert records[0]["msgid"] == "5b8f6c1e7d3a4f2b9c0d1e2f3a4b5c6d"  # a GUID without dashes fits 32
    assert records[8]["msgid"] == "custom-rule-with-a-long-id-over-"
    assert records[0]["hostname"] == "WS-FIN-042"
    assert records[10]["hostname"] not in ("", "-", "WS-FIN-042")


def test_severity_mapping_is_ordered() -> None:
    order = [SYSLOG_SEVERITY[s] for s in ("informational", "low", "medium", "high")]
    assert order == sorted(order, reverse=True)  # lower syslog number = more severe


def test_message_and_frame_bytes() -> None:
    from etwsensor.sinks.base import Outgoing, alert_json

    alert = make_alert(0, detected_at="2026-11-28T01:02:03+02:00")
    raw = alert_json(alert)
    message = format_message(Outgoing(raw, alert), facility=13, local_host="sensor", procid=42)
    assert message == b"<106>1 2026-11-27T23:02:03.000000Z WS-FIN-042 etwsensor 42 " + (
        b"5b8f6c1e7d3a4f2b9c0d1e2f3a4b5c6d - " + raw
    )
    assert frame(message) == str(len(message)).encode() + b" " + message
    assert msgid(None) == "-" and msgid("a b\tc") == "abc"


def test_receiver_stopped_mid_stream_loses_nothing(rsyslog: Callable[..., Rsyslog], tmp_path: Path) -> None:
    """The issue's spool test: stop rsyslog mid-stream, keep sending, restart it on the same port."""
    server = rsyslog()
    sink = open_sink(f"syslog+tcp://127.0.0.1:{server.port}", FAST, spool_dir=tmp_path / "spool")
    for n in range(60):
        sink.send(make_alert(n))
    wait_until(lambda: len(server.records()) >= 10, what="the first alerts")
    server.stop()  # mid-stream: some of the 60 may still be on their way
    for n in range(60, 120):
        sink.send(make_alert(n))
    wait_until(lambda: sink.state()["last_error"] is not None, what="the sink to notice")
    assert sink.state()["pending"] > 0
    server.start()
    for n in range(120, 150):
        sink.send(make_alert(n))
    expected = {make_alert(n)["alert_id"] for n in range(150)}
    wait_until(lambda: expected <= set(server.alert_ids()), what="every alert at rsyslog")
    sink.close()
    state = sink.state()
    assert state["pending"] == 0 and state["dropped"] == 0 and state["spooled"] > 0
    ids = server.alert_ids()
    assert set(ids) == expected  # at least once; duplicates carry the same alert_id
    first_seen = sorted(expected, key=ids.index)
    assert first_seen == sorted(expected)  # and in order


def test_sender_restart_delivers_the_spool_first(rsyslog: Callable[..., Rsyslog], tmp_path: Path) -> None:
    server = rsyslog()
    server.stop()  # the receiver is down while the first sensor runs
    url = f"syslog+tcp://127.0.0.1:{server.port}"
    first = open_sink(url, FAST.model_copy(update={"close_timeout": 0.2}), spool_dir=tmp_path)
    for n in range(25):
        first.send(make_alert(n))
    first.close()
    assert first.state()["pending"] == 25 and first.state()["delivered"] == 0

    server.start()
    second = open_sink(url, FAST, spool_dir=tmp_path)  # a new process would do the same
    for n in range(25, 35):
        second.send(make_alert(n))
    second.close()
    assert second.state()["pending"] == 0 and second.state()["delivered"] == 35
    assert server.alert_ids() == [make_alert(n)["alert_id"] for n in range(35)]
    assert not list(tmp_path.rglob("*.seg"))  # a delivered spool leaves no segment behind


def test_tls_verified_with_the_test_ca(
    rsyslog: Callable[..., Rsyslog], tls_files: TlsFiles, tmp_path: Path
) -> None:
    server = rsyslog(tls_files)
    sink = open_sink(
        f"syslog+tls://127.0.0.1:{server.port}", FAST.model_copy(update={"tls_ca_file": tls_files.ca}),
        spool_dir=tmp_path,
    )  # fmt: skip
    for n in range(5):
        sink.send(make_alert(n))
    sink.close()
    assert sink.state()["pending"] == 0
    assert [json.loads(r["msg"]) for r in server.records()] == [make_alert(n) for n in range(5)]


def test_tls_refuses_an_unknown_ca_unless_told_loudly(
    rsyslog: Callable[..., Rsyslog], tls_files: TlsFiles, tmp_path: Path
) -> None:
    server = rsyslog(tls_files)
    url = f"syslog+tls://127.0.0.1:{server.port}"
    strict = open_sink(url, FAST.model_copy(update={"close_timeout": 0.3}), spool_dir=tmp_path / "a")
    strict.send(make_alert(0))
    strict.close()
    assert strict.state()["pending"] == 1
    assert "CERTIFICATE_VERIFY_FAILED" in str(strict.state()["last_error"])

    with capture_logs() as logs:
        lax = open_sink(url, FAST.model_copy(update={"tls_verify": False}), spool_dir=tmp_path / "b")
    lax.send(make_alert(1))
    lax.close()
    assert lax.state()["pending"] == 0
    assert server.alert_ids() == [make_alert(1)["alert_id"]]
    assert any(e["log_level"] == "warning" and "verification is OFF" in e["event"] for e in logs)


def test_confirmed_alerts_are_not_resent_after_an_idle_reconnect(
    rsyslog: Callable[..., Rsyslog], tmp_path: Path
) -> None:
    server = rsyslog()
    sink = open_sink(f"syslog+tcp://127.0.0.1:{server.port}", FAST, spool_dir=tmp_path)
    for n in range(3):
        sink.send(make_alert(n))
    wait_until(lambda: sink.state()["pending"] == 0, what="the confirm window")  # healthy for 0.5 s
    server.stop()
    server.start()  # the receiver restarted while the sink was idle
    for n in range(3, 6):
        sink.send(make_alert(n))
    sink.close()
    assert server.alert_ids() == [make_alert(n)["alert_id"] for n in range(6)]  # no duplicates
    assert sink.state()["delivered"] == 6 and sink.state()["last_error"] is None


def test_alerts_survive_a_killed_sender(rsyslog: Callable[..., Rsyslog], tmp_path: Path) -> None:
    """send() returned, then the process died (no flush, no close): the next run delivers the alerts."""
    server = rsyslog()
    url = f"syslog+tcp://127.0.0.1:{server.port}"
    server.stop()
    script = (
        "import os, sys; from pathlib import Path; from etwsensor.sinks import open_sink\n"
        "from tests.sinks.kit import FAST, make_alert\n"
        "sink = open_sink(sys.argv[1], FAST, spool_dir=Path(sys.argv[2]))\n"
        "for n in range(10):\n"
        "    sink.send(make_alert(n))\n"
        "os._exit(1)\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script, url, str(tmp_path)], check=False, cwd=root)
    server.start()
    sink = open_sink(url, FAST, spool_dir=tmp_path)
    sink.close()
    assert server.alert_ids() == [make_alert(n)["alert_id"] for n in range(10)]
    assert sink.state()["delivered"] == 10
