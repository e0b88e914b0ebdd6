"""The ULMFiT classifier task: the lesson's stages, a planted word learned, the encoder taken from a
language-model run (weights and vocabulary), a mismatched vocabulary refused, the classify command."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from fastlight.tasks.text_clf import (
    DISCRIMINATIVE,
    TextClassifierTask,
    classify_texts,
    ulmfit_stages,
)
from fastlight.training.layer_groups import group_lrs

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ("logger=csv", "callbacks.progress_bar.refresh_rate=0", "trainer.num_sanity_val_steps=0",
         "data.n_workers=1")
LM = ("task=lm", "model=tiny", "data=synthetic", "debug=fast", *QUIET)
CLF = ("task=text_clf", "model=tiny", "data=synthetic", *QUIET)


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture
def lm_run(train_run, tmp_path):
    _, run_dir = train_run(*LM, run_dir=tmp_path / "lm")
    return run_dir


def test_ulmfit_stages_are_the_lessons():
    stages = ulmfit_stages(2e-2)
    assert [s.epochs for s in stages] == [1, 1, 1, 2]
    assert [s.freeze_to for s in stages] == [-1, -2, -3, 0]
    assert [s.lr if isinstance(s.lr, float) else s.lr[1] for s in stages] == pytest.approx([2e-2, 1e-2, 5e-3, 1e-3])
    lrs = group_lrs(stages[1].lr, 5)  # slice(lr/2.6**4, lr) over the 5 layer groups: / 2.6 per group
    assert [lrs[i + 1] / lrs[i] for i in range(4)] == pytest.approx([2.6] * 4)
    assert lrs[0] == pytest.approx(1e-2 / DISCRIMINATIVE)


def test_classifier_learns_the_planted_word(train_run, tmp_path, capsys):
    # From a random encoder, one plain one-cycle: the class is one word ("good"/"bad") among fillers.
    _, run_dir = train_run(*CLF, "task.stages=null", "trainer.max_epochs=6", "optim.lr=1e-2",
                           "model.drop_mult=0.1", run_dir=tmp_path / "clf")
    s = summary(run_dir)
    assert s["status"] == "completed", s["error"]
    assert s["metrics"]["val/accuracy"] > 0.9, s["metrics"]  # chance: 0.5
    labels = classify_texts(run_dir, ["the movie was good and the plot", "a scene of bad music in it"])
    assert [c for c, _ in labels] == ["pos", "neg"]
    assert all(0.5 < p <= 1 for _, p in labels)
    # the command: one text printed, a CSV written beside the input
    from fastlight.cli import main

    capsys.readouterr()
    assert main(["classify", str(run_dir), "this film was good"]) == 0
    assert capsys.readouterr().out.startswith("pos\t")
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("review,id\nit was bad and the music,1\nvery good story,2\n")
    assert main(["classify", str(run_dir), str(reviews), "--text-col", "review"]) == 0
    with open(tmp_path / "reviews_classified.csv") as f:
        written = list(csv.DictReader(f))
    assert [r["predicted"] for r in written] == ["neg", "pos"] and written[0]["id"] == "1"
    assert main(["classify", str(run_dir), str(reviews)]) == 2  # no column "text": one sentence
    assert "--text-col" in capsys.readouterr().err


def test_classifier_learns_the_planted_word_in_bf16_mixed(train_run, tmp_path):
    # bf16 autocast trains the LSTMs through bf16_lstm; bptt 8 splits documents into chunks that
    # rows join late (front padding), the encoder's partial-batch path
    _, run_dir = train_run(*CLF, "trainer.precision=bf16-mixed", "model.bptt=8", "task.stages=null",
                           "trainer.max_epochs=3", "optim.lr=1e-2", "model.drop_mult=0.1", run_dir=tmp_path / "clf")
    s = summary(run_dir)
    assert s["status"] == "completed", s["error"]
    assert s["metrics"]["val/accuracy"] > 0.9, s["metrics"]  # chance: 0.5


def test_encoder_weights_and_vocab_come_from_the_lm_run(lm_run):
    from fastlight.data.text.vocab import read_vocab
    from fastlight.models.awd_lstm import AWDLSTMClassifier
    from fastlight.tasks.lm import load_lm_run

    vocab = read_vocab(lm_run)
    model = AWDLSTMClassifier(len(vocab), 2, emb_sz=32, n_hid=64, n_layers=3)
    task = TextClassifierTask(model, {"name": "adamw", "lr": 1e-2}, {"name": "constant"}, encoder=str(lm_run))
    task.load_encoder(lm_run, vocab)
    _, lm_task, _ = load_lm_run(lm_run)
    theirs = lm_task.model[0].state_dict()
    for k, v in model[0].module.state_dict().items():
        assert torch.equal(v, theirs[k]), k
    with pytest.raises(Exception, match="vocabulary of .* tokens"):
        task.load_encoder(lm_run, vocab[:-8])


def test_three_step_pipeline_runs_from_the_lm_run_folder(lm_run, train_run, tmp_path):
    # The classifier's data is numericalized with the LM's vocabulary (data.vocab_path follows task.encoder)
    _, run_dir = train_run(*CLF, "debug=fast", f"task.encoder={lm_run}", run_dir=tmp_path / "clf")
    s = summary(run_dir)
    assert s["status"] == "completed", s["error"]
    assert json.loads((run_dir / "vocab.json").read_text()) == json.loads((lm_run / "vocab.json").read_text())
    with open(run_dir / "metrics.csv") as f:
        val_epochs = {row["epoch"] for row in csv.DictReader(f) if row.get("val/accuracy")}
    assert len(val_epochs) == 5  # the ulmfit stages: 1 + 1 + 1 + 2 epochs, whatever trainer.max_epochs says
    labels = classify_texts(run_dir, ["the movie was good"])
    assert labels[0][0] in ("pos", "neg")


def test_encoder_from_another_vocabulary_is_one_sentence(lm_run, train_run, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        train_run(*CLF, "debug=fast", f"task.encoder={lm_run}", "data.vocab_path=null", run_dir=tmp_path / "bad")
    assert exit_info.value.code == 2
    error = summary(tmp_path / "bad")["error"]
    assert "task.encoder=" in error and "vocabulary" in error and "\n" not in error
