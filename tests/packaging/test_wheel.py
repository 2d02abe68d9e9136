"""providers/ ships with the package: `etwsensor providers` works from a built wheel and from the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import etwsensor
from etwsensor.decode.schema import load_providers, providers_dir

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_providers_and_the_cli_reads_them(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            dist,
            ROOT,
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("etwsensor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("etwsensor/_providers/")}
    assert shipped == {p.name for p in (ROOT / "providers").glob("*.yaml")}
    assert "etwsensor/data/defender_tables.json" in names

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, wheel],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import etwsensor.decode.schema as s; print(s.providers_dir())"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=True,
    )
    assert Path(where.stdout.strip()) == site / "etwsensor" / "_providers"
    listed = subprocess.run(
        [sys.executable, "-m", "etwsensor", "providers", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=True,
    )
    assert len(json.loads(listed.stdout)["providers"]) == len(shipped)


def test_the_source_install_reads_the_checkout_providers() -> None:
    package_dir = Path(etwsensor.__file__).resolve().parent
    if package_dir.parent == ROOT:  # editable install or a plain checkout on sys.path
        assert providers_dir() == ROOT / "providers"
    else:
        assert providers_dir() == package_dir / "_providers"
    assert {p.name for p in load_providers()} >= {"Process", "Microsoft-Windows-Kernel-Process"}
