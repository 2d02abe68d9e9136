"""What each Defender table and ActionType needs from ETW: provider data, not code.

Names are providers/*.yaml names (provider or classic class, event name). The normalizer's handlers
(etwsensor/normalize/*.py) are the consumers; ``tests/live/test_plan.py`` holds this table to them.

* ``TRACKING``: the process table every row's InitiatingProcess* columns come from. Any traced table
  needs it: the classic Process class (the only source of command lines and user SIDs, with DCStart
  rundown at session start) and Kernel-Process (CreateTime, elevation, integrity; ProcessRundown on
  EVENT_CONTROL_CODE_CAPTURE_STATE so an IR attach sees processes that were already running).
* ``TABLES[table][None]``: what the table needs whatever the ActionType (names, eviction);
  ``TABLES[table][action]``: what one ActionType adds.
* ``CLASSIC_FALLBACK``: classic classes that duplicate a manifest provider. Off by default: the
  kernel cannot filter classic classes by opcode (all-or-nothing per enable flag), and the normalizer
  makes its rows from the manifest providers once they are in the stream.
"""

from __future__ import annotations

from collections.abc import Mapping

KERNEL_PROCESS = "Microsoft-Windows-Kernel-Process"
KERNEL_FILE = "Microsoft-Windows-Kernel-File"
KERNEL_REGISTRY = "Microsoft-Windows-Kernel-Registry"
WIN32K = "Microsoft-Windows-Win32k"

Needs = Mapping[str, tuple[str, ...]]  # provider or class name → event names

TRACKING: Needs = {
    "Process": ("Start", "End", "DCStart"),
    KERNEL_PROCESS: ("ProcessStart", "ProcessStop", "ProcessRundown"),
}

TABLES: Mapping[str, Mapping[str | None, Needs]] = {
    "DeviceProcessEvents": {
        None: {},
        "ProcessCreated": {},  # the tracking events are the rows
    },
    "DeviceImageLoadEvents": {
        # Classic Image in the system-logger session we run anyway; DCStart rundown names the images of
        # processes that were already running.
        None: {"Image": ("Load", "UnLoad", "DCStart")},
        "ImageLoaded": {},
    },
    "DeviceRegistryEvents": {
        # KeyObject → path from Create/Open, evicted on Close (peers-and-etw-facts §F3).
        None: {KERNEL_REGISTRY: ("CreateKey", "OpenKey", "CloseKey")},
        "RegistryKeyCreated": {},
        "RegistryKeyDeleted": {KERNEL_REGISTRY: ("DeleteKey",)},
        "RegistryValueSet": {KERNEL_REGISTRY: ("SetValueKey",)},
        "RegistryValueDeleted": {KERNEL_REGISTRY: ("DeleteValueKey",)},
    },
    "DeviceFileEvents": {
        # FileObject → name from Create/CreateNewFile, FileKey → name from NameCreate; Close and
        # NameDelete evict (§F4).
        None: {KERNEL_FILE: ("NameCreate", "NameDelete", "Create", "CreateNewFile", "Close")},
        "FileCreated": {},
        "FileModified": {KERNEL_FILE: ("Write",)},
        # Cleanup: the delete of a file opened FILE_DELETE_ON_CLOSE.
        "FileDeleted": {KERNEL_FILE: ("DeletePath", "SetDelete", "Cleanup")},
        "FileRenamed": {KERNEL_FILE: ("RenamePath",)},
    },
    "DeviceEvents": {
        # Win32k API audit events (keyword AuditApiCalls 0x400); whether an unprotected consumer gets them
        # is probed at start (docs/live-tracing.md).
        None: {},
        "GetAsyncKeyStateApiCall": {WIN32K: ("GetAsyncKeyState",)},
        "SetWindowsHookExApiCall": {WIN32K: ("SetWindowsHookEx",)},
        "RegisterRawInputDevicesApiCall": {WIN32K: ("RegisterRawInputDevices",)},
    },
}

CLASSIC_FALLBACK: Mapping[str, Needs] = {
    "DeviceRegistryEvents": {
        "Registry": (
            "KCBCreate",
            "KCBRundownEnd",
            "KCBDelete",
            "Create",
            "Delete",
            "SetValue",
            "DeleteValue",
        ),
    },
    "DeviceFileEvents": {
        "FileIo": (
            "Name",
            "FileCreate",
            "FileRundown",
            "FileDelete",
            "Create",
            "Cleanup",
            "Close",
            "Write",
            "Delete",
            "DeletePath",
            "RenamePath",
        ),
    },
}

# Enable flags per classic class (names from providers/*.classic.yaml). FileIo: DISK_FILE_IO gives the
# name records and rundown and takes effect only with DISK_IO beside it (EVENT_TRACE_PROPERTIES docs);
# FILE_IO_INIT the operations; FILE_IO (completions) is left off.
CLASSIC_FLAGS: Mapping[str, tuple[str, ...]] = {
    "Process": ("PROCESS",),
    "Image": ("IMAGE_LOAD",),
    "Registry": ("REGISTRY",),
    "FileIo": ("DISK_IO", "DISK_FILE_IO", "FILE_IO_INIT"),
}

# Manifest providers that want their rundown (EVENT_CONTROL_CODE_CAPTURE_STATE) after enabling.
CAPTURE_STATE: frozenset[str] = frozenset({KERNEL_PROCESS})

# Kernel-Registry SetValueKey carries CapturedData only with this filter descriptor (CORRECTIONS §7).
CAPTURED_DATA_EVENTS: Mapping[str, str] = {KERNEL_REGISTRY: "SetValueKey"}
