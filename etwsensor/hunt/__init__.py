"""Hunting over recorded rows: DuckDB tables with Defender's types, KQL via duckdb-kql, Parquet datasets."""
