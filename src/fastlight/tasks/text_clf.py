"""The ULMFiT classifier, fast.ai lessons 3-4: a language model's encoder + a pooling head, unfrozen gradually.

ULMFiT is three steps, here three runs: a language model on a general corpus (WikiText-103, or
`model.pretrained=wt103`), that model fine-tuned on the target texts, and this classifier, which
reuses the fine-tuned encoder (`task.encoder=<lm run folder>`, its vocabulary with it through
`data.vocab_path`). Documents run through the encoder in bptt chunks keeping the state; the
outputs of the last `max_len` tokens are pooled (last, max and mean over real tokens) into
`PoolingLinearClassifier` (1200 -> 50 -> classes, BatchNorm and dropout).

Gradual unfreezing (the lesson's stages, `task.stages=ulmfit`), each a one-cycle with momentum
(0.8, 0.7, 0.8) over the 5 layer groups (embedding, LSTM 1-3, head), lr = `optim.lr`:
  1 epoch  head only                         lr
  1 epoch  freeze_to(-2)   slice(lr/2 / 2.6**4, lr/2)
  1 epoch  freeze_to(-3)   slice(lr/4 / 2.6**4, lr/4)
  2 epochs everything      slice(lr/20 / 2.6**4, lr/20)
with the lesson's lr = 2e-2: 2e-2, 1e-2, 5e-3, 1e-3. Metrics: `val/loss`, `val/accuracy`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastlight.errors import ConfigError, FastlightError
from fastlight.tasks.base import Task
from fastlight.training.finetune import Stage, StagedTraining, parse_stages

DISCRIMINATIVE = 2.6**4  # ULMFiT: each layer group's lr is the next one's / 2.6, over 5 groups


def ulmfit_stages(lr: float) -> list[Stage]:
    """The lesson's gradual unfreezing for base lr `lr` (2e-2 in the lesson)."""
    if isinstance(lr, (list, tuple)) or not isinstance(lr, (int, float)):
        raise ConfigError(f"optim.lr={lr}: task.stages=ulmfit takes one base learning rate (a number)")
    return [Stage(1, float(lr), freeze_to=-1),
            Stage(1, (lr / 2 / DISCRIMINATIVE, lr / 2), freeze_to=-2),
            Stage(1, (lr / 4 / DISCRIMINATIVE, lr / 4), freeze_to=-3),
            Stage(2, (lr / 20 / DISCRIMINATIVE, lr / 20), freeze_to=0)]


class TextClassifierTask(Task):
    def __init__(self, model: nn.Module, optim: dict, schedule: dict, encoder: str | None = None,
                 stages: str | list | None = "ulmfit", train_bn: bool = True):
        super().__init__(optim, schedule)
        self.model, self.encoder_run, self.stages, self.train_bn = model, encoder, stages, train_bn
        self._staged: StagedTraining | None = None
        torch.set_flush_denormal(True)  # recurrent models crawl on denormal floats on CPU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]

    def layer_groups(self) -> list[nn.Module]:
        return self.model.layer_groups()

    def configure_callbacks(self):
        if self.stages is None:
            return []  # one fit_one_cycle(trainer.max_epochs, optim.lr), nothing frozen
        if self._staged is None:
            if self.stages == "ulmfit":
                stages = ulmfit_stages(self.optim["lr"])
            elif isinstance(self.stages, str):
                raise ConfigError(f"task.stages={self.stages!r}: give ulmfit, null or a list of stages")
            else:
                stages = parse_stages(self.stages)
            self._staged = StagedTraining(stages, train_bn=self.train_bn)
        return [self._staged]

    # --- the encoder from a language-model run -------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.encoder_run and self.trainer.ckpt_path is None:
            data_vocab = getattr(getattr(self.trainer, "datamodule", None), "vocab", None)
            self.load_encoder(self.encoder_run, data_vocab)

    def load_encoder(self, run_dir: str | Path, data_vocab: list[str] | None = None) -> None:
        """The LM run's encoder weights into this classifier; its vocabulary must be the data's."""
        from fastlight.tasks.lm import load_lm_run

        _, lm_task, lm_vocab = load_lm_run(run_dir)
        ours = self.model.encoder
        n_ours = ours.encoder.weight.size(0)
        if len(lm_vocab) != n_ours or (data_vocab is not None and list(data_vocab) != lm_vocab):
            raise ConfigError(
                f"task.encoder={run_dir} was trained with a vocabulary of {len(lm_vocab)} tokens but this data "
                f"has {n_ours if data_vocab is None else len(data_vocab)} (or other words); numericalize the "
                f"classifier's texts with that run's vocabulary: data.vocab_path={run_dir}")
        state = lm_task.model[0].state_dict()
        theirs = {k: tuple(v.shape) for k, v in state.items()}
        mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        if theirs != mine:
            raise ConfigError(f"task.encoder={run_dir} has another encoder size than model "
                              f"(emb_sz/n_hid/n_layers must match the language model's model config)")
        ours.load_state_dict(state)

    def on_fit_start(self) -> None:
        # The classify command rebuilds the model from the run folder alone: vocabulary and classes.
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.trainer.is_global_zero and getattr(datamodule, "vocab", None) is not None:
            from fastlight.data.text.vocab import write_vocab

            run = Path(self.trainer.default_root_dir)
            write_vocab(list(datamodule.vocab), run)
            (run / "classes.json").write_text(json.dumps(list(datamodule.classes), ensure_ascii=False))

    # --- loss and metrics ------------------------------------------------------------------------
    def training_loss(self, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x).float(), y)

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        out = self(x).float()
        self.log(f"{stage}/loss", F.cross_entropy(out, y), batch_size=len(y), prog_bar=stage == "val")
        self.log(f"{stage}/accuracy", (out.argmax(1) == y).float().mean(), batch_size=len(y), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")


# --- the classify command's work ------------------------------------------------------------------
def load_clf_run(run_dir: str | Path, ckpt: str = "best"):
    """(config, task, vocabulary, classes) of a classifier run, from its folder alone."""
    import hydra
    from omegaconf import OmegaConf

    from fastlight.data.text.vocab import read_vocab

    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "config.yaml").is_file():
        raise FastlightError(f"{run_dir} is not a fastlight run folder (no config.yaml)")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    if "TextClassifierTask" not in str(cfg.task.get("_target_", "")):
        raise ConfigError(f"{run_dir} is not a text classifier run (its task is {cfg.task.get('_target_')})")
    if not (run_dir / "classes.json").is_file():
        raise FastlightError(f"{run_dir} has no classes.json; did the run start training?")
    classes = json.loads((run_dir / "classes.json").read_text())
    vocab = read_vocab(run_dir)
    path = Path(ckpt) if ckpt not in ("best", "last") else run_dir / "checkpoints" / f"{ckpt}.ckpt"
    if ckpt == "best" and not path.is_file():
        path = run_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FastlightError(f"no checkpoint at {path}; did the classifier run finish an epoch?")
    model = hydra.utils.instantiate(cfg.model, vocab_size=len(vocab), n_classes=len(classes))
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    task_cfg["encoder"] = None  # the checkpoint has every weight
    task = hydra.utils.instantiate(task_cfg, model=model, optim=cfg.optim, schedule=cfg.schedule)
    task.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])
    return cfg, task.eval(), vocab, classes


@torch.no_grad()
def classify_texts(run_dir: str | Path, texts: list[str], batch_size: int = 32,
                   ckpt: str = "best") -> list[tuple[str, float]]:
    """(class, probability) for each text, tokenized and numericalized as the run's data was."""
    from fastlight.tasks.lm import texts_tokens

    cfg, task, vocab, classes = load_clf_run(run_dir, ckpt)
    stoi = {w: i for i, w in enumerate(vocab)}
    docs = [[stoi.get(t, 0) for t in tokens] or [0] for tokens in texts_tokens(cfg, texts)]
    order = sorted(range(len(docs)), key=lambda i: -len(docs[i]))  # similar lengths: little padding
    out: list[tuple[str, float]] = [("", 0.0)] * len(docs)
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        width = max(len(docs[i]) for i in idx)
        x = torch.full((len(idx), width), 1, dtype=torch.long)  # xxpad in front
        for row, i in enumerate(idx):
            x[row, width - len(docs[i]):] = torch.tensor(docs[i])
        probs = task(x).float().softmax(-1)
        p, c = probs.max(1)
        for row, i in enumerate(idx):
            out[i] = (classes[int(c[row])], float(p[row]))
    return out
