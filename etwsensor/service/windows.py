"""The Windows service itself, on pywin32's service framework (Windows only; imported by ``service run``).

Why pywin32: it is the maintained binding of the Service Control Manager and the Event Log for CPython
(ServiceFramework runs the control dispatcher and reports status transitions; servicemanager writes
the Event Log with the message DLL it ships), used by long-running agents in production; doing the same
with ctypes would re-implement its dispatcher thread and status bookkeeping. The service's binary is this
interpreter (``python.exe -m etwsensor service run --config F``), not pythonservice.exe, so it runs
from any virtual environment.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import servicemanager
import win32service
import win32serviceutil

from etwsensor.service.runner import ServiceControl, run_service
from etwsensor.service.scm import RELOAD_CONTROL, SERVICE_NAME, log_dir

_config: Path | None = None  # set by ``host`` before the dispatcher instantiates the service


class EventLogHandler(logging.Handler):
    """etwsensor's log lines of WARNING and above also go to the Windows Event Log (source etwsensor)."""

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            servicemanager.LogErrorMsg(text)
        elif record.levelno >= logging.WARNING:
            servicemanager.LogWarningMsg(text)
        else:
            servicemanager.LogInfoMsg(text)


class EtwsensorService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
    _svc_name_ = SERVICE_NAME
    _svc_display_name_ = "etwsensor ETW sensor"
    _svc_description_ = "Windows ETW → Defender for Endpoint rows → KQL detections → alerts."

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.control = ServiceControl()

    def GetAcceptedControls(self) -> int:
        accepted = int(super().GetAcceptedControls())
        return accepted | int(win32service.SERVICE_ACCEPT_SHUTDOWN | win32service.SERVICE_ACCEPT_PARAMCHANGE)

    def SvcStop(self) -> None:
        self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, waitHint=30_000)
        self.control.stop()

    def SvcShutdown(self) -> None:
        self.SvcStop()

    def SvcOther(self, control: int) -> None:
        if control in (win32service.SERVICE_CONTROL_PARAMCHANGE, RELOAD_CONTROL):
            self.control.reload()

    def SvcDoRun(self) -> None:
        from etwsensor.sources.live.enrich import WindowsHostApi
        from etwsensor.sources.live.lifecycle import EtwSessions

        assert _config is not None
        servicemanager.LogInfoMsg(f"etwsensor service starting with {_config}")
        code = run_service(_config, self.control, WindowsHostApi(), EtwSessions)
        servicemanager.LogInfoMsg(f"etwsensor service stopped (exit code {code})")
        if code not in (0, 4) and not self.control.stop_event.is_set():
            # Failed on its own: a service-specific exit code lets the SCM's failure actions restart it.
            self.ReportServiceStatus(win32service.SERVICE_STOPPED, win32ExitCode=1066,
                                     svcExitCode=code)  # fmt: skip


def host(config: Path) -> None:
    """Run as the service process (the SCM started ``python -m etwsensor service run``)."""
    from etwsensor.logging import configure_file

    global _config
    _config = config
    directory = log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    configure_file(str(directory / "etwsensor-service.log"))
    events = EventLogHandler(level=logging.WARNING)
    logging.getLogger("etwsensor").addHandler(events)
    servicemanager.Initialize(SERVICE_NAME, servicemanager.__file__)
    servicemanager.PrepareToHostSingle(EtwsensorService)
    threading.current_thread().name = "etwsensor-service"
    try:
        servicemanager.StartServiceCtrlDispatcher()
    except Exception as exc:  # not started by the SCM (ERROR_FAILED_SERVICE_CONTROLLER_CONNECT)
        print(f"error: `service run` is what the service manager starts: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
