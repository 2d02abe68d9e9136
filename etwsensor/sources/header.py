"""What a source knows about the host it was recorded on: the first line of a recording.

The normalizer needs it to turn NT device paths into drive letters and SIDs into accounts,
so a trace replays to identical rows on any machine.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class HostInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    device_id: str = ""
    os_build: str = ""


class RecordingHeader(BaseModel):
    """Line 1 of a recording; for .etl files the reader fills what the trace tells."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["etwsensor-recording"] = "etwsensor-recording"
    version: Literal[1] = 1
    host: HostInfo = Field(default_factory=HostInfo)
    pointer_size: Literal[4, 8] = 8
    # NT device prefix → DOS drive, e.g. "\\Device\\HarddiskVolume3": "C:"
    device_map: dict[str, str] = Field(default_factory=dict)
    system_root: str = "C:\\Windows"
    # SID → "DOMAIN\\user"
    sids: dict[str, str] = Field(default_factory=dict)
    start: datetime | None = None
    comment: str | None = None  # free text, e.g. "synthetic: made by scripts/make_demo_trace.py"
