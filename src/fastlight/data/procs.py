"""fastai's tabular preprocessing (lessons 4 and 6), fitted on the training rows only.

- `FillMissing`: a NaN in a continuous column becomes that column's training median; a column
  that had NaNs in training also gets a `<col>_na` flag, which is then a categorical input.
- `Categorify`: each categorical column's levels are the sorted training values; a value's code
  is its index + 1, and 0 ('#na#') is every missing or never-seen value.
- `Normalize`: (x - mean) / (std + 1e-7) with the training mean and std (ddof=0, as fastai v2).
- `add_datepart`: a date column -> Year, Month, Week, Day, Dayofweek, Dayofyear, the six Is_*
  flags and Elapsed (seconds since 1970), the features the Rossmann lesson builds from dates.

`TabularProcs` chains them in the lessons' order (FillMissing, Categorify, Normalize), encodes
the target, and turns any frame with the same columns into (x_cat, x_cont, y) tensors. Its
state is a plain dict saved in the checkpoint, so `predict` treats new rows exactly as training.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import torch

from fastlight.errors import DataError

NA = "#na#"  # the name of code 0 in every categorical column


def _levels(col: pd.Series) -> list:
    """The distinct non-missing values, sorted (as text when they don't compare)."""
    values = pd.unique(col.dropna()).tolist()
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _numeric(df: pd.DataFrame, name: str, what: str) -> pd.Series:
    """Column `name` as float64; text that isn't a number is the user's mistake, said in one line."""
    col = df[name]
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return col.astype("float64")
    num = pd.to_numeric(col, errors="coerce")
    bad = col[num.isna() & col.notna()]
    if len(bad):
        raise DataError(f"continuous column {name!r} of {what} holds text such as {bad.iloc[0]!r}; "
                        "list it in cat_names instead, or clean it")
    return num.astype("float64")


def check_columns(df: pd.DataFrame, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise DataError(f"no column {', '.join(map(repr, missing))} in {what} "
                        f"(its columns: {', '.join(map(str, df.columns))})")


class FillMissing:
    def __init__(self, names: list[str]):
        self.names = list(names)
        self.medians: dict[str, float] = {}
        self.na_names: list[str] = []  # the `<col>_na` flags, for columns that had NaNs in training

    def fit(self, df: pd.DataFrame, what: str = "the training rows") -> FillMissing:
        self.medians, self.na_names = {}, []
        for n in self.names:
            col = _numeric(df, n, what)
            if col.isna().all():
                raise DataError(f"continuous column {n!r} has no values in {what}; drop it from cont_names")
            self.medians[n] = float(col.median())
            if col.isna().any():
                self.na_names.append(f"{n}_na")
        return self

    def __call__(self, df: pd.DataFrame, what: str = "the rows") -> pd.DataFrame:
        out = df.copy()
        for n in self.names:
            col = _numeric(df, n, what)
            if f"{n}_na" in self.na_names:
                out[f"{n}_na"] = col.isna()
            # Columns without NaNs in training get no flag, but a NaN later is still filled.
            out[n] = col.fillna(self.medians[n])
        return out

    def state_dict(self) -> dict:
        return {"names": self.names, "medians": self.medians, "na_names": self.na_names}

    def load_state_dict(self, state: dict) -> FillMissing:
        self.names, self.medians, self.na_names = list(state["names"]), dict(state["medians"]), list(state["na_names"])
        return self


class Categorify:
    def __init__(self, names: list[str]):
        self.names = list(names)
        self.classes: dict[str, list] = {}  # levels of each column, without '#na#'

    def fit(self, df: pd.DataFrame, what: str = "the training rows") -> Categorify:
        self.classes = {}
        for n in self.names:
            if df[n].isna().all():
                raise DataError(f"categorical column {n!r} has no values in {what}; drop it from cat_names")
            self.classes[n] = _levels(df[n])
        return self

    def codes(self, col: pd.Series, name: str) -> np.ndarray:
        """0 for missing or unseen values, else 1 + the level's index."""
        return pd.Categorical(col, categories=self.classes[name]).codes.astype(np.int64) + 1

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        for n in self.names:
            out[n] = self.codes(df[n], n)
        return out

    def cardinality(self, name: str) -> int:
        return len(self.classes[name]) + 1  # + '#na#'

    def vocab(self, name: str) -> list[str]:
        return [NA] + [str(c) for c in self.classes[name]]

    def state_dict(self) -> dict:
        return {"names": self.names, "classes": self.classes}

    def load_state_dict(self, state: dict) -> Categorify:
        self.names, self.classes = list(state["names"]), {k: list(v) for k, v in state["classes"].items()}
        return self


class Normalize:
    EPS = 1e-7

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.means: dict[str, float] = {}
        self.stds: dict[str, float] = {}

    def fit(self, df: pd.DataFrame) -> Normalize:
        self.means = {n: float(df[n].mean()) for n in self.names}
        self.stds = {n: float(df[n].std(ddof=0)) for n in self.names}
        return self

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        for n in self.names:
            out[n] = (df[n].astype("float64") - self.means[n]) / (self.stds[n] + self.EPS)
        return out

    def state_dict(self) -> dict:
        return {"names": self.names, "means": self.means, "stds": self.stds}

    def load_state_dict(self, state: dict) -> Normalize:
        self.names, self.means, self.stds = list(state["names"]), dict(state["means"]), dict(state["stds"])
        return self


DATE_ATTRS = ("Year", "Month", "Week", "Day", "Dayofweek", "Dayofyear", "Is_month_end", "Is_month_start",
              "Is_quarter_end", "Is_quarter_start", "Is_year_end", "Is_year_start")


def add_datepart(df: pd.DataFrame, field: str, prefix: str | None = None, drop: bool = True, time: bool = False):
    """fastai's add_datepart, returning a new frame: `field` parsed as a date and expanded.

    The new columns are named prefix + attribute; the prefix defaults to `field` without a
    trailing 'Date' (so 'Date' gives 'Year', 'saleDate' gives 'saleYear'). Week is the ISO week,
    Dayofweek is Monday=0, Elapsed is seconds since 1970 (NaN for a missing date).
    """
    out = df.copy()
    date = pd.to_datetime(out[field])
    prefix = re.sub("[Dd]ate$", "", field) if prefix is None else prefix
    for attr in DATE_ATTRS + (("Hour", "Minute", "Second") if time else ()):
        if attr == "Week":
            values = date.dt.isocalendar().week.astype("float64")
        else:
            values = getattr(date.dt, attr.lower())
        # Integer columns stay integers unless a date is missing (then float, with NaN).
        if attr.startswith("Is_"):
            out[prefix + attr] = values.astype(bool)
        else:
            out[prefix + attr] = values if date.isna().any() else values.astype("int64")
    # Unit-independent (pandas may hold dates in s, ms, us or ns): whole seconds since the epoch.
    out[prefix + "Elapsed"] = (date - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    if drop:
        out = out.drop(columns=field)
    else:
        out[field] = date
    return out


class TabularProcs:
    """FillMissing -> Categorify -> Normalize on the inputs, plus the target's encoding.

    problem="classification": the target's levels (sorted training values) become class indices.
    problem="regression": the target as float, log-transformed when `log_target`.
    """

    def __init__(self, cat_names: list[str], cont_names: list[str], y_name: str,
                 problem: str = "classification", log_target: bool = False):
        self.cat_names, self.cont_names, self.y_name = list(cat_names), list(cont_names), y_name
        self.problem, self.log_target = problem, bool(log_target)
        self.fill = FillMissing(self.cont_names)
        self.categorify = Categorify([])
        self.normalize = Normalize(self.cont_names)
        self.classes: list = []  # target levels (classification)

    @property
    def all_cat_names(self) -> list[str]:
        """The model's categorical inputs: the configured ones, then the `<col>_na` flags."""
        return self.cat_names + self.fill.na_names

    @property
    def cardinalities(self) -> list[int]:
        return [self.categorify.cardinality(n) for n in self.all_cat_names]

    @property
    def out_sz(self) -> int:
        return len(self.classes) if self.problem == "classification" else 1

    def fit(self, df: pd.DataFrame, what: str = "the training rows") -> TabularProcs:
        if len(df) == 0:
            raise DataError(f"there are no rows in {what}")
        check_columns(df, self.cat_names + self.cont_names + [self.y_name], what)
        filled = self.fill.fit(df, what)(df, what)
        self.categorify = Categorify(self.all_cat_names).fit(filled, what)
        self.normalize = Normalize(self.cont_names).fit(filled)
        if self.problem == "classification":
            self.classes = _levels(df[self.y_name])
            if len(self.classes) < 2:
                raise DataError(f"target {self.y_name!r} has fewer than two classes in {what}")
        return self

    def target(self, df: pd.DataFrame, what: str) -> torch.Tensor:
        y = df[self.y_name]
        if self.problem == "classification":
            codes = pd.Categorical(y, categories=self.classes).codes.astype(np.int64)
            if (codes < 0).any():
                raise DataError(f"target value {y[codes < 0].iloc[0]!r} in {what} is not a class of "
                                f"the training rows ({', '.join(map(str, self.classes))})")
            return torch.from_numpy(np.array(codes))
        values = np.array(_numeric(df, self.y_name, what), dtype=np.float64)
        if self.log_target:
            if (values <= 0).any():
                raise DataError(f"target {self.y_name!r} has values <= 0 in {what}: log_target needs positive values")
            values = np.log(values)
        return torch.from_numpy(values.astype(np.float32))

    def tensors(self, df: pd.DataFrame, what: str = "the rows", with_target: bool = True):
        """(x_cat int64 [n, n_cat], x_cont float32 [n, n_cont][, y]) for the rows of `df`."""
        check_columns(df, self.cat_names + self.cont_names + ([self.y_name] if with_target else []), what)
        x = self.normalize(self.categorify(self.fill(df, what)))
        # np.array copies: pandas may hand out read-only views, which torch can't share.
        x_cat = torch.from_numpy(np.array(x[self.all_cat_names], dtype=np.int64).reshape(len(x), -1))
        x_cont = torch.from_numpy(np.array(x[self.cont_names], dtype=np.float32).reshape(len(x), -1))
        return (x_cat, x_cont, self.target(df, what)) if with_target else (x_cat, x_cont)

    def decode(self, out: torch.Tensor) -> pd.DataFrame:
        """Model outputs -> a frame: the predicted class and each class's probability, or the value."""
        if self.problem == "classification":
            probs = out.float().softmax(-1).numpy()
            frame = pd.DataFrame({self.y_name: [self.classes[i] for i in probs.argmax(1)]})
            for i, c in enumerate(self.classes):
                frame[f"p_{c}"] = probs[:, i]
            return frame
        values = out.float().reshape(len(out), -1)[:, 0].numpy().astype(np.float64)
        return pd.DataFrame({self.y_name: np.exp(values) if self.log_target else values})

    def state_dict(self) -> dict:
        return {
            "cat_names": self.cat_names, "cont_names": self.cont_names, "y_name": self.y_name,
            "problem": self.problem, "log_target": self.log_target, "classes": self.classes,
            "fill": self.fill.state_dict(), "categorify": self.categorify.state_dict(),
            "normalize": self.normalize.state_dict(),
        }

    @classmethod
    def from_state(cls, state: dict) -> TabularProcs:
        procs = cls(state["cat_names"], state["cont_names"], state["y_name"], state["problem"], state["log_target"])
        procs.classes = list(state["classes"])
        procs.fill.load_state_dict(state["fill"])
        procs.categorify.load_state_dict(state["categorify"])
        procs.normalize.load_state_dict(state["normalize"])
        return procs

