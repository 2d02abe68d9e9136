#!/usr/bin/env python3
"""Write the JSON Schemas generated from the pydantic models into docs/ (tests check they are current).

python scripts/gen_schemas.py
"""

from __future__ import annotations

import json
from pathlib import Path

from etwsensor.schemas import published_schemas

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    for name, schema in published_schemas().items():
        (DOCS / name).write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote docs/{name}")


if __name__ == "__main__":
    main()
