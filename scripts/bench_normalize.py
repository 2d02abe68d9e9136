"""Normalizer throughput (RawEvents/s on one core) and peak RSS on a >= 5M-event recording.

The recording is generated once into bench-data/ (git-ignored), deterministically, with this mix
of the events a live session delivers (fractions of all events, printed with the results):

* Kernel-File file opens: Create, OperationEnd, 0-3 Writes, Cleanup, Close (+ NameCreate for some);
  80 % OPEN, 10 % CREATE, 10 % OVERWRITE_IF, over 20,000 distinct paths;
* Kernel-Registry: OpenKey (or CreateKey), SetValueKey with CapturedData for half, CloseKey,
  over 2,000 keys;
* classic Image Load (and UnLoad), 300 DLL paths;
* process starts (Kernel-Process ProcessStart + classic Start within 1 ms) and ends, about 300 live
  processes and fresh pids forever (so the process table must stay bounded).

Only ``Normalizer.process`` is timed: events are read from the recording in chunks of 10,000 (not
timed), then normalized (timed). RSS is sampled after every million events to show it stays flat.

Usage: python scripts/bench_normalize.py [--events 5000000] [--data bench-data/normalize-5m.jsonl.zst]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from etwsensor.decode.schema import load_providers
from etwsensor.events import RawEvent
from etwsensor.normalize import Normalizer
from etwsensor.sources import open_source
from etwsensor.sources.header import HostInfo, RecordingHeader
from etwsensor.sources.recording import RecordingWriter

CHUNK = 10_000
VOL = "\\Device\\HarddiskVolume3"
START = datetime(2026, 11, 1, tzinfo=UTC)
HEADER = RecordingHeader(
    host=HostInfo(name="bench.synthetic.invalid", device_id="bench"),
    device_map={VOL: "C:"},
    comment="SYNTHETIC benchmark recording made by scripts/bench_normalize.py",
)


def rss_mb() -> float:
    """Current resident set size (Linux /proc), MB."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


class Generator:
    """Deterministic stream of RawEvents with the mix described in the module docstring."""

    def __init__(self, seed: int = 5) -> None:
        self.rng = random.Random(seed)
        providers = {p.name: p for p in load_providers()}
        self._ids: dict[tuple[str, str], tuple[str, int | None, int | None]] = {}
        for prov in providers.values():
            for e in prov.events:
                self._ids[(prov.name, e.name)] = (prov.guid, e.id, e.opcode)
        self.ts = START
        self.next_pointer = 0xFFFF_9000_0000_0000
        self.next_pid = 1000
        self.live: list[tuple[int, int]] = [(4, 0xFFFF_0004)]
        self.files = [f"{VOL}\\Users\\u{i % 40}\\AppData\\Local\\Temp\\f{i:05d}.tmp" for i in range(20_000)]
        self.keys = [f"\\REGISTRY\\MACHINE\\SOFTWARE\\Vendor{i % 50}\\App\\Key{i:04d}" for i in range(2_000)]
        self.dlls = [f"{VOL}\\Windows\\System32\\lib{i:03d}.dll" for i in range(300)]
        self.mix: Counter[str] = Counter()

    def pointer(self) -> int:
        self.next_pointer += 0x40
        return self.next_pointer

    def ev(self, provider: str, name: str, pid: int, version: int, **fields: object) -> RawEvent:
        guid, ident, opcode = self._ids[(provider, name)]
        self.ts += timedelta(microseconds=20)
        self.mix[f"{provider}/{name}"] += 1
        return RawEvent(
            guid=guid,
            provider=provider,
            name=name,
            id=ident,
            opcode=opcode,
            version=version,
            ts=self.ts,
            pid=pid,
            tid=pid + 4,
            cpu=0,
            fields=fields,
        )

    def events(self, count: int) -> Iterator[RawEvent]:
        produced = 0
        rng = self.rng
        while produced < count:
            roll = rng.random()
            if roll < 0.004:
                batch = self._process()
            elif roll < 0.06:
                batch = self._image()
            elif roll < 0.35:
                batch = self._registry()
            else:
                batch = self._file()
            produced += len(batch)
            yield from batch

    def _pid(self) -> int:
        return self.rng.choice(self.live)[0]

    def _process(self) -> list[RawEvent]:
        rng = self.rng
        self.next_pid += 4
        pid, parent, key = self.next_pid, self._pid(), self.pointer()
        image = rng.choice(self.dlls).replace(".dll", ".exe")
        out = [
            self.ev(
                "Microsoft-Windows-Kernel-Process",
                "ProcessStart",
                parent,
                3,
                ProcessID=pid,
                CreateTime=self.ts,
                ParentProcessID=parent,
                SessionID=1,
                ProcessTokenElevationType=3,
                MandatoryLabel="S-1-16-8192",
                ImageName=image,
            ),
            self.ev(
                "Process",
                "Start",
                pid,
                4,
                UniqueProcessKey=key,
                ProcessId=pid,
                ParentId=parent,
                SessionId=1,
                UserSID="S-1-5-21-1-2-3-1001",
                ImageFileName=image.rsplit("\\", 1)[1],
                CommandLine=f"{image[len(VOL) :]} --worker {pid}",
            ),
        ]
        self.live.append((pid, key))
        if len(self.live) > 300:
            gone_pid, gone_key = self.live.pop(rng.randrange(1, len(self.live)))
            out.append(self.ev("Process", "End", gone_pid, 4, UniqueProcessKey=gone_key, ProcessId=gone_pid))
        return out

    def _image(self) -> list[RawEvent]:
        pid, base = self._pid(), self.pointer()
        path = self.rng.choice(self.dlls)
        out = [
            self.ev("Image", "Load", pid, 3, ImageBase=base, ImageSize=0x1000, ProcessId=pid, FileName=path)
        ]
        if self.rng.random() < 0.1:
            out.append(self.ev("Image", "UnLoad", pid, 3, ImageBase=base, ProcessId=pid, FileName=path))
        return out

    def _registry(self) -> list[RawEvent]:
        rng, pid, ko = self.rng, self._pid(), self.pointer()
        key = rng.choice(self.keys)
        create = rng.random() < 0.1
        kr = "Microsoft-Windows-Kernel-Registry"
        out = [
            self.ev(
                kr,
                "CreateKey" if create else "OpenKey",
                pid,
                0,
                BaseObject=0,
                KeyObject=ko,
                Status=0,
                Disposition=1 if create and rng.random() < 0.3 else 2,
                BaseName="",
                RelativeName=key,
            )
        ]
        if rng.random() < 0.5:
            out.append(
                self.ev(
                    kr,
                    "SetValueKey",
                    pid,
                    0,
                    KeyObject=ko,
                    Status=0,
                    Type=4,
                    DataSize=4,
                    KeyName="",
                    ValueName="Counter",
                    CapturedDataSize=4,
                    CapturedData=b"\x01\x00\x00\x00",
                )
            )
        out.append(self.ev(kr, "CloseKey", pid, 0, KeyObject=ko, Status=0, KeyName=""))
        return out

    def _file(self) -> list[RawEvent]:
        rng, pid, fo, irp = self.rng, self._pid(), self.pointer(), self.pointer()
        path = rng.choice(self.files)
        roll = rng.random()
        disposition = 1 if roll < 0.8 else (2 if roll < 0.9 else 5)
        kf = "Microsoft-Windows-Kernel-File"
        out = []
        if rng.random() < 0.1:
            out.append(self.ev(kf, "NameCreate", pid, 0, FileKey=fo + 8, FileName=path))
        out.append(
            self.ev(
                kf,
                "Create",
                pid,
                1,
                Irp=irp,
                FileObject=fo,
                IssuingThreadId=pid + 4,
                CreateOptions=disposition << 24,
                CreateAttributes=0x80,
                ShareAccess=7,
                FileName=path,
            )
        )
        out.append(self.ev(kf, "OperationEnd", pid, 0, Irp=irp, ExtraInformation=0, Status=0))
        for i in range(rng.randrange(4)):
            out.append(
                self.ev(
                    kf,
                    "Write",
                    pid,
                    1,
                    ByteOffset=i * 4096,
                    Irp=self.pointer(),
                    FileObject=fo,
                    FileKey=fo + 8,
                    IssuingThreadId=pid + 4,
                    IOSize=4096,
                    IOFlags=0,
                    ExtraFlags=0,
                )
            )
        out.append(
            self.ev(
                kf,
                "Cleanup",
                pid,
                1,
                Irp=self.pointer(),
                FileObject=fo,
                FileKey=fo + 8,
                IssuingThreadId=pid + 4,
            )
        )
        out.append(
            self.ev(
                kf,
                "Close",
                pid,
                1,
                Irp=self.pointer(),
                FileObject=fo,
                FileKey=fo + 8,
                IssuingThreadId=pid + 4,
            )
        )
        return out


def generate(path: Path, count: int) -> Counter[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = Generator()
    with RecordingWriter(path, HEADER) as writer:
        for event in gen.events(count):
            writer.write(event)
    (path.parent / (path.name + ".mix.json")).write_text(json.dumps(gen.mix, indent=1, sort_keys=True))
    return gen.mix


def bench(path: Path) -> dict[str, object]:
    rss_at_start = rss_mb()
    source = open_source(path)
    normalizer = Normalizer(source.header)
    process = normalizer.process
    events = rows = 0
    busy = 0.0
    rss_samples: list[float] = []
    next_sample = 1_000_000
    stream = source.events()
    while True:
        chunk = [e for _, e in zip(range(CHUNK), stream, strict=False)]
        if not chunk:
            break
        started = time.perf_counter()
        for event in chunk:
            rows += len(process(event))
        busy += time.perf_counter() - started
        events += len(chunk)
        del chunk  # only one chunk alive at a time: the RSS is the reader's and the normalizer's
        if events >= next_sample:
            rss_samples.append(round(rss_mb(), 1))
            next_sample += 1_000_000
    started = time.perf_counter()
    rows += len(normalizer.flush())
    busy += time.perf_counter() - started
    stats = normalizer.stats()
    return {
        "events": events,
        "rows": rows,
        "seconds_normalizing": round(busy, 2),
        "events_per_second": round(events / busy),
        "rss_mb_before_reading": round(rss_at_start, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_mb_per_million_events": rss_samples,
        "rows_by_table": stats["rows"],
        "unresolved": stats["unresolved"],
        "caches": {
            name: {"size": c["size"], "max_size": c["max_size"]} for name, c in stats["caches"].items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--data", type=Path, default=Path("bench-data/normalize-5m.jsonl.zst"))
    args = parser.parse_args()
    mix_file = args.data.parent / (args.data.name + ".mix.json")
    if not args.data.exists() or not mix_file.exists():
        print(f"generating {args.events} events into {args.data} ...", file=sys.stderr)
        generate(args.data, args.events)
        # measure in a fresh process: the generator's memory must not count as the normalizer's
        os.execv(
            sys.executable, [sys.executable, __file__, "--events", str(args.events), "--data", str(args.data)]
        )
    if hasattr(os, "sched_setaffinity"):  # one core, as the figure claims
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    mix = json.loads(mix_file.read_text())
    total = sum(mix.values())
    result = bench(args.data)
    result["event_mix"] = {
        name: round(n / total, 4) for name, n in sorted(mix.items(), key=lambda kv: -kv[1])
    }
    result["python"] = sys.version.split()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
