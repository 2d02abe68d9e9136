"""DeviceName and DeviceId: from the .etl file's SystemConfig CPU record, --device-name, the live host."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etwsensor.cli import app
from etwsensor.sources.live.enrich import live_header

ETL = Path(__file__).resolve().parents[1] / "data" / "etl" / "perfview_net.4.5.2.x64.etl"
runner = CliRunner()


def _first_row(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["normalize", str(ETL), "-t", "DeviceProcessEvents", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.splitlines()[0])


def test_an_etl_file_names_its_host_in_every_row() -> None:
    row = _first_row()
    assert row["DeviceName"] == "BRIANROB-W8"  # PerfView's own decoding: ComputerName=BRIANROB-W8
    assert row["DeviceId"] == hashlib.sha1(b"etwsensor-device-name:brianrob-w8").hexdigest()


def test_device_name_wins() -> None:
    row = _first_row("--device-name", "WS-042")
    assert row["DeviceName"] == "WS-042"
    assert row["DeviceId"] == hashlib.sha1(b"etwsensor-device-name:ws-042").hexdigest()


@pytest.fixture
def look_aheads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often an .etl file was read ahead for its host name (the real reader, counted)."""
    from etwsensor.sources.etl import EtlReader

    calls: list[int] = []
    real = EtlReader.head_class_records

    def counted(self: EtlReader, buffers: int, guid: str, opcode: int) -> Iterator[object]:
        calls.append(buffers)
        return real(self, buffers, guid, opcode)

    monkeypatch.setattr(EtlReader, "head_class_records", counted)
    return calls


@pytest.mark.parametrize("command", ["normalize", "replay"])
def test_device_name_skips_the_look_ahead(look_aheads: list[int], command: str) -> None:
    extra = ["-t", "DeviceProcessEvents"] if command == "normalize" else []
    result = runner.invoke(app, [command, str(ETL), "--device-name", "WS-042", *extra])
    assert result.exit_code == 0, result.output
    assert look_aheads == []
    result = runner.invoke(app, [command, str(ETL), *extra])
    assert result.exit_code == 0, result.output
    assert len(look_aheads) == 1  # without the option the file is read ahead once


class Host:
    def __init__(self, machine_guid: str | None) -> None:
        self._guid = machine_guid

    def logical_drives(self) -> list[str]:
        return ["C:"]

    def query_dos_device(self, drive: str) -> str | None:
        return "\\Device\\HarddiskVolume3"

    def lookup_account_sid(self, sid: str) -> str | None:
        return None

    def profile_sids(self) -> list[str]:
        return []

    def host_name(self) -> str:
        return "WS-042"

    def os_build(self) -> str:
        return "10.0.22631"

    def machine_guid(self) -> str | None:
        return self._guid


def test_live_device_id_comes_from_the_machine_guid_else_the_name() -> None:
    guid = "6F1E2D3C-0000-4000-8000-123456789ABC"
    header = live_header(Host(guid), 8)
    assert header.host.name == "WS-042"
    assert header.host.device_id == hashlib.sha1(f"etwsensor-device:{guid.lower()}".encode()).hexdigest()
    assert live_header(Host(guid), 8).host.device_id == header.host.device_id  # stable
    by_name = hashlib.sha1(b"etwsensor-device-name:ws-042").hexdigest()
    assert live_header(Host(None), 8).host.device_id == by_name
