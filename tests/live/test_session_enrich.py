"""The OS-independent parts of the Windows layer: host header, SIDs, volumes, elevation."""

from __future__ import annotations

import sys

import pytest

from etwsensor.normalize import Normalizer
from etwsensor.sources.live.enrich import DeviceMapWatch, SidResolver, device_map, live_header
from etwsensor.sources.live.win32 import is_elevated
from tests.live.fakes import UNC_DEVICE, FakeHost


@pytest.mark.skipif(sys.platform == "win32", reason="the Linux answer")
def test_not_elevated_off_windows() -> None:
    assert is_elevated() is False


def test_the_live_header_carries_host_device_map_and_sids() -> None:
    host = FakeHost()
    header = live_header(host, 8)
    assert header.host.name == "ws01" and header.host.os_build == "10.0.26100" and header.pointer_size == 8
    assert header.device_map == {"\\Device\\HarddiskVolume3": "C:", UNC_DEVICE: "Z:"}
    assert header.sids == {"S-1-5-21-1-2-3-1001": "CONTOSO\\alice"}
    assert Normalizer(header).accounts.resolve("S-1-5-21-1-2-3-1001") == ("CONTOSO", "alice")


def test_sid_lookups_are_cached_misses_included() -> None:
    host = FakeHost()
    r = SidResolver(host)
    for _ in range(3):
        r.resolve("S-1-5-21-9")
        r.resolve("S-1-5-21-1-2-3-1001")
    assert host.lookups == ["S-1-5-21-9", "S-1-5-21-1-2-3-1001"]


def test_a_volume_that_arrives_becomes_a_volume_mapping_event_the_normalizer_learns() -> None:
    host = FakeHost()
    watch = DeviceMapWatch(host, device_map(host))
    assert watch.changes() == []
    host.drives["E:"] = "\\Device\\HarddiskVolume9"
    events = watch.changes()
    assert [(e.provider, e.name, e.opcode, e.fields) for e in events] == [
        ("SystemConfigEx", "VolumeMapping", 35, {"NtPath": "\\Device\\HarddiskVolume9\\", "DosPath": "E:\\"})
    ]
    assert watch.changes() == []
    n = Normalizer()
    n.process(events[0])
    assert n.paths.to_dos("\\Device\\HarddiskVolume9\\x\\keylog.txt") == "E:\\x\\keylog.txt"
