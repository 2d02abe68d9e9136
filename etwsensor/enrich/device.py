"""DeviceName and DeviceId: which machine the rows come from.

DeviceId is derived, stably, from what identifies the machine: the 40-hex SHA-1 of
``"etwsensor-device:" + MachineGuid`` (``HKLM\\SOFTWARE\\Microsoft\\Cryptography\\MachineGuid``, lower
case) on a live host; where only the name is known (.etl files, ``--device-name``) of
``"etwsensor-device-name:" + name`` (lower case). The same machine always gets the same id; it is not
Defender's own DeviceId, which only Defender's cloud assigns.
"""

from __future__ import annotations

import hashlib

from etwsensor.sources.header import RecordingHeader

SYSTEM_CONFIG = "01853a65-418f-4f36-aefc-dc0f1d2fd235"  # classic SysConfig: CPU (opcode 10) names the host
_CPU = 10
LOOK_AHEAD_BUFFERS = 256  # of an .etl file, for its SystemConfig CPU record (16 MB at 64 KB a buffer)


def device_id_from_machine_guid(machine_guid: str) -> str:
    return hashlib.sha1(("etwsensor-device:" + machine_guid.strip().lower()).encode()).hexdigest()


def device_id_from_name(name: str) -> str:
    return hashlib.sha1(("etwsensor-device-name:" + name.strip().lower()).encode()).hexdigest()


def etl_host_name(reader: object) -> str:
    """The ComputerName of an .etl file's SystemConfig CPU record, looking at most
    ``LOOK_AHEAD_BUFFERS`` buffers ahead; "" when not found."""
    from etwsensor.decode import Decoder
    from etwsensor.sources.etl import EtlReader

    assert isinstance(reader, EtlReader)
    decoder = Decoder()
    for rec in reader.head_class_records(LOOK_AHEAD_BUFFERS, SYSTEM_CONFIG, _CPU):
        ev = decoder.decode(rec)
        name = ev.fields.get("ComputerName") if ev is not None else None
        if isinstance(name, str) and name:
            return name
    return ""


def named_header(header: RecordingHeader, device_name: str | None) -> RecordingHeader:
    """``header`` with ``--device-name`` (it wins over the input's own name) and a DeviceId derived from
    the name when the input has none."""
    host = header.host
    name = device_name or host.name
    if not name or (name == host.name and host.device_id):
        return header
    device_id = host.device_id if name == host.name and host.device_id else device_id_from_name(name)
    return header.model_copy(update={"host": host.model_copy(update={"name": name, "device_id": device_id})})
