"""Delivery under faults, against real HTTPS receivers on 127.0.0.1 and a real small filesystem: answers
classified (retry, dead-letter, stop), Retry-After honoured, a full disk under the spool, secrets never
printed, per-sink headers, token files, invalid proxies."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from etwsensor import exitcodes
from etwsensor.sinks import SinkConfigError, open_sink, open_sinks
from tests.sinks.kit import FAST, Answer, Receiver, Request, TlsFiles, make_alert, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo.jsonl.zst"


def settings(tls: TlsFiles, **changes: object) -> object:
    return FAST.model_copy(update={"tls_ca_file": tls.ca, **changes})


def poison_answer(request: Request) -> Answer:
    """400 for any batch holding an alert whose id ends in 3 or 7; 413 for more than 8 alerts."""
    alerts = json.loads(request.text)
    if len(alerts) > 8:
        return 413, {}, b'{"error":"payload too large"}'
    if any(a["alert_id"].split("-")[0].endswith(("3", "7")) for a in alerts):
        return 400, {}, b'{"error":"field rule.name rejected"}'
    return 200, {}, b"{}"


def test_rejected_alerts_are_isolated_and_dead_lettered(
    https_receiver: Receiver, tls_files: TlsFiles, tmp_path: Path
) -> None:
    https_receiver.answer = poison_answer
    sink = open_sink(f"webhook+https://{https_receiver.url}/in", settings(tls_files), spool_dir=tmp_path)
    for n in range(40):
        sink.send(make_alert(n))
    sink.close()
    state = sink.state()
    poisoned = [n for n in range(40) if str(n).endswith(("3", "7"))]
    assert state["dead_letters"] == len(poisoned) and state["pending"] == 0
    assert state["delivered"] == 40 - len(poisoned)
    accepted = [
        a["alert_id"]
        for r, t in zip(https_receiver.requests, https_receiver.times, strict=True)
        if poison_answer(r)[0] == 200
        for a in json.loads(r.text)
    ]
    assert sorted(accepted) == sorted(make_alert(n)["alert_id"] for n in range(40) if n not in poisoned)
    dead = Path(state["dead_letter_file"])
    assert dead.parent.parent == tmp_path  # beside the sink's spool
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [d["alert"] for d in letters] == [make_alert(n) for n in poisoned]
    assert all("HTTP 400" in d["answer"] and "rule.name rejected" in d["answer"] for d in letters)
    assert all(d["sink"] == sink.name for d in letters)


@pytest.mark.parametrize("status", [401, 403])
def test_credentials_refused_stop_the_sink_and_keep_the_alerts(
    https_receiver: Receiver, tls_files: TlsFiles, tmp_path: Path, status: int
) -> None:
    https_receiver.answer = lambda _r: (status, {}, b'{"text":"Invalid token","code":4}')
    sink = open_sink(f"webhook+https://{https_receiver.url}/in", settings(tls_files), spool_dir=tmp_path)
    for n in range(5):
        sink.send(make_alert(n))
    wait_until(lambda: sink.state()["stopped"], what="the sink to stop")
    sink.close()
    state = sink.state()
    assert len(https_receiver.requests) == 1  # not retried: a credentials problem, not a data problem
    assert state["pending"] == 5 and state["dead_letters"] == 0 and state["down"]
    assert f"HTTP {status}" in state["last_error"] and "token" in state["last_error"]


def test_429_is_retried_after_the_time_the_receiver_asks(
    https_receiver: Receiver, tls_files: TlsFiles, tmp_path: Path
) -> None:
    calls: list[int] = []

    def busy_once(_request: Request) -> Answer:
        calls.append(1)
        return (429, {"Retry-After": "1"}, b"slow down") if len(calls) == 1 else (200, {}, b"{}")

    https_receiver.answer = busy_once
    sink = open_sink(
        f"webhook+https://{https_receiver.url}/in",
        settings(tls_files, retry_backoff_max=5.0),
        spool_dir=tmp_path,
    )
    sink.send(make_alert(1))
    sink.close()
    assert sink.state()["delivered"] == 1
    first, second = https_receiver.times[:2]
    assert second - first >= 1.0  # a lower bound the receiver set, not a speed measurement


def test_500_and_503_are_retried_until_delivered(
    https_receiver: Receiver, tls_files: TlsFiles, tmp_path: Path
) -> None:
    answers = iter([(500, {}, b"oops"), (503, {}, b"busy")])
    https_receiver.answer = lambda _r: next(answers, (200, {}, b"{}"))
    sink = open_sink(f"webhook+https://{https_receiver.url}/in", settings(tls_files), spool_dir=tmp_path)
    sink.send(make_alert(1))
    sink.close()
    assert sink.state()["delivered"] == 1 and len(https_receiver.requests) == 3


# --- a full disk under the spool ------------------------------------------------------------------------


@pytest.fixture
def full_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, filled up, mounted for the test; skipped with the reason where it cannot be."""
    mount = tmp_path / "full"
    mount.mkdir()
    if sys.platform != "linux":
        pytest.skip("a tmpfs mount needs Linux")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                       capture_output=True, text=True, check=False)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        (mount / "spool").mkdir()
        with open(mount / "filler", "wb", buffering=0) as fh:
            try:
                while fh.write(b"\0" * 4096):
                    pass
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_under_the_spool_does_not_stop_delivery(
    https_receiver: Receiver, tls_files: TlsFiles, full_fs: Path
) -> None:
    sink = open_sink(f"webhook+https://{https_receiver.url}/in", settings(tls_files),
                     spool_dir=full_fs / "spool")  # fmt: skip
    for n in range(200):
        sink.send(make_alert(n))
    sink.close()
    state = sink.state()
    got = [a["alert_id"] for r in https_receiver.requests for a in json.loads(r.text)]
    assert got == [make_alert(n)["alert_id"] for n in range(200)]  # all, in order, once
    assert state["delivered"] == 200 and state["lost"] == 0 and state["pending"] == 0
    assert "No space left" in state["last_error"]  # the spool really was refused


def test_a_full_disk_and_a_dead_receiver_count_every_alert_lost(
    tls_files: TlsFiles, full_fs: Path
) -> None:
    from tests.sinks.kit import free_port

    sink = open_sink(f"webhook+https://127.0.0.1:{free_port()}/in",
                     settings(tls_files, close_timeout=0.3, memory_max_alerts=50),
                     spool_dir=full_fs / "spool")  # fmt: skip
    for n in range(120):
        sink.send(make_alert(n))
    sink.close()
    state = sink.state()
    assert state["delivered"] == 0 and state["pending"] == 0
    assert state["lost"] == 120  # 70 past the memory bound, 50 still in memory at exit
    assert state["last_error"]


def test_replay_summary_and_exit_code_tell_the_truth_on_a_full_disk(
    tls_files: TlsFiles, full_fs: Path, tmp_path: Path
) -> None:
    from tests.sinks.kit import free_port

    config = tmp_path / "c.toml"
    config.write_text(
        f'[sink]\nspool_dir = "{full_fs / "spool"}"\ntls_ca_file = "{tls_files.ca}"\nclose_timeout = 0.3\n'
        "connect_timeout = 0.5\nretry_backoff = 0.02\nmemory_max_alerts = 3\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "etwsensor", "replay", str(DEMO), "--config", str(config), "--sink",
         f"webhook+https://127.0.0.1:{free_port()}/in", "--json-summary"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == exitcodes.UNDELIVERED, r.stderr
    assert "Traceback" not in r.stderr
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    (state,) = summary["sinks"].values()
    assert state["lost"] == summary["alerts"] > 0 and state["delivered"] == 0


# --- secrets, headers, token files, proxies -------------------------------------------------------------

SENTINEL = "Zq9SENTINELx7"


def test_secrets_never_appear_in_any_output(
    https_receiver: Receiver, tls_files: TlsFiles, tmp_path: Path
) -> None:
    """A hostile receiver echoes the credentials it got; a URL carries user:pass, query and path keys;
    a header value holds a control character. Nothing of the sentinel reaches stdout or stderr."""

    def echo(request: Request) -> Answer:
        return 401, {}, json.dumps({"got": request.headers.get("authorization", "")}).encode()

    https_receiver.answer = echo
    token_file = tmp_path / "hec.token"
    token_file.write_text(f"hec-{SENTINEL}\n")
    config = tmp_path / "c.toml"
    webhook = f"webhook+https://u:{SENTINEL}pw@{https_receiver.url}/services/T0/B0/{SENTINEL}path?token={SENTINEL}q"
    hec = f"hec+https://{https_receiver.url}/services/collector"
    config.write_text(
        f'[output]\nsinks = ["{webhook}", "{hec}"]\n'
        f'[sink]\nspool_dir = "{tmp_path / "spool"}"\ntls_ca_file = "{tls_files.ca}"\nclose_timeout = 0.5\n'
        f'hec_token_file = "{token_file}"\nretry_backoff = 0.02\n'
        f'[sink.sink_headers."{webhook}"]\nAuthorization = "Bearer wh-{SENTINEL}"\n'
    )
    outputs = []
    for args in (["config", "show", "--config", str(config)],
                 ["-v", "replay", str(DEMO), "--config", str(config), "--json-summary"],
                 ["-v", "replay", str(DEMO), "--config", str(config)]):  # fmt: skip
        r = subprocess.run([sys.executable, "-m", "etwsensor", *args], capture_output=True, text=True,
                           check=False)  # fmt: skip
        outputs.append((args, r))
    assert https_receiver.requests, "the receiver was reached"
    for args, r in outputs:
        assert SENTINEL not in r.stdout + r.stderr, (args, r.stderr[-2000:])
        assert "Traceback" not in r.stderr
    assert outputs[1][1].returncode == exitcodes.UNDELIVERED
    summary = json.loads(outputs[1][1].stderr.strip().splitlines()[-1])
    assert all(s["stopped"] for s in summary["sinks"].values())

    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'[sink]\nspool_dir = "{tmp_path / "spool2"}"\nhec_token = "hec-{SENTINEL}\\u0007"\n'
        f'[output]\nsinks = ["{hec}"]\n'
    )
    r = subprocess.run([sys.executable, "-m", "etwsensor", "replay", str(DEMO), "--config", str(bad)],
                       capture_output=True, text=True, check=False)  # fmt: skip
    assert r.returncode == exitcodes.USAGE and "control" in r.stderr
    assert SENTINEL not in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_headers_are_per_sink_and_hec_keeps_its_own_authorization(
    https_receiver: Receiver, tls_files: TlsFiles, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("hec-token-from-file\n")
    webhook = f"webhook+https://{https_receiver.url}/hook"
    hec = f"hec+https://{https_receiver.url}/services/collector"
    s = settings(
        tls_files,
        hec_token_file=token_file,
        http_headers={"Authorization": SecretStr("Bearer webhook-wide"), "X-Everyone": SecretStr("w")},
        sink_headers={hec: {"X-Splunk-Request-Channel": SecretStr("chan-1")}},
    )
    sinks = open_sinks([webhook, hec], s, spool_dir=tmp_path)  # type: ignore[arg-type]
    sinks.send(make_alert(1))
    sinks.close()
    by_path = {r.path: r.headers for r in https_receiver.requests}
    assert by_path["/services/collector"]["authorization"] == "Splunk hec-token-from-file"
    assert by_path["/services/collector"]["x-splunk-request-channel"] == "chan-1"
    assert "x-everyone" not in by_path["/services/collector"]
    assert by_path["/hook"]["authorization"] == "Bearer webhook-wide"
    assert "x-splunk-request-channel" not in by_path["/hook"]


@pytest.mark.parametrize("proxy", ["not a url", "ftp://proxy.example:21", f"http://u:{SENTINEL}@:99999"])
def test_an_invalid_proxy_is_a_usage_error(tmp_path: Path, proxy: str) -> None:
    with pytest.raises(SinkConfigError, match="http_proxy") as caught:
        open_sink("webhook+https://hooks.example/x", FAST.model_copy(update={"http_proxy": SecretStr(proxy)}),
                  spool_dir=tmp_path)  # fmt: skip
    assert SENTINEL not in str(caught.value)
    config = tmp_path / "c.toml"
    config.write_text(f'[sink]\nspool_dir = "{tmp_path / "s"}"\nhttp_proxy = "{proxy}"\n')
    r = subprocess.run(
        [sys.executable, "-m", "etwsensor", "replay", str(DEMO), "--config", str(config), "--sink",
         "webhook+https://hooks.example/x"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == exitcodes.USAGE and "http_proxy" in r.stderr
    assert "Traceback" not in r.stderr and SENTINEL not in r.stderr


# --- plain TCP syslog from memory ------------------------------------------------------------------------


def test_syslog_alerts_sent_from_memory_wait_for_the_confirm_window(
    tmp_path: Path, full_fs: Path
) -> None:
    """With the spool's disk full, plain TCP syslog alerts go out from memory. A receiver that read them
    and then died (before writing them anywhere) must not make them count as delivered: like spooled
    ones, they wait for the confirm window and are sent again on the next connection."""
    import shutil
    import socket
    import threading

    from tests.sinks.kit import Rsyslog, free_port, wait_until

    if shutil.which("rsyslogd") is None:
        pytest.skip("rsyslogd not installed (apt-get install -y rsyslog)")
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    first = 30
    crashed = threading.Event()

    def receiver_that_dies() -> None:  # reads the first 30 alerts, then is gone without a word
        conn, _ = listener.accept()
        got = b""
        while got.count(b'"alert_id"') < first:
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
        conn.close()
        listener.close()
        crashed.set()

    thread = threading.Thread(target=receiver_that_dies, daemon=True)
    thread.start()
    sink = open_sink(f"syslog+tcp://127.0.0.1:{port}", FAST.model_copy(update={"syslog_confirm_window": 600}),
                     spool_dir=full_fs / "spool")  # fmt: skip
    server = Rsyslog(tmp_path / "rsyslog", port)
    server.root.mkdir()
    try:
        for n in range(first):
            sink.send(make_alert(n))
        assert crashed.wait(30), "the first receiver never got the first alerts"
        assert sink.state()["delivered"] == 0  # written, not confirmed
        server.start()  # a real receiver on the same port
        for n in range(first, 50):
            sink.send(make_alert(n))
        expected = {make_alert(n)["alert_id"] for n in range(50)}
        wait_until(lambda: expected <= set(server.alert_ids()), what="every alert at rsyslog")
        sink.close()
    finally:
        server.stop()
    state = sink.state()
    assert state["delivered"] == 50 and state["lost"] == 0 and state["pending"] == 0
    assert state["spooled"] == 0  # every alert went out from memory: the spool's disk was full
