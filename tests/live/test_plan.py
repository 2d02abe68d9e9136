"""Contract tests of the session plan (GUIDs, masks, event-id filters, names, classes) per rule set."""

from __future__ import annotations

from pathlib import Path

import pytest

from etwsensor.decode import load_providers
from etwsensor.normalize import Normalizer
from etwsensor.rules import RuleSet
from etwsensor.sources.live import needs
from etwsensor.sources.live.plan import (
    EVENT_FILTER_TYPE_EVENT_ID,
    EVENT_FILTER_TYPE_NONE,
    MAX_EVENT_FILTER_EVENT_ID_COUNT,
    SYSTEM_TRACE_GUID,
    TracePlan,
    build_plan,
    events_needed,
    plan_for_rules,
    tables_needed,
)

PROCESS_CLASS = "3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c"
IMAGE_CLASS = "2cb15d1d-5fc1-11d2-abe1-00a0c911f518"
REGISTRY_CLASS = "ae53722e-c863-11d2-8659-00c04fa321a1"
FILEIO_CLASS = "90cbdc39-4a3e-11d1-84f4-0000f80464e3"
KERNEL_PROCESS = "22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716"
KERNEL_FILE = "edd08927-9cc4-4e65-b970-c2560fb5c289"
KERNEL_REGISTRY = "70eb4f03-c1de-4f73-a051-33d13d5413bd"
EVENT_TRACING = "b675ec37-bdb6-4648-bc92-f3fdc74d3ca2"


def rules_plan(tmp_path: Path, **queries: str) -> TracePlan:
    for name, query in queries.items():
        (tmp_path / f"{name}.kql").write_text(f"// id: {name}\n{query}\n", encoding="utf-8")
    ruleset, failures = RuleSet.load([tmp_path], builtin=False)
    assert not failures
    return plan_for_rules(ruleset)


def providers_of(plan: TracePlan) -> dict[str, str]:
    return {p.name: p.guid for s in plan.sessions for p in s.providers}


def test_process_creation_only_enables_only_process_events(tmp_path: Path) -> None:
    plan = rules_plan(tmp_path, proc='DeviceProcessEvents | where ProcessCommandLine has "GetAsyncKeyState"')
    assert plan.tables == {"DeviceProcessEvents": frozenset({"ProcessCreated"})}
    system = plan.session("system-logger")
    assert system is not None and system.name == "etwsensor-kernel"
    assert system.enable_flags == ("PROCESS",) and system.flags_mask == 0x1
    (kernel,) = system.providers
    assert (kernel.name, kernel.guid) == ("SystemTraceProvider", SYSTEM_TRACE_GUID)
    assert [(c.name, c.guid, c.opcodes) for c in kernel.classes] == [("Process", PROCESS_CLASS, (1, 2, 3))]
    assert providers_of(plan) == {"SystemTraceProvider": SYSTEM_TRACE_GUID,
                                  "Microsoft-Windows-Kernel-Process": KERNEL_PROCESS,
                                  "Microsoft-Windows-Kernel-EventTracing": EVENT_TRACING}  # fmt: skip
    kp = plan.provider("Microsoft-Windows-Kernel-Process")
    assert kp is not None
    assert (kp.keywords, kp.event_ids, kp.capture_state) == (0x10, (1, 2, 15), True)  # ProcessRundown = 15
    assert [(f.type, f.event_ids) for f in kp.filters] == [(EVENT_FILTER_TYPE_EVENT_ID, (1, 2, 15))]


def test_no_file_rule_no_file_tracing_and_the_reverse(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    registry_only = rules_plan(tmp_path / "a", reg='DeviceRegistryEvents | where RegistryKey has "Run"')
    assert "Microsoft-Windows-Kernel-File" not in providers_of(registry_only)
    file_created = rules_plan(tmp_path / "b", f='DeviceFileEvents | where ActionType == "FileCreated"')
    assert "Microsoft-Windows-Kernel-Registry" not in providers_of(file_created)
    kf = file_created.provider("Microsoft-Windows-Kernel-File")
    assert kf is not None and kf.guid == KERNEL_FILE
    # NameCreate/NameDelete (FILENAME 0x10), Create (CREATE 0x80), Close (FILEIO 0x20),
    # CreateNewFile (0x1000);
    # no Write, DeletePath, RenamePath: the rule only matches FileCreated
    assert kf.event_ids == (10, 11, 12, 14, 30)
    assert kf.keywords == 0x10 | 0x20 | 0x80 | 0x1000


def test_every_file_action_adds_its_events(tmp_path: Path) -> None:
    plan = rules_plan(tmp_path, f="DeviceFileEvents | where FileName endswith '.txt'")
    kf = plan.provider("Microsoft-Windows-Kernel-File")
    assert kf is not None
    # + Cleanup 13, Write 16, SetDelete 18, DeletePath 26, RenamePath 27
    assert kf.event_ids == (10, 11, 12, 13, 14, 16, 18, 26, 27, 30)
    # FILENAME|FILEIO|CREATE|WRITE|DELETE_PATH|RENAME_SETLINK_PATH|CREATE_NEW_FILE
    assert kf.keywords == 0x1EB0
    assert plan.tables["DeviceFileEvents"] == {"FileCreated", "FileModified", "FileDeleted", "FileRenamed"}


def test_registry_value_rules_get_the_captured_data_descriptor(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    values = rules_plan(tmp_path / "a", v='DeviceRegistryEvents | where ActionType == "RegistryValueSet"')
    kr = values.provider("Microsoft-Windows-Kernel-Registry")
    assert kr is not None and kr.guid == KERNEL_REGISTRY
    assert kr.event_ids == (1, 2, 5, 13)  # CreateKey, OpenKey (names), SetValueKey, CloseKey (eviction)
    assert kr.keywords == 0x1000 | 0x2000 | 0x100 | 0x1
    assert [(f.type, f.value) for f in kr.filters] == [(EVENT_FILTER_TYPE_EVENT_ID, None),
                                                       (EVENT_FILTER_TYPE_NONE, 2)]  # fmt: skip
    deletes = rules_plan(tmp_path / "b", d='DeviceRegistryEvents | where ActionType == "RegistryKeyDeleted"')
    kr = deletes.provider("Microsoft-Windows-Kernel-Registry")
    assert kr is not None and kr.event_ids == (1, 2, 3, 13)
    assert all(f.type == EVENT_FILTER_TYPE_EVENT_ID for f in kr.filters)


def test_the_builtin_pack_plans_all_four_tables() -> None:
    ruleset, _ = RuleSet.load([], builtin=True)
    plan = plan_for_rules(ruleset, instance="4242")
    assert plan.session_names() == ("etwsensor-kernel-4242", "etwsensor-providers-4242")
    system = plan.session("system-logger")
    assert system is not None and system.enable_flags == ("PROCESS", "IMAGE_LOAD")
    assert system.flags_mask == 0x5
    assert [c.guid for c in system.providers[0].classes] == [PROCESS_CLASS, IMAGE_CLASS]
    kr = plan.provider("Microsoft-Windows-Kernel-Registry")
    assert kr is not None and kr.keywords == 0x7301  # the §F3 recipe for DeviceRegistryEvents
    watch = plan.provider("Microsoft-Windows-Kernel-EventTracing")
    assert watch is not None and watch.event_ids == (3, 11, 14, 15, 41)


def test_classic_fallback_adds_the_registry_and_fileio_classes() -> None:
    tables = {"DeviceRegistryEvents": ["RegistryValueSet"], "DeviceFileEvents": ["FileCreated"]}
    plan = build_plan(tables, classic_fallback=True)
    system = plan.session("system-logger")
    assert system is not None
    assert {c.guid for c in system.providers[0].classes} == {PROCESS_CLASS, REGISTRY_CLASS, FILEIO_CLASS}
    assert system.flags_mask == 0x1 | 0x20000 | 0x100 | 0x200 | 0x4000000
    # DISK_FILE_IO (file names) is ignored by the kernel without DISK_IO
    assert system.enable_flags.index("DISK_IO") < system.enable_flags.index("DISK_FILE_IO")


def test_no_tables_no_sessions() -> None:
    assert build_plan({}).sessions == ()


def test_the_json_is_the_shape_the_issue_gives(tmp_path: Path) -> None:
    plan = rules_plan(tmp_path, i='DeviceImageLoadEvents | where FileName =~ "user32.dll"')
    doc = plan.as_json()
    assert set(doc) == {"sessions"}
    for s in doc["sessions"]:
        assert set(s) == {"name", "kind", "enable_flags", "providers"}
        assert s["kind"] in ("system-logger", "manifest")
        for p in s["providers"]:
            assert {"name", "guid", "keywords", "event_ids", "filters", "classes"} <= set(p)
            assert p["keywords"].startswith("0x") and int(p["keywords"], 16) > 0
    system = doc["sessions"][0]
    assert system["enable_flags"] == ["PROCESS", "IMAGE_LOAD"]
    assert system["providers"][0]["classes"] == [{"name": "Process", "guid": PROCESS_CLASS},
                                                 {"name": "Image", "guid": IMAGE_CLASS}]  # fmt: skip


def test_planned_events_exist_in_providers_and_the_normalizer_consumes_them() -> None:
    every_action = {t: {a for a in acts if a} for t, acts in needs.TABLES.items()}
    wanted = events_needed(every_action, classic_fallback=True)
    n = Normalizer()
    handled = {**n.processes.handlers(), **n.images.handlers(), **n.registry.handlers(), **n.files.handlers(),
               **n.win32k.handlers()}  # fmt: skip
    by_name = {p.name: p for p in load_providers()}
    for provider, events in wanted.items():
        for event in events:
            assert by_name[provider].guid and any(e.name == event for e in by_name[provider].events), event
            assert (provider, event) in handled, f"{provider}/{event} is planned, the normalizer ignores it"


@pytest.mark.parametrize("table", sorted(needs.TABLES))
def test_id_lists_fit_the_kernel_filter(table: str) -> None:
    plan = build_plan({table: set(a for a in needs.TABLES[table] if a)})
    for s in plan.sessions:
        for p in s.providers:
            assert len(p.event_ids) <= MAX_EVENT_FILTER_EVENT_ID_COUNT


def test_tables_needed_never_narrows_without_an_actiontype_literal(tmp_path: Path) -> None:
    (tmp_path / "x.kql").write_text(
        '// id: x\nDeviceFileEvents | where ActionType != "FileModified" and FileName has "keylog"\n',
        encoding="utf-8",
    )
    ruleset, _ = RuleSet.load([tmp_path], builtin=False)
    assert tables_needed(ruleset)["DeviceFileEvents"] == {"FileCreated", "FileModified", "FileDeleted",
                                                          "FileRenamed"}  # fmt: skip


def test_logman_records_only_the_classes_the_tables_need() -> None:
    from etwsensor.sources.live.collect import logman_commands, wpr_profile

    process_only = build_plan({"DeviceProcessEvents": {"ProcessCreated"}})
    start = [line for line in logman_commands(process_only) if line.startswith("logman start")]
    assert start == ['logman start "NT Kernel Logger" -p "Windows Kernel Trace" (process) -bs 1024 -nb 64 128'
                     ' -o "%CD%\\etwsensor.etl" -ets']  # fmt: skip
    assert "Microsoft-Windows-Kernel-File" not in wpr_profile(process_only)
    assert "edd08927" not in wpr_profile(process_only)
    assert logman_commands(build_plan({})) == []


def test_win32k_is_enabled_only_when_a_rule_reads_device_events(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    no_device_events = rules_plan(tmp_path / "a", proc='DeviceProcessEvents | where FileName == "x.exe"')
    assert "Microsoft-Windows-Win32k" not in providers_of(no_device_events)
    hooks = rules_plan(tmp_path / "b", h='DeviceEvents | where ActionType == "SetWindowsHookExApiCall"')
    w = hooks.provider("Microsoft-Windows-Win32k")
    assert w is not None and w.guid == "8c416c79-d49b-4f01-a467-e56d3aa8234c"
    assert (w.keywords, w.event_ids) == (0x400, (1002,))  # AuditApiCalls, only the hook event
    assert [(f.type, f.event_ids) for f in w.filters] == [(EVENT_FILTER_TYPE_EVENT_ID, (1002,))]
    assert "Microsoft-Windows-Kernel-Process" in providers_of(hooks)  # Initiating* need the process table


def test_the_builtin_pack_enables_the_three_win32k_audit_events() -> None:
    ruleset, _ = RuleSet.load([], builtin=True)
    w = plan_for_rules(ruleset).provider("Microsoft-Windows-Win32k")
    assert w is not None and (w.keywords, w.event_ids) == (0x400, (1001, 1002, 1003))
