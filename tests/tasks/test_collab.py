"""Collab task: fastai's models, the planted structure recovered, the interpretation, `recommend`."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from fastlight.errors import ConfigError, DataError
from fastlight.cli import main as fastlight
from fastlight.cli.recommend import load_for_recommend
from fastlight.interpret import collab as interpret
from fastlight.models.collab import EmbeddingDotBias, EmbeddingNN, check_y_range
from fastlight.models.embeddings import Embedding, emb_sz_rule
from fastlight.runs import load_run

SMALL = ("task=collab", "data=synthetic", "data.n_users=60", "data.n_items=40", "trainer.max_epochs=2",
         "task.n_top=5", "task.n_plot=10")


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = torch.stack([a.argsort().argsort(), b.argsort().argsort()]).float()
    return float(torch.corrcoef(ranks)[0, 1])


def summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# --- models ------------------------------------------------------------------------------------
def test_emb_sz_rule_is_fastais():
    assert [emb_sz_rule(n) for n in (944, 1635, 1116, 8, 53)] == [74, 101, 81, 5, 15]
    assert emb_sz_rule(10**7) == 600


def test_embeddings_start_as_fastais_truncated_normal():
    w = Embedding(1000, 50).weight
    w = w.detach()
    assert w.abs().max() < 0.02 and abs(float(w.std()) - 0.01) < 0.002


def test_dot_bias_is_dot_plus_biases_squashed_into_y_range():
    m = EmbeddingDotBias(5, 7, n_factors=3, y_range=(0, 5.5))
    with torch.no_grad():
        for e in (m.u_weight, m.i_weight, m.u_bias, m.i_bias):
            e.weight.normal_()
    u, i = torch.tensor([1, 4]), torch.tensor([2, 6])
    score = (m.u_weight.weight[u] * m.i_weight.weight[i]).sum(1) + m.u_bias.weight[u, 0] + m.i_bias.weight[i, 0]
    torch.testing.assert_close(m(u, i), torch.sigmoid(score) * 5.5)


def test_nn_model_is_fastais_embedding_nn():
    m = EmbeddingNN(944, 1635, n_factors=50)
    assert (m.u_weight.embedding_dim, m.i_weight.embedding_dim) == (74, 101)
    kinds = [type(layer).__name__ for layer in m.layers]
    assert kinds == ["Linear", "ReLU", "BatchNorm1d", "Linear", "SigmoidRange"]
    assert m.layers[0].in_features == 175 and m.layers[0].out_features == 50 and m.layers[0].bias is None
    m.eval()
    out = m(torch.randint(0, 944, (8,)), torch.randint(0, 1635, (8,)))
    assert out.shape == (8,) and ((out > 0) & (out < 5.5)).all()


def test_a_y_range_that_cannot_reach_the_ratings_is_refused():
    with pytest.raises(ConfigError, match=r"model.y_range=\[0,11\]"):
        check_y_range([0, 5.5], rating_range=(1.0, 10.0))
    assert check_y_range([0, 5.5], rating_range=(1.0, 5.0)) == (0.0, 5.5)


# --- training ----------------------------------------------------------------------------------
def test_dot_bias_recovers_the_planted_structure(train_run):
    _, run_dir = train_run("task=collab", "data=synthetic", "logger=csv")
    noise = 0.5  # conf/data/collab/synthetic.yaml
    rmse = summary(run_dir)["metrics"]["val/rmse"]
    assert abs(rmse / noise - 1) <= 0.10, f"valid RMSE {rmse:.3f} vs noise {noise}"
    _, dm, task = load_run(run_dir, ckpt="last")
    learned = task.model.item_bias()[1:].detach()
    planted = dm.planted["item_bias"][torch.tensor(dm.item_ids.tolist())]
    assert spearman(learned, planted) >= 0.9
    # One-cycle spans exactly the optimizer steps taken, so the lr ends fully annealed.
    sched = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["lr_schedulers"][0]
    assert sched["last_epoch"] == sched["total_steps"] == 5 * math.ceil(dm.stats["n_train"] / 64)


def test_nn_model_learns_and_its_interpretation_uses_mean_predictions(train_run):
    _, run_dir = train_run(*SMALL, "data.n_users=100", "data.n_items=100", "model=nn", "logger=none")
    _, dm, _ = load_run(run_dir)
    variance = float(dm.valid[2].var())
    assert summary(run_dir)["metrics"]["val/mse"] < 0.8 * variance  # beats predicting the mean
    out = run_dir / "interpretation"
    assert not (out / "item_bias.csv").exists()  # no biases in this model
    assert "mean_predicted_rating" in pd.read_csv(out / "new_user.csv").columns


def test_a_diverging_run_names_the_optimizer_step_where_the_loss_became_nan(train_run, tmp_path):
    # Steps inside a chunk bypass Lightning's optimizer wrapper; they must still count and be checked.
    with pytest.raises(SystemExit):
        train_run(*SMALL, "logger=none", "+callbacks.boom._target_=tests.helpers.BlowUpAt",
                  "+callbacks.boom.epoch=1", run_dir=tmp_path / "run")
    error = summary(tmp_path / "run")["error"]
    step = int(re.search(r"at step (\d+) \(epoch 1", error).group(1))
    steps_per_epoch = math.ceil(round(60 * 40 * 0.8 * 0.8) / 64)  # synthetic 60 x 40 at density 0.8
    assert steps_per_epoch <= step < 2 * steps_per_epoch


# --- interpretation and recommend --------------------------------------------------------------
def test_interpretation_is_saved_in_the_run_folder_and_logged_to_wandb(train_run):
    _, run_dir = train_run(*SMALL)  # the default logger: W&B (offline in tests)
    out = run_dir / "interpretation"
    _, dm, task = load_run(run_dir, ckpt="last")
    bias = pd.read_csv(out / "item_bias.csv")
    low, high = bias[bias.end == "lowest"], bias[bias.end == "highest"]
    assert len(low) == len(high) == 5
    assert low.bias.is_monotonic_increasing and high.bias.is_monotonic_decreasing
    assert high.bias.iloc[0] == pytest.approx(float(task.model.item_bias()[1:].max().detach()), abs=1e-6)
    count, mean = dm.item_counts()
    first = dm.titles.index(high.title.iloc[0])
    assert high.n_ratings.iloc[0] == int(count[first])
    assert high.mean_rating.iloc[0] == pytest.approx(float(mean[first]))
    pca = pd.read_csv(out / "pca_components.csv")
    assert sorted(pca.component.unique()) == ["PC1", "PC2", "PC3"] and len(pca) == 3 * 2 * 5
    assert (out / "pca.png").read_bytes()[:4] == b"\x89PNG"
    s = summary(run_dir)
    # the split's numbers, recounted from the raw ratings and fastai's RandomSplitter rows
    from fastlight.data.split import random_split_indices

    ratings = dm.load()[0].reset_index(drop=True)
    train_rows, valid_rows = random_split_indices(len(ratings), dm.valid_pct, dm.seed)
    train_users = set(ratings["user"].iloc[train_rows])
    assert s["valid_unseen_users"] == len(set(ratings["user"].iloc[valid_rows]) - train_users)
    assert s["n_users"] == len(train_users) and (s["n_train"], s["n_valid"]) == (len(train_rows), len(valid_rows))
    assert s["n_train"] + s["n_valid"] == s["n_ratings"] == len(ratings)
    tables = list((run_dir / "wandb").glob("offline-run-*/files/media/table/interpretation/*.table.json"))
    assert {p.name.split("_")[0] for p in tables} >= {"item", "pca", "new"}
    assert list((run_dir / "wandb").glob("offline-run-*/files/media/images/interpretation/*.png"))


def test_recommend_gives_unseen_items_new_user_by_bias_and_neighbours(train_run, capsys):
    _, run_dir = train_run(*SMALL, "logger=none")
    model, dm = load_for_recommend(str(run_dir))
    user = interpret.find_user(dm, str(dm.user_ids[0]))
    recs = interpret.recommend_for_user(model, dm, user, 5)
    seen = {dm.titles[i] for i in dm.seen_items(user).tolist()}
    assert len(recs) == 5 and not seen & set(recs.title) and recs.predicted_rating.is_monotonic_decreasing
    new = interpret.recommend_for_new_user(model, dm, 3)
    top_bias = (model.item_bias()[1:].argsort(descending=True)[:3] + 1).tolist()
    assert list(new.title) == [dm.titles[i] for i in top_bias]
    item = interpret.find_item(dm, dm.titles[7].upper())
    near = interpret.nearest_items(model, dm, item, 4)
    assert item == 7 and dm.titles[7] not in set(near.title) and near.similarity.is_monotonic_decreasing

    assert fastlight(["recommend", str(run_dir), "--user", str(dm.user_ids[0]), "-k", "5"]) == 0
    assert recs.title.iloc[0] in capsys.readouterr().out
    assert fastlight(["recommend", str(run_dir), "--user", "123456"]) == 2
    assert "user 123456 is not among the 60 users" in capsys.readouterr().err
    assert fastlight(["recommend", str(run_dir), "--like", "no such film"]) == 2
    assert "no movie title" in capsys.readouterr().err


def write_ratings(path, n_users=40, n_items=30, seed=0, scale=5):
    rng = np.random.default_rng(seed)
    pairs = [(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.7]
    df = pd.DataFrame(pairs, columns=["userId", "movieId"])
    df["stars"] = rng.integers(1, scale + 1, len(df))
    df.to_csv(path, index=False)


def test_csv_data_trains_and_recommend_notices_changed_data(train_run, tmp_path):
    path = tmp_path / "ratings.csv"
    write_ratings(path)
    args = ("task=collab", "data=csv", f"data.path={path}", "data.user_name=userId", "data.item_name=movieId",
            "data.rating_name=stars", "trainer.max_epochs=1", "logger=none")
    _, run_dir = train_run(*args)
    assert summary(run_dir)["status"] == "completed"
    write_ratings(path, n_users=41)  # a new user appears: the saved id maps no longer fit
    with pytest.raises(DataError, match="no longer match"):
        load_for_recommend(str(run_dir))


@pytest.mark.parametrize("override, scale, message", [
    ("data.rating_name=rating", 5, "no column 'rating'"),
    ("data.rating_name=stars", 10, r"model.y_range=\[0,11\]"),
])
def test_bad_csv_stops_the_run_with_one_sentence(train_run, tmp_path, override, scale, message):
    path = tmp_path / "ratings.csv"
    write_ratings(path, scale=scale)
    with pytest.raises(SystemExit):
        train_run("task=collab", "data=csv", f"data.path={path}", override, "logger=none", run_dir=tmp_path / "run")
    error = summary(tmp_path / "run")["error"]
    assert re.search(message, error) and "\n" not in error


# --- the real thing ----------------------------------------------------------------------------
def test_one_epoch_on_ml100k_beats_the_mean_rating(train_run, real_data):
    _, run_dir = train_run("task=collab", f"data.root={real_data}", "trainer.max_epochs=1", "logger=none")
    assert summary(run_dir)["metrics"]["val/mse"] < 0.95  # predicting the mean gives ~1.27


@pytest.mark.slow
def test_the_lesson_recipe_on_ml100k_matches_fastais_published_mse(train_run, real_data):
    _, run_dir = train_run("task=collab", f"data.root={real_data}", "logger=none")
    assert summary(run_dir)["metrics"]["val/mse"] <= 0.822  # fastai publishes 0.811-0.822
