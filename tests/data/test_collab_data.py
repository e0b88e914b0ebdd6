"""`fastlight.data.collab`: fastai's split, id maps from the training rows, readable errors."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from fastlight.data.collab import (
    CollabData, MovieLens100k, RatingsCSV, SyntheticRatings, random_split, time_split,
)
from fastlight.errors import ConfigError, DataError


class FrameData(CollabData):
    """A data module over a DataFrame given in the test."""

    def __init__(self, ratings: pd.DataFrame, titles=None, **kwargs):
        super().__init__(**kwargs)
        self.frame, self.title_map = ratings, titles

    def load(self):
        return self.frame, self.title_map


def test_random_split_is_fastais_random_splitter():
    # fastai: torch.manual_seed(seed); randperm(n); the first int(valid_pct * n) go to validation.
    torch.manual_seed(42)
    expected = torch.randperm(1000).numpy()
    train, valid = random_split(1000, 0.2, seed=42)
    assert valid.tolist() == expected[:200].tolist()
    assert train.tolist() == expected[200:].tolist()


def test_time_split_sends_each_users_latest_ratings_to_validation():
    rng = np.random.default_rng(0)
    ratings = pd.DataFrame({"user": rng.integers(0, 30, 2000), "item": rng.integers(0, 50, 2000),
                            "rating": rng.integers(1, 6, 2000).astype(np.float32),
                            "timestamp": rng.permutation(2000)})
    train, valid = time_split(ratings, 0.2)
    assert sorted([*train, *valid]) == list(range(2000))
    tr, va = ratings.iloc[train], ratings.iloc[valid]
    latest_train = tr.groupby("user").timestamp.max()
    earliest_valid = va.groupby("user").timestamp.min()
    assert (earliest_valid > latest_train[earliest_valid.index]).all()
    assert abs(len(valid) / 2000 - 0.2) < 0.02


def test_ids_come_from_training_rows_and_unseen_ones_map_to_index_0():
    n = 200
    _, valid = random_split(n, 0.2, seed=42)
    ratings = pd.DataFrame({"user": np.arange(n) % 10, "item": np.arange(n) % 7 + 100,
                            "rating": np.full(n, 3.0, np.float32)})
    ratings.loc[valid[0], "user"] = 999  # a user only in validation
    ratings.loc[valid[1], "item"] = 555  # an item only in validation
    dm = FrameData(ratings, {100: "Hundred"}, seed=42)
    dm.setup()
    assert 999 not in dm.user_ids and 555 not in dm.item_ids
    assert dm.dims["n_users"] == 11 and dm.dims["n_items"] == 8  # + the unknown index 0
    vu, vi, _ = dm.valid
    assert int((vu == 0).sum()) == 1 and int((vi == 0).sum()) == 1
    assert (dm.train[0] > 0).all() and (dm.train[1] > 0).all()
    assert dm.stats["valid_unseen_users"] == 1 and dm.stats["valid_unseen_items"] == 1
    assert dm.stats["valid_rows_unseen"] == 2
    assert dm.titles[1] == "Hundred" and dm.titles[2] == "101"  # no title: the id


def test_training_batches_are_a_fresh_permutation_each_epoch():
    dm = SyntheticRatings(n_users=20, n_items=20, density=0.5, batch_size=16, steps_per_call=1, seed=0)
    dm.setup()
    loader = dm.train_dataloader()
    epoch0 = torch.cat([b[2] for b in loader])
    epoch1 = torch.cat([b[2] for b in loader])
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch0.sort().values, dm.train[2].sort().values)  # every row exactly once


def write(path, text):
    path.write_text(text)
    return path


def test_csv_reads_named_columns_and_titles(tmp_path):
    ratings = write(tmp_path / "r.csv", "who,what,stars,when\na,x,4,1\nb,x,2.5,2\na,y,5,3\nb,y,1,4\na,z,3,5\n")
    titles = write(tmp_path / "t.csv", "what,title\nx,Ex\ny,Why\n")
    dm = RatingsCSV(path=str(ratings), user_name="who", item_name="what", rating_name="stars",
                    time_name="when", titles=str(titles), valid_pct=0.2, split="time")
    dm.setup()
    assert dm.stats["n_ratings"] == 5 and dm.rating_range == (1.0, 5.0)
    assert "Ex" in dm.titles and "Why" in dm.titles


@pytest.mark.parametrize("text, names, message", [
    ("user,item,score\n1,2,3\n", {"rating_name": "rating"}, "no column 'rating'"),
    ("user,item,rating\n1,2,3\n1,3,good\n", {}, "must hold numbers"),
    ("user,item,rating\n", {}, "no rating rows"),
    ("user,item\n1,2\n", {}, "needs user, item and rating columns"),
])
def test_csv_problems_are_one_clear_sentence(tmp_path, text, names, message):
    dm = RatingsCSV(path=str(write(tmp_path / "r.csv", text)), **names)
    with pytest.raises(DataError, match=message) as err:
        dm.setup()
    assert "\n" not in str(err.value)


def test_csv_without_a_path_or_timestamp_says_which_setting_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="data.path"):
        RatingsCSV().setup()
    dm = RatingsCSV(path=str(write(tmp_path / "r.csv", "u,i,r\n1,2,3\n1,3,4\n")), split="time")
    with pytest.raises(ConfigError, match="time_name"):
        dm.setup()


def test_ml100k_missing_without_download_is_one_sentence(tmp_path):
    with pytest.raises(DataError, match="MovieLens 100K: missing ml-100k.zip"):
        MovieLens100k(root=str(tmp_path), download=False).prepare_data()


def test_ml100k_zip_in_its_folder_is_extracted_and_read(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    with zipfile.ZipFile(folder / "ml-100k.zip", "w") as zf:
        zf.writestr("ml-100k/u.data", "".join(f"{u}\t{i}\t4\t88125094{u}\n" for u in (1, 2, 3) for i in (10, 20)))
        zf.writestr("ml-100k/u.item", "10|Caf\xe9 (1995)|x\n20|Two (1996)|y\n".encode("latin-1"))
    dm = MovieLens100k(root=str(tmp_path), valid_pct=0.2)
    dm.prepare_data()
    dm.setup()
    assert (folder / "u.data").is_file()
    assert dm.stats["n_ratings"] == 6 and dm.titles[1:] == ["Café (1995)", "Two (1996)"]  # latin-1


def test_real_ml100k_has_the_published_shape(real_data):
    dm = MovieLens100k(root=str(real_data))
    dm.prepare_data()
    dm.setup()
    assert dm.stats["n_ratings"] == 100_000 and dm.stats["n_train"] == 80_000
    assert dm.stats["n_users"] == 943
    assert dm.dims["n_users"] == 944 and dm.rating_range == (1.0, 5.0)
    assert dm.titles[dm.item_ids.get_loc(1) + 1] == "Toy Story (1995)"
