"""The final fit on all the data: data.final_fit=true trains on training + validation rows."""

from __future__ import annotations

import json

import pytest

from tests.test_trainer_contract import COMMON, TASKS


@pytest.mark.parametrize("task", ["mnist", "collab", "vision"])
def test_final_fit_trains_on_both_splits_without_validation(train_run, task):
    value, folder = train_run(*TASKS[task], *COMMON, "data.final_fit=true")
    s = json.loads((folder / "summary.json").read_text())
    counts = json.loads((folder / "hook_counts.json").read_text())
    assert s["final_fit"] is True and s["status"] == "completed"
    assert s["final_train_rows"] == s["train_rows"] + s["valid_rows"] > s["train_rows"]
    assert counts["validations"] == 0 and not any(k.startswith("val/") for k in s["metrics"])
    assert not (folder / "checkpoints" / "best.ckpt").exists() and (folder / "checkpoints" / "last.ckpt").is_file()
    if task == "mnist":  # it has a test set: the optimized metric is the test one
        assert s["optimized_metric"]["name"] == "test/acc" and s["optimized_metric"]["value"] == value > 0.5
    else:  # no test set: no metric, and the record says so
        assert s["optimized_metric"]["value"] is None and "no optimized metric" in s["note"]


def test_final_fit_sees_every_row_each_epoch(train_run):
    """The training set is the union: an epoch has as many optimizer steps as both splits together."""
    _, folder = train_run(*TASKS["mnist"], *COMMON, "data.final_fit=true", "data.steps_per_call=1")
    s = json.loads((folder / "summary.json").read_text())
    counts = json.loads((folder / "hook_counts.json").read_text())
    assert counts["global_step"] == -(-s["final_train_rows"] // 64)


def test_compare_lists_final_fits_apart_after_ordinary_runs(train_run, tmp_path):
    from fastlight.compare import compare, load_runs

    train_run(*TASKS["mnist"], *COMMON, "data.final_fit=true", run_dir=tmp_path / "runs" / "a_final")
    train_run(*TASKS["mnist"], *COMMON, run_dir=tmp_path / "runs" / "b_plain")
    table = compare(load_runs([tmp_path / "runs"])).table()
    assert list(table["run"]) == ["b_plain", "a_final"]
    assert table["status"].tolist() == ["completed", "completed (final fit)"]
