"""The durable spool on its own: order, commit, bounds, corruption, restarts, exclusivity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from etwsensor.sinks.spool import Spool, SpoolError, decode_record, encode_record

KiB = 1024


def payload(n: int) -> bytes:
    return json.dumps({"alert_id": f"{n:06d}", "pad": "x" * (n % 50)}).encode()


def read_all(spool: Spool, batch: int = 7) -> list[bytes]:
    out: list[bytes] = []
    while chunk := spool.read(batch):
        if not chunk.consumed:
            break
        out.extend(chunk.payloads)
        spool.commit(chunk.end, chunk.consumed)
    return out


def test_entries_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4 * KiB)
    sent = [payload(n) for n in range(500)]
    for p in sent:
        assert spool.append(p)
    assert len(list(tmp_path.glob("*.seg"))) > 3  # rotated
    assert spool.pending == 500
    assert read_all(spool) == sent
    assert spool.pending == 0 and spool.pending_bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1  # delivered segments deleted; the active one stays
    spool.close()
    assert not list(tmp_path.glob("*.seg"))


def test_commit_survives_reopen_and_uncommitted_is_read_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, 4 * KiB)
    for n in range(10):
        spool.append(payload(n))
    first = spool.read(4)
    spool.commit(first.end, first.consumed)
    assert spool.read(3).payloads == [payload(n) for n in range(4, 7)]  # read, never committed
    spool.close()

    again = Spool(tmp_path, 1 << 20, 4 * KiB)
    assert again.pending_at_open == 6
    again.append(payload(10))
    assert read_all(again) == [payload(n) for n in range(4, 11)]  # old entries first, then new
    again.close()


def test_rewind_rereads_from_the_last_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, 4 * KiB)
    for n in range(5):
        spool.append(payload(n))
    spool.commit(spool.read(2).end, 2)
    assert spool.read(10).payloads == [payload(n) for n in range(2, 5)]
    spool.rewind()
    assert spool.unread == 3
    assert spool.read(10).payloads == [payload(n) for n in range(2, 5)]
    spool.close()


def test_entries_survive_a_process_that_dies_without_closing(tmp_path: Path) -> None:
    """fsync'd by sync(); the writer then exits hard (no close, no cleanup), as a crash would."""
    script = (
        "import json, os, sys; from pathlib import Path; from etwsensor.sinks.spool import Spool\n"
        "s = Spool(Path(sys.argv[1]), 1 << 20, 4096)\n"
        "for n in range(300):\n"
        "    s.append(json.dumps({'alert_id': f'{n:06d}', 'pad': 'x' * (n % 50)}).encode())\n"
        "s.sync(); os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    spool = Spool(tmp_path, 1 << 20, 4 * KiB)  # the dead process's lock went with it
    assert spool.pending_at_open == 300
    assert read_all(spool) == [payload(n) for n in range(300)]
    spool.close()


def test_full_spool_drops_new_entries_loudly_and_keeps_the_old(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=8 * KiB, segment_bytes=4 * KiB)
    same_size = [payload(n * 50) for n in range(400)]
    with capture_logs() as logs:
        results = [spool.append(p) for p in same_size]
    kept = results.count(True)
    assert 0 < kept < 400 and results == [True] * kept + [False] * (400 - kept)
    assert spool.dropped == 400 - kept
    assert spool.pending_bytes <= 8 * KiB
    errors = [e for e in logs if e["log_level"] == "error"]
    assert errors and errors[0]["event"].startswith("alerts dropped") and errors[0]["reason"] == "spool full"
    assert len(errors) < 5  # rate-limited, not one line per alert
    assert read_all(spool) == same_size[:kept]
    assert spool.append(payload(999))  # room again once delivered
    spool.close()


def test_corrupt_entries_are_counted_and_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, 1 << 20)
    for n in range(6):
        spool.append(payload(n))
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"000001", b"000X01")  # bit rot: CRC mismatch
    lines[3] = b"garbage without a crc\n"
    segment.write_bytes(b"".join(lines) + encode_record(payload(6))[:20])  # torn by a crash

    reopened = Spool(tmp_path, 1 << 20, 1 << 20)
    assert reopened.pending_at_open == 7
    with capture_logs() as logs:
        assert read_all(reopened) == [payload(n) for n in (0, 2, 4, 5)]
    assert reopened.corrupt == 3 and reopened.pending == 0
    assert any(e["event"] == "corrupt spool entries skipped" for e in logs)
    reopened.close()


def test_a_second_user_of_the_same_spool_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, 4 * KiB)
    with pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path, 1 << 20, 4 * KiB)
    spool.close()
    Spool(tmp_path, 1 << 20, 4 * KiB).close()  # free again


def test_unreadable_cursor_redelivers_rather_than_loses(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, 4 * KiB)
    for n in range(3):
        spool.append(payload(n))
    spool.commit(spool.read(1).end, 1)
    spool.close()
    (tmp_path / "cursor.json").write_text("{not json")
    with capture_logs() as logs:
        reopened = Spool(tmp_path, 1 << 20, 4 * KiB)
    assert read_all(reopened) == [payload(n) for n in range(3)]
    assert any("cursor unreadable" in e.get("damage", "") for e in logs)
    assert reopened.damage
    reopened.close()


def test_record_format() -> None:
    record = encode_record(b'{"a":1}')
    assert record.endswith(b' {"a":1}\n') and len(record) == 9 + 7 + 1
    assert decode_record(record) == b'{"a":1}'
    assert decode_record(record[:-1]) is None
    with pytest.raises(ValueError):
        encode_record(b"two\nlines")


def test_delivered_segments_left_by_a_crash_are_removed_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, 4 * KiB)
    for n in range(200):
        spool.append(payload(n))
    batch = spool.read(150)
    spool.commit(batch.end, batch.consumed)
    spool.close()
    assert batch.end.segment > 1
    (tmp_path / "0000000000000001.seg").write_bytes(encode_record(b'{"delivered":"already"}'))  # not deleted
    reopened = Spool(tmp_path, 1 << 20, 4 * KiB)
    assert not (tmp_path / "0000000000000001.seg").exists()
    assert read_all(reopened) == [payload(n) for n in range(150, 200)]
    reopened.close()


# --- damage: reported, never deletes pending data, every lost entry counted ------------------------------


def _three_segments(tmp_path: Path) -> list[bytes]:
    spool = Spool(tmp_path, 1 << 20, 4 * KiB)
    payloads = [payload(n) for n in range(200)]  # a few 4 KiB segments
    for p in payloads:
        assert spool.append(p)
    spool.close()
    assert len(list(tmp_path.glob("*.seg"))) >= 2
    return payloads


@pytest.mark.parametrize(
    "cursor",
    ['{"segment": 1e400, "offset": 0}', '{"segment": "3", "offset": 0}', '{"segment": 1, "offset": -5}',
     '{"segment": ' + "[" * 5000 + "]" * 5000 + ', "offset": 0}', "\xff\xfe"],
)  # fmt: skip
def test_a_damaged_cursor_is_reported_and_everything_redelivered(tmp_path: Path, cursor: str) -> None:
    payloads = _three_segments(tmp_path)
    (tmp_path / "cursor.json").write_text(cursor, encoding="latin-1")
    reopened = Spool(tmp_path, 1 << 20, 4 * KiB)
    assert reopened.damage and "cursor" in reopened.damage[0]
    assert read_all(reopened) == payloads
    reopened.close()


def test_a_cursor_past_the_newest_segment_deletes_nothing(tmp_path: Path) -> None:
    payloads = _three_segments(tmp_path)
    segments = sorted(tmp_path.glob("*.seg"))
    (tmp_path / "cursor.json").write_text('{"segment": 999999, "offset": 0}')
    reopened = Spool(tmp_path, 1 << 20, 4 * KiB)
    assert sorted(tmp_path.glob("*.seg")) == segments
    assert "past the newest segment" in reopened.damage[0]
    assert reopened.pending == len(payloads)
    assert read_all(reopened) == payloads
    reopened.close()


def test_a_directory_named_like_a_segment_is_reported_not_fatal(tmp_path: Path) -> None:
    payloads = _three_segments(tmp_path)
    (tmp_path / "0000000000000000.seg").mkdir()
    reopened = Spool(tmp_path, 1 << 20, 4 * KiB)
    assert any("not a regular file" in d for d in reopened.damage)
    assert read_all(reopened) == payloads
    reopened.close()


def test_entries_of_a_truncated_or_deleted_segment_are_counted_lost(tmp_path: Path) -> None:
    payloads = _three_segments(tmp_path)
    reopened = Spool(tmp_path, 1 << 20, 4 * KiB)
    segments = sorted(tmp_path.glob("*.seg"))
    first_count = segments[0].read_bytes().count(b"\n")
    second_count = segments[1].read_bytes().count(b"\n")
    segments[0].unlink()  # deleted under a running spool
    data = segments[1].read_bytes()  # truncated to its first record
    segments[1].write_bytes(data[: data.index(b"\n") + 1])
    got = read_all(reopened)
    assert reopened.lost == first_count + second_count - 1
    assert len(got) + reopened.lost == len(payloads)
    assert got == [payloads[first_count], *payloads[first_count + second_count :]]
    assert reopened.pending == 0 or reopened.unread == 0
    reopened.close()
