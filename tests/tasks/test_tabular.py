"""The tabular task end to end on synthetic twins with planted effects, and on the real Adult files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fastlight.data.tabular import AdultData
from fastlight.models.embeddings import emb_sz_rule
from fastlight.models.tabular import TabularModel
from fastlight.runs import load_run
from fastlight.cli import main as fastlight

FAST = ("task=tabular", "callbacks.progress_bar=null")


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_tabular_model_is_fastais_architecture():
    model = TabularModel([4, 17], n_cont=3, out_sz=2, layers=[20, 10], ps=[0.1, 0.2], emb_drop=0.3)
    assert [e.weight.shape for e in model.embeds] == [(4, emb_sz_rule(4)), (17, emb_sz_rule(17))]
    assert emb_sz_rule(1116) == 81 and emb_sz_rule(8) == 5  # fastai's Store and DayOfWeek widths
    assert model.embeds[1].weight.std().item() == pytest.approx(0.01, rel=0.5)  # trunc-normal, std 0.01
    first = model.layers[0]
    assert first[0].in_features == emb_sz_rule(4) + emb_sz_rule(17) + 3 and first[0].bias is None
    assert [type(m).__name__ for m in first] == ["Linear", "ReLU", "BatchNorm1d", "Dropout"]
    assert model.layers[1][3].p == 0.2 and model.emb_drop.p == 0.3
    out = model(torch.tensor([[1, 2], [3, 0]]), torch.randn(2, 3))
    assert out.shape == (2, 2)
    bounded = TabularModel([4], n_cont=0, out_sz=1, y_range=[0.0, 2.0])
    with torch.no_grad():
        bounded.head.bias.fill_(100.0)  # a huge raw output still lands inside y_range
    assert 0.0 <= bounded.eval()(torch.tensor([[1]]), torch.zeros(1, 0)).max().item() <= 2.0


def test_adult_twin_end_to_end_finds_the_planted_columns_and_predicts_new_rows(train_run, tmp_path, capsys):
    value, run_dir = train_run(*FAST, "data=synthetic")  # W&B offline, as `python train.py task=tabular`
    s = summary(run_dir)
    assert s["status"] == "completed" and value == s["metrics"]["val/acc"]
    assert value > 0.78 and s["metrics"]["test/acc"] > 0.75  # a model that ignored the inputs gets ~0.65
    imp = pd.read_csv(run_dir / "interpretation" / "importance.csv").set_index("column").importance
    assert set(imp.index) == {"workclass", "education", "marital-status", "occupation", "relationship", "race",
                              "age", "fnlwgt", "education-num"}
    planted, noise = imp[["marital-status", "occupation", "education-num"]], imp[["workclass", "fnlwgt"]]
    assert planted.min() > noise.max() + 0.01
    pca = pd.read_csv(run_dir / "interpretation" / "embedding_occupation.csv")
    assert len(pca) == 8 and (run_dir / "interpretation" / "embedding_occupation.png").is_file()
    media = [p.name for p in run_dir.glob("wandb/offline-run-*/files/media/**/*") if p.is_file()]
    assert any("importance" in m and m.endswith(".png") for m in media)  # logged to W&B too
    assert any("embedding" in m for m in media) and any("importance" in m and m.endswith(".json") for m in media)

    # New rows: an unseen occupation is treated as a missing one; NaNs are filled; no target needed.
    row = dict(age=40, workclass="Private", fnlwgt=100_000, education="Masters", **{"education-num": 14},
               **{"marital-status": "Married-civ-spouse"}, relationship="Husband", race="White")
    rows = pd.DataFrame([{**row, "occupation": "Astronaut"}, {**row, "occupation": None},
                         {**row, "occupation": "Exec-managerial", "age": None}])
    rows.to_csv(tmp_path / "new_rows.csv", index=False)
    out = tmp_path / "pred.csv"
    assert fastlight(["predict", str(run_dir), str(tmp_path / "new_rows.csv"), "--out", str(out)]) == 0
    pred = pd.read_csv(out)
    assert len(pred) == 3 and set(pred.predicted_salary) <= {"<=50K", ">50K"}
    probs = pred[["predicted_p_<=50K", "predicted_p_>50K"]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and np.allclose(probs[0], probs[1])
    rows.drop(columns=["age", "race"]).to_csv(tmp_path / "bad.csv", index=False)
    assert fastlight(["predict", str(run_dir), str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err
    assert "no column 'race', 'age' in" in err and "bad.csv" in err


def test_regression_recovers_a_planted_per_category_offset(train_run, tmp_path):
    rng = np.random.default_rng(0)
    offsets = {"A": 0.0, "B": 1.0, "C": -1.0, "D": 2.0, "E": 0.5}
    shop = rng.choice(list(offsets), 4000)
    x = rng.normal(0, 1, 4000)
    y = 3 + np.array([offsets[s] for s in shop]) + 1.5 * x + rng.normal(0, 0.1, 4000)
    table = pd.DataFrame({"shop": shop, "x": x, "y": y})
    table[:3000].to_csv(tmp_path / "t.csv", index=False)
    table[3000:].to_csv(tmp_path / "test.csv", index=False)
    value, run_dir = train_run(
        *FAST, "logger=csv", "data=csv", f"data.path={tmp_path / 't.csv'}", f"data.test_path={tmp_path / 'test.csv'}",
        "data.cat_names=[shop]",
        "data.cont_names=[x]", "data.y_name=y", "data.problem=regression", "optimized_metric.name=val/rmse",
        "optimized_metric.mode=min", "trainer.max_epochs=5",
    )
    assert value < 0.4  # the noise alone is 0.1; predicting the mean would give ~1.9
    assert summary(run_dir)["metrics"]["test/rmse"] < 0.4  # data.test_path: Trainer.test ran on it
    _, _, task = load_run(run_dir)
    # Each shop over the same spread of x: the mean difference between shops is the offset.
    grid = pd.DataFrame([(s, v) for s in offsets for v in np.linspace(-1.5, 1.5, 31)], columns=["shop", "x"])
    pred = task.predict_frame(grid)["y"].to_numpy().reshape(len(offsets), -1).mean(1)
    planted = np.array(list(offsets.values()))
    assert np.allclose(pred - pred[0], planted - planted[0], atol=0.25), pred - pred[0]  # seeds 0-6: <= 0.17
    slope = task.predict_frame(pd.DataFrame({"shop": ["B", "B"], "x": [-1.0, 1.0]}))["y"].diff().iloc[1] / 2
    assert slope == pytest.approx(1.5, abs=0.25)


def test_rossmann_twin_beats_the_trivial_baseline_in_exp_rmspe(train_run):
    overrides = ("data.n_stores=20", "data.n_days=240", "data.eval_batch_size=100",  # several validation batches
                 "optim.lr=1e-2", "optim.wd=0.01", "trainer.max_epochs=4")
    value, run_dir = train_run(*FAST, "logger=csv", "data=rossmann_synthetic", *overrides)
    s = summary(run_dir)
    assert s["optimized_metric"]["name"] == "val/exp_rmspe"  # the lesson's metric, from data=rossmann's recipe
    _, dm, task = load_run(run_dir)  # the best epoch's weights, and the data rebuilt from the config
    assert task.procs.log_target and "Promo_fw" in task.procs.cat_names and "trend_DE" in task.procs.cont_names
    x_cat, x_cont, y = dm.valid
    with torch.no_grad():
        scores = task.scores(task(x_cat, x_cont), y)
    assert scores["exp_rmspe"].item() == pytest.approx(value, rel=1e-4)  # logged over batches = over all rows
    sales = y.exp()
    trivial = ((sales - dm.train[2].mean().exp()) / sales).pow(2).mean().sqrt().item()  # one guess for all
    assert trivial > 0.2 and value < 0.5 * trivial
    imp = pd.read_csv(run_dir / "interpretation" / "importance.csv")
    assert {"Store", "Promo"} <= set(imp.column[:6])  # the planted effects matter most


def test_user_mistakes_stop_the_run_with_one_sentence(train_run, tmp_path):
    table = pd.DataFrame({"a": ["x", "y"] * 20, "b": np.arange(40.0), "y": np.arange(40.0)})
    table.to_csv(tmp_path / "t.csv", index=False)
    base = (*FAST, "logger=none", "data=csv", f"data.path={tmp_path / 't.csv'}", "data.cat_names=[a]", "data.y_name=y")
    with pytest.raises(SystemExit):
        train_run(*base, "data.cont_names=[b,c]", run_dir=tmp_path / "r1")
    assert "no column 'c' in" in summary(tmp_path / "r1")["error"]
    with pytest.raises(SystemExit):
        train_run(*base, "data.cont_names=[b]", "data.problem=regression", run_dir=tmp_path / "r2")
    error = summary(tmp_path / "r2")["error"]
    assert "optimized_metric.name=val/acc is not logged by a regression task" in error and "val/rmse" in error


def test_real_adult_files_parse_split_and_test_as_the_lesson_says(real_data):
    if not (real_data / "adult" / "adult.data").is_file():
        pytest.skip("no adult/ in the real data folder")
    dm = AdultData(root=str(real_data), download=False, cat_names=["workclass", "occupation"],
                   cont_names=["age"], y_name="salary", seed=42)
    dm.prepare_data()
    train, valid, test = dm.frames()
    assert (len(train), len(valid), len(test)) == (26049, 6512, 16281)
    assert set(train.salary) == set(test.salary) == {"<=50K", ">50K"}  # the test set's periods are gone
    assert train.occupation.isna().sum() > 0 and not train.occupation.eq("?").any()
    # fastai's RandomSplitter(0.2, seed=42): torch.manual_seed(42) then randperm; the first 20% is valid.
    torch.manual_seed(42)
    first = torch.randperm(32561)[:5].tolist()
    assert valid.head(5).equals(dm.raw()[0].iloc[first].reset_index(drop=True))
