"""Configuration: TOML file, environment overrides, clear errors, `config show` masks secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etwsensor.alerts import Allowlist
from etwsensor.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]
FP_EXAMPLE = ROOT / "docs" / "examples" / "keylogging-false-positives.toml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "etwsensor.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write(
        tmp_path, '[output]\nsinks = ["stdout", "file:/tmp/a.ndjson"]\n[suppression]\nwindow_seconds = 60\n'
    )
    s = load_settings(cfg)
    assert s.output.sinks == ["stdout", "file:/tmp/a.ndjson"]
    assert s.suppression.window_seconds == 60 and s.rules.builtin is True
    monkeypatch.setenv("ETWSENSOR_SUPPRESSION__WINDOW_SECONDS", "5")
    assert load_settings(cfg).suppression.window_seconds == 5


def test_invalid_file_names_the_key_and_the_reason(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"etwsensor\.toml: suppression\.window_seconds: .*greater than or equal"
    ):
        load_settings(write(tmp_path, "[suppression]\nwindow_seconds = -1\n"))
    with pytest.raises(ConfigError, match=r"etwsensor\.toml: output\.sinkz: Extra inputs are not permitted"):
        load_settings(write(tmp_path, '[output]\nsinkz = ["stdout"]\n'))
    with pytest.raises(ConfigError, match=r"etwsensor\.toml: .*"):
        load_settings(write(tmp_path, "[output\n"))  # TOML syntax
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "missing.toml")


def test_the_false_positive_example_loads_and_is_anchored() -> None:
    s = load_settings(FP_EXAMPLE)
    assert len(s.allowlist) >= 12
    allow = Allowlist(s.allowlist)

    def silenced(path: str) -> bool:
        return allow.allows("any-rule", {"InitiatingProcessFolderPath": path}, {})

    assert silenced("C:\\Program Files\\NVDA\\nvda.exe")
    assert silenced("C:\\Program Files (x86)\\TeamViewer\\TeamViewer.exe")
    assert silenced("c:\\program files\\autohotkey\\v2\\AutoHotkey64.exe")
    assert not silenced("C:\\Users\\alice\\AppData\\Local\\Temp\\nvda.exe")
    assert not silenced("C:\\Program Files\\NVDA\\..\\..\\Users\\x\\nvda.exe.bad")


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[output]\nsinks = ["hec+https://splunk.example:8088/services/collector"]\n')
    env = {**os.environ, "ETWSENSOR_SINK__HEC_TOKEN": "s3cr3t-token-value"}
    r = subprocess.run(
        [sys.executable, "-m", "etwsensor", "config", "show", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["output"]["sinks"] == ["hec+https://splunk.example:8088/services/collector"]
    assert "s3cr3t-token-value" not in r.stdout and "s3cr3t" not in r.stderr
    assert doc["sink"]["hec_token"] not in ("", None)  # set, but masked
    missing = str(tmp_path / "no.toml")
    bad = subprocess.run(
        [sys.executable, "-m", "etwsensor", "config", "show", "--config", missing],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "no such config file" in bad.stderr
