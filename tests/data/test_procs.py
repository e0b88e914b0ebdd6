"""fastai's tabular procs on hand-made frames: fitted on training rows, applied to any rows."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from fastlight.data.procs import Categorify, FillMissing, Normalize, TabularProcs, add_datepart
from fastlight.data.rossmann import event_features, iso_monday
from fastlight.data.tabular import read_adult, read_table
from fastlight.errors import ConfigError, DataError

TRAIN = pd.DataFrame({
    "color": ["red", "blue", "red", None, "green"],
    "size": [1.0, np.nan, 3.0, 4.0, 10.0],
    "weight": [2.0, 4.0, 6.0, 8.0, 10.0],
    "y": ["a", "b", "a", "b", "a"],
})
VALID = pd.DataFrame({
    "color": ["purple", "green", None],  # purple was never seen in training
    "size": [np.nan, 2.0, 100.0],
    "weight": [np.nan, 4.0, 6.0],  # no NaN in training, one here
    "y": ["b", "a", "a"],
})


def test_categorify_codes_training_levels_from_one_and_zero_for_missing_or_unseen():
    cat = Categorify(["color"]).fit(TRAIN)
    assert cat.classes["color"] == ["blue", "green", "red"]  # sorted, from training only, no None
    assert cat.vocab("color") == ["#na#", "blue", "green", "red"] and cat.cardinality("color") == 4
    assert cat(TRAIN)["color"].tolist() == [3, 1, 3, 0, 2]
    assert cat(VALID)["color"].tolist() == [0, 2, 0]  # unseen 'purple' and None are both '#na#'


def test_categorify_sorts_numbers_as_numbers():
    cat = Categorify(["store"]).fit(pd.DataFrame({"store": [10, 2, 33, 2]}))
    assert cat.classes["store"] == [2, 10, 33]
    assert cat(pd.DataFrame({"store": [33, 5, 2]}))["store"].tolist() == [3, 0, 1]


def test_fill_missing_uses_the_training_median_and_flags_only_columns_that_had_nans():
    fill = FillMissing(["size", "weight"]).fit(TRAIN)
    assert fill.medians == {"size": 3.5, "weight": 6.0}  # median of 1, 3, 4, 10 and of 2..10
    assert fill.na_names == ["size_na"]  # weight had no NaN in training: no flag column
    out = fill(VALID)
    assert out["size"].tolist() == [3.5, 2.0, 100.0]
    assert out["size_na"].tolist() == [True, False, False]
    assert out["weight"].tolist() == [6.0, 4.0, 6.0]  # a NaN seen only later is still filled
    assert "weight_na" not in out
    assert VALID["size"].isna().sum() == 1  # the input frame is left alone


def test_normalize_uses_training_mean_and_population_std():
    norm = Normalize(["weight"]).fit(TRAIN)
    w = np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    assert norm.means["weight"] == pytest.approx(6.0)
    assert norm.stds["weight"] == pytest.approx(w.std(ddof=0))  # fastai v2: ddof=0
    out = norm(pd.DataFrame({"weight": [6.0, 10.0]}))["weight"]
    assert out.tolist() == pytest.approx([0.0, 4.0 / (w.std() + 1e-7)])


def test_tabular_procs_fit_on_train_apply_anywhere_and_survive_a_round_trip():
    procs = TabularProcs(["color"], ["size", "weight"], "y").fit(TRAIN)
    assert procs.all_cat_names == ["color", "size_na"] and procs.cardinalities == [4, 3]
    x_cat, x_cont, y = procs.tensors(VALID, "valid")
    assert x_cat.tolist() == [[0, 2], [2, 1], [0, 1]]  # size_na: False -> 1, True -> 2
    fill_sizes = np.array([1.0, 3.5, 3.0, 4.0, 10.0])  # the training column after FillMissing
    expected = (100.0 - fill_sizes.mean()) / (fill_sizes.std() + 1e-7)
    assert x_cont[2, 0].item() == pytest.approx(expected, rel=1e-6)
    assert y.tolist() == [1, 0, 0] and procs.out_sz == 2
    again = TabularProcs.from_state(procs.state_dict())
    for a, b in zip(again.tensors(VALID, "valid"), (x_cat, x_cont, y)):
        assert torch.equal(a, b)
    decoded = procs.decode(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    assert decoded["y"].tolist() == ["a", "b"] and decoded["p_a"][0] > 0.8


def test_regression_target_can_be_logged():
    df = pd.DataFrame({"c": ["x", "y"], "sales": [np.e, np.e**2]})
    procs = TabularProcs(["c"], [], "sales", problem="regression", log_target=True).fit(df)
    assert procs.tensors(df)[2].tolist() == pytest.approx([1.0, 2.0])
    assert procs.decode(torch.tensor([[1.0], [2.0]]))["sales"].tolist() == pytest.approx([np.e, np.e**2])
    with pytest.raises(DataError, match="log_target needs positive"):
        procs.tensors(pd.DataFrame({"c": ["x"], "sales": [0.0]}))


@pytest.mark.parametrize(
    "frame, message",
    [
        (TRAIN.drop(columns="weight"), "no column 'weight' in the training rows"),
        (TRAIN.assign(size=np.nan), "continuous column 'size' has no values"),
        (TRAIN.assign(color=None), "categorical column 'color' has no values"),
        (TRAIN.assign(weight=["1", "2", "heavy", "3", "4"]), "'weight' of the training rows holds text such as"),
        (TRAIN.iloc[:0], "no rows"),
    ],
)
def test_bad_training_frames_give_one_clear_sentence(frame, message):
    with pytest.raises(DataError, match=message):
        TabularProcs(["color"], ["size", "weight"], "y").fit(frame, "the training rows")


def test_unseen_target_class_is_named():
    procs = TabularProcs(["color"], [], "y").fit(TRAIN)
    with pytest.raises(DataError, match="target value 'c'"):
        procs.tensors(VALID.assign(y=["a", "c", "b"]), "the validation rows")


def test_add_datepart_expands_a_date_as_fastai_does():
    df = pd.DataFrame({"saleDate": ["2015-07-31", "2016-01-01", None], "x": [1, 2, 3]})
    out = add_datepart(df, "saleDate")
    assert "saleDate" not in out and "saleDate" in df  # dropped from a new frame; the input is untouched
    row = out.iloc[0]
    assert (row.saleYear, row.saleMonth, row.saleWeek, row.saleDay) == (2015, 7, 31, 31)
    assert (row.saleDayofweek, row.saleDayofyear) == (4, 212)  # a Friday; Monday is 0
    assert row.saleIs_month_end and not row.saleIs_month_start and not row.saleIs_quarter_end
    assert row.saleElapsed == 1438300800  # seconds since 1970-01-01
    jan1 = out.iloc[1]
    assert jan1.saleWeek == 53 and jan1.saleIs_year_start and jan1.saleIs_quarter_start  # ISO week of 2015
    assert np.isnan(out.saleElapsed.iloc[2]) and np.isnan(out.saleYear.iloc[2])
    kept = add_datepart(pd.DataFrame({"Date": ["2015-07-31"]}), "Date", drop=False)
    assert {"Year", "Elapsed", "Is_year_end"} <= set(kept.columns)  # 'Date' -> no prefix
    assert pd.api.types.is_datetime64_any_dtype(kept["Date"])
    assert {"Hour", "Minute", "Second"} <= set(add_datepart(kept, "Date", prefix="t_", time=True).columns.str[2:])


def test_rossmann_event_features_count_days_around_each_event():
    dates = pd.date_range("2015-01-01", periods=10)
    promo = [0, 0, 1, 0, 0, 0, 0, 0, 1, 0]
    days = pd.DataFrame({"Store": 1, "Date": dates, "Promo": promo, "StateHoliday": False, "SchoolHoliday": 0})
    ev = event_features(days).set_index("Date")
    assert ev.AfterPromo.tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 0, 1]  # no promo yet -> 0 (the lesson's fillna)
    assert ev.BeforePromo.tolist() == [-2, -1, 0, -5, -4, -3, -2, -1, 0, 0]
    assert ev.Promo_bw.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 2, 1]  # promo days in this day and the 6 before
    assert ev.Promo_fw.tolist() == [1, 1, 2, 1, 1, 1, 1, 1, 1, 0]  # ... in this day and the 6 after
    assert iso_monday(2015, 1) == pd.Timestamp("2014-12-29").date()
    assert iso_monday(2015, 54) == pd.Timestamp("2016-01-04").date()  # past the last week: rolls over


def test_read_adult_skips_the_junk_line_strips_spaces_and_the_test_labels_period():
    text = ("|1x3 Cross validator\n"
            "25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, 0, 0, 40, "
            "United-States, <=50K.\n"
            "38, ?, 89814, HS-grad, 9, Married-civ-spouse, ?, Husband, White, Male, 0, 0, 50, United-States, >50K.\n")
    df = read_adult(io.StringIO(text))
    assert len(df) == 2 and df.salary.tolist() == ["<=50K", ">50K"]
    assert df.workclass.tolist()[0] == "Private" and df.workclass.isna().tolist() == [False, True]
    assert df.occupation.isna().tolist() == [False, True] and df.age.tolist() == [25, 38]
    with pytest.raises(DataError, match="no rows with a salary"):
        read_adult(io.StringIO("|junk only\n"), "adult.test")


def test_read_table_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="data.path is not set"):
        read_table(None)
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="header but no rows"):
        read_table(tmp_path / "header.csv")
