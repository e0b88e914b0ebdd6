"""AWD-LSTM (Merity et al. 2017) and the ULMFiT classifier on top of it (Howard & Ruder 2018), as fastai.

The language model is three stacked LSTMs between a word embedding and a decoder that shares the
embedding's matrix. What makes it train well are its five kinds of dropout, all written here:

  embedding dropout   whole rows of the embedding matrix: a dropped word is zero everywhere in the batch
  input dropout       locked (variational): one mask per sequence, the same at every time step
  hidden dropout      locked, between the LSTM layers
  weight dropout      DropConnect on each LSTM's hidden-to-hidden matrix, one mask per forward pass
  output dropout      locked, before the decoder

Each `*_p` is fastai's config value times `drop_mult`. The hidden state is carried from one batch
to the next (truncated back-propagation through time: detached) until `reset()`.

Module names follow fastai's (`0.encoder`, `0.rnns.<i>.module`, `1.decoder`, `1.layers`), so a
fastai state dict maps onto these models by name (`from_fastai`, `match_embeds` at the end).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fastlight.errors import ConfigError
from fastlight.models.bf16_lstm import bf16_autocast, bf16_lstm, use_bf16_lstm

# fastai's awd_lstm_lm_config / awd_lstm_clas_config (before drop_mult).
LM_CONFIG = {"emb_sz": 400, "n_hid": 1152, "n_layers": 3, "pad_token": 1, "output_p": 0.1, "hidden_p": 0.15,
             "input_p": 0.25, "embed_p": 0.02, "weight_p": 0.2}
CLAS_CONFIG = {"emb_sz": 400, "n_hid": 1152, "n_layers": 3, "pad_token": 1, "output_p": 0.4, "hidden_p": 0.3,
               "input_p": 0.4, "embed_p": 0.05, "weight_p": 0.5}
DROPOUTS = ("output_p", "hidden_p", "input_p", "embed_p", "weight_p")


def dropout_mask(x: torch.Tensor, size: Sequence[int], p: float) -> torch.Tensor:
    """A mask of `size` like `x`: 0 with probability p, else 1/(1-p), so expectations are unchanged.
    Drawn as uniform >= p: on a CPU about twice as fast as `bernoulli_` (or `F.dropout`), which matters
    for weight dropout's 5M-entry masks, redrawn every batch."""
    return (torch.rand(size, dtype=x.dtype, device=x.device) >= p).to(x.dtype).div_(1 - p)


class RNNDropout(nn.Module):
    """Locked dropout: one mask per sequence (batch, 1, features), the same at every time step."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * dropout_mask(x.detach(), (x.size(0), 1, *x.shape[2:]), self.p)


class EmbeddingDropout(nn.Module):
    """Look words up in `emb` with whole rows (words) of its matrix dropped, in training."""

    def __init__(self, emb: nn.Embedding, embed_p: float):
        super().__init__()
        self.emb, self.embed_p = emb, embed_p

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        weight = self.emb.weight
        if self.training and self.embed_p != 0:
            weight = weight * dropout_mask(weight.detach(), (weight.size(0), 1), self.embed_p)
        pad = self.emb.padding_idx if self.emb.padding_idx is not None else -1
        return F.embedding(words, weight, pad)


class WeightDropout(nn.Module):
    """DropConnect on `module`'s `layer_names` weights: a fresh mask on every training forward.

    The module keeps its own (raw) parameters; the dropped copy exists only for the call, which
    runs through `torch.func.functional_call`. In eval the module runs on its raw weights. An LSTM
    trained under CPU bf16 autocast runs through `bf16_lstm` instead, on the same (dropped) weights.
    """

    def __init__(self, module: nn.Module, weight_p: float, layer_names: Sequence[str] = ("weight_hh_l0",)):
        super().__init__()
        self.module, self.weight_p, self.layer_names = module, weight_p, tuple(layer_names)

    def forward(self, *args):
        bf16 = use_bf16_lstm(self.module, args[0])  # training under CPU bf16 autocast: see bf16_lstm
        dropping = self.training and self.weight_p != 0
        if not dropping and not bf16:
            return self.module(*args)
        params = dict(self.module.named_parameters())
        if dropping:
            for name in self.layer_names:
                w = params[name]
                params[name] = w * dropout_mask(w.detach(), w.shape, self.weight_p)
        if bf16:
            return bf16_lstm(*args, *(params[n] for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")))
        return functional_call(self.module, params, args)


class AWDLSTM(nn.Module):
    """fastai's `AWD_LSTM` encoder: embedding -> n_layers LSTMs; returns the last layer's output.

    Hidden state: `self.hidden`, one (h, c) per layer, carried across calls and detached; a batch
    of another size starts from zeros. `reset()` zeros it (start of an epoch, of evaluation).
    """

    initrange = 0.1

    def __init__(self, vocab_sz: int, emb_sz: int = 400, n_hid: int = 1152, n_layers: int = 3, pad_token: int = 1,
                 hidden_p: float = 0.2, input_p: float = 0.6, embed_p: float = 0.1, weight_p: float = 0.5):
        super().__init__()
        self.emb_sz, self.n_hid, self.n_layers, self.pad_token = emb_sz, n_hid, n_layers, pad_token
        self.encoder = nn.Embedding(vocab_sz, emb_sz, padding_idx=pad_token)
        self.encoder_dp = EmbeddingDropout(self.encoder, embed_p)
        # The last layer outputs emb_sz so that the decoder can share the embedding matrix.
        sizes = [emb_sz] + [n_hid] * (n_layers - 1) + [emb_sz]
        self.rnns = nn.ModuleList(
            WeightDropout(nn.LSTM(sizes[i], sizes[i + 1], 1, batch_first=True), weight_p) for i in range(n_layers))
        self.encoder.weight.data.uniform_(-self.initrange, self.initrange)
        self.input_dp = RNNDropout(input_p)
        self.hidden_dps = nn.ModuleList(RNNDropout(hidden_p) for _ in range(n_layers))
        self.hidden: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def reset(self) -> None:
        self.hidden = None

    def zero_hidden(self, bs: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        w = self.encoder.weight
        sizes = [self.n_hid] * (self.n_layers - 1) + [self.emb_sz]
        return [(w.new_zeros(1, bs, n), w.new_zeros(1, bs, n)) for n in sizes]

    def forward(self, inp: torch.Tensor, hidden=None) -> torch.Tensor:
        """`inp` (bs, seq_len) token ids; `hidden` overrides the carried state for this call."""
        bs = inp.size(0)
        if hidden is None:
            hidden = self.hidden
        if hidden is None or hidden[0][0].size(1) != bs:
            hidden = self.zero_hidden(bs)
        output = self.input_dp(self.encoder_dp(inp))
        new_hidden = []
        for i, (rnn, hidden_dp) in enumerate(zip(self.rnns, self.hidden_dps)):
            output, h = rnn(output, hidden[i])
            new_hidden.append((h[0].detach(), h[1].detach()))
            if i != self.n_layers - 1:
                output = hidden_dp(output)
        self.hidden = new_hidden
        return output


class LinearDecoder(nn.Module):
    """Output dropout, then Linear(emb_sz -> vocab), its weight tied to the embedding.

    Returns (logits, raw last-layer output, dropped output): AR and TAR need the last two.
    Under bf16 autocast the logits stay fp32: rounded to bf16's 8 bits they destabilised training
    (imdb_sample, a 128/384 LM from scratch at lr 1e-2, seed 42: perplexity 264 after 4 epochs in
    bf16, 143 with an fp32 decoder, 154 all fp32; seed 1 diverged to 4,014 after one epoch).
    """

    initrange = 0.1

    def __init__(self, n_out: int, n_hid: int, output_p: float = 0.1, tie_encoder: nn.Module | None = None,
                 bias: bool = True):
        super().__init__()
        self.decoder = nn.Linear(n_hid, n_out, bias=bias)
        self.decoder.weight.data.uniform_(-self.initrange, self.initrange)
        self.output_dp = RNNDropout(output_p)
        if bias:
            self.decoder.bias.data.zero_()
        if tie_encoder is not None:
            self.decoder.weight = tie_encoder.weight

    def forward(self, inp: torch.Tensor):
        dropped = self.output_dp(inp)
        if bf16_autocast(dropped.device.type):
            with torch.autocast(dropped.device.type, enabled=False):
                return self.decoder(dropped.float()), inp, dropped
        return self.decoder(dropped), inp, dropped


class SequentialRNN(nn.Sequential):
    """A Sequential whose `reset()` resets every child that has one (the hidden state)."""

    def reset(self) -> None:
        for child in self.children():
            if hasattr(child, "reset"):
                child.reset()


def scaled_config(base: dict, drop_mult: float, overrides: dict) -> dict:
    config = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    if not drop_mult >= 0:
        raise ConfigError(f"model.drop_mult={drop_mult} must be a non-negative number")
    for k in DROPOUTS:
        config[k] = config[k] * drop_mult
        if not 0 <= config[k] < 1:
            raise ConfigError(f"model.{k} times drop_mult is {config[k]:.3g}; each dropout must be in [0, 1)")
    return config


class AWDLSTMLanguageModel(SequentialRNN):
    """fastai's `get_language_model(AWD_LSTM, vocab_size, awd_lstm_lm_config, drop_mult)`: [encoder, decoder].

    `pretrained=wt103` / `weights_path` are loaded by `load_pretrained(vocab)` once the data's
    vocabulary is known (the language-model task does it before training).
    """

    def __init__(self, vocab_size: int, drop_mult: float = 1.0, emb_sz: int | None = None, n_hid: int | None = None,
                 n_layers: int | None = None, pad_token: int = 1, output_p: float | None = None,
                 hidden_p: float | None = None, input_p: float | None = None, embed_p: float | None = None,
                 weight_p: float | None = None, tie_weights: bool = True, out_bias: bool = True,
                 pretrained: str | None = None, weights_path: str | None = None):
        sizes = {"emb_sz": emb_sz, "n_hid": n_hid, "n_layers": n_layers, "output_p": output_p,
                 "hidden_p": hidden_p, "input_p": input_p, "embed_p": embed_p, "weight_p": weight_p}
        c = scaled_config(LM_CONFIG, drop_mult, sizes)
        if not isinstance(vocab_size, int) or vocab_size < 2:
            raise ConfigError(f"the language model needs a vocabulary of at least 2 tokens, got {vocab_size}")
        encoder = AWDLSTM(vocab_size, c["emb_sz"], c["n_hid"], c["n_layers"], pad_token,
                          c["hidden_p"], c["input_p"], c["embed_p"], c["weight_p"])
        decoder = LinearDecoder(vocab_size, c["emb_sz"], c["output_p"],
                                tie_encoder=encoder.encoder if tie_weights else None, bias=out_bias)
        super().__init__(encoder, decoder)
        self.pretrained, self.weights_path = pretrained, weights_path

    @property
    def encoder(self) -> AWDLSTM:
        return self[0]

    def layer_groups(self) -> list[nn.Module]:
        """fastai's awd_lstm_lm_split: each LSTM with its dropout, then embedding + decoder."""
        enc = self[0]
        groups = [nn.Sequential(rnn, dp) for rnn, dp in zip(enc.rnns, enc.hidden_dps)]
        return groups + [nn.Sequential(enc.encoder, enc.encoder_dp, self[1])]

    def load_pretrained(self, vocab: Sequence[str]) -> bool:
        """Load `pretrained`/`weights_path` matched to `vocab`; False when neither is set."""
        return load_lm_weights(self, vocab, self.pretrained, self.weights_path)


class SentenceEncoder(nn.Module):
    """Run whole documents through `module` in `bptt` chunks, carrying the state; keep the last `max_len`.

    Documents come padded at the front. Each row is first laid out as fastai's `pad_input_chunk`
    does (whole bptt chunks of padding first, the remainder moved to the end), so every document
    starts on a chunk boundary; a document joins at its first chunk with a zero state, as in
    fastai (which takes the first rows of a length-sorted batch; here any row order works).
    Returns (outputs, pad mask) over the kept positions; gradients stop at chunk boundaries.
    """

    def __init__(self, bptt: int, module: AWDLSTM, pad_idx: int = 1, max_len: int | None = None):
        super().__init__()
        self.bptt, self.module, self.pad_idx, self.max_len = bptt, module, pad_idx, max_len

    def reset(self) -> None:
        self.module.reset()

    def chunk_aligned(self, inp: torch.Tensor) -> torch.Tensor:
        """Move each row's front padding beyond a multiple of bptt to its end (a rotation)."""
        leading = (inp == self.pad_idx).long().cumprod(1).sum(1)
        shift = leading % self.bptt
        if not bool(shift.any()):
            return inp
        idx = (torch.arange(inp.size(1), device=inp.device) + shift[:, None]) % inp.size(1)
        return inp.gather(1, idx)

    def forward(self, inp: torch.Tensor):
        bs, sl = inp.shape
        self.reset()
        inp = self.chunk_aligned(inp)
        mask = inp == self.pad_idx
        hidden = self.module.zero_hidden(bs)
        outs, masks = [], []
        for i in range(0, sl, self.bptt):
            chunk = inp[:, i: i + self.bptt]
            rows = (~mask[:, i]).nonzero().squeeze(1)
            keep = self.max_len is None or sl - i <= self.max_len
            if len(rows) == bs:
                out = self.module(chunk, hidden)
                hidden = self.module.hidden
            elif len(rows) == 0:
                out = None
            else:
                sub = [(h[:, rows], c[:, rows]) for h, c in hidden]
                out_rows = self.module(chunk[rows], sub)
                hidden = [(h.index_copy(1, rows, nh), c.index_copy(1, rows, nc))
                          for (h, c), (nh, nc) in zip(hidden, self.module.hidden)]
                out = out_rows.new_zeros(bs, *out_rows.shape[1:]).index_copy(0, rows, out_rows)
            if keep:
                if out is None:
                    out = inp.new_zeros(bs, chunk.size(1), self.module.emb_sz, dtype=self.module.encoder.weight.dtype)
                outs.append(out)
                masks.append(mask[:, i: i + self.bptt])
        self.module.reset()  # a classifier's state never leaks into the next batch
        return torch.cat(outs, dim=1), torch.cat(masks, dim=1)


def masked_concat_pool(output: torch.Tensor, mask: torch.Tensor, bptt: int) -> torch.Tensor:
    """[output at the last real token, max over real tokens, mean over real tokens] (bs, 3 * features)."""
    lens = output.size(1) - mask.long().sum(1)
    last_pad = mask[:, -bptt:].long().sum(1)  # padding after the last real token (fastai's end remainder)
    pad = mask.unsqueeze(2)
    mean = output.masked_fill(pad, 0).sum(1) / lens.to(output.dtype).clamp(min=1).unsqueeze(1)
    top = output.masked_fill(pad, -float("inf")).max(1).values
    last = output[torch.arange(output.size(0), device=output.device), -last_pad - 1]
    return torch.cat([last, top, mean], 1)


class LinBnDrop(nn.Sequential):
    """fastai's LinBnDrop: BatchNorm1d -> Dropout -> Linear (no bias: BN comes first) [-> ReLU]."""

    def __init__(self, n_in: int, n_out: int, p: float, act: nn.Module | None = None):
        layers = [nn.BatchNorm1d(n_in)]
        if p != 0:
            layers.append(nn.Dropout(p))
        layers.append(nn.Linear(n_in, n_out, bias=False))
        if act is not None:
            layers.append(act)
        super().__init__(*layers)


class PoolingLinearClassifier(nn.Module):
    """Masked concat pooling, then LinBnDrop layers over `dims` (e.g. 1200 -> 50 -> classes)."""

    def __init__(self, dims: Sequence[int], ps: Sequence[float], bptt: int):
        super().__init__()
        if len(ps) != len(dims) - 1:
            raise ConfigError(f"model.ps has {len(ps) - 1} values for {len(dims) - 2} hidden layers (lin_ftrs)")
        acts = [nn.ReLU(inplace=True)] * (len(dims) - 2) + [None]
        self.layers = nn.Sequential(*[LinBnDrop(i, o, p, a) for i, o, p, a in zip(dims[:-1], dims[1:], ps, acts)])
        self.bptt = bptt

    def forward(self, inp):
        output, mask = inp
        return self.layers(masked_concat_pool(output, mask, self.bptt)), output, output


class AWDLSTMClassifier(SequentialRNN):
    """fastai's `get_text_classifier(AWD_LSTM, vocab_size, n_classes, ...)`: [SentenceEncoder, head]."""

    def __init__(self, vocab_size: int, n_classes: int, drop_mult: float = 0.5, bptt: int = 72,
                 max_len: int | None = None, lin_ftrs: Sequence[int] = (50,), ps: Sequence[float] | None = None,
                 emb_sz: int | None = None, n_hid: int | None = None, n_layers: int | None = None,
                 pad_token: int = 1, output_p: float | None = None, hidden_p: float | None = None,
                 input_p: float | None = None, embed_p: float | None = None, weight_p: float | None = None):
        sizes = {"emb_sz": emb_sz, "n_hid": n_hid, "n_layers": n_layers, "output_p": output_p,
                 "hidden_p": hidden_p, "input_p": input_p, "embed_p": embed_p, "weight_p": weight_p}
        c = scaled_config(CLAS_CONFIG, drop_mult, sizes)
        if not isinstance(bptt, int) or bptt < 1:
            raise ConfigError(f"model.bptt={bptt} must be a positive number of tokens")
        lin_ftrs = list(lin_ftrs)
        ps = [0.1] * len(lin_ftrs) if ps is None else list(ps)
        encoder = AWDLSTM(vocab_size, c["emb_sz"], c["n_hid"], c["n_layers"], pad_token,
                          c["hidden_p"], c["input_p"], c["embed_p"], c["weight_p"])
        max_len = bptt * 20 if max_len is None else max_len
        head = PoolingLinearClassifier([3 * c["emb_sz"]] + lin_ftrs + [n_classes], [c["output_p"]] + ps, bptt)
        super().__init__(SentenceEncoder(bptt, encoder, pad_token, max_len), head)

    @property
    def encoder(self) -> AWDLSTM:
        return self[0].module

    def layer_groups(self) -> list[nn.Module]:
        """fastai's awd_lstm_clas_split: embedding, each LSTM with its dropout, the head."""
        enc = self[0].module
        groups = [nn.Sequential(enc.encoder, enc.encoder_dp)]
        groups += [nn.Sequential(rnn, dp) for rnn, dp in zip(enc.rnns, enc.hidden_dps)]
        return groups + [self[1]]


# --- fastai's weights: names, vocabulary matching, WT103 ------------------------------------------
WT103_URL = "https://s3.amazonaws.com/fast-ai-modelzoo/wt103-fwd.tgz"
WT103_FILES = ("lstm_fwd.pth", "itos_wt103.pkl")


def from_fastai(state: dict) -> dict:
    """A fastai AWD-LSTM state dict (LM or classifier) renamed onto these models.

    fastai keeps each LSTM's raw hidden-to-hidden matrix as `rnns.<i>.weight_hh_l0_raw`; here it
    is the LSTM's own `rnns.<i>.module.weight_hh_l0` (the dropped copy exists only in a forward).
    """
    state = state.get("model", state)
    out = {}
    for k, v in state.items():
        if k.endswith(".weight_hh_l0_raw"):
            out[k[: -len("weight_hh_l0_raw")] + "module.weight_hh_l0"] = v
        elif k.endswith(".module.weight_hh_l0") and k.replace("module.weight_hh_l0", "weight_hh_l0_raw") in state:
            continue  # fastai v1 also saved the last dropped copy; the raw one is the weight
        else:
            out[k] = v
    return out


def match_embeds(state: dict, old_vocab: Sequence[str], new_vocab: Sequence[str]) -> dict:
    """fastai's match_embeds: rows of `new_vocab`'s words from the old rows, new words get the mean row."""
    old_index = {w: i for i, w in enumerate(old_vocab)}
    idx = torch.tensor([old_index.get(w, -1) for w in new_vocab])
    known = (idx >= 0).unsqueeze(1)

    def remap(t: torch.Tensor) -> torch.Tensor:
        mean = t.mean(0, keepdim=True)
        rows = t[idx.clamp(min=0)]
        return torch.where(known if t.dim() == 2 else known.squeeze(1), rows, mean.expand_as(rows))

    state = dict(state)
    emb = remap(state["0.encoder.weight"])
    state["0.encoder.weight"] = emb
    state["0.encoder_dp.emb.weight"] = emb.clone()
    state["1.decoder.weight"] = emb.clone()
    if "1.decoder.bias" in state:
        state["1.decoder.bias"] = remap(state["1.decoder.bias"])
    return state


def wt103_files() -> tuple:
    """fastai's WikiText-103 forward AWD-LSTM (weights, vocabulary), downloaded once into the cache."""
    import tarfile

    from fastlight.data.core import cache_root
    from fastlight.data.download import Remote, fetch
    from fastlight.errors import DataError

    folder = cache_root("pretrained", "wt103-fwd")
    paths = [folder / name for name in WT103_FILES]
    if all(p.is_file() for p in paths):
        return tuple(paths)
    how = (f"put {' and '.join(WT103_FILES)} (from fastai's {WT103_URL}) in {folder}, "
           "or give model.weights_path=<lstm_fwd.pth> with its itos .pkl beside it")
    archive = fetch(folder, [Remote("wt103-fwd.tgz", (WT103_URL,))], "model.pretrained=wt103", how)["wt103-fwd.tgz"]
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if name in WT103_FILES and member.isfile():
                (folder / name).write_bytes(tar.extractfile(member).read())
    if not all(p.is_file() for p in paths):
        raise DataError(f"{archive} does not hold {' and '.join(WT103_FILES)}; delete it to download it again")
    return tuple(paths)


def load_lm_weights(model: AWDLSTMLanguageModel, vocab: Sequence[str], pretrained: str | None,
                    weights_path: str | None) -> bool:
    """Load fastai LM weights (`pretrained=wt103` or a `weights_path`) into `model`, matched to `vocab`."""
    import pickle
    from pathlib import Path

    from fastlight.errors import DataError

    if pretrained in (None, False, "none") and not weights_path:
        return False
    old_vocab = None
    if weights_path:
        path = Path(weights_path).expanduser()
        if path.is_dir() or path.suffix == ".ckpt":  # a fastlight language-model run (ULMFiT step 1 -> 2)
            state, old_vocab = fastlight_lm_state(path)
        elif not path.is_file():
            raise DataError(f"model.weights_path={weights_path}: no such file or run folder")
        else:
            itos = sorted(path.parent.glob("itos*.pkl"))
            if itos:
                with open(itos[0], "rb") as f:
                    old_vocab = pickle.load(f)
            state = from_fastai(torch.load(path, map_location="cpu", weights_only=True))
    elif pretrained == "wt103":
        path, vocab_file = wt103_files()
        with open(vocab_file, "rb") as f:
            old_vocab = pickle.load(f)
        state = from_fastai(torch.load(path, map_location="cpu", weights_only=True))
    else:
        raise ConfigError(f"model.pretrained={pretrained!r} is unknown; use wt103 or null")
    if old_vocab is not None:
        state = match_embeds(state, [str(w) for w in old_vocab], [str(w) for w in vocab])
    elif state["0.encoder.weight"].size(0) != len(vocab):
        raise DataError(f"{path} has {state['0.encoder.weight'].size(0)} words but the data's vocabulary has "
                        f"{len(vocab)}, and no itos*.pkl beside it says which words they are")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(f"{path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                        "the model's emb_sz/n_hid/n_layers must be fastai's")
    return True


def fastlight_lm_state(path) -> tuple[dict, list[str]]:
    """(model state dict, vocabulary) of a fastlight language-model run folder or checkpoint."""
    from pathlib import Path

    from fastlight.errors import DataError

    path = Path(path).expanduser()
    ckpt = path
    if path.is_dir():
        ckpt = next((path / "checkpoints" / f"{n}.ckpt" for n in ("best", "last")
                     if (path / "checkpoints" / f"{n}.ckpt").is_file()), path / "checkpoints" / "best.ckpt")
    if not ckpt.is_file():
        raise DataError(f"model.weights_path={path}: no checkpoint at {ckpt}")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    if not saved.get("vocab"):
        raise DataError(f"model.weights_path={path}: {ckpt} is not a language-model checkpoint (no vocabulary)")
    state = {k[len("model."):]: v for k, v in saved["state_dict"].items() if k.startswith("model.")}
    return state, list(saved["vocab"])
