"""`fastlight predict <vision run> <folder>`: a class and its probability for every image file."""

from __future__ import annotations

import shutil

import pandas as pd

from fastlight.cli import main as fastlight
from tests.cli.folders import N_VALID


def test_predict_names_the_class_of_every_image_in_a_folder(trained, tmp_path, capsys):
    run_dir, data = trained
    images = tmp_path / "new"
    for kind in ("circle", "square"):  # nested folders are searched too
        shutil.copytree(data / "valid" / kind, images / "batch" / kind)
    out = tmp_path / "pred.csv"
    assert fastlight(["predict", str(run_dir), str(images), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    pred = pd.read_csv(out)
    assert list(pred.columns) == ["file", "prediction", "probability"] and len(pred) == 2 * N_VALID
    truth = pred.file.map(lambda f: f.split("/")[-2])
    assert (pred.prediction == truth).mean() >= 0.9  # the classes differ by colour: the run learnt them
    assert pred.probability.between(0.5, 1).all()  # of the predicted class, out of two

    assert fastlight(["predict", str(run_dir), str(tmp_path / "nothing")]) == 2
    assert "is not a folder with images in it" in capsys.readouterr().err
