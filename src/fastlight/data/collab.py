"""Ratings for collaborative filtering, held in memory as three tensors (user, item, rating).

Sources: MovieLens 100K (`u.data` + titles from `u.item`), MovieLens latest-small
(`ratings.csv` + `movies.csv`), any ratings CSV, and a synthetic twin with planted factors.

The split follows fastai's `CollabDataLoaders.from_df`: `torch.randperm(n)` after seeding with
`seed`, the first int(valid_pct * n) rows to validation. `split=time` instead sends each user's
latest ratings to validation, which is how a recommender is judged in practice. Ids are mapped
from the training rows only, as fastai's `Categorify` does: index 0 is the unknown user/item
(fastai's `#na#`), so a validation row whose user or item never appears in training still gets
a prediction; how many there are is part of the run's summary.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from fastlight.data.core import TensorBatches, data_root
from fastlight.data.download import Remote, extract_zip, fetch
from fastlight.data.split import random_split_indices
from fastlight.errors import ConfigError, DataError

GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
ML100K_MD5 = "0e33842e24a9c977be4e0107933c0723"  # GroupLens's published ml-100k.zip.md5
COLUMNS = ["user", "item", "rating", "timestamp"]


random_split = random_split_indices  # fastai's RandomSplitter: (train rows, valid rows); the name callers know


def time_split(ratings: pd.DataFrame, valid_pct: float) -> tuple[np.ndarray, np.ndarray]:
    """Each user's latest round(valid_pct * their ratings) rows go to validation."""
    by_time = ratings.sort_values(["user", "timestamp"], kind="stable")
    from_end = by_time.groupby("user", sort=False).cumcount(ascending=False).to_numpy()  # 0 = latest
    n_user = by_time.groupby("user", sort=False)["user"].transform("size").to_numpy()
    is_valid = from_end < np.floor(valid_pct * n_user + 0.5)
    rows = by_time.index.to_numpy()
    return np.sort(rows[~is_valid]), np.sort(rows[is_valid])


def read_ratings_csv(path, user_name, item_name, rating_name, time_name=None, sep=",") -> pd.DataFrame:
    """A ratings file as columns user, item, rating[, timestamp]; DataError naming any problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"ratings file {path} does not exist (relative paths start at {Path.cwd()})")
    try:
        df = pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a readable CSV file ({str(e).strip().splitlines()[0]})") from None
    names = {"user": user_name, "item": item_name, "rating": rating_name}
    for key, pos in (("user", 0), ("item", 1), ("rating", 2)):
        if names[key] is None:  # fastai's from_csv default: the first three columns
            if len(df.columns) <= pos:
                raise DataError(f"{path} has {len(df.columns)} column(s); it needs user, item and rating columns")
            names[key] = df.columns[pos]
    if time_name is not None:
        names["timestamp"] = time_name
    for key, col in names.items():
        if col not in df.columns:
            raise DataError(
                f"{path} has no column {col!r} for the {key}s (its columns: {', '.join(map(str, df.columns))}); "
                f"set data.{'time' if key == 'timestamp' else key}_name to one of them"
            )
    df = df[list(names.values())].set_axis(list(names), axis=1)
    if len(df) == 0:
        raise DataError(f"{path} has a header but no rating rows")
    rating = pd.to_numeric(df["rating"], errors="coerce")
    bad = rating.isna() | ~np.isfinite(rating.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: column {names['rating']!r} must hold numbers, but {int(bad.sum())} row(s) do not "
            f"(first: {df['rating'].iloc[first]!r} on line {first + 2})"
        )
    df["rating"] = rating.astype(np.float32)
    for key in ("user", "item"):
        if df[key].isna().any():
            raise DataError(f"{path}: column {names[key]!r} has {int(df[key].isna().sum())} empty {key} id(s)")
    return df


def read_titles(path, item_name: str, title_name: str, sep: str = ",", encoding: str | None = None) -> dict:
    """{item id: title} from a file with an item-id column and a title column."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"titles file {path} does not exist")
    df = pd.read_csv(path, sep=sep, encoding=encoding)
    for col in (item_name, title_name):
        if col not in df.columns:
            columns = ", ".join(map(str, df.columns))
            raise DataError(f"titles file {path} has no column {col!r} (its columns: {columns})")
    return dict(zip(df[item_name], df[title_name].astype(str)))


class CollabData(L.LightningDataModule):
    """Split, id maps and in-memory batches; a subclass only says how to `load` its ratings."""

    def __init__(self, valid_pct: float = 0.2, split: str = "random", batch_size: int = 64,
                 steps_per_call: int = 64, eval_batch_size: int = 32768, seed: int = 42):
        super().__init__()
        self.valid_pct, self.split, self.seed = valid_pct, split, int(seed)
        self.batch_size, self.steps_per_call, self.eval_batch_size = batch_size, steps_per_call, eval_batch_size
        self.train = self.valid = None
        self.dims: dict = {}

    def load(self) -> tuple[pd.DataFrame, dict | None]:
        """(ratings with columns user, item, rating[, timestamp], {item id: title} or None)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None):
        if self.train is not None:
            return
        # Checked here, not in __init__: Hydra would wrap the error of a constructor in its own.
        if not 0 < self.valid_pct < 1:
            raise ConfigError(f"data.valid_pct={self.valid_pct} must be between 0 and 1")
        if self.split not in ("random", "time"):
            raise ConfigError(f"data.split={self.split!r} must be random or time")
        ratings, titles = self.load()
        ratings = ratings.reset_index(drop=True)
        if self.split == "time":
            if "timestamp" not in ratings.columns:
                raise ConfigError("data.split=time needs a timestamp column (data.time_name=<column>)")
            train_rows, valid_rows = time_split(ratings, self.valid_pct)
        else:
            train_rows, valid_rows = random_split(len(ratings), self.valid_pct, self.seed)
        if len(train_rows) == 0 or len(valid_rows) == 0:
            raise DataError(f"{len(ratings)} rating(s) are too few to split with valid_pct={self.valid_pct}")
        train = ratings.iloc[train_rows]
        # Sorted ids from the training rows only; embedding index = position + 1, 0 = unknown.
        self.user_ids = pd.Index(np.sort(train["user"].unique()))
        self.item_ids = pd.Index(np.sort(train["item"].unique()))
        users = torch.from_numpy(self.user_ids.get_indexer(ratings["user"]) + 1)
        items = torch.from_numpy(self.item_ids.get_indexer(ratings["item"]) + 1)
        stars = torch.from_numpy(ratings["rating"].to_numpy(np.float32, copy=True))
        t, v = torch.from_numpy(train_rows), torch.from_numpy(valid_rows)
        self.train = (users[t], items[t], stars[t])
        self.valid = (users[v], items[v], stars[v])
        self.all_users, self.all_items = users, items  # every row, for "items this user has seen"
        titles = titles or {}
        self.titles = ["#na#"] + [str(titles.get(i, i)) for i in self.item_ids]
        vu, vi = self.valid[0] == 0, self.valid[1] == 0
        self.stats = {
            "n_ratings": len(ratings), "n_train": len(train_rows), "n_valid": len(valid_rows),
            "n_users": len(self.user_ids), "n_items": len(self.item_ids),
            "valid_unseen_users": int(ratings["user"].iloc[valid_rows][vu.numpy()].nunique()),
            "valid_unseen_items": int(ratings["item"].iloc[valid_rows][vi.numpy()].nunique()),
            "valid_rows_unseen": int((vu | vi).sum()),
        }
        self.dims = {"n_users": len(self.user_ids) + 1, "n_items": len(self.item_ids) + 1}
        self.rating_range = (float(stars.min()), float(stars.max()))  # the task checks model.y_range covers it

    # --- what the interpretation reads ------------------------------------------------------
    def item_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(number of training ratings, mean training rating) per item index."""
        _, items, stars = self.train
        n = self.dims["n_items"]
        count = torch.bincount(items, minlength=n)
        total = torch.zeros(n).index_add_(0, items, stars)
        return count, total / count.clamp(min=1)

    def seen_items(self, user: int) -> torch.Tensor:
        """Item indices user index `user` has rated (training or validation)."""
        return self.all_items[(self.all_users == user) & (self.all_items > 0)]

    # --- loaders ------------------------------------------------------------------------------
    def train_dataloader(self):
        # A fresh permutation every epoch (fastai samples with replacement and ends ~0.04 MSE worse),
        # drawn from (seed, trainer's epoch) so a resumed run sees the batches an unbroken one would.
        return TensorBatches(self.train, self.batch_size, shuffle=True, seed=self.seed,
                             steps_per_call=self.steps_per_call,
                             trainer=self.trainer)

    def val_dataloader(self):
        return TensorBatches(self.valid, self.eval_batch_size, trainer=self.trainer)


class MovieLens100k(CollabData):
    """<root>/ml-100k/u.data and u.item, from GroupLens's zip when they are not there."""

    def __init__(self, root: str | None = None, download: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.folder = data_root(root) / "ml-100k"
        self.download = download

    def prepare_data(self):
        if (self.folder / "u.data").is_file() and (self.folder / "u.item").is_file():
            return
        paths = fetch(self.folder, [Remote("ml-100k.zip", (GROUPLENS + "ml-100k.zip",), ML100K_MD5)],
                      dataset="MovieLens 100K", download=self.download,
                      how_to="unzip GroupLens's ml-100k.zip there, or set FASTLIGHT_DATA to a folder with ml-100k/")
        extract_zip(paths["ml-100k.zip"], self.folder, members_prefix="ml-100k/")

    def load(self):
        try:
            ratings = pd.read_csv(self.folder / "u.data", sep="\t", header=None, names=COLUMNS)
            items = pd.read_csv(self.folder / "u.item", sep="|", header=None, encoding="latin-1", usecols=[0, 1])
        except (OSError, pd.errors.ParserError, ValueError) as e:
            raise DataError(f"{self.folder} does not hold MovieLens 100K's u.data and u.item ({e})") from None
        if ratings.isna().any().any() or len(ratings) == 0:
            raise DataError(f"{self.folder / 'u.data'} is not MovieLens 100K (empty or missing fields); "
                            "delete it to download it again")
        return ratings, dict(zip(items[0], items[1]))


class RatingsCSV(CollabData):
    """The user's own ratings file; columns named by fastai's from_csv argument names."""

    def __init__(self, path: str | None = None, user_name: str | None = None, item_name: str | None = None,
                 rating_name: str | None = None, time_name: str | None = None, titles: str | None = None,
                 title_name: str = "title", sep: str = ",", **kwargs):
        super().__init__(**kwargs)
        self.path, self.titles_path, self.sep = path, titles, sep
        self.names = (user_name, item_name, rating_name, time_name)
        self.title_name = title_name

    def load(self):
        if self.path is None:
            raise ConfigError("data=csv needs the ratings file: data.path=<file.csv>")
        ratings = read_ratings_csv(self.path, *self.names, sep=self.sep)
        if self.titles_path is None:
            return ratings, None
        item_name = self.names[1] or "item"
        return ratings, read_titles(self.titles_path, item_name, self.title_name, sep=self.sep)


class MovieLensLatestSmall(RatingsCSV):
    """<root>/ml-latest-small/ratings.csv and movies.csv (half-star ratings 0.5-5)."""

    def __init__(self, root: str | None = None, download: bool = True, **kwargs):
        self.folder = data_root(root) / "ml-latest-small"
        super().__init__(path=str(self.folder / "ratings.csv"), user_name="userId", item_name="movieId",
                         rating_name="rating", time_name="timestamp", titles=str(self.folder / "movies.csv"),
                         **kwargs)
        self.download = download

    def prepare_data(self):
        if (self.folder / "ratings.csv").is_file() and (self.folder / "movies.csv").is_file():
            return
        # GroupLens updates "latest" in place and publishes no fixed checksum: md5 None.
        paths = fetch(self.folder, [Remote("ml-latest-small.zip", (GROUPLENS + "ml-latest-small.zip",), None)],
                      dataset="MovieLens latest-small", download=self.download,
                      how_to="unzip GroupLens's ml-latest-small.zip there, "
                             "or set FASTLIGHT_DATA to a folder with ml-latest-small/")
        extract_zip(paths["ml-latest-small.zip"], self.folder, members_prefix="ml-latest-small/")


class SyntheticRatings(CollabData):
    """Planted structure: rating = sigmoid_range(user . item + user bias + item bias, 0, 5.5) + noise.

    The model family `model=dot_bias` fits exactly, so a trained model should reach a validation
    RMSE close to `noise` and learn item biases that rank like the planted ones (`self.planted`).
    """

    def __init__(self, n_users: int = 300, n_items: int = 300, rank: int = 4, density: float = 0.8,
                 noise: float = 0.5, bias_std: float = 0.5, factor_std: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.shape, self.rank, self.density = (n_users, n_items), rank, density
        self.noise, self.bias_std, self.factor_std = noise, bias_std, factor_std

    def load(self):
        g = torch.Generator().manual_seed(self.seed)
        n_users, n_items = self.shape
        user_f = torch.randn(n_users, self.rank, generator=g) * self.factor_std
        item_f = torch.randn(n_items, self.rank, generator=g) * self.factor_std
        user_b = torch.randn(n_users, generator=g) * self.bias_std
        item_b = torch.randn(n_items, generator=g) * self.bias_std
        n = int(self.density * n_users * n_items)
        pairs = torch.randperm(n_users * n_items, generator=g)[:n]  # each (user, item) rated at most once
        u, i = pairs // n_items, pairs % n_items
        score = (user_f[u] * item_f[i]).sum(1) + user_b[u] + item_b[i] + 0.5  # 0.5: mean rating ~3.4
        rating = torch.sigmoid(score) * 5.5 + self.noise * torch.randn(n, generator=g)
        self.planted = {"item_bias": item_b, "user_bias": user_b, "item_factors": item_f, "user_factors": user_f}
        ratings = pd.DataFrame({
            "user": u.numpy(), "item": i.numpy(),
            "rating": rating.clamp(0, 5.5).numpy(),  # stays inside y_range (0, 5.5); clips a few noisy tails
            "timestamp": torch.randint(0, 10**6, (n,), generator=g).numpy(),
        })
        return ratings, {j: f"item {j}" for j in range(n_items)}
