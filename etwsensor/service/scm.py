"""Registering etwsensor with the Service Control Manager: what the service is (its command line, its
recovery policy, where it logs) as plain data, and the pywin32 calls that apply it (Windows only).

Recovery: the SCM restarts a failed service after 5 s, then 30 s, then every 2 min, and forgets failures after
a day without one; "failure" includes a stop with a non-zero service exit code, not only a crash.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Final

SERVICE_NAME: Final = "etwsensor"
RELOAD_CONTROL: Final = 128  # a user-defined control code (128-255): reload rules and config now
RESTART_DELAYS_MS: Final = (5_000, 30_000, 120_000)
RESET_FAILURES_AFTER_S: Final = 86_400

SERVICE_STATES: Final[dict[int, str]] = {
    1: "stopped", 2: "start pending", 3: "stop pending", 4: "running",
    5: "continue pending", 6: "pause pending", 7: "paused",
}  # fmt: skip


class ServiceError(RuntimeError):
    """A service operation that failed; the message is one line for the user."""


def log_dir() -> Path:
    """%ProgramData%\\etwsensor\\logs: readable by administrators, kept across upgrades."""
    return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "etwsensor" / "logs"


def service_command_line(python: str, config: Path) -> tuple[str, str]:
    """(binary, arguments) the SCM runs: this interpreter hosting the service, quoted for CreateProcess."""
    return python, subprocess.list2cmdline(["-m", "etwsensor", "service", "run", "--config", str(config)])


def failure_actions() -> dict[str, object]:
    """SERVICE_FAILURE_ACTIONS as pywin32's ChangeServiceConfig2 takes it (SC_ACTION_RESTART is 1)."""
    return {
        "ResetPeriod": RESET_FAILURES_AFTER_S,
        "RebootMsg": None,
        "Command": None,
        "Actions": [(1, delay) for delay in RESTART_DELAYS_MS],
    }


def install(config: Path, python: str) -> None:
    import servicemanager
    import win32evtlogutil
    import win32service
    import win32serviceutil

    binary, args = service_command_line(python, config)
    try:
        win32serviceutil.InstallService(
            None, SERVICE_NAME, "etwsensor ETW sensor",
            startType=win32service.SERVICE_AUTO_START, exeName=binary, exeArgs=args,
            description="Windows ETW → Defender for Endpoint rows → KQL detections → alerts.",
        )  # fmt: skip
        scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_ALL_ACCESS)
        try:
            handle = win32service.OpenService(scm, SERVICE_NAME, win32service.SERVICE_ALL_ACCESS)
            try:
                win32service.ChangeServiceConfig2(
                    handle, win32service.SERVICE_CONFIG_FAILURE_ACTIONS, failure_actions()
                )
                flag = win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG  # restart on a non-zero exit too
                win32service.ChangeServiceConfig2(handle, flag, True)
            finally:
                win32service.CloseServiceHandle(handle)
        finally:
            win32service.CloseServiceHandle(scm)
        win32evtlogutil.AddSourceToRegistry(SERVICE_NAME, servicemanager.__file__, "Application")
    except Exception as exc:  # pywintypes.error: (winerror, function, message)
        raise ServiceError(f"install: {_reason(exc)}") from exc


def uninstall() -> None:
    import win32evtlogutil
    import win32serviceutil

    try:
        win32serviceutil.RemoveService(SERVICE_NAME)
        win32evtlogutil.RemoveSourceFromRegistry(SERVICE_NAME, "Application")
    except Exception as exc:
        raise ServiceError(f"uninstall: {_reason(exc)}") from exc


def start() -> None:
    import win32serviceutil

    try:
        win32serviceutil.StartService(SERVICE_NAME)
        win32serviceutil.WaitForServiceStatus(SERVICE_NAME, 4, 60)  # SERVICE_RUNNING
    except Exception as exc:
        raise ServiceError(f"start: {_reason(exc)}") from exc


def stop() -> None:
    import win32serviceutil

    try:
        win32serviceutil.StopServiceWithDeps(SERVICE_NAME, waitSecs=60)
    except Exception as exc:
        raise ServiceError(f"stop: {_reason(exc)}") from exc


def reload() -> None:
    import win32serviceutil

    try:
        win32serviceutil.ControlService(SERVICE_NAME, RELOAD_CONTROL)
    except Exception as exc:
        raise ServiceError(f"reload: {_reason(exc)}") from exc


def status() -> str:
    import win32serviceutil

    try:
        state = win32serviceutil.QueryServiceStatus(SERVICE_NAME)[1]
    except Exception as exc:
        raise ServiceError(f"status: {_reason(exc)}") from exc
    return SERVICE_STATES.get(int(state), f"state {state}")


def _reason(exc: Exception) -> str:
    args: tuple[object, ...] = tuple(getattr(exc, "args", ()))
    if len(args) == 3 and isinstance(args[0], int):  # pywintypes.error
        return f"{args[1]}: {args[2]} (error {args[0]})"
    return str(exc)
