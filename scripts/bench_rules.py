"""Rule engine benchmark: rows/s and compile times (issue 4 §6). A dev tool: it reads ../shared.

    python scripts/bench_rules.py [--corpus DIR] [--rows N] [--json]

Measures, in-process and single-threaded for evaluation:
* rows/s through ``RuleSet.evaluate`` with the built-in pack and with every query of the Sigma corpus,
  the latter also with the prefilter's per-column memo off (every value new: the worst case);
* compile time of the corpus cold (empty cache dir; the parse fans out to worker processes) and warm
  (compiled-IR cache filled).
Rows are synthetic but realistic: a mix of the four tables with Windows paths, command lines and
registry keys, a few of which match (a keylogger user32 load, a Get-Keystrokes command line).
The lead folds ``run()`` into scripts/bench.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from etwsensor.rules import RuleSet, ruleset

SHARED = Path(__file__).resolve().parents[2] / "shared"  # beside the checkout
DEFAULT_CORPUS = SHARED / "data" / "kql" / "sigma-converted-microsoft-xdr"

_EXES = [
    "svchost.exe",
    "chrome.exe",
    "explorer.exe",
    "powershell.exe",
    "cmd.exe",
    "Teams.exe",
    "rundll32.exe",
    "conhost.exe",
    "msedge.exe",
    "python.exe",
    "kl.exe",
    "code.exe",
    "dllhost.exe",
    "wmiprvse.exe",
]
_DIRS = [
    r"C:\Windows\System32",
    r"C:\Program Files\Google\Chrome\Application",
    r"C:\Windows",
    r"C:\Users\bob\AppData\Local\Temp",
    r"C:\Users\bob\AppData\Local\Microsoft\Teams\current",
    r"C:\Program Files (x86)\Microsoft\Edge\Application",
    r"C:\ProgramData\App",
]
# A process loads dozens of DLLs and user32.dll is one of them: keep it about that rare.
_DLLS = [
    "ntdll.dll",
    "kernel32.dll",
    "KernelBase.dll",
    "user32.dll",
    "gdi32.dll",
    "gdi32full.dll",
    "combase.dll",
    "ole32.dll",
    "oleaut32.dll",
    "advapi32.dll",
    "sechost.dll",
    "rpcrt4.dll",
    "ws2_32.dll",
    "crypt32.dll",
    "bcrypt.dll",
    "bcryptprimitives.dll",
    "msvcrt.dll",
    "ucrtbase.dll",
    "msvcp_win.dll",
    "win32u.dll",
    "imm32.dll",
    "shell32.dll",
    "shlwapi.dll",
    "SHCore.dll",
    "windows.storage.dll",
    "profapi.dll",
    "kernel.appcore.dll",
    "uxtheme.dll",
    "dwmapi.dll",
    "clbcatq.dll",
    "wintrust.dll",
    "msasn1.dll",
    "cryptbase.dll",
    "sspicli.dll",
    "version.dll",
    "winmm.dll",
    "iphlpapi.dll",
    "dnsapi.dll",
    "nsi.dll",
    "mswsock.dll",
    "clr.dll",
    "amsi.dll",
]
_CMDS = [
    "",
    "--type=renderer --lang=en-US --field-trial-handle=1234",
    "-k netsvcs -p -s Schedule",
    "/c whoami /all",
    "-NoProfile -Command Get-ChildItem C:\\",
    "/c copy a.txt b.txt",
    "-ExecutionPolicy Bypass -File C:\\Users\\bob\\x.ps1",
    "-c Get-Keystrokes -LogPath k.txt",
]
_KEYS = [
    r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows\CurrentVersion\Run",
    r"HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\bam\State\UserSettings",
    r"HKEY_CURRENT_USER\S-1-5-21-1-2-3-1001\Software\Microsoft\Windows\CurrentVersion\Explorer",
    r"HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\Tcpip\Parameters",
]


def synthetic_rows(n: int, seed: int = 1) -> list[tuple[str, dict[str, Any]]]:
    rnd = random.Random(seed)
    t0 = datetime(2026, 4, 16, tzinfo=UTC)
    rows: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        exe, folder = rnd.choice(_EXES), rnd.choice(_DIRS)
        common: dict[str, Any] = {
            "Timestamp": t0 + timedelta(milliseconds=i),
            "DeviceName": "pc1.lab.local",
            "InitiatingProcessFileName": exe,
            "InitiatingProcessFolderPath": f"{folder}\\{exe}",
            "InitiatingProcessCommandLine": f'"{exe}" {rnd.choice(_CMDS)}',
            "InitiatingProcessAccountName": "bob",
            "InitiatingProcessId": rnd.randint(4, 60000),
            "ReportId": i,
        }
        kind = rnd.random()
        if kind < 0.45:
            dll = rnd.choice(_DLLS)
            rows.append(
                (
                    "DeviceImageLoadEvents",
                    dict(
                        common,
                        ActionType="ImageLoaded",
                        FileName=dll,
                        FolderPath=rf"C:\Windows\System32\{dll}",
                    ),
                )
            )
        elif kind < 0.7:
            name = rnd.choice(["log.txt", "a.tmp", "cache_0001", "report.docx", "x.ps1"])
            rows.append(
                (
                    "DeviceFileEvents",
                    dict(
                        common,
                        ActionType="FileCreated",
                        FileName=name,
                        FolderPath=f"{rnd.choice(_DIRS)}\\{name}",
                    ),
                )
            )
        elif kind < 0.9:
            rows.append(
                (
                    "DeviceRegistryEvents",
                    dict(
                        common,
                        ActionType="RegistryValueSet",
                        RegistryKey=rnd.choice(_KEYS),
                        RegistryValueName="Start",
                        RegistryValueData=str(rnd.randint(0, 4)),
                    ),
                )
            )
        else:
            child = rnd.choice(_EXES)
            rows.append(
                (
                    "DeviceProcessEvents",
                    dict(
                        common,
                        ActionType="ProcessCreated",
                        FileName=child,
                        FolderPath=f"{rnd.choice(_DIRS)}\\{child}",
                        ProcessCommandLine=f"{child} {rnd.choice(_CMDS)}",
                        AccountName="bob",
                    ),
                )
            )
    return rows


def rows_per_second(
    rs: RuleSet, rows: list[tuple[str, dict[str, Any]]], repeats: int = 3
) -> tuple[float, int]:
    """Best of ``repeats`` passes over ``rows`` (a shared machine only ever makes a pass slower)."""
    now = rows[-1][1]["Timestamp"]
    evaluate = rs.evaluate
    best = 0.0
    matches = 0
    for _ in range(repeats):
        matches = 0
        start = time.perf_counter()
        for table, row in rows:
            matches += len(evaluate(table, row, now))
        best = max(best, len(rows) / (time.perf_counter() - start))
    return best, matches


def calibration_ns() -> float:
    """ns per ``dict.get`` + ``str.lower`` of a 40-character path: how fast this machine is right now
    (about 60-90 ns on an idle modern x86 core; a busy shared machine is several times slower)."""
    row = {"FolderPath": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0"}
    get = row.get
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(200_000):
            get("FolderPath", "").lower()
        best = min(best, (time.perf_counter() - start) / 200_000 * 1e9)
    return best


def run(corpus: Path = DEFAULT_CORPUS, n_rows: int = 20000) -> dict[str, Any]:
    rows = synthetic_rows(n_rows)
    result: dict[str, Any] = {"rows": n_rows, "calibration_ns_get_lower": calibration_ns()}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ETWSENSOR_CACHE_DIR"] = cache
        builtin, _ = RuleSet.load([], builtin=True)
        result["builtin_rules"] = len(builtin.rules)
        result["builtin_rows_per_s"], result["builtin_matches"] = rows_per_second(builtin, rows)
        if corpus.is_dir():
            t = time.perf_counter()
            cold, failures = RuleSet.load([corpus], builtin=False)
            result["corpus_compile_cold_s"] = time.perf_counter() - t
            t = time.perf_counter()
            warm, _ = RuleSet.load([corpus], builtin=False)
            result["corpus_compile_warm_s"] = time.perf_counter() - t
            result["corpus_rules"] = len(warm.rules)
            result["corpus_failed"] = len(failures)
            result["corpus_rows_per_s"], result["corpus_matches"] = rows_per_second(warm, rows)
            # The worst case: as if every column value were new (the prefilter's memo never hits).
            memo_max_len = ruleset._MEMO_MAX_LEN
            ruleset._MEMO_MAX_LEN = -1
            for dispatch in warm._dispatch.values():
                for index in dispatch.columns:
                    index.memo.clear()
            try:
                result["corpus_rows_per_s_no_memo"], _ = rows_per_second(warm, rows)
            finally:
                ruleset._MEMO_MAX_LEN = memo_max_len
            result["corpus_eval_errors"] = sum(warm.errors.values())
            del cold
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(args.corpus, args.rows)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:28} {v:,.2f}" if isinstance(v, float) else f"{k:28} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
