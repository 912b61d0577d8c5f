"""Runs SQL queries in DuckDB and prints their answers as JSON (gateway/tests/metric_sql.rs).

Usage: python run.py QUERIES.json
QUERIES.json: {"name": "SQL", ...}. Prints {"duckdb": VERSION, "answers": {"name": {"columns":
[...], "rows": [[...], ...], "elapsed_ms": N} or {"error": "..."}}} on stdout. Integers stay
integers (DuckDB's HUGEINT sums included), timestamps become ISO text, floats stay floats.
"""

import datetime
import decimal
import json
import sys
import time

import duckdb


def plain(value):
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        queries = json.load(f)
    con = duckdb.connect()
    answers = {}
    for name, sql in queries.items():
        started = time.perf_counter()
        try:
            cursor = con.execute(sql)
            rows = cursor.fetchall()
            columns = [d[0] for d in cursor.description]
        except duckdb.Error as e:
            answers[name] = {"error": str(e)}
            continue
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        answers[name] = {
            "columns": columns,
            "rows": [[plain(v) for v in row] for row in rows],
            "elapsed_ms": elapsed_ms,
        }
    json.dump({"duckdb": duckdb.__version__, "answers": answers}, sys.stdout)


if __name__ == "__main__":
    main()
