"""`sdfleet demo` commands that need no model: the dataset writer and the checks on ground truth."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sdfleet.demo.cli import demo_app
from sdfleet.demo.data import COLOURS


def test_eval_ground_truth_prints_one_json_object_of_accuracies() -> None:
    result = CliRunner().invoke(demo_app, ["eval", "--ground-truth", "--per-combo", "3", "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["images"] == 36
    for key in ("colour", "background", "shape"):
        assert 0.99 <= scores[key] <= 1.0


def test_dataset_writes_pictures_and_captions(tmp_path: Path) -> None:
    result = CliRunner().invoke(demo_app, ["dataset", str(tmp_path), "--count", "5", "--seed", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    assert all((tmp_path / row["file"]).is_file() for row in rows)
    assert all(any(c in row["caption"] for c in COLOURS) for row in rows)
