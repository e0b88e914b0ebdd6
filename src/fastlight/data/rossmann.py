"""Rossmann store sales (lesson 6): the Kaggle files, the lesson's feature engineering, a twin.

Files in <data root>/rossmann; Kaggle needs a login, so they are never downloaded:
  train.csv, store.csv (required) and test.csv (optional) from kaggle.com/c/rossmann-store-sales;
  store_states.csv, state_names.csv, googletrend.csv, weather.csv (optional), the lesson's
  external data from fastai's rossmann.tgz. Without them their columns (State, Google trends,
  weather, Events) are left out of the model, and the run says so.

`engineer` is course-v3's rossman_data_clean in vectorised pandas: join the stores (and
states, trends, weather) to the daily sales, add_datepart, months of competition and weeks of
Promo2, days after/before each school holiday, state holiday and promotion, and 7-day counts
of them backwards and forwards. Days with no sales (closed stores) are dropped; the most recent
`valid_days` days are the validation set, like the lesson's 41,395 most recent rows.
"""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd

from fastlight.data.core import data_root
from fastlight.data.procs import add_datepart
from fastlight.data.tabular import TabularData
from fastlight.errors import DataError

REQUIRED = ("train", "store")
OPTIONAL = ("test", "store_states", "state_names", "googletrend", "weather")
EVENTS = ["SchoolHoliday", "StateHoliday", "Promo"]
HOW_TO = ("download train.csv, store.csv and test.csv from https://www.kaggle.com/c/rossmann-store-sales/data "
          "(a Kaggle login is needed) and, for the lesson's external features, store_states.csv, state_names.csv, "
          "googletrend.csv and weather.csv from https://files.fast.ai/part2/lesson14/rossmann.tgz, into {folder}")


def read_csv(source, name: str) -> pd.DataFrame:
    try:
        # StateHoliday mixes 0 and "0" in Kaggle's train.csv: read it as text throughout.
        return pd.read_csv(source, low_memory=False, dtype={"StateHoliday": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{name} is not a readable CSV ({' '.join(str(e).split())})") from None


def join_df(left: pd.DataFrame, right: pd.DataFrame, on, right_on=None) -> pd.DataFrame:
    """The lesson's left join: columns the right side repeats get a _y suffix (and are ignored)."""
    return left.merge(right, how="left", left_on=on, right_on=right_on or on, suffixes=("", "_y"))


def iso_monday(year: int, week: int) -> dt.date:
    """isoweek's Week(year, week).monday(): week 53 of a 52-week year rolls into the next year."""
    return dt.date.fromisocalendar(year, 1, 1) + dt.timedelta(weeks=week - 1)


def event_features(days: pd.DataFrame) -> pd.DataFrame:
    """Per store and date: days after/before each event, and its 7-day counts backwards/forwards."""
    ev = days[["Store", "Date", *EVENTS]].sort_values(["Store", "Date"], ignore_index=True)
    ev[EVENTS] = ev[EVENTS].astype(int)
    by_store = ev.Store
    for e in EVENTS:
        on = ev.Date.where(ev[e] == 1)
        ev[f"After{e}"] = (ev.Date - on.groupby(by_store).ffill()).dt.days.fillna(0).astype(int)
        ev[f"Before{e}"] = (ev.Date - on.groupby(by_store).bfill()).dt.days.fillna(0).astype(int)
    for suffix, rows in (("_bw", ev), ("_fw", ev.iloc[::-1])):  # rows in time order / reversed
        sums = rows.groupby("Store")[EVENTS].rolling(7, min_periods=1).sum().reset_index(level=0, drop=True)
        for e in EVENTS:
            ev[e + suffix] = sums[e].reindex(ev.index).astype(int)
    return ev.drop(columns=EVENTS)


def engineer(t: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The lesson's training table: one row per store and day with sales, all features joined."""
    def daily(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df["StateHoliday"] = df.StateHoliday.fillna("0") != "0"
        return add_datepart(df, "Date", drop=False)

    train = daily(t["train"])
    store = t["store"]
    if "store_states" in t:
        store = join_df(store, t["store_states"], "Store")
    df = join_df(train, store, "Store")
    if "googletrend" in t and "State" in df:
        g = t["googletrend"].copy()
        g["Date"] = g.week.str.split(" - ").str[0]
        g["State"] = g.file.str.split("_").str[2]
        g.loc[g.State == "NI", "State"] = "HB,NI"  # the trends name Niedersachsen alone
        g = add_datepart(g, "Date", drop=False)
        df = join_df(df, g[["State", "Year", "Week", "trend"]], ["State", "Year", "Week"])
        de = g.loc[g.file == "Rossmann_DE", ["Year", "Week", "trend"]].rename(columns={"trend": "trend_DE"})
        df = join_df(df, de, ["Year", "Week"])
    if "weather" in t and "state_names" in t and "State" in df:
        w = join_df(t["weather"], t["state_names"], "file", "StateName")
        w["Date"] = pd.to_datetime(w.Date)
        df = join_df(df, w.drop(columns=["file", "StateName"]), ["State", "Date"])

    df["CompetitionOpenSinceYear"] = df.CompetitionOpenSinceYear.fillna(1900).astype(int)
    df["CompetitionOpenSinceMonth"] = df.CompetitionOpenSinceMonth.fillna(1).astype(int)
    df["Promo2SinceYear"] = df.Promo2SinceYear.fillna(1900).astype(int)
    df["Promo2SinceWeek"] = df.Promo2SinceWeek.fillna(1).astype(int)
    opened = pd.to_datetime(pd.DataFrame({"year": df.CompetitionOpenSinceYear,
                                          "month": df.CompetitionOpenSinceMonth, "day": 15}))
    days = (df.Date - opened).dt.days
    days[(days < 0) | (df.CompetitionOpenSinceYear < 1990)] = 0
    df["CompetitionDaysOpen"] = days
    df["CompetitionMonthsOpen"] = (days // 30).clip(upper=24)
    since = df[["Promo2SinceYear", "Promo2SinceWeek"]].drop_duplicates()
    since["Promo2Since"] = pd.to_datetime([iso_monday(y, w) for y, w in since.itertuples(index=False)])
    df = df.merge(since, how="left", on=["Promo2SinceYear", "Promo2SinceWeek"])
    days = (df.Date - df.Promo2Since).dt.days
    days[(days < 0) | (df.Promo2SinceYear < 1990)] = 0
    df["Promo2Days"] = days
    df["Promo2Weeks"] = (days // 7).clip(0, 25)

    # Holidays and promotions are known ahead, so the lesson counts them over train and test days.
    all_days = pd.concat([train] + ([daily(t["test"])] if "test" in t else []), ignore_index=True)
    df = join_df(df, event_features(all_days.drop_duplicates(["Store", "Date"])), ["Store", "Date"])
    return df[df.Sales != 0].reset_index(drop=True)


class RossmannData(TabularData):
    def __init__(self, root: str | None = None, valid_days: int = 42, **kwargs):
        super().__init__(**kwargs)
        self.folder = data_root(root) / "rossmann"
        self.valid_days = valid_days

    def prepare_data(self):
        missing = [f"{n}.csv" for n in REQUIRED if not (self.folder / f"{n}.csv").is_file()]
        if missing:
            raise DataError(f"Rossmann: missing {', '.join(missing)} in {self.folder}; "
                            + HOW_TO.format(folder=self.folder))

    def tables(self) -> dict[str, pd.DataFrame]:
        return {n: read_csv(self.folder / f"{n}.csv", str(self.folder / f"{n}.csv"))
                for n in REQUIRED + OPTIONAL if n in REQUIRED or (self.folder / f"{n}.csv").is_file()}

    def frames(self):
        self.prepare_data()
        df = engineer(self.tables())
        absent = [c for c in self.cat_names + self.cont_names if c not in df.columns]
        if absent:
            print(f"[rossmann] without the optional files, left out: {', '.join(absent)}")
            self.cat_names = [c for c in self.cat_names if c in df.columns]
            self.cont_names = [c for c in self.cont_names if c in df.columns]
        valid = df.Date > df.Date.max() - pd.Timedelta(days=self.valid_days)
        return df[~valid].reset_index(drop=True), df[valid].reset_index(drop=True), None


class SyntheticRossmann(RossmannData):
    """The seven files with the same columns, made up with planted effects, parsed as CSV.

    log(Sales) = 8.5 + a store effect (std `store_std`) + a day-of-week effect + 0.25 on promo
    days + 0.05 on school holidays + noise (std `noise`). Stores close on Sundays and state
    holidays; promotions run Monday to Friday every other week, as Rossmann's did.
    """

    STATES = {"NW": "NordrheinWestfalen", "BY": "Bayern", "BE": "Berlin", "HB,NI": "Niedersachsen"}
    DOW = np.array([0.15, 0.0, -0.05, -0.05, 0.05, 0.1, 0.0])  # Monday .. Sunday (closed)

    def __init__(self, n_stores: int = 30, n_days: int = 365, store_std: float = 0.3, noise: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.n_stores, self.n_days, self.store_std, self.noise = n_stores, n_days, store_std, noise

    def prepare_data(self):
        pass  # nothing to fetch

    def tables(self) -> dict[str, pd.DataFrame]:
        rng = np.random.default_rng(self.seed)
        s, states = np.arange(1, self.n_stores + 1), list(self.STATES)
        store = pd.DataFrame({
            "Store": s, "StoreType": rng.choice(list("abcd"), len(s)), "Assortment": rng.choice(list("abc"), len(s)),
            "CompetitionDistance": np.where(rng.random(len(s)) < 0.05, np.nan, rng.lognormal(7.5, 1, len(s)).round(-1)),
            "CompetitionOpenSinceMonth": rng.integers(1, 13, len(s)).astype(float),
            "CompetitionOpenSinceYear": rng.integers(2000, 2014, len(s)).astype(float),
            "Promo2": rng.integers(0, 2, len(s))})
        store.loc[rng.random(len(s)) < 0.3, ["CompetitionOpenSinceMonth", "CompetitionOpenSinceYear"]] = np.nan
        store["Promo2SinceWeek"] = np.where(store.Promo2 == 1, rng.integers(1, 53, len(s)), np.nan)
        store["Promo2SinceYear"] = np.where(store.Promo2 == 1, rng.integers(2009, 2015, len(s)), np.nan)
        store["PromoInterval"] = np.where(store.Promo2 == 1, "Jan,Apr,Jul,Oct", None)
        store_states = pd.DataFrame({"Store": s, "State": rng.choice(states, len(s))})

        days = pd.date_range("2014-01-01", periods=self.n_days + 48, freq="D")
        holidays = list(rng.choice(days, 8, replace=False))
        school = list(days[(days.isocalendar().week.to_numpy() % 9) < 2])
        grid = pd.DataFrame([(st, d) for d in days[::-1] for st in s], columns=["Store", "Date"])
        dow = grid.Date.dt.dayofweek
        grid["DayOfWeek"] = dow + 1
        grid["Promo"] = ((grid.Date.dt.isocalendar().week.to_numpy() % 2 == 0) & (dow < 5)).astype(int)
        grid["StateHoliday"] = np.where(grid.Date.isin(holidays), "a", "0")
        grid["SchoolHoliday"] = grid.Date.isin(school).astype(int)
        grid["Open"] = ((dow < 6) & (grid.StateHoliday == "0")).astype(int)
        effect = dict(zip(s, rng.normal(0, self.store_std, len(s))))
        log_sales = (8.5 + grid.Store.map(effect) + self.DOW[dow] + 0.25 * grid.Promo + 0.05 * grid.SchoolHoliday
                     + rng.normal(0, self.noise, len(grid)))
        grid["Sales"] = np.where(grid.Open == 1, np.exp(log_sales).round(), 0).astype(int)
        grid["Customers"] = (grid.Sales / 9).round().astype(int)
        grid["Date"] = grid.Date.dt.strftime("%Y-%m-%d")
        cut = grid.Date > days[self.n_days - 1].strftime("%Y-%m-%d")  # the last 48 days: Kaggle's test period
        train = grid[~cut][["Store", "DayOfWeek", "Date", "Sales", "Customers", "Open", "Promo", "StateHoliday",
                            "SchoolHoliday"]]
        test = grid[cut][["Store", "DayOfWeek", "Date", "Open", "Promo", "StateHoliday", "SchoolHoliday"]]
        test.insert(0, "Id", np.arange(1, len(test) + 1))

        sundays = pd.date_range(days[0] - pd.Timedelta(days=days[0].dayofweek + 1), days[-1], freq="7D")
        week = [f"{d:%Y-%m-%d} - {d + pd.Timedelta(days=6):%Y-%m-%d}" for d in sundays]
        trend_files = ["Rossmann_DE"] + [f"Rossmann_DE_{st.split(',')[-1]}" for st in states]
        googletrend = pd.DataFrame([(f, w, int(rng.integers(40, 100))) for f in trend_files for w in week],
                                   columns=["file", "week", "trend"])
        w = pd.DataFrame([(name, d.strftime("%Y-%m-%d")) for name in self.STATES.values() for d in days],
                         columns=["file", "Date"])
        temp = rng.normal(10, 8, len(w)).round()
        w["Max_TemperatureC"], w["Mean_TemperatureC"], w["Min_TemperatureC"] = temp + 5, temp, temp - 5
        for k, base in (("Max", 90), ("Mean", 75), ("Min", 55)):
            w[f"{k}_Humidity"] = (base + rng.normal(0, 5, len(w))).round()
        w["Max_Wind_SpeedKm_h"] = rng.integers(5, 50, len(w))
        w["Mean_Wind_SpeedKm_h"] = (w.Max_Wind_SpeedKm_h / 2).round()
        w["CloudCover"] = np.where(rng.random(len(w)) < 0.1, np.nan, rng.integers(0, 9, len(w)))
        w["Events"] = rng.choice(np.array(["Rain", "Fog", "Rain-Thunderstorm", None], dtype=object), len(w))
        state_names = pd.DataFrame({"StateName": list(self.STATES.values()), "State": states})

        raw = {"train": train, "store": store, "test": test, "store_states": store_states,
               "state_names": state_names, "googletrend": googletrend, "weather": w}
        # Through CSV text, so the columns get the types the real files get.
        return {n: read_csv(io.StringIO(df.to_csv(index=False)), f"synthetic {n}.csv") for n, df in raw.items()}
