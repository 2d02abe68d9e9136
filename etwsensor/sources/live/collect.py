"""``trace --plan --logman``: the plan as built-in Windows commands, for hosts where Python may not run.

Three pieces (docs/incident-response.md explains them):
* a WPR profile (.wprp) with the same kernel flags and providers; ``wpr -stop`` merges the trace and
  adds the SystemConfigEx VolumeMapping records that map device paths to drive letters;
* the logman equivalent: one NT Kernel Logger session with the classic classes (no merge, so no volume
  mapping; no event-id filters, so the trace is larger);
* a PowerShell one-liner that saves the QueryDosDevice device map for ``replay --device-map``.
"""

from __future__ import annotations

from collections.abc import Iterable
from xml.sax.saxutils import quoteattr

from etwsensor.sources.live.plan import KERNEL_LOGGER_NAME, ProviderPlan, TracePlan, build_plan

# Names of the kernel enable flags in WPR profiles (SystemKeyword) and for logman's "Windows Kernel Trace"
# provider (`logman query providers "Windows Kernel Trace"`).
WPR_KEYWORDS: dict[str, str] = {
    "PROCESS": "ProcessThread",
    "IMAGE_LOAD": "Loader",
    "REGISTRY": "Registry",
    "DISK_IO": "DiskIO",
    "DISK_FILE_IO": "Filename",
    "FILE_IO": "FileIO",
    "FILE_IO_INIT": "FileIOInit",
}
LOGMAN_KERNEL_FLAGS: dict[str, str] = {
    "PROCESS": "process",
    "IMAGE_LOAD": "img",
    "REGISTRY": "registry",
    "DISK_IO": "disk",
    "DISK_FILE_IO": "file",
    "FILE_IO": "fileiocompletion",
    "FILE_IO_INIT": "fileio",
}
# The tamper watch only matters to a running sensor, not to a capture.
_LIVE_ONLY = frozenset({"Microsoft-Windows-Kernel-EventTracing"})

DEVICE_MAP_ONE_LINER = (
    '$k=Add-Type -PassThru -Name Q -Namespace E -MemberDefinition \'[DllImport("kernel32.dll",'
    "CharSet=CharSet.Unicode)] public static extern uint QueryDosDevice(string d,"
    " System.Text.StringBuilder t, uint n);'; $m=@{}; foreach($d in [IO.DriveInfo]::GetDrives())"
    "{ $n=$d.Name.Substring(0,2); $b=New-Object Text.StringBuilder 1024;"
    " if($k::QueryDosDevice($n,$b,1024)){ $m[$n]=$b.ToString() } };"
    ' [IO.File]::WriteAllText("$PWD\\devmap.json", ($m | ConvertTo-Json))'
)


def _captured(providers: Iterable[ProviderPlan]) -> list[ProviderPlan]:
    return [p for p in providers if p.name not in _LIVE_ONLY]


def wpr_profile(plan: TracePlan, name: str = "etwsensor") -> str:
    """A WPR recording profile (verbose, file mode) with the plan's kernel flags and providers."""
    lines = ['<?xml version="1.0" encoding="utf-8"?>',
             '<WindowsPerformanceRecorder Version="1.0" Author="etwsensor">', "  <Profiles>"]  # fmt: skip
    collectors: list[str] = []
    refs: list[str] = []
    system = plan.session("system-logger")
    if system is not None:
        lines.append('    <SystemCollector Id="etwsensor-system" Name="NT Kernel Logger">')
        lines.append('      <BufferSize Value="1024"/><Buffers Value="64"/>')
        lines.append("    </SystemCollector>")
        lines.append('    <SystemProvider Id="etwsensor-kernel">')
        lines.append("      <Keywords>")
        for flag in system.enable_flags:
            lines.append(f'        <Keyword Value="{WPR_KEYWORDS[flag]}"/>')
        lines.append("      </Keywords>")
        lines.append("    </SystemProvider>")
        collectors.append('      <SystemCollectorId Value="etwsensor-system">'
                          '<SystemProviderId Value="etwsensor-kernel"/></SystemCollectorId>')  # fmt: skip
    manifest = plan.session("manifest")
    if manifest is not None:
        lines.append('    <EventCollector Id="etwsensor-events" Name="etwsensor">')
        lines.append('      <BufferSize Value="1024"/><Buffers Value="64"/>')
        lines.append("    </EventCollector>")
        for p in _captured(manifest.providers):
            pid = "p-" + p.name.rsplit("-", 1)[-1].lower()
            lines.append(f'    <EventProvider Id="{pid}" Name={quoteattr(p.guid)} Level="{p.level}">')
            lines.append(f'      <Keywords><Keyword Value="0x{p.keywords:x}"/></Keywords>')
            if p.capture_state:  # rundown: processes already running when the trace starts
                keyword = f'<Keyword Value="0x{p.keywords:x}"/>'
                lines.append(f"      <CaptureStateOnStart>{keyword}</CaptureStateOnStart>")
            if p.event_ids:
                lines.append('      <EventFilters FilterIn="true">')
                lines.extend(f'        <EventId Value="{i}"/>' for i in p.event_ids)
                lines.append("      </EventFilters>")
            lines.append("    </EventProvider>")
            refs.append(f'<EventProviderId Value="{pid}"/>')
        collectors.append('      <EventCollectorId Value="etwsensor-events"><EventProviders>'
                          + "".join(refs) + "</EventProviders></EventCollectorId>")  # fmt: skip
    lines.append(f'    <Profile Id="{name}.Verbose.File" Name="{name}" Description="etwsensor trace plan"'
                 ' LoggingMode="File" DetailLevel="Verbose">')  # fmt: skip
    lines.append("      <Collectors>")
    lines.extend("  " + c for c in collectors)
    lines.append("      </Collectors>")
    lines.append("    </Profile>")
    lines.append("  </Profiles>")
    lines.append("</WindowsPerformanceRecorder>")
    return "\n".join(lines) + "\n"


def logman_commands(plan: TracePlan, out_dir: str = "%CD%") -> list[str]:
    """cmd.exe lines: one NT Kernel Logger session into one .etl, then its stop.

    One session, so one file that replays as one stream. Two logman sessions would give two files that
    replay as two streams, and the file and registry rows of the second would not know the processes of
    the first. So logman records the classic classes for every planned table: Process and Image, and
    Registry and FileIo instead of the manifest providers. These are unfiltered and larger, but the
    normalizer makes the same kinds of rows from them.
    """
    if not plan.tables:
        return []
    classic = build_plan(plan.tables, classic_fallback=True).session("system-logger")
    if classic is None:
        return []
    flags = ",".join(dict.fromkeys(LOGMAN_KERNEL_FLAGS[f] for f in classic.enable_flags))
    classes = ", ".join(c.name for p in classic.providers for c in p.classes)
    return [
        f"REM kernel classes {classes} (enable flags 0x{classic.flags_mask:x})",
        f'logman start "{KERNEL_LOGGER_NAME}" -p "Windows Kernel Trace" ({flags})'
        f' -bs 1024 -nb 64 128 -o "{out_dir}\\etwsensor.etl" -ets',
        "REM ... reproduce or wait for the activity, then:",
        f'logman stop "{KERNEL_LOGGER_NAME}" -ets',
    ]


def render(plan: TracePlan) -> str:
    """Everything ``trace --plan --logman`` prints."""
    parts = [
        "REM === 1. Preferred: Windows Performance Recorder (merges VolumeMapping records into the .etl)",
        "REM Save the profile below as etwsensor.wprp, then in an elevated prompt:",
        "wpr -start etwsensor.wprp -filemode",
        "REM ... reproduce or wait for the activity, then:",
        "wpr -stop etwsensor.etl",
        "",
        wpr_profile(plan).rstrip("\n"),
        "",
        "REM Neither WPR nor logman can set Kernel-Registry's captured-data filter: RegistryValueData stays",
        "REM empty in these captures (live `etwsensor trace` sets it).",
        "",
        "REM === 2. Without WPR: logman, classic kernel classes (no volume mapping: save the device map too)",
        *logman_commands(plan),
        "",
        "REM === 3. Device map for replay --device-map (PowerShell, same host):",
        DEVICE_MAP_ONE_LINER,
        "",
        "REM === Elsewhere: etwsensor replay etwsensor.etl [--device-map devmap.json]",
    ]
    return "\n".join(parts) + "\n"
