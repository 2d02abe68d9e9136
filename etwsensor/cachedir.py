"""Where etwsensor keeps what it can compute again: ``$ETWSENSOR_CACHE_DIR``, else ``~/.cache/etwsensor``.

Every entry is keyed by a hash of its input and of the code that made it; an entry that is absent,
damaged or stale is made again, never fatal. The directory must be as private as the user's home:
what it holds decides what the rules compile to and how events are decoded.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("ETWSENSOR_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "etwsensor"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (a reader sees the old entry or the new one, never half of one);
    a cache that cannot be written only costs time, so failures are ignored."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        pass
