"""Running etwsensor as a user at a console sees it: stderr on a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys


def on_a_terminal(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run etwsensor with stderr on a pseudo-terminal and stdout to a file; returns (exit, stdout, stderr)."""
    import tempfile

    master, slave = pty.openpty()
    with tempfile.TemporaryFile("w+") as stdout:  # not a pipe: a long stdout must not block the read
        proc = subprocess.Popen([sys.executable, "-m", "etwsensor", *args], stdout=stdout,
                                stderr=slave, text=True, env={**os.environ, **(env or {})})  # fmt: skip
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        code = proc.wait(300)
        os.close(master)
        stdout.seek(0)
        out = stdout.read()
    return code, out, seen.decode("utf-8", "replace")
