"""stdout and file sinks, the URL grammar, and several sinks at once."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from etwsensor.sinks import SinkConfigError, SinkSet, SinkSettings, open_sink, open_sinks, parse_sink_url
from etwsensor.sinks.local import FileSink, StdoutSink
from tests.sinks.kit import FAST, HttpRecorder, make_alert


class FlushCountingStream(io.TextIOWrapper):
    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_stdout_is_utf8_ndjson_flushed_per_alert() -> None:
    stream = FlushCountingStream()
    sink = StdoutSink(stream)
    for n in range(3):
        sink.send(make_alert(n))
        assert stream.buffer.getvalue().count(b"\n") == n + 1  # visible at once, not at exit
    data = stream.buffer.getvalue()
    assert "kéylog.exe".encode() in data  # UTF-8, not \u escapes
    assert [json.loads(line) for line in data.splitlines()] == [make_alert(n) for n in range(3)]
    assert sink.state()["delivered"] == 3


def test_stdout_default_goes_to_sys_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    sink = open_sink("stdout")
    sink.send(make_alert(0))
    sink.close()
    assert json.loads(capsys.readouterr().out) == make_alert(0)


def test_closed_stdout_counts_drops_instead_of_raising() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    sink = StdoutSink(stream)
    stream.close()  # e.g. `etwsensor replay … | head -1` went away
    sink.send(make_alert(0))
    sink.send(make_alert(1))
    assert sink.state()["dropped"] == 2 and sink.state()["down"]


def test_file_rotates_by_size_and_keeps_backups(tmp_path: Path) -> None:
    path = tmp_path / "alerts.ndjson"
    line_len = len(json.dumps(make_alert(0), ensure_ascii=False, separators=(",", ":")).encode()) + 1
    settings = SinkSettings(max_bytes=3 * line_len + 10, backups=2)
    sink = open_sink(f"file:{path}", settings)
    for n in range(20):
        sink.send(make_alert(n))
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["alerts.ndjson", "alerts.ndjson.1", "alerts.ndjson.2"]
    kept = [
        json.loads(line)["alert_id"]
        for name in ("alerts.ndjson.2", "alerts.ndjson.1", "alerts.ndjson")
        for line in (tmp_path / name).read_text(encoding="utf-8").splitlines()
    ]
    assert kept == [make_alert(n)["alert_id"] for n in range(20 - len(kept), 20)]  # newest, in order
    assert all((tmp_path / f).stat().st_size <= settings.max_bytes for f in files)
    assert sink.state()["delivered"] == 20


def test_file_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    path.write_text('{"earlier":true}\n')
    sink = FileSink(path, SinkSettings())
    sink.send(make_alert(0))
    sink.close()
    assert path.read_text(encoding="utf-8").splitlines()[0] == '{"earlier":true}'


def test_file_in_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(SinkConfigError, match="cannot open"):
        open_sink(f"file:{tmp_path / 'no' / 'such' / 'dir.ndjson'}")


@pytest.mark.parametrize(
    ("url", "kind", "where"),
    [
        ("stdout", "stdout", ""),
        ("file:alerts.ndjson", "file", "alerts.ndjson"),
        ("file:///var/log/etwsensor.ndjson", "file", "/var/log/etwsensor.ndjson"),
        ("syslog+tcp://siem.example:5514", "syslog", "siem.example:5514"),
        ("syslog+tcp://siem.example", "syslog", "siem.example:514"),
        ("syslog+tls://[2001:db8::1]:6514", "syslog", "2001:db8::1:6514"),
        ("syslog+tls://siem.example", "syslog", "siem.example:6514"),
        ("hec+https://splunk.example:8088/services/collector", "hec",
         "https://splunk.example:8088/services/collector"),
        ("hec+https://splunk.example:8088", "hec", "https://splunk.example:8088/services/collector"),
        ("webhook+https://hooks.example/T0/B1?x=1", "webhook", "https://hooks.example/T0/B1?x=1"),
        ("webhook+http://127.0.0.1:8080/h", "webhook", "http://127.0.0.1:8080/h"),
    ],
)  # fmt: skip
def test_sink_urls(url: str, kind: str, where: str) -> None:
    target = parse_sink_url(url)
    assert target.kind == kind
    found = {
        "stdout": "",
        "file": str(target.path),
        "syslog": f"{target.host}:{target.port}",
        "hec": target.endpoint,
        "webhook": target.endpoint,
    }[kind]
    assert found == where


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty sink URL"),
        ("stderr", "unknown sink"),
        ("file:", "needs a path"),
        ("syslog+udp://h:514", "tcp, tls, relp or relp.tls"),
        ("syslog+tcp://h:99999", "out of range"),
        ("syslog+tcp://h:514/path", "only HOST:PORT"),
        ("syslog+tcp://:514", "no host"),
        ("hec+ftp://h/services/collector", "https"),
        ("hec+https://h:8088/services/collector?token=abc", "not the URL"),
        ("http://example.com", "unknown sink"),
    ],
)
def test_bad_sink_urls_say_why_in_one_line(url: str, reason: str) -> None:
    with pytest.raises(SinkConfigError, match=reason) as info:
        parse_sink_url(url)
    assert "\n" not in str(info.value) and "abc" not in str(info.value)


class Exploding:
    name = "exploding"

    def send(self, alert: Any) -> None:
        raise RuntimeError("bug")

    def flush(self) -> None:
        raise RuntimeError("bug")

    def close(self) -> None:
        raise RuntimeError("bug")

    def state(self) -> dict[str, Any]:
        return {"sink": self.name, "delivered": 0, "spooled": 0, "pending": 0, "dropped": 0,
                "corrupt": 0, "down": True, "last_error": "bug"}  # fmt: skip


def test_one_broken_sink_does_not_stop_the_others(tmp_path: Path) -> None:
    path = tmp_path / "a.ndjson"
    good = FileSink(path, SinkSettings())
    sinks = SinkSet([Exploding(), good])
    for n in range(3):
        sinks.send(make_alert(n))
    sinks.close()
    assert len(path.read_text().splitlines()) == 3
    state = sinks.state()
    assert (
        state["delivered"] == 3
        and state["down"]
        and [s["sink"] for s in state["sinks"]] == ["exploding", f"file:{path}"]
    )


def test_open_sinks_fans_out_and_checks_every_url_first(http_server: HttpRecorder, tmp_path: Path) -> None:
    with pytest.raises(SinkConfigError, match="unknown sink"):
        open_sinks([f"file:{tmp_path / 'x.ndjson'}", "bogus://"], FAST, tmp_path / "spool")
    assert not (tmp_path / "x.ndjson").exists()  # nothing was opened
    with pytest.raises(SinkConfigError, match="given twice"):
        open_sinks(["stdout", "stdout"])

    urls = [f"file:{tmp_path / 'y.ndjson'}", f"webhook+http://{http_server.url}/h"]
    sinks = open_sinks(urls, FAST, tmp_path / "spool")
    sinks.send(make_alert(0))
    sinks.close()
    assert sinks.state()["delivered"] == 2 and sinks.state()["pending"] == 0
    assert json.loads(http_server.accepted[0].text) == [make_alert(0)]


def test_unusable_spool_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(SinkConfigError, match="spool"):
        open_sink("syslog+tcp://127.0.0.1:9", FAST, spool_dir=blocker)
    first = open_sink("syslog+tcp://127.0.0.1:9", FAST.model_copy(update={"close_timeout": 0}), tmp_path)
    with pytest.raises(SinkConfigError, match="in use by another etwsensor"):
        open_sink("syslog+tcp://127.0.0.1:9", FAST, spool_dir=tmp_path)
    first.close()


def test_a_sink_set_iterates_its_sinks(tmp_path: Path) -> None:
    sinks = open_sinks(["stdout", f"file:{tmp_path / 'a.ndjson'}"])
    assert [s.name for s in sinks] == ["stdout", f"file:{tmp_path / 'a.ndjson'}"] and len(sinks) == 2
    sinks.close()


def test_alert_json_is_compact_and_ascii_escaped_only_when_asked() -> None:
    from datetime import UTC, datetime

    from etwsensor.sinks.base import alert_json

    alert = make_alert(3)
    path = "C:\\Users\\jürgen\\AppData\\键盘.exe"
    alert["row"] = {"FolderPath": path, "Note": "tab\tnul\x00 \u2028", "N": 7}
    alert["extra"] = datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)  # not JSON-ready: still written, as text
    utf8 = alert_json(alert, ascii_only=False)
    ascii_only = alert_json(alert)
    assert "jürgen\\\\AppData\\\\键盘.exe".encode() in utf8
    assert ascii_only.isascii() and b"j\\u00fcrgen" in ascii_only
    for line in (utf8, ascii_only):
        assert b"\n" not in line
        back = json.loads(line)
        assert back["row"] == alert["row"]
        assert back["extra"].startswith("2026-11-28T01:02:03")
    plain = dict(alert, extra="x")  # JSON-ready alerts: the same bytes as the stdlib writes
    compact = (",", ":")
    assert (
        alert_json(plain, ascii_only=False)
        == json.dumps(plain, ensure_ascii=False, separators=compact).encode()
    )
    assert alert_json(plain) == json.dumps(plain, separators=compact).encode()
