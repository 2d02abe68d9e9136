"""``normalize/replay --files-from``: image facts computed from a collected disk, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from etwsensor.cli import app
from etwsensor.enrich import CollectedFiles, FilesFromError, parse_files_from
from tests.enrich.collection import DEMO, make_collection, sha256_of

runner = CliRunner()


def _rows(args: list[str]) -> list[dict[str, object]]:
    result = runner.invoke(app, ["normalize", str(DEMO), *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_normalize_fills_hashes_version_and_signature_from_the_collection(tmp_path: Path) -> None:
    root = make_collection(tmp_path / "kape")
    rows = _rows(["--files-from", str(root)])
    notepad = [r for r in rows if r["$table"] == "DeviceProcessEvents"
               and r["FolderPath"] == "C:\\Windows\\System32\\notepad.exe"]  # fmt: skip
    assert notepad
    for r in notepad:
        assert r["SHA256"] == sha256_of("C:\\Windows\\System32\\notepad.exe")
        assert r["ProcessVersionInfoOriginalFileName"] == "w64.exe"
        assert r["ProcessVersionInfoCompanyName"] == "Simple Launcher User"
        assert r["FileSize"] == (Path(root) / "C/windows/SYSTEM32/notepad.exe").stat().st_size
        assert json.loads(str(r["AdditionalFields"]))["SignatureStatus"] == "Unsigned"
    by_explorer = [r for r in rows if r["InitiatingProcessFolderPath"] == "C:\\Windows\\explorer.exe"]
    assert by_explorer and all(r["InitiatingProcessSHA256"] == sha256_of("C:\\Windows\\explorer.exe")
                               and r["InitiatingProcessVersionInfoOriginalFileName"] == "t64.exe"
                               for r in by_explorer)  # fmt: skip
    by_svchost = [r for r in rows if r["$table"] == "DeviceProcessEvents"
                  and r["InitiatingProcessFolderPath"] == "C:\\Windows\\System32\\svchost.exe"]  # fmt: skip
    # the shim standing in for svchost: intact, but its UEFI root is not one Windows trusts for code
    assert by_svchost and all(r["InitiatingProcessSignatureStatus"] == "Unknown" for r in by_svchost)
    assert {r["InitiatingProcessSignerType"] for r in by_svchost} == {"Microsoft"}
    # files the collection does not hold stay empty
    edge = [r for r in rows if str(r.get("FolderPath")).endswith("msedge.exe")]
    assert edge and all(r["SHA256"] == "" and r["FileSize"] is None for r in edge)


def test_the_collections_catalogs_sign_its_files(tmp_path: Path) -> None:
    from tests.enrich.signing import make_catalog, make_signer, need_tools

    need_tools()
    root = make_collection(tmp_path / "kape")
    signer = make_signer(tmp_path / "ca")
    catroot = root / "C" / "windows" / "SYSTEM32" / "catroot" / "{F750E6C3-38EE-11D1-85E5-00C04FC295EE}"
    make_catalog([root / "C/windows/SYSTEM32/notepad.exe"], catroot / "Microsoft-Windows-Notepad.cat", signer)

    def notepad_fields(*extra: str) -> list[dict[str, object]]:
        rows = _rows(["--files-from", str(root), *extra])
        found = [json.loads(str(r["AdditionalFields"])) for r in rows if r["$table"] == "DeviceProcessEvents"
                 and r["FolderPath"] == "C:\\Windows\\System32\\notepad.exe"]  # fmt: skip
        assert found
        return found

    untrusted = notepad_fields()  # the test CA is no Microsoft root
    assert all(f["SignatureStatus"] == "Unknown" and f["SignatureType"] == "Catalog"
               and f["IsTrusted"] is False and f["Signer"] == "etwsensor catalog signer"
               for f in untrusted)  # fmt: skip
    trusted = notepad_fields("--trusted-roots", str(signer.ca))
    assert all(f["SignatureStatus"] == "Valid" and f["IsTrusted"] is True for f in trusted)
    # replay: the summary counts the catalogs read
    result = runner.invoke(app, ["replay", str(DEMO), "--files-from", str(root),
                                 "--trusted-roots", str(signer.ca),
                                 "--sink", f"file:{tmp_path / 'a.ndjson'}", "--json-summary"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    worker = summary["enrich"]["inputs"][str(DEMO)]["worker"]
    assert worker["catalogs"]["catalogs"] == 1 and worker["catalogs"]["members"] == 1
    assert any("--trusted-roots" in s for s in worker["trusted_roots"])
    # the same roots from the configuration file ([enrich] trusted_roots), as a service would have them
    config = tmp_path / "etwsensor.toml"
    config.write_text(f"[enrich]\ntrusted_roots = {json.dumps(str(signer.ca))}\n")
    alerts = tmp_path / "c.ndjson"
    result = runner.invoke(app, ["replay", str(DEMO), "--files-from", str(root), "--config", str(config),
                                 "--sink", f"file:{alerts}", "--json-summary"])  # fmt: skip
    assert result.exit_code == 0, result.output
    worker = json.loads(result.stderr.strip().splitlines()[-1])["enrich"]["inputs"][str(DEMO)]["worker"]
    assert any(str(signer.ca) in s for s in worker["trusted_roots"])


def test_a_bad_trusted_roots_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "roots.pem").write_text("not a certificate\n")
    for command in (["normalize", str(DEMO)], ["replay", str(DEMO)], ["trace"]):
        result = runner.invoke(app, [*command, "--trusted-roots", str(tmp_path / "roots.pem")])
        assert result.exit_code == 2 and "no PEM certificate" in result.output
    config = tmp_path / "etwsensor.toml"  # from the configuration file: the same refusal, before any tracing
    config.write_text(f"[enrich]\ntrusted_roots = {json.dumps(str(tmp_path / 'missing.pem'))}\n")
    for command in (["replay", str(DEMO)], ["trace"]):
        result = runner.invoke(app, [*command, "--config", str(config)])
        assert result.exit_code == 2 and "missing.pem" in result.output, result.output


def test_the_live_enricher_trusts_the_configured_roots(tmp_path: Path) -> None:
    from etwsensor.enrich import live_enricher
    from tests.enrich.signing import make_signer, need_tools

    need_tools()
    signer = make_signer(tmp_path / "ca")
    _facts, worker = live_enricher(trusted_roots=signer.ca)
    try:
        assert any(str(signer.ca) in s for s in worker.stats()["trusted_roots"])
    finally:
        worker.close()


def test_without_files_from_the_columns_stay_empty_and_the_summary_says_why(tmp_path: Path) -> None:
    assert all(r.get("SHA1", "") == "" and r.get("InitiatingProcessSHA1") == "" for r in _rows([]))
    result = runner.invoke(app, ["replay", str(DEMO), "--sink", f"file:{tmp_path / 'a.ndjson'}",
                                 "--json-summary"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    doc = summary["enrich"]["inputs"][str(DEMO)]
    assert doc["source"] is None and "--files-from" in doc["why"]
    assert "ProcessVersionInfoOriginalFileName" in doc["empty_columns"]["DeviceProcessEvents"]
    assert "SHA256" in doc["empty_columns"]["DeviceImageLoadEvents"]


def test_replay_with_files_from_reports_the_facts(tmp_path: Path) -> None:
    root = make_collection(tmp_path / "kape")
    result = runner.invoke(app, ["replay", str(DEMO), "--files-from", str(root),
                                 "--sink", f"file:{tmp_path / 'a.ndjson'}"])  # fmt: skip
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stderr.splitlines() if x.startswith("image facts"))
    assert f"from --files-from {root}" in line and "rows filled" in line
    assert "not_found" in line  # the demo's other images are not in the collection


def test_velociraptor_layout_and_explicit_maps(tmp_path: Path) -> None:
    velo = tmp_path / "velo" / "uploads" / "auto" / "C%3A" / "Windows"
    velo.mkdir(parents=True)
    (velo / "x.dll").write_bytes(b"MZ")
    roots = parse_files_from(str(tmp_path / "velo"))
    assert list(roots) == ["c:"]
    assert CollectedFiles(roots).locate("C:\\WINDOWS\\X.DLL") == velo / "x.dll"
    assert CollectedFiles(roots).locate("C:\\Windows\\..\\x.dll") is None
    assert CollectedFiles(roots).locate("D:\\x.dll") is None
    mapped = parse_files_from(f"D:={velo};\\Device\\HarddiskVolume4={tmp_path}")
    assert CollectedFiles(mapped).locate("d:\\x.dll") == velo / "x.dll"
    assert CollectedFiles(mapped).locate("\\Device\\HarddiskVolume4\\velo") == tmp_path / "velo"
    with pytest.raises(FilesFromError):
        parse_files_from(str(tmp_path / "missing"))
    with pytest.raises(FilesFromError):
        parse_files_from(f"Q={tmp_path}")


def test_a_bad_files_from_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["replay", str(DEMO), "--files-from", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such folder" in result.stderr
