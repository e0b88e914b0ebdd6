"""The AWD-LSTM language model, fast.ai lessons 3-4 (ULMFiT's first two steps).

A language model predicts every next word of one long stream of text. The data cuts the stream
into `batch_size` contiguous rows and reads them `bptt` tokens at a time, so batch k+1 of a row
continues batch k: the LSTMs' hidden state is carried from one batch to the next (detached:
truncated back-propagation through time) and reset at every epoch start and for evaluation.

The loss is cross-entropy plus AWD-LSTM's two activation regularizers on the last layer:
AR (`alpha` * mean square of the dropped-out outputs: keeps activations small) and TAR (`beta` *
mean square of the change between consecutive raw outputs: keeps them slowly varying).
Gradients are clipped at `trainer.gradient_clip_val` (0.25, the paper's). With the data's
variable sequence length, each step's lr is scaled by seq_len / bptt, as the paper does.
Metrics: `val/loss` (cross-entropy), `val/perplexity` = exp(loss), `val/accuracy` (next token).

The vocabulary is written into the run folder (`vocab.json`) and into every checkpoint, so a run
folder alone is enough to generate text or to fine-tune a classifier from its encoder.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastlight.errors import ConfigError, FastlightError
from fastlight.tasks.base import Task


def ar_tar(raw: torch.Tensor, dropped: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """AR: alpha * mean(dropped^2); TAR: beta * mean((raw[:, t+1] - raw[:, t])^2). (bs, seq, features)."""
    loss = raw.new_zeros(())
    if alpha:
        loss = loss + alpha * dropped.float().pow(2).mean()
    if beta and raw.size(1) > 1:
        loss = loss + beta * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
    return loss


class LanguageModelTask(Task):
    def __init__(self, model: nn.Module, optim: dict, schedule: dict, alpha: float = 2.0, beta: float = 1.0):
        super().__init__(optim, schedule)
        self.model, self.alpha, self.beta = model, float(alpha), float(beta)
        self.vocab: list[str] | None = None
        self._train_hidden = None
        self._seq_len = None
        self._sums: dict[str, torch.Tensor] = {}
        # Recurrent models on CPU slow down several times on denormal floats; flushing them
        # changes no result that matters.
        torch.set_flush_denormal(True)

    def forward(self, x: torch.Tensor):
        return self.model(x)

    def layer_groups(self) -> list[nn.Module]:
        return self.model.layer_groups()

    # --- vocabulary and pretrained weights ------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        vocab = getattr(datamodule, "vocab", None)
        if vocab is not None:
            self.vocab = list(vocab)
        # A resumed run gets its weights from the checkpoint instead.
        if stage == "fit" and self.vocab is not None and hasattr(self.model, "load_pretrained") \
                and self.trainer.ckpt_path is None:
            self.model.load_pretrained(self.vocab)

    def on_fit_start(self) -> None:
        if self.vocab is not None and self.trainer.is_global_zero:
            from fastlight.data.text.vocab import write_vocab

            write_vocab(self.vocab, Path(self.trainer.default_root_dir))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vocab"] = self.vocab
        # The dropout masks of a resumed run are then those an unbroken run would have drawn.
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("vocab") is not None:
            self.vocab = list(checkpoint["vocab"])
        if checkpoint.get("torch_rng_state") is not None:
            torch.set_rng_state(checkpoint["torch_rng_state"])

    # --- training -------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.model.reset()

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._seq_len = batch[0].size(1)  # before optimizer_step, which scales the lr by it

    def training_loss(self, batch) -> torch.Tensor:
        x, y = batch
        logits, raw, dropped = self.model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
        return loss + ar_tar(raw, dropped, self.alpha, self.beta)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        """AWD-LSTM's variable bptt: a sequence of length L steps with lr * L / bptt."""
        datamodule = getattr(self.trainer, "datamodule", None)
        bptt = getattr(datamodule, "bptt", None)
        scale = 1.0
        if getattr(datamodule, "variable_bptt", False) and bptt and self._seq_len:
            scale = self._seq_len / bptt
        if scale != 1.0:
            for g in optimizer.param_groups:
                g["lr"] *= scale
        try:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        finally:
            if scale != 1.0:
                for g in optimizer.param_groups:
                    g["lr"] /= scale

    # --- evaluation -----------------------------------------------------------------------------
    def _start_eval(self) -> None:
        enc = self.model[0]
        self._train_hidden = enc.hidden  # a mid-epoch validation must not break the training stream
        self.model.reset()
        self._sums = {}

    def _eval_step(self, batch) -> None:
        x, y = batch
        logits = self.model(x)[0].float()
        flat, target = logits.reshape(-1, logits.size(-1)), y.reshape(-1)
        sums = {"loss": F.cross_entropy(flat, target, reduction="sum"),
                "correct": (flat.argmax(-1) == target).sum().float(),
                "n": torch.tensor(float(target.numel()), device=flat.device)}
        for k, v in sums.items():
            self._sums[k] = self._sums.get(k, 0) + v.detach()

    def _end_eval(self, stage: str) -> None:
        if self._sums:
            sums = {k: self.all_gather(v).sum() if self.trainer.world_size > 1 else v for k, v in self._sums.items()}
            loss = sums["loss"] / sums["n"]
            self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=False)
            self.log(f"{stage}/perplexity", torch.exp(loss), prog_bar=True)
            self.log(f"{stage}/accuracy", sums["correct"] / sums["n"])
        self.model[0].hidden = self._train_hidden
        self._train_hidden, self._sums = None, {}

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    def summarize(self, run_dir: Path) -> dict | None:
        return {"vocab_size": len(self.vocab) if self.vocab else None}


# --- rebuilding and using a finished language-model run ---------------------------------------------
def load_lm_run(run_dir: str | Path, ckpt: str = "best"):
    """(config, task, vocabulary) of a language-model run, from its folder alone (no corpus needed)."""
    import hydra
    from omegaconf import OmegaConf

    from fastlight.data.text.vocab import read_vocab

    run_dir = Path(run_dir).expanduser()
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise FastlightError(f"{run_dir} is not a fastlight run folder (no config.yaml)")
    cfg = OmegaConf.load(config_file)
    if "LanguageModelTask" not in str(cfg.task.get("_target_", "")):
        raise ConfigError(f"{run_dir} is not a language-model run (its task is {cfg.task.get('_target_')})")
    path = Path(ckpt) if ckpt not in ("best", "last") else run_dir / "checkpoints" / f"{ckpt}.ckpt"
    if ckpt == "best" and not path.is_file():
        path = run_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FastlightError(f"no checkpoint at {path}; did the language-model run finish an epoch?")
    state = torch.load(path, map_location="cpu", weights_only=False)
    vocab = state.get("vocab") or read_vocab(run_dir)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.update(pretrained=None, weights_path=None)  # the checkpoint has the weights
    model = hydra.utils.instantiate(model_cfg, vocab_size=len(vocab))
    task = hydra.utils.instantiate(cfg.task, model=model, optim=cfg.optim, schedule=cfg.schedule)
    task.load_state_dict(state["state_dict"])
    task.vocab = list(vocab)
    task.eval()
    return cfg, task, list(vocab)


@torch.no_grad()
def generate_text(run_dir: str | Path, prompt: str, words: int = 40, temperature: float = 0.75,
                  seed: int | None = None, ckpt: str = "best") -> str:
    """Continue `prompt` by sampling `words` tokens from a language-model run (fastai's `predict`)."""
    if not temperature > 0:
        raise ConfigError(f"--temperature={temperature} must be positive")
    cfg, task, vocab = load_lm_run(run_dir, ckpt)
    if seed is not None:
        torch.manual_seed(seed)
    stoi = {w: i for i, w in enumerate(vocab)}
    tokens = prompt_tokens(cfg, prompt)
    ids = torch.tensor([[stoi.get(t, 0) for t in tokens]])
    banned = torch.tensor([i for i, w in enumerate(vocab) if w in ("xxunk", "xxpad", "xxfake", "<unk>")])
    model = task.model
    model.reset()
    logits = model(ids)[0][0, -1]
    out = []
    for _ in range(words):
        logits = logits.float() / temperature
        if len(banned):
            logits[banned] = -math.inf
        nxt = int(torch.multinomial(logits.softmax(-1), 1))
        out.append(vocab[nxt])
        logits = model(torch.tensor([[nxt]]))[0][0, -1]
    return detokenize(tokens + out)


PRETOKENIZED = ("PTB", "WikiText2", "SyntheticLM", "SyntheticClas")


def prompt_tokens(cfg, text: str) -> list[str]:
    """`text` tokenized as the run's corpus was (fastai's rules, or a whitespace split)."""
    return texts_tokens(cfg, [text])[0]


def texts_tokens(cfg, texts: list[str]) -> list[list[str]]:
    from fastlight.data.text.tokenizer import tokenize_texts_here

    if _pretokenized(cfg):
        return [["xxunk" if w == "<unk>" else w for w in text.split()] for text in texts]
    return tokenize_texts_here(list(texts))


def _pretokenized(cfg) -> bool:
    """PTB / WikiText (and the synthetic twins) are read with a whitespace split, not fastai's rules."""
    return str(cfg.data.get("_target_", "")).rsplit(".", 1)[-1] in PRETOKENIZED


def detokenize(tokens: list[str]) -> str:
    """Readable text from fastai tokens: xxmaj/xxup applied, xxbos dropped, spaces before punctuation closed."""
    words, cap, up = [], False, False
    for t in tokens:
        if t in ("xxbos", "xxeos", "xxpad", "xxfake"):
            continue
        if t == "xxmaj":
            cap = True
            continue
        if t == "xxup":
            up = True
            continue
        if up:
            t = t.upper()
        elif cap:
            t = t[:1].upper() + t[1:]
        cap = up = False
        words.append(t)
    text = " ".join(words)
    for p in (" .", " ,", " !", " ?", " ;", " :", " n't", " 's", " )", " %"):
        text = text.replace(p, p[1:])
    return text.replace("( ", "(")


def generate_command(args) -> Path:
    """`fastlight generate <lm run> "The movie was" --words 40 --temperature 0.75`: prints the text,
    writes it to --out (default <run>/generated.txt) and returns that path."""
    text = generate_text(args.run_dir, args.prompt or "xxbos", args.words, args.temperature, args.seed, args.ckpt)
    print(text)
    out = Path(args.out) if getattr(args, "out", None) else Path(args.run_dir) / "generated.txt"
    out.write_text(text + "\n", encoding="utf-8")
    return out
