"""Images listed in a CSV: tags (multi-label, the planet lesson) or numbers (regression, the head-pose lesson).

    data=multilabel data.path=<dir> data.csv=train_v2.csv data.folder=train-jpg data.suffix=.jpg
    data=points data.path=<dir> data.csv=centres.csv          # columns: file, x, y (pixels)

Rows are split into training and validation at random (seeded), as fastai's RandomSplitter.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fastlight.data.vision import ImageData, resolve_path, split_items
from fastlight.errors import ConfigError, DataError


class CSVImageData(ImageData):
    """A CSV with one row per image: the file name in `fn_col`, the target in other columns."""

    def __init__(self, path: str, csv: str = "labels.csv", folder: str = "", fn_col: int | str = 0,
                 suffix: str = "", valid_pct: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.path = path
        self.csv, self.folder, self.fn_col, self.suffix, self.valid_pct = csv, folder, fn_col, suffix, valid_pct

    def prepare_data(self):
        self.read()

    def read(self) -> pd.DataFrame:
        file = resolve_path(self.path) / self.csv
        if not file.is_file():
            raise DataError(f"{file} does not exist; set data.path to the dataset folder and data.csv to its CSV")
        try:
            df = pd.read_csv(file)
        except (ValueError, OSError) as e:
            raise DataError(f"{file} is not a readable CSV ({e})") from None
        self.column(df, self.fn_col, "fn_col")
        return df

    @staticmethod
    def column(df: pd.DataFrame, col: int | str, key: str) -> str:
        """The column's name, from a name or a position."""
        if isinstance(col, int) and 0 <= col < len(df.columns):
            return df.columns[col]
        if col in df.columns:
            return col
        raise ConfigError(f"data.{key}={col!r} is not a column of the CSV (columns: {', '.join(map(str, df.columns))})")

    def file(self, name) -> Path:
        return resolve_path(self.path) / self.folder / f"{name}{self.suffix}"

    def targets(self, df: pd.DataFrame) -> tuple[list, list[str]]:
        """(one target per row, class names or target names)."""
        raise NotImplementedError

    def load_items(self):
        df = self.read()
        files = [self.file(n) for n in df[self.column(df, self.fn_col, "fn_col")]]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{len(missing)} images named in {self.csv} are missing, e.g. {missing[0]}; "
                            "check data.folder and data.suffix")
        targets, classes = self.targets(df)
        train, valid = split_items(list(zip(files, targets)), self.valid_pct, self.seed)
        return train, valid, None, classes


class MultiLabelCSVData(CSVImageData):
    """Tags separated by `label_delim` in `label_col`: BCE on a multi-hot target per image."""

    problems = ("multi_label",)

    def __init__(self, label_col: int | str = 1, label_delim: str = " ", **kwargs):
        super().__init__(**kwargs)
        self.label_col, self.label_delim = label_col, label_delim

    def targets(self, df):
        column = df[self.column(df, self.label_col, "label_col")]
        tags = [t.split(self.label_delim) if isinstance(t, str) else [] for t in column]  # NaN: no tags
        classes = sorted({t for row in tags for t in row if t})
        index = {c: i for i, c in enumerate(classes)}
        return [[index[t] for t in row if t] for row in tags], classes


class RegressionCSVData(CSVImageData):
    """Numbers in `y_cols` (all columns but the file name when null). With `points`, they are (x, y)
    pixel pairs: they move with the image under augmentation and are scaled to [-1, 1]."""

    problems = ("regression",)

    def __init__(self, y_cols: list | None = None, points: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.y_cols, self.points = y_cols, points

    def targets(self, df):
        fn = self.column(df, self.fn_col, "fn_col")
        if self.y_cols:
            cols = [self.column(df, c, "y_cols") for c in self.y_cols]
        else:
            cols = [c for c in df.columns if c != fn]
        if self.points and len(cols) % 2:
            raise ConfigError(f"data.points=true needs (x, y) column pairs, got {len(cols)} columns: {', '.join(cols)}")
        try:
            values = df[cols].astype("float32").values.tolist()
        except ValueError as e:
            raise DataError(f"{self.csv}: the target columns {', '.join(cols)} must be numbers ({e})") from None
        return values, [str(c) for c in cols]
