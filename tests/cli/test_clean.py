"""`fastlight clean`: the images a trained model finds hardest come first, a page to review them,
and `--apply` moving (never deleting) what the person decided."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from fastlight.cli import main as fastlight
from tests.cli.folders import N_TRAIN, N_VALID, PLANTED, files, image_folder


def test_clean_ranks_the_mislabelled_images_first(trained, capsys):
    run_dir, data = trained
    assert fastlight(["clean", str(run_dir), "--top", "20"]) == 0
    table = pd.read_csv(run_dir / "cleaning" / "top_losses.csv")
    assert list(table.columns) == ["path", "split", "label", "prediction", "loss", "probability"]
    assert set(table.path) == files(data) and table.loss.is_monotonic_decreasing  # every image, highest loss first
    assert table.split.value_counts().to_dict() == {"train": 2 * N_TRAIN + PLANTED, "valid": 2 * N_VALID}
    top = table.head(PLANTED + 2)
    planted = top[top.path.str.contains("mislabelled")]
    assert len(planted) == PLANTED and set(planted.prediction) == {"square"} and set(planted.label) == {"circle"}
    page = (run_dir / "cleaning" / "review.html").read_text(encoding="utf-8")
    assert page.count('class="card"') == 20 and "http://" not in page and "https://" not in page
    assert "--apply decisions.csv" in capsys.readouterr().out


def write_run(tmp_path: Path, data: Path) -> Path:
    """A run folder as `clean --apply` reads it: only config.yaml's data section matters."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = {"task": {"_target_": "fastlight.tasks.vision.VisionTask"},
           "data": {"_target_": "fastlight.data.vision.image_folder", "path": str(data), "train": "train"}}
    OmegaConf.save(OmegaConf.create(cfg), run / "config.yaml")
    return run


def test_apply_moves_files_into_removed_and_new_class_folders_and_deletes_none(tmp_path, capsys):
    data = image_folder(tmp_path / "images", n_train=3, n_valid=2)
    run = write_run(tmp_path, data)
    before = files(data)
    (data / "train" / "square" / "mislabelled_0.png").write_bytes(b"taken")  # a move must not overwrite it
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("path,action,new_label\n"
                         "train/circle/mislabelled_0.png,relabel,square\n"
                         f"{data / 'train/circle/mislabelled_1.png'},delete,\n"  # absolute paths inside the folder work
                         "valid/square/square_1.png,delete,\n"
                         "train/circle/circle_0.png,keep,\n"
                         "train/square/square_2.png,relabel,square\n")  # its own class: nothing to do
    assert fastlight(["clean", str(run), "--apply", str(decisions), "--dry-run"]) == 0
    assert "would move 3 file(s)" in capsys.readouterr().out and files(data) == before | {"train/square/mislabelled_0.png"}

    assert fastlight(["clean", str(run), "--apply", str(decisions)]) == 0
    out = capsys.readouterr().out
    after = files(data)
    assert len(after) == len(before) + 1  # nothing deleted
    assert before - after == {"train/circle/mislabelled_0.png", "train/circle/mislabelled_1.png", "valid/square/square_1.png"}
    assert after - before == {"train/square/mislabelled_0.png", "train/square/mislabelled_0_1.png",
                              ".removed/train/circle/mislabelled_1.png", ".removed/valid/square/square_1.png"}
    assert (data / "train" / "square" / "mislabelled_0.png").read_bytes() == b"taken"
    assert "moved train/circle/mislabelled_0.png -> train/square/mislabelled_0_1.png  (relabel)" in out
    assert "moved valid/square/square_1.png -> .removed/valid/square/square_1.png  (delete)" in out
    assert "moved 3 file(s)" in out and "2 to .removed/, 1 relabelled" in out

    assert fastlight(["clean", str(run), "--apply", str(decisions)]) == 0  # again: nothing left to move
    assert "moved 0 file(s)" in capsys.readouterr().out and files(data) == after


@pytest.mark.parametrize(("row", "message"), [
    ("train/circle/circle_0.png,burn,", "action 'burn' must be one of keep, delete, relabel"),
    ("train/circle/circle_0.png,relabel,triangle", "new_label 'triangle' is not a class of this data (circle, square)"),
    ("../elsewhere/x.png,delete,", "is not an image of the data folder"),
    ("/etc/passwd,delete,", "is not inside the data folder"),
])
def test_apply_refuses_a_bad_row_in_one_line_and_moves_nothing(tmp_path, capsys, row, message):
    data = image_folder(tmp_path / "images", n_train=2, n_valid=1)
    run = write_run(tmp_path, data)
    before = files(data)
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(f"path,action,new_label\nvalid/square/square_0.png,delete,\n{row}\n")
    assert fastlight(["clean", str(run), "--apply", str(decisions)]) == 2
    err = capsys.readouterr().err
    assert message in err and "line 3" in err and err.count("\n") == 1
    assert files(data) == before


# --- the review page in a real browser (the report's headless Chromium, tests/test_compare.py) --------
@pytest.fixture(scope="module")
def browser():
    import os

    from tests.test_compare import Browser, chromium

    exe = chromium()
    if exe is None:
        if os.environ.get("FASTLIGHT_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (FASTLIGHT_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    b = Browser(exe)
    yield b
    b.close()


def test_review_page_marks_filters_remembers_and_exports_decisions_that_apply(trained, browser, tmp_path, capsys):
    run_dir, data = trained
    assert fastlight(["clean", str(run_dir), "--top", "30"]) == 0
    page = run_dir / "cleaning" / "review.html"
    browser.open(page)
    assert browser.errors() == []
    assert browser.js("performance.getEntriesByType('resource').length") == 0  # nothing fetched: opens offline
    assert browser.js("document.querySelectorAll('.card').length") == 30
    assert browser.js("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")  # thumbnails decode
    top = pd.read_csv(run_dir / "cleaning" / "top_losses.csv").head(30)
    assert browser.js("Array.from(document.querySelectorAll('.card')).map(c => c.dataset.path)") == list(top.path)
    first, second = top.path.iloc[0], top.path.iloc[1]
    relabel_to = "square" if top.label.iloc[1] == "circle" else "circle"
    mark = ("(function(i, v){const s = document.querySelectorAll('.card select')[i]; s.value = v;"
            " s.dispatchEvent(new Event('change')); return s.value;})")
    assert browser.js(f"{mark}(0, 'delete')") == "delete"
    assert browser.js(f"{mark}(1, 'relabel:{relabel_to}')") == f"relabel:{relabel_to}"
    assert browser.js("document.getElementById('marked').textContent") == "2"
    csv_text = browser.js("document.getElementById('csv').value")
    assert csv_text == f"path,action,new_label\n{first},delete,\n{second},relabel,{relabel_to}\n"
    n_valid = int((top.split == "valid").sum())
    assert browser.js("(function(){const f = document.getElementById('f-split'); f.value = 'valid';"
                      " f.dispatchEvent(new Event('change')); return f.value;})()") == "valid"
    assert browser.js("document.querySelectorAll('.card:not(.hidden)').length") == n_valid
    assert browser.js("document.getElementById('shown').textContent") == str(n_valid)
    browser.open(page)  # a reload keeps the marks
    assert browser.js("document.getElementById('csv').value") == csv_text
    assert browser.errors() == []

    copy = tmp_path / "images"
    shutil.copytree(data, copy)
    (tmp_path / "decisions.csv").write_text(csv_text)
    assert fastlight(["clean", str(run_dir), "--apply", str(tmp_path / "decisions.csv"), "--data", str(copy)]) == 0
    assert (copy / ".removed" / first).is_file() and not (copy / first).exists()
    moved = Path(second).parts
    assert (copy / moved[0] / relabel_to / Path(*moved[2:])).is_file() and not (copy / second).exists()
    assert files(data) == files(copy) - {f".removed/{first}", str(Path(moved[0], relabel_to, *moved[2:]))} | {first, second}


def test_clean_needs_an_image_folder_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save(OmegaConf.create({"data": {"_target_": "fastlight.data.shapes.ShapesData"}}), run / "config.yaml")
    assert fastlight(["clean", str(run)]) == 2
    assert "was not trained on an image folder (data=folder)" in capsys.readouterr().err
