"""The foundation commands as a user runs them: `etwsensor --version/providers/inspect/convert`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from etwsensor import __version__
from etwsensor.sources.recording import RecordingReader, write_recording

sys.path.insert(0, str(Path(__file__).parents[1] / "sources"))
from test_recording import HEADER, events


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etwsensor", *args], capture_output=True, text=True, cwd=cwd, check=False
    )


def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"etwsensor {__version__}"


def test_providers_lists_every_provider() -> None:
    r = run("providers", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    names = {p["name"]: p for p in doc["providers"]}
    assert names["Process"]["kind"] == "classic"
    assert names["Microsoft-Windows-Kernel-File"]["guid"] == "edd08927-9cc4-4e65-b970-c2560fb5c289"
    assert {"key": 1, "name": "ProcessStart", "versions": [0, 1, 2, 3, 4, 5]} in names[
        "Microsoft-Windows-Kernel-Process"
    ]["events"]
    text = run("providers").stdout
    assert "{3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c}" in text and "1 Start" in text


def test_providers_show() -> None:
    r = run("providers", "show", "Microsoft-Windows-Kernel-Registry")
    assert r.returncode == 0
    assert "id 5 SetValueKey" in r.stdout
    assert "CapturedData:Binary[CapturedDataSize]" in r.stdout
    by_guid = run("providers", "show", "{3D6FA8D0-FE05-11D0-9DDA-00C04FD7BA7C}", "--json")
    assert json.loads(by_guid.stdout)["name"] == "Process"
    missing = run("providers", "show", "Nope")
    assert missing.returncode == 2 and "no provider 'Nope'" in missing.stderr and missing.stdout == ""


def test_inspect_json_counts_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, HEADER, events())
    r = run("inspect", str(path), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # exactly one JSON object
    assert (doc["events"], doc["decode_errors"], doc["undecoded"], doc["other"]) == (4, 0, 1, 0)
    start = {(e["provider"], e["opcode"], e["version"]): e for e in doc["by_event"]}
    assert start[("Process", 1, 4)] == {
        "provider": "Process",
        "guid": "3d6fa8d0-fe05-11d0-9dda-00c04fd7ba7c",
        "id": None,
        "opcode": 1,
        "name": "Start",
        "version": 4,
        "count": 1,
        "decode_errors": 0,
        "undecoded": 0,
    }


def test_inspect_of_a_damaged_recording_still_prints_one_object_and_exits_3(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_recording(path, HEADER, events())
    with path.open("a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    r = run("inspect", str(path), "--json")
    assert r.returncode == 3
    assert json.loads(r.stdout)["events"] == 4
    assert f"{path}: line 6" in r.stderr


def test_convert_round_trip_plain_to_zstd(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl.zst"
    write_recording(src, HEADER, events())
    r = run("convert", str(src), "-o", str(dst))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # convert promises a file, not output
    assert "wrote 4 events" in r.stderr
    back = RecordingReader(dst)
    assert back.header == HEADER and list(back.events()) == events()


def test_unreadable_input_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.jsonl"
    bogus.write_text("hello\n")
    r = run("inspect", str(bogus))
    assert r.returncode == 2 and "bogus.jsonl: line 1 is not an etwsensor recording header" in r.stderr
    r = run("convert", str(bogus), "-o", str(tmp_path / "x.txt"))
    assert r.returncode == 2 and "must end in .jsonl or .jsonl.zst" in r.stderr


ETL = Path(__file__).parents[1] / "data" / "etl" / "perfview_net.4.5.2.x64.etl"


def test_inspect_the_real_etl() -> None:
    r = run("inspect", str(ETL), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["events"], doc["decode_errors"], doc["undecoded"]) == (179474, 0, 0)
    assert doc["other"] == 179474 - 7338  # CLR, stack walks, samples, disk I/O: not decoded
    clr = [e for e in doc["by_event"] if e["guid"] == "e13c0d23-ccbc-4e12-931b-d9cc2eee27e4"]
    assert clr and all(e["name"] == "" and e["count"] > 0 for e in clr)


def test_a_cut_etl_keeps_what_came_before_and_exits_3(tmp_path: Path) -> None:
    cut = tmp_path / "cut.etl"
    cut.write_bytes(ETL.read_bytes()[:2_000_000])
    r = run("inspect", str(cut), "--json")
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    assert 0 < doc["events"] < 179474
    assert re.search(rf"damaged: {re.escape(str(cut))}: offset 0x[0-9a-f]+", r.stderr)
    out = tmp_path / "cut.jsonl.zst"
    c = run("convert", str(cut), "-o", str(out))
    assert c.returncode == 3 and out.exists()
    assert 0 < len(list(RecordingReader(out).events())) <= 7338
