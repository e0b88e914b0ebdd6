"""Tables for the tabular task: UCI Adult, any CSV, and a synthetic twin of Adult.

`TabularData` takes train / valid / (test) frames from a subclass, fits `TabularProcs` on the
training rows only, and serves (x_cat, x_cont, y) tensors through `TensorBatches`: a fresh
permutation of the rows each epoch (fastai's tabular loader samples rows *with* replacement,
so an epoch sees only ~63% of them) and several optimizer steps per Lightning step.

Adult (lesson 4): `adult.data` (32,561 rows, no header, values after ", ", missing as "?") is
split 80/20 at random as fastai's RandomSplitter(0.2, seed) does; `adult.test` (16,281 rows,
a junk first line, labels ending in ".") is the test set.
"""

from __future__ import annotations

import io

import lightning as L
import numpy as np
import pandas as pd
import torch

from fastlight.data.core import TensorBatches, data_root
from fastlight.data.download import Remote, fetch
from fastlight.data.procs import TabularProcs, check_columns
from fastlight.data.split import random_split_indices
from fastlight.errors import ConfigError, DataError

PROBLEMS = ("classification", "regression")


class TabularData(L.LightningDataModule):
    """Subclasses provide `frames()`; everything else (procs, tensors, loaders, dims) is here."""

    def __init__(
        self, cat_names: list[str], cont_names: list[str], y_name: str, problem: str = "classification",
        log_target: bool = False, y_range=None, plot_embedding: str | None = None, valid_pct: float = 0.2,
        batch_size: int = 64, steps_per_call: int = 16, eval_batch_size: int = 4096, seed: int = 42,
    ):
        super().__init__()
        if problem not in PROBLEMS:
            raise ConfigError(f"data.problem={problem!r} must be classification or regression")
        if log_target and problem != "regression":
            raise ConfigError("data.log_target=true needs data.problem=regression")
        if not 0 < valid_pct < 1:
            raise ConfigError(f"data.valid_pct={valid_pct} must be between 0 and 1")
        if plot_embedding is not None and plot_embedding not in cat_names:
            raise ConfigError(f"data.plot_embedding={plot_embedding!r} is not one of data.cat_names")
        self.cat_names, self.cont_names, self.y_name = list(cat_names), list(cont_names), y_name
        self.problem, self.log_target, self.y_range = problem, bool(log_target), y_range
        self.plot_embedding, self.valid_pct = plot_embedding, valid_pct
        self.batch_size, self.steps_per_call, self.eval_batch_size = batch_size, steps_per_call, eval_batch_size
        self.seed = seed
        self.procs: TabularProcs | None = None
        self.train = self.valid = self.test = None
        self.dims: dict = {}

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
        """(train, valid, test or None) as raw frames."""
        raise NotImplementedError

    def setup(self, stage: str | None = None):
        if self.procs is not None:
            return
        frames = zip(self.frames(), ("training", "validation", "test"))
        train, valid, test = (self._labelled(f, what) for f, what in frames)
        self.procs = TabularProcs(self.cat_names, self.cont_names, self.y_name, self.problem, self.log_target)
        self.procs.fit(train, "the training rows")
        self.train = self.procs.tensors(train, "the training rows")
        self.valid = self.procs.tensors(valid, "the validation rows")
        self.test = None if test is None else self.procs.tensors(test, "the test rows")
        self.dims = {
            "n_cats": self.procs.cardinalities, "n_cont": len(self.cont_names),
            "out_sz": self.procs.out_sz, "y_range": self._y_range(self.train[2]),
        }

    def _labelled(self, df: pd.DataFrame | None, what: str) -> pd.DataFrame | None:
        """Rows without a target can't be trained or scored on: drop them, and say so."""
        if df is None:
            return None
        check_columns(df, [self.y_name], f"the {what} rows")
        keep = df[self.y_name].notna()
        if not keep.all():
            print(f"[tabular] dropped {int((~keep).sum())} {what} rows with no {self.y_name!r}")
        if not keep.any():
            raise DataError(f"the {what} rows have no value of the target {self.y_name!r}")
        return df[keep].reset_index(drop=True)

    def _y_range(self, y: torch.Tensor) -> list[float] | None:
        """None, [lo, hi] as given (on the model's scale: log when log_target), or `auto`."""
        if self.y_range is None:
            return None
        if self.problem != "regression":
            raise ConfigError("data.y_range applies to regression only; set it to null")
        if self.y_range == "auto":
            # The Rossmann lesson: (0, log(1.2 * max)) for a log target, else (0, 1.2 * max).
            top = float(y.max())
            return [0.0, top + float(np.log(1.2))] if self.log_target else [0.0, 1.2 * top]
        try:
            lo, hi = (float(v) for v in self.y_range)
        except (TypeError, ValueError):
            lo = hi = 0.0
        if not lo < hi:
            raise ConfigError(f"data.y_range={self.y_range} must be [lo, hi] with lo < hi, auto or null")
        return [lo, hi]

    def random_split(self, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """fastai's RandomSplitter(valid_pct, seed): the first valid_pct of a seeded randperm."""
        train, valid = random_split_indices(len(df), self.valid_pct, self.seed)
        return df.iloc[train].reset_index(drop=True), df.iloc[valid].reset_index(drop=True)

    def train_dataloader(self):
        # drop_last: a last batch of one row would break BatchNorm in training mode (fastai drops it too).
        return TensorBatches(self.train, self.batch_size, shuffle=True, seed=self.seed, drop_last=True,
                             steps_per_call=self.steps_per_call, trainer=self.trainer)

    def val_dataloader(self):
        return TensorBatches(self.valid, self.eval_batch_size, trainer=self.trainer)


class WithTest:
    """Mixed into a data module that has a labelled test set (run.py then calls Trainer.test)."""

    def test_dataloader(self):
        return TensorBatches(self.test, self.eval_batch_size, trainer=self.trainer)


# --- UCI Adult -----------------------------------------------------------------------------
ADULT_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"
ADULT_FILES = {"adult.data": "5d7c39d7b8804f071cdd1f2a7c460872", "adult.test": "35238206dfdf7f1fe215bbb874adecdc"}
# From adult.names; the target is called "salary" as in fastai's ADULT_SAMPLE.
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
                 "salary"]


def read_adult(source, name: str = "adult file") -> pd.DataFrame:
    """adult.data / adult.test as a frame: "?" is missing, the test labels lose their final "."."""
    try:
        # comment="|": adult.test opens with the line "|1x3 Cross validator".
        df = pd.read_csv(source, header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values="?", comment="|")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{name} is not a UCI Adult file ({e}); delete it to download it again") from None
    if len(df) == 0 or df["salary"].isna().all():
        raise DataError(f"{name} has no rows with a salary label; delete it to download it again")
    df["salary"] = df["salary"].str.rstrip(".")
    return df


class AdultData(WithTest, TabularData):
    def __init__(self, root: str | None = None, download: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.folder = data_root(root) / "adult"
        self.download = download

    def prepare_data(self):
        fetch(
            self.folder,
            [Remote(name, (ADULT_URL + name,), md5) for name, md5 in ADULT_FILES.items()],
            dataset="UCI Adult",
            how_to=f"put adult.data and adult.test from {ADULT_URL} there, "
                   "or set FASTLIGHT_DATA to a folder with adult/",
            download=self.download,
        )

    def raw(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return (read_adult(self.folder / "adult.data", str(self.folder / "adult.data")),
                read_adult(self.folder / "adult.test", str(self.folder / "adult.test")))

    def frames(self):
        data, test = self.raw()
        return (*self.random_split(data), test)


class SyntheticAdult(AdultData):
    """Adult's files, made up with planted effects, read by the same parser.

    log-odds of >50K = -1.5 + 0.8 * z(education-num) + an offset per occupation and per
    marital-status + 0.4 * z(age); workclass and fnlwgt carry no signal. About 5% of workclass
    and occupation are "?", as in the real files.
    """

    def __init__(self, n_train: int = 4000, n_test: int = 1000, **kwargs):
        super().__init__(download=False, **kwargs)
        self.n_train, self.n_test = n_train, n_test

    def prepare_data(self):
        pass  # nothing to fetch

    def raw(self):
        rng = np.random.default_rng(self.seed)
        occupations = ["Tech-support", "Craft-repair", "Sales", "Exec-managerial", "Prof-specialty",
                       "Handlers-cleaners", "Machine-op-inspct", "Adm-clerical"]
        occ_effect = dict(zip(occupations, [0.5, -0.5, 0.0, 1.5, 1.2, -1.5, -1.0, -0.3]))
        marital = {"Married-civ-spouse": 1.2, "Never-married": -1.2, "Divorced": -0.5}
        edu = {"HS-grad": 9, "Some-college": 10, "Bachelors": 13, "Masters": 14, "11th": 7, "Doctorate": 16}

        def lines(n: int, test: bool) -> str:
            age = rng.integers(18, 70, n)
            ed = rng.choice(list(edu), n)
            ed_num = np.array([edu[e] for e in ed])
            occ, mar = rng.choice(occupations, n), rng.choice(list(marital), n)
            logit = (-1.5 + 0.8 * (ed_num - 11) / 2.5 + np.array([occ_effect[o] for o in occ])
                     + np.array([marital[m] for m in mar]) + 0.4 * (age - 43) / 15)
            rich = rng.random(n) < 1 / (1 + np.exp(-logit))
            work = rng.choice(["Private", "Self-emp-not-inc", "State-gov"], n).astype(object)
            work[rng.random(n) < 0.05] = "?"
            occ = occ.astype(object)
            occ[rng.random(n) < 0.05] = "?"
            rows = ["|1x3 Cross validator"] if test else []
            for i in range(n):
                label = (">50K" if rich[i] else "<=50K") + ("." if test else "")
                rows.append(", ".join(map(str, [
                    age[i], work[i], rng.integers(20_000, 500_000), ed[i], ed_num[i], mar[i], occ[i], "Husband",
                    "White", "Male", 0, 0, 40, "United-States", label])))
            return "\n".join(rows) + "\n"

        return (read_adult(io.StringIO(lines(self.n_train, False)), "synthetic adult.data"),
                read_adult(io.StringIO(lines(self.n_test, True)), "synthetic adult.test"))


# --- any CSV --------------------------------------------------------------------------------
def read_table(path, sep: str = ",", what: str = "data.path") -> pd.DataFrame:
    """A CSV as a frame; `what` names it in messages (a config key like data.path, or a description)."""
    if path is None:
        raise ConfigError(f"{what} is not set; give the CSV file, e.g. {what}=my_table.csv")
    name = f"{what}={path}" if what.startswith("data.") else f"{what} {path}"
    try:
        df = pd.read_csv(path, sep=sep, low_memory=False)
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{name} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{name} is not a readable CSV ({' '.join(str(e).split())})") from None
    if len(df) == 0:
        raise DataError(f"{name} has a header but no rows")
    return df


class CSVData(TabularData):
    """A CSV file, split at random into train and valid (fastai's TabularDataLoaders.from_csv)."""

    def __init__(self, path: str | None = None, sep: str = ",", test_path: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.path, self.sep, self.test_path = path, sep, test_path

    def frames(self):
        df = read_table(self.path, self.sep)
        for n in self.cat_names + self.cont_names + [self.y_name]:
            if n in df.columns and df[n].isna().all():
                raise DataError(f"column {n!r} of {self.path} has no values; drop it from the configured columns")
        check_columns(df, self.cat_names + self.cont_names + [self.y_name], str(self.path))
        test = read_table(self.test_path, self.sep, "data.test_path") if self.test_path else None
        return (*self.random_split(df), test)


class CSVDataWithTest(WithTest, CSVData):
    pass


def csv_data(test_path: str | None = None, **kwargs) -> CSVData:
    """`data=csv`: a test set (and Trainer.test) only when data.test_path is given."""
    return CSVDataWithTest(test_path=test_path, **kwargs) if test_path else CSVData(**kwargs)
