"""The JSON Schemas etwsensor publishes in docs/, generated from its pydantic models."""

from __future__ import annotations

from typing import Any

from etwsensor.alerts.model import Alert
from etwsensor.heartbeat import HeartbeatRecord
from etwsensor.sources.header import RecordingHeader
from etwsensor.sources.recording import EventLine


def published_schemas() -> dict[str, dict[str, Any]]:
    """File name in docs/ → JSON Schema."""
    header = RecordingHeader.model_json_schema()
    header["title"] = "etwsensor recording header (line 1)"
    event = EventLine.model_json_schema()
    event["title"] = "etwsensor recording event (every other line)"
    alert = Alert.model_json_schema()
    return {
        "alert-schema.json": alert,
        "heartbeat-schema.json": HeartbeatRecord.model_json_schema(),
        "recording-header.schema.json": header,
        "recording-event.schema.json": event,
    }
