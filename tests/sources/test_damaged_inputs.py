"""Damaged inputs: every reproducer is reported as damage with its line or record, exits 3, never a
traceback; the LZ77 bomb stays within its buffer; corrupt zstd frames are skipped to the next frame;
an interrupted convert leaves nothing that reads as whole; lone surrogates are U+FFFD everywhere."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
import zstandard

from etwsensor import exitcodes
from etwsensor.sources import open_source
from etwsensor.sources.etl_xpress import decompress_python
from etwsensor.sources.recording import RecordingReader, write_recording

ROOT = Path(__file__).resolve().parents[2]
REPRO = ROOT / "tests" / "data" / "repro"
DEMO = ROOT / "examples" / "demo.jsonl.zst"


def etwsensor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etwsensor", *args], capture_output=True, text=True,
                          check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("rec_deep.jsonl", r"line 2: .*nested too deeply"),
        ("rec_provider_dict_2nd.jsonl", r"line 3: not a valid event: guid and provider must be strings"),
        ("rec_unhashable.jsonl", r"line \d+: not a valid event"),
        ("rec_provider_list.jsonl", r"line 2: not a valid event"),
        ("rec_guid_list.jsonl", r"line 2: not a valid event"),
        ("rows_badutf8.ndjson", r"line 1: not UTF-8"),
        ("rows_deep.ndjson", r"line 1: nested too deeply"),
        ("rows_corrupt.ndjson.zst", r"line \d+: "),
        ("rec_corrupt.jsonl.zst", r"line \d+: not a valid event"),
        ("demo_corrupt.jsonl.zst", r"after line \d+: corrupt zstd frame"),
        ("corrupt_mid.jsonl.zst", r"after line \d+: corrupt zstd frame .* resumed at the next frame"),
        ("lz77_bomb.etl", r"offset 0x"),
    ],
)
def test_every_reproducer_is_damage_with_its_place_and_exit_3(name: str, where: str) -> None:
    r = etwsensor("replay", str(REPRO / name))
    assert r.returncode == exitcodes.DAMAGED_INPUT, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    damage = [line for line in r.stderr.splitlines() if line.startswith("damaged:")]
    assert damage and any(re.search(where, line) for line in damage), damage


def test_corrupt_frames_are_skipped_to_the_next_one() -> None:
    mid = RecordingReader(REPRO / "corrupt_mid.jsonl.zst")
    assert sum(1 for _ in mid.events()) > 1000  # before: 0 (everything after the bad frame lost)
    small = RecordingReader(REPRO / "demo_corrupt.jsonl.zst")  # before: "line 1 is not a header"
    assert small.header.host.name and sum(1 for _ in small.events()) > 0
    assert any("corrupt zstd frame" in str(d) for d in small.damage)


def test_recordings_are_written_in_frames_and_read_past_a_damaged_one(tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl.zst"
    r = etwsensor("convert", str(DEMO), "-o", str(out))
    assert r.returncode == 0, r.stderr
    data = bytearray(out.read_bytes())
    frames = [m.start() for m in re.finditer(re.escape(b"\x28\xb5\x2f\xfd"), bytes(data))]
    assert len(frames) >= 2, "a frame about every 256 KiB of lines"
    whole = sum(1 for _ in RecordingReader(out).events())
    for i in range(frames[0] + 200, frames[0] + 260):  # damage the first frame
        data[i] ^= 0x55
    out.write_bytes(bytes(data))
    damaged = RecordingReader(out)
    kept = sum(1 for _ in damaged.events())
    assert 0 < kept < whole and any("resumed" in str(d) for d in damaged.damage)


def test_an_interrupted_convert_leaves_no_file(tmp_path: Path) -> None:
    source = open_source(DEMO)

    def events_then_crash():  # type: ignore[no-untyped-def]
        for n, ev in enumerate(source.events()):
            if n == 500:
                raise KeyboardInterrupt
            yield ev

    out = tmp_path / "out.jsonl.zst"
    with pytest.raises(KeyboardInterrupt):
        write_recording(out, source.header, events_then_crash())
    assert list(tmp_path.iterdir()) == []  # neither OUT nor a partial file


def test_the_lz77_bomb_never_outgrows_its_buffer() -> None:
    bomb = (REPRO / "lz77_bomb.etl").read_bytes()
    size0 = int.from_bytes(bomb[:4], "little")
    body = bomb[size0 + 72 :]
    tracemalloc.start()
    out = decompress_python(body, 65536)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(out) == 65536 and peak < 16 << 20  # before: > 4 GiB


def test_the_lz77_bomb_replays_with_the_pure_python_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    import etwsensor.sources.etl as etl

    monkeypatch.setattr(etl, "decompress", decompress_python)  # as on a host without libfwnt
    src = open_source(REPRO / "lz77_bomb.etl")
    tracemalloc.start()
    events = sum(1 for _ in src.events())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert events >= 0 and src.damage and peak < 64 << 20


# --- one policy for invalid UTF-16: a lone surrogate is U+FFFD in every input ----------------------------

SURROGATE_RULE = 'DeviceProcessEvents\n| where ProcessCommandLine matches regex "evil.cmd"\n'
CONTAINS_RULE = 'DeviceProcessEvents\n| where ProcessCommandLine contains "evil"\n'


def _rules(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "regex.kql").write_text(SURROGATE_RULE)
    (rules / "contains.kql").write_text(CONTAINS_RULE)
    return rules


def test_a_lone_surrogate_in_a_row_file_is_u_fffd_and_regex_rules_still_match(tmp_path: Path) -> None:
    rows = tmp_path / "rows.ndjson"
    rows.write_text(
        '{"$table":"DeviceProcessEvents","Timestamp":"2026-11-20T09:00:00Z","ActionType":"ProcessCreated",'
        '"ProcessCommandLine":"x \\ud800 evil.cmd \\udfff"}\n'
    )
    r = etwsensor("replay", str(rows), "--no-builtin", "--rules", str(_rules(tmp_path)), "--json-summary")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stderr.strip().splitlines()[-1])
    assert summary["rule_errors"] == {}
    alerts = [json.loads(line) for line in r.stdout.splitlines()]
    assert sorted(a["rule"]["id"] for a in alerts) == ["contains", "regex"]
    assert all(a["row"]["ProcessCommandLine"] == "x \ufffd evil.cmd \ufffd" for a in alerts)


def test_a_lone_surrogate_in_a_recording_is_u_fffd(tmp_path: Path) -> None:
    import io

    with DEMO.open("rb") as fh:
        lines = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(fh)).readlines()  # type: ignore[arg-type]
    # The first demo event naming GetAsyncKeyState, that text given a lone surrogate.
    index = next(i for i, line in enumerate(lines) if b"GetAsyncKeyState" in line)
    lines[index] = lines[index].replace(b"GetAsyncKeyState", b"GetAsync\\ud800KeyState", 1)
    rec = tmp_path / "rec.jsonl"
    rec.write_bytes(b"".join(lines))
    reader = RecordingReader(rec)
    events = list(reader.events())
    assert not reader.damage and len(events) == len(lines) - 1
    texts = [v for ev in events for v in ev.fields.values() if isinstance(v, str) and "GetAsync" in v]
    assert any("GetAsync\ufffdKeyState" in t for t in texts)
    assert all(not re.search("[\ud800-\udfff]", t) for t in texts)


# --- bounded fuzz over the four input kinds (the long run: scripts/fuzz_inputs.py) ------------------------


def _fuzz_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("fuzz_inputs", ROOT / "scripts" / "fuzz_inputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fuzzed_inputs_of_every_kind_never_escape(tmp_path: Path) -> None:
    from etwsensor.rules import RuleSet

    fuzz = _fuzz_module()
    ruleset, _ = RuleSet.load([], builtin=True)
    seen: set[str] = set()
    seed = random.Random(20261129).randrange(1 << 30)  # fixed: a failure reproduces
    for kind, data in fuzz.cases(240, seed):
        seen.add(kind)
        fuzz.run_case(kind, data, tmp_path, ruleset)
    assert seen == set(fuzz.KINDS)
