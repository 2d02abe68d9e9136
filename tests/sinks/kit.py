"""Sink test kit: alerts shaped like the documented schema, a real rsyslog, a recording HTTP server."""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from etwsensor.sinks import SinkSettings

# Short timeouts and backoff so outages cost the test suite fractions of a second.
FAST = SinkSettings(
    batch_size=20, batch_interval=0.02, connect_timeout=1.0, timeout=2.0, retries=2, retry_backoff=0.02,
    retry_backoff_max=0.2, close_timeout=5.0, syslog_confirm_window=0.5,
)  # fmt: skip

SEVERITIES = ("high", "medium", "low", "informational")


def make_alert(n: int, **changes: Any) -> dict[str, Any]:
    """Alert number ``n`` as the pipeline hands it to sinks (JSON-ready)."""
    alert: dict[str, Any] = {
        "schema_version": "1.0",
        "alert_id": f"{n:08d}-5f3c9a7e1b2d4c6f",
        "time": f"2026-11-27T10:{n // 60 % 60:02d}:{n % 60:02d}.1234567Z",
        "detected_at": "2026-11-28T00:00:01.000000Z",
        "host": {"name": "WS-FIN-042", "device_id": "8e6a3b2f0c1d4e5f"},
        "rule": {
            "id": "5b8f6c1e-7d3a-4f2b-9c0d-1e2f3a4b5c6d",
            "name": "Keylogging via low-level keyboard hook",
            "version": "1.0.0",
            "severity": SEVERITIES[n % 4],
            "confidence": "medium",
            "tactics": ["Collection", "CredentialAccess"],
            "techniques": ["T1056.001"],
            "references": ["https://attack.mitre.org/techniques/T1056/001/"],
        },
        "reason": "Unsigned process loaded the Raw Input DLL from a user-writable folder",
        "table": "DeviceImageLoadEvents",
        "row": {
            "Timestamp": "2026-11-27T10:00:00.1234567Z",
            "FileName": "hid.dll",
            "FolderPath": r"C:\Windows\System32\hid.dll",
            "InitiatingProcessFileName": "kéylog.exe",  # non-ASCII on purpose
            "InitiatingProcessFolderPath": r"C:\Users\bob\AppData\Roaming\kéylog.exe",
        },
        "sensor": {"version": "0.1.0", "source": "demo.jsonl.zst"},
        "suppressed_count": n % 3,
    }
    alert.update(changes)
    return alert


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll until ``condition`` holds; a deadline, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- TLS material (openssl CLI) ------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path  # a client certificate of the same CA, for mutual TLS (RELP over TLS)
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")  # fast to generate
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=etwsensor test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=d)  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)  # fmt: skip
    _openssl("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=etwsensor", cwd=d)
    (d / "client.cnf").write_text("extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "client.pem", "-days", "2", "-extfile", "client.cnf", cwd=d)  # fmt: skip
    return TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


# --- rsyslog ---------------------------------------------------------------------------------------------

# One line per message, the fields as rsyslog parsed them, tab-separated (JSON never holds a raw tab).
FIELDS = (
    "pri", "version", "timestamp", "hostname", "app_name", "procid", "msgid", "structured_data", "msg", "raw",
)  # fmt: skip
_TEMPLATE = "\\t".join(
    f"%{p}%"
    for p in ("pri", "protocol-version", "timereported:::date-rfc3339", "hostname", "app-name", "procid",
              "msgid", "structured-data", "msg", "rawmsg")
) + "\\n"  # fmt: skip


@dataclass
class Rsyslog:
    """A private rsyslogd: imtcp (plain or gtls) or imrelp (plain or TLS) on 127.0.0.1:port, every message
    to ``out``."""

    root: Path
    port: int
    tls: TlsFiles | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    relp: bool = False  # imrelp (rsyslog-relp) instead of imtcp

    @property
    def out(self) -> Path:
        return self.root / "out.tsv"

    def _config(self) -> str:
        work = self.root / "work"
        work.mkdir(exist_ok=True)
        tls_global = tls_module = ""
        if self.tls:
            tls_global = (
                f' DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{self.tls.ca}"'
                f' DefaultNetstreamDriverCertFile="{self.tls.cert}"'
                f' DefaultNetstreamDriverKeyFile="{self.tls.key}"'
            )
            tls_module = ' StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"'
        if self.relp:
            relp_tls = (
                f' tls="on" tls.caCert="{self.tls.ca}" tls.myCert="{self.tls.cert}"'
                f' tls.myPrivKey="{self.tls.key}" tls.authMode="certvalid"'
                if self.tls
                else ""
            )
            return (
                f'global(workDirectory="{work}" maxMessageSize="64k")\n'
                'module(load="imrelp")\n'
                f'template(name="fields" type="string" string="{_TEMPLATE}")\n'
                f'ruleset(name="alerts") {{ action(type="omfile" file="{self.out}" template="fields") }}\n'
                f'input(type="imrelp" port="{self.port}" address="127.0.0.1" ruleset="alerts"{relp_tls})\n'
            )
        return (
            f'global(workDirectory="{work}" maxMessageSize="64k"{tls_global})\n'
            f'module(load="imtcp"{tls_module})\n'
            f'template(name="fields" type="string" string="{_TEMPLATE}")\n'
            f'ruleset(name="alerts") {{ action(type="omfile" file="{self.out}" template="fields") }}\n'
            f'input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="alerts")\n'
        )

    def start(self) -> None:
        conf = self.root / "rsyslog.conf"
        conf.write_text(self._config())
        log = (self.root / "rsyslogd.log").open("ab")
        self.proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(conf), "-i", str(self.root / "rsyslogd.pid")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"rsyslogd exited: {(self.root / 'rsyslogd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(listening, 15, "rsyslogd to listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None

    def records(self) -> list[dict[str, str]]:
        if not self.out.exists():
            return []
        lines = self.out.read_text(encoding="utf-8").splitlines()
        return [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in lines if line]

    def alert_ids(self) -> list[str]:
        return [json.loads(r["msg"])["alert_id"] for r in self.records()]


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Callable[..., Rsyslog]]:
    """Start private rsyslogds (``rsyslog()`` or ``rsyslog(tls_files)``); all are stopped afterwards."""
    if shutil.which("rsyslogd") is None:
        pytest.skip("rsyslogd not installed (apt-get install -y rsyslog rsyslog-gnutls)")
    started: list[Rsyslog] = []

    def make(tls: TlsFiles | None = None, relp: bool = False) -> Rsyslog:
        root = tmp_path / f"rsyslog{len(started)}"
        root.mkdir()
        server = Rsyslog(root, free_port(), tls, relp=relp)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


# --- HTTP ------------------------------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes  # as sent (maybe gzip)

    @property
    def text(self) -> str:
        raw = gzip.decompress(self.body) if self.headers.get("content-encoding") == "gzip" else self.body
        return raw.decode()


@dataclass
class HttpRecorder:
    """What a local HTTP server received; ``fail`` more requests are answered 503 before it accepts."""

    url: str
    requests: list[Request] = field(default_factory=list)
    accepted: list[Request] = field(default_factory=list)
    fail: int = 0
    status: int = 503
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def http_server() -> Iterator[HttpRecorder]:
    recorder = HttpRecorder("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with recorder.lock:
                recorder.requests.append(request)
                failing = recorder.fail > 0
                if failing:
                    recorder.fail -= 1
                else:
                    recorder.accepted.append(request)
            reply = b'{"text":"Server is busy","code":9}' if failing else b'{"text":"Success","code":0}'
            self.send_response(recorder.status if failing else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield recorder
    server.shutdown()
    server.server_close()


# --- HTTPS receiver with scripted answers ---------------------------------------------------------------

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Receiver:
    """A real HTTPS server on 127.0.0.1 (the test CA's certificate); ``answer`` decides each reply."""

    url: str
    answer: Callable[[Request], Answer]
    requests: list[Request] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self, request: Request) -> list[dict[str, Any]]:
        """The alerts of one webhook request (a JSON array)."""
        return list(json.loads(request.text))


def accept_all(_request: Request) -> Answer:
    return 200, {}, b'{"ok":true}'


@pytest.fixture
def https_receiver(tls_files: TlsFiles) -> Iterator[Receiver]:
    import ssl

    receiver = Receiver("", accept_all)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with receiver.lock:
                receiver.requests.append(request)
                receiver.times.append(time.monotonic())
            status, headers, reply = receiver.answer(request)
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    receiver.url = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
