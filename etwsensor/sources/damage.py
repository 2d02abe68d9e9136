"""Damage found while reading an input: where it is and what is wrong. Reading goes on after it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceDamage:
    path: str
    where: str  # "offset 0x1f000" for .etl files, "line 12" for recordings
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.where}: {self.message}"
