"""`etwsensor sinks resend`: the alerts of a dead-letter file sent again, through the CLI, to a real HTTPS
receiver on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from etwsensor import exitcodes
from etwsensor.sinks import open_sink
from tests.sinks.kit import FAST, Receiver, Request, TlsFiles, make_alert


def refuses_odd_ids(request: Request) -> tuple[int, dict[str, str], bytes]:
    if any(int(a["alert_id"].split("-")[0]) % 2 for a in json.loads(request.text)):
        return 400, {}, b'{"error":"field rule.name rejected"}'
    return 200, {}, b"{}"


def resend(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etwsensor", "sinks", "resend", *args], capture_output=True,
                          text=True, check=False)  # fmt: skip


def test_dead_letters_are_sent_again_once_the_receiver_takes_them(
    https_receiver: Receiver, tls_files: TlsFiles, tmp_path: Path
) -> None:
    url = f"webhook+https://{https_receiver.url}/in"
    https_receiver.answer = refuses_odd_ids
    sink = open_sink(url, FAST.model_copy(update={"tls_ca_file": tls_files.ca}), spool_dir=tmp_path / "run")
    for n in range(10):
        sink.send(make_alert(n))
    sink.close()
    dead = Path(sink.state()["dead_letter_file"])
    assert sink.state()["dead_letters"] == 5
    with dead.open("a") as fh:
        fh.write("not json\n")  # a damaged line: reported, the others still sent
    before = dead.read_bytes()

    config = tmp_path / "c.toml"
    config.write_text(f'[sink]\nspool_dir = "{tmp_path / "resend"}"\ntls_ca_file = "{tls_files.ca}"\n')
    https_receiver.requests.clear()
    https_receiver.answer = lambda _r: (200, {}, b"{}")  # the receiver's mapping was fixed
    r = resend(str(dead), "--to", url, "--config", str(config), "--json-summary")
    assert r.returncode == exitcodes.DAMAGED_INPUT, r.stderr  # the damaged line; every alert delivered
    assert f"{dead}: line 6: not a JSON line" in r.stderr
    got = [a for req in https_receiver.requests for a in json.loads(req.text)]
    assert got == [make_alert(n) for n in range(1, 10, 2)]  # as first sent, in order
    doc = json.loads(r.stdout)
    assert doc["alerts"] == 5 and doc["bad_lines"] == 1 and doc["sink"]["delivered"] == 5
    assert dead.read_bytes() == before  # the file is left as it was


def test_alerts_refused_again_are_dead_lettered_again_and_exit_4(
    https_receiver: Receiver, tls_files: TlsFiles, tmp_path: Path
) -> None:
    url = f"webhook+https://{https_receiver.url}/in"
    https_receiver.answer = refuses_odd_ids
    sink = open_sink(url, FAST.model_copy(update={"tls_ca_file": tls_files.ca}), spool_dir=tmp_path / "run")
    for n in range(4):
        sink.send(make_alert(n))
    sink.close()
    dead = Path(sink.state()["dead_letter_file"])
    config = tmp_path / "c.toml"
    config.write_text(f'[sink]\nspool_dir = "{tmp_path / "resend"}"\ntls_ca_file = "{tls_files.ca}"\n')
    r = resend(str(dead), "--to", url, "--config", str(config), "--json-summary")
    assert r.returncode == exitcodes.UNDELIVERED, r.stderr
    state = json.loads(r.stdout)["sink"]
    assert state["dead_letters"] == 2 and state["delivered"] == 0
    again = [json.loads(line)["alert"] for line in Path(state["dead_letter_file"]).read_text().splitlines()]
    assert again == [make_alert(1), make_alert(3)]


def test_usage_errors(tmp_path: Path) -> None:
    assert resend(str(tmp_path / "missing.ndjson"), "--to", "stdout").returncode == exitcodes.USAGE
    letters = tmp_path / "d.ndjson"
    letters.write_text(json.dumps({"alert": make_alert(1)}) + "\n")
    bad = resend(str(letters), "--to", "carrier-pigeon://x")
    assert bad.returncode == exitcodes.USAGE and "carrier-pigeon" in bad.stderr
    out = resend(str(letters), "--to", "stdout")
    assert out.returncode == 0 and json.loads(out.stdout.splitlines()[0]) == make_alert(1)
