"""HEC and webhook sinks against a local HTTP server: format, auth, gzip, batching, retries, outages."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from etwsensor.sinks import SinkConfigError, open_sink
from tests.sinks.kit import FAST, HttpRecorder, make_alert, wait_until

HEC = FAST.model_copy(
    update={"hec_token": SecretStr("11111111-2222-3333-4444-555555555555"), "batch_size": 5}
)


def hec_events(recorder: HttpRecorder) -> list[dict[str, object]]:
    decoder = json.JSONDecoder()
    events: list[dict[str, object]] = []
    for request in recorder.accepted:
        text, pos = request.text, 0
        while pos < len(text):  # concatenated JSON objects, as HEC takes them
            event, pos = decoder.raw_decode(text, pos)
            events.append(event)
            while pos < len(text) and text[pos].isspace():
                pos += 1
    return events


def test_hec_event_format_auth_gzip_and_batches(http_server: HttpRecorder, tmp_path: Path) -> None:
    sink = open_sink(f"hec+http://{http_server.url}/services/collector", HEC, spool_dir=tmp_path)
    alerts = [make_alert(n) for n in range(12)]
    for alert in alerts:
        sink.send(alert)
    sink.close()
    assert sink.state()["delivered"] == 12 and sink.state()["pending"] == 0

    assert all(r.path == "/services/collector" for r in http_server.accepted)
    assert all(r.headers["authorization"] == "Splunk 11111111-2222-3333-4444-555555555555"
               for r in http_server.accepted)  # fmt: skip
    assert all(r.headers["content-encoding"] == "gzip" for r in http_server.accepted)
    events = hec_events(http_server)
    assert len(http_server.accepted) >= 3  # batch_size 5
    assert all(len(hec_events(HttpRecorder("", accepted=[r]))) <= 5 for r in http_server.accepted)
    assert [e["event"] for e in events] == alerts
    for event, alert in zip(events, alerts, strict=True):
        assert event["sourcetype"] == "etwsensor:alert" and event["source"] == "etwsensor"
        assert event["host"] == "WS-FIN-042"
        assert event["time"] == pytest.approx(datetime.fromisoformat(alert["time"]).timestamp())
        assert "index" not in event


def test_hec_retries_a_busy_collector_then_delivers_once(http_server: HttpRecorder, tmp_path: Path) -> None:
    http_server.fail = 2  # 503 "Server is busy" twice
    sink = open_sink(
        f"hec+http://{http_server.url}", HEC.model_copy(update={"retries": 3}), spool_dir=tmp_path
    )
    for n in range(3):
        sink.send(make_alert(n))
    sink.close()
    state = sink.state()
    assert state["delivered"] == 3 and state["pending"] == 0 and not state["down"]
    assert len(http_server.requests) >= 3 and http_server.requests[0].path == "/services/collector"
    refused = hec_events(HttpRecorder("", accepted=http_server.requests[:1]))
    delivered = hec_events(http_server)
    assert delivered[: len(refused)] == refused  # re-sent from the first refused alert on
    assert [e["event"] for e in delivered] == [make_alert(n) for n in range(3)]


def test_outage_spools_then_recovers_in_order(http_server: HttpRecorder, tmp_path: Path) -> None:
    http_server.fail = 10**6
    sink = open_sink(f"webhook+http://{http_server.url}/hook", FAST, spool_dir=tmp_path)
    for n in range(30):
        sink.send(make_alert(n))
    wait_until(lambda: sink.state()["down"], what="the sink to give up retrying quickly")
    assert sink.state()["pending"] == 30 and sink.state()["spooled"] == 30
    assert "HTTP 503" in str(sink.state()["last_error"])
    with http_server.lock:
        http_server.fail = 0
    for n in range(30, 40):
        sink.send(make_alert(n))
    wait_until(lambda: sink.state()["pending"] == 0, what="the spool to drain")
    sink.close()
    delivered = [alert for r in http_server.accepted for alert in json.loads(r.text)]
    assert delivered == [make_alert(n) for n in range(40)]
    assert not sink.state()["down"]


def test_webhook_posts_a_json_array_per_batch(http_server: HttpRecorder, tmp_path: Path) -> None:
    settings = FAST.model_copy(update={"http_headers": {"Authorization": SecretStr("Bearer s3cret")}})
    sink = open_sink(f"webhook+http://{http_server.url}/hook?channel=soc", settings, spool_dir=tmp_path)
    assert sink.name == f"webhook+http://{http_server.url}/hook?***"  # the query may hold a key
    for n in range(3):
        sink.send(make_alert(n))
    sink.close()
    request = http_server.accepted[0]
    assert request.path == "/hook?channel=soc"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer s3cret"
    assert "content-encoding" not in request.headers  # generic receivers rarely take gzip
    assert [a for r in http_server.accepted for a in json.loads(r.text)] == [make_alert(n) for n in range(3)]


def test_rejected_token_is_reported_but_never_shown(http_server: HttpRecorder, tmp_path: Path) -> None:
    http_server.fail, http_server.status = 10**6, 403
    sink = open_sink(f"hec+http://{http_server.url}", HEC.model_copy(update={"close_timeout": 0.2}),
                     spool_dir=tmp_path)  # fmt: skip
    sink.send(make_alert(0))
    sink.close()
    state = sink.state()
    assert state["pending"] == 1 and "HTTP 403" in str(state["last_error"])
    assert "11111111" not in json.dumps(state) and "11111111" not in repr(HEC)


def test_hec_without_token_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(SinkConfigError, match="HEC needs a token"):
        open_sink("hec+https://splunk.example:8088/services/collector", FAST, spool_dir=tmp_path)
