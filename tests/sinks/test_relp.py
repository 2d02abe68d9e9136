"""syslog+relp against rsyslog's imrelp: acknowledged delivery, a killed receiver, a killed sender."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from etwsensor.sinks import SinkConfigError, open_sink, parse_sink_url
from tests.sinks.kit import FAST, Rsyslog, TlsFiles, make_alert, wait_until

RELP = FAST.model_copy(update={"batch_size": 10})


def _imrelp_available() -> bool:
    import glob

    return bool(glob.glob("/usr/lib/*/rsyslog/imrelp.so") or glob.glob("/usr/lib/rsyslog/imrelp.so"))


needs_imrelp = pytest.mark.skipif(not _imrelp_available(), reason="rsyslog-relp (imrelp) not installed")


def test_relp_urls() -> None:
    target = parse_sink_url("syslog+relp://siem.example")
    assert target.relp and target.port == 2514 and not target.tls
    with pytest.raises(SinkConfigError, match=r"tcp, tls, relp or relp\+tls"):
        parse_sink_url("syslog+udp://siem.example")


@needs_imrelp
def test_every_alert_is_acknowledged_and_arrives_once(
    rsyslog: Callable[..., Rsyslog], tmp_path: Path
) -> None:
    server = rsyslog(relp=True)
    sink = open_sink(f"syslog+relp://127.0.0.1:{server.port}", RELP, spool_dir=tmp_path)
    for n in range(95):
        sink.send(make_alert(n))
    sink.close()
    state = sink.state()
    assert state["delivered"] == 95 and state["pending"] == 0, state
    assert server.alert_ids() == [make_alert(n)["alert_id"] for n in range(95)]  # once each, in order
    record = server.records()[0]
    assert record["app_name"] == "etwsensor" and record["pri"] == "130"


@needs_imrelp
def test_a_stopped_receiver_costs_at_most_one_batch_of_duplicates(
    rsyslog: Callable[..., Rsyslog], tmp_path: Path
) -> None:
    server = rsyslog(relp=True)
    sink = open_sink(f"syslog+relp://127.0.0.1:{server.port}", RELP, spool_dir=tmp_path / "spool")
    for n in range(60):
        sink.send(make_alert(n))
    wait_until(lambda: len(server.records()) >= 10, what="the first alerts")
    # Stopped mid-stream (SIGTERM: rsyslog writes out what it acknowledged; after a SIGKILL, what it had
    # acknowledged but not yet written is rsyslog's own loss). What it had not acknowledged is sent again.
    server.stop()
    for n in range(60, 120):
        sink.send(make_alert(n))
    server.start()
    expected = [make_alert(n)["alert_id"] for n in range(120)]
    wait_until(lambda: set(expected) <= set(server.alert_ids()), what="every alert at rsyslog")
    sink.close()
    counts = Counter(server.alert_ids())
    assert set(counts) == set(expected) and sink.state()["pending"] == 0
    duplicates = sum(c - 1 for c in counts.values())
    assert duplicates <= RELP.batch_size  # one batch in flight, versus the TCP confirmation window


@needs_imrelp
def test_a_killed_sender_resends_only_what_was_not_acknowledged(
    rsyslog: Callable[..., Rsyslog], tmp_path: Path
) -> None:
    server = rsyslog(relp=True)
    url = f"syslog+relp://127.0.0.1:{server.port}"
    script = (
        "import os, sys; from pathlib import Path; from etwsensor.sinks import open_sink\n"
        "from tests.sinks.kit import FAST, make_alert, wait_until\n"
        "settings = FAST.model_copy(update={'batch_size': 10})\n"
        "sink = open_sink(sys.argv[1], settings, spool_dir=Path(sys.argv[2]))\n"
        "for n in range(40):\n"
        "    sink.send(make_alert(n))\n"
        "wait_until(lambda: sink.state()['delivered'] == 40, what='acks')\n"
        "os._exit(1)\n"  # kill -9 in effect: no close, no flush
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script, url, str(tmp_path)], check=False, cwd=root, timeout=120)
    sink = open_sink(url, RELP, spool_dir=tmp_path)
    sink.close()
    ids = server.alert_ids()
    assert ids == [make_alert(n)["alert_id"] for n in range(40)]  # acknowledged: never sent again


def test_relp_over_tls_urls() -> None:
    target = parse_sink_url("syslog+relp+tls://siem.example")
    assert target.relp and target.tls and target.port == 2514
    assert parse_sink_url("syslog+relp+tls://siem.example:20514").port == 20514


@needs_imrelp
def test_relp_over_tls_is_verified_with_the_test_ca_and_acknowledged(
    rsyslog: Callable[..., Rsyslog], tls_files: TlsFiles, tmp_path: Path
) -> None:
    server = rsyslog(tls_files, relp=True)  # imrelp with tls="on"
    url = f"syslog+relp+tls://127.0.0.1:{server.port}"
    mutual = {"tls_cert_file": tls_files.client_cert, "tls_key_file": tls_files.client_key}  # imrelp asks
    sink = open_sink(url, RELP.model_copy(update={"tls_ca_file": tls_files.ca, **mutual}),
                     spool_dir=tmp_path / "ok")  # fmt: skip
    for n in range(25):
        sink.send(make_alert(n))
    sink.close()
    state = sink.state()
    assert state["delivered"] == 25 and state["pending"] == 0, state
    assert server.alert_ids() == [make_alert(n)["alert_id"] for n in range(25)]
    # Without the CA the receiver's certificate is not trusted: nothing is sent, the alert stays spooled.
    strict = open_sink(url, RELP.model_copy(update={"close_timeout": 0.3, **mutual}),
                       spool_dir=tmp_path / "strict")  # fmt: skip
    strict.send(make_alert(99))
    strict.close()
    assert strict.state()["pending"] == 1
    assert "CERTIFICATE_VERIFY_FAILED" in str(strict.state()["last_error"])
    assert make_alert(99)["alert_id"] not in server.alert_ids()
