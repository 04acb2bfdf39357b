"""Tests of benchmarks/bench_baseline.py's result merging (fast; its timings are not tested)."""

import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bb = importlib.import_module("bench_baseline")


def row(name: str, wall: float) -> dict:
    return {"notebook": f"lessons/{name}.ipynb", "status": "ok", "wall_s": wall}


def test_timing_some_notebooks_keeps_the_other_rows_marked_with_their_run(tmp_path):
    path = tmp_path / "baseline_x.json"
    old = {"date": "then", "notebooks": {"rows": [row("00_a", 8.0), row("06_b", 99.0)]}, "mfu": {"train_mfu": 0.4}}
    path.write_text(json.dumps(old))
    results = {"date": "now", "notebooks": {"rows": [row("06_b", 80.0), row("07_c", 120.0)]}}
    bb.merge_previous(results, path)
    rows = {r["notebook"]: r for r in results["notebooks"]["rows"]}
    assert list(rows) == ["lessons/00_a.ipynb", "lessons/06_b.ipynb", "lessons/07_c.ipynb"]
    assert rows["lessons/00_a.ipynb"]["from_run"] == "then" and rows["lessons/00_a.ipynb"]["wall_s"] == 8.0
    assert rows["lessons/06_b.ipynb"]["wall_s"] == 80.0 and "from_run" not in rows["lessons/06_b.ipynb"]
    assert results["mfu"]["from_run"] == "then"  # a skipped section is carried over whole


def test_a_run_without_notebooks_carries_the_old_section_unchanged(tmp_path):
    path = tmp_path / "baseline_x.json"
    path.write_text(json.dumps({"date": "then", "notebooks": {"rows": [row("00_a", 8.0)]}}))
    results = {"date": "now"}
    bb.merge_previous(results, path)
    assert results["notebooks"]["rows"] == [row("00_a", 8.0)] and results["notebooks"]["from_run"] == "then"
