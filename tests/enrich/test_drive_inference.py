"""A trace without volume mapping: the system volume's drive letter is inferred, marked as such, and
``--device-map`` still wins. Checked on the real Windows 8 trace with its VolumeMapping records taken out:
the rows must name the same paths as with them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from etwsensor.cli import app
from etwsensor.normalize import Normalizer
from etwsensor.sources import open_source
from etwsensor.sources.recording import write_recording

ETL = Path(__file__).resolve().parents[1] / "data" / "etl" / "perfview_net.4.5.2.x64.etl"
runner = CliRunner()


def _unmapped(tmp_path: Path) -> Path:
    src = open_source(ETL)
    out = tmp_path / "unmapped.jsonl"
    write_recording(out, src.header, (e for e in src.events() if e.name != "VolumeMapping"))
    return out


def _paths(path: Path, device_map: str | None = None) -> tuple[list[str], Normalizer]:
    src = open_source(path)
    n = Normalizer(src.header, device_map=device_map)
    rows = [r for e in src.events() for _, r in n.process(e)] + [r for _, r in n.flush()]
    return [str(r.get("FolderPath", "")) for r in rows], n


def test_the_system_volume_letter_is_inferred_and_gives_the_trace_own_paths(tmp_path: Path) -> None:
    unmapped = _unmapped(tmp_path)
    mapped_paths, mapped = _paths(ETL)
    guessed_paths, guessed = _paths(unmapped)
    assert mapped.paths.inferred == {}
    device = next(iter(guessed.paths.inferred))
    assert device.startswith("\\device\\harddiskvolume") and guessed.paths.inferred[device] == "C:"
    assert guessed_paths == mapped_paths
    assert any(p.lower().startswith("c:\\windows\\system32\\") for p in guessed_paths)
    assert not any(p.lower().startswith("\\device\\harddiskvolume") for p in guessed_paths)

    result = runner.invoke(app, ["replay", str(unmapped), "--sink", f"file:{tmp_path / 'a.ndjson'}"])
    assert result.exit_code == 0, result.output
    assert f"drive letter inferred for {unmapped}: {device} = C:" in result.stderr


def test_device_map_wins_over_the_inference(tmp_path: Path) -> None:
    unmapped = _unmapped(tmp_path)
    _, n = _paths(unmapped, device_map="Z:=\\Device\\HarddiskVolume9")
    assert n.paths.inferred == {}
    result = runner.invoke(app, ["normalize", str(unmapped), "--json-summary", "--device-map",
                                 "Z:=\\Device\\HarddiskVolume9"])  # fmt: skip
    assert json.loads(result.stdout)["inferred_device_map"] == {}
