"""Rule tests never write to the user's compiled-rule cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.setenv("ETWSENSOR_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
