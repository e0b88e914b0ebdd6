"""AWD-LSTM: fastai as the oracle (tree, parameters, outputs, state dicts), and each dropout's promise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastlight.models.awd_lstm import (
    AWDLSTM,
    AWDLSTMClassifier,
    AWDLSTMLanguageModel,
    EmbeddingDropout,
    RNNDropout,
    WeightDropout,
    from_fastai,
    masked_concat_pool,
    match_embeds,
)
from fastlight.tasks.lm import ar_tar

SMALL = {"emb_sz": 8, "n_hid": 12, "n_layers": 3}


def leaf_tree(model: nn.Module) -> list[tuple[str, str]]:
    """(name, class) of every module that holds parameters or does the work (LSTM, Linear, BN, ...)."""
    return [(n, type(m).__name__) for n, m in model.named_modules() if not list(m.children()) and n]


def param_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return sorted(tuple(p.shape) for p in model.parameters())


@pytest.fixture
def fastai_text():
    return pytest.importorskip("fastai.text.all")


def copy_fastai_into(ours: nn.Module, theirs: nn.Module) -> None:
    ours.load_state_dict(from_fastai(theirs.state_dict()), strict=True)


def test_lm_tree_and_parameter_count_equal_fastai_full_size(fastai_text, one_thread):
    theirs = fastai_text.get_language_model(fastai_text.AWD_LSTM, 600, fastai_text.awd_lstm_lm_config, drop_mult=0.3)
    ours = AWDLSTMLanguageModel(600, drop_mult=0.3)
    assert leaf_tree(ours) == leaf_tree(theirs)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert param_shapes(ours) == param_shapes(theirs)
    # the same dropouts after drop_mult, module by module
    for (n1, a), (n2, b) in zip(ours.named_modules(), theirs.named_modules()):
        for attr in ("p", "embed_p", "weight_p"):
            if hasattr(b, attr):
                assert getattr(a, attr) == pytest.approx(getattr(b, attr)), n2
    assert ours[1].decoder.weight is ours[0].encoder.weight  # tied


def test_classifier_tree_and_parameter_count_equal_fastai(fastai_text, one_thread):
    theirs = fastai_text.get_text_classifier(fastai_text.AWD_LSTM, 500, 3, drop_mult=0.5)
    ours = AWDLSTMClassifier(500, 3, drop_mult=0.5)
    assert leaf_tree(ours) == leaf_tree(theirs)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert [m.p for m in ours.modules() if isinstance(m, nn.Dropout)] == pytest.approx(
        [m.p for m in theirs.modules() if isinstance(m, nn.Dropout)])


def small_fastai_lm(fa, vocab=50):
    config = {**fa.awd_lstm_lm_config, **SMALL}
    return fa.get_language_model(fa.AWD_LSTM, vocab, config, drop_mult=0.0)


def test_lm_outputs_match_fastai_with_weights_copied_over_carried_state(fastai_text, one_thread):
    torch.manual_seed(0)
    theirs = small_fastai_lm(fastai_text).eval()
    ours = AWDLSTMLanguageModel(50, drop_mult=0.0, **SMALL).eval()
    copy_fastai_into(ours, theirs)
    x = torch.randint(0, 50, (4, 9))
    for _ in range(3):  # the hidden state is carried by both from batch to batch
        assert torch.allclose(ours(x)[0], theirs(x)[0], atol=1e-6)
    ours.reset(), theirs.reset()
    assert torch.allclose(ours(x)[0], theirs(x)[0], atol=1e-6)


def test_classifier_outputs_match_fastai_on_front_padded_sorted_batch(fastai_text, one_thread):
    fa = fastai_text
    torch.manual_seed(0)
    theirs = fa.get_text_classifier(fa.AWD_LSTM, 40, 2, seq_len=5, config=dict(SMALL), drop_mult=0.5, max_len=10).eval()
    ours = AWDLSTMClassifier(40, 2, drop_mult=0.5, bptt=5, max_len=10, **SMALL).eval()
    for m in theirs.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    copy_fastai_into(ours, theirs)
    # fastai's pad_input_chunk: whole bptt chunks of padding first, the remainder at the end; longest first
    lengths = [17, 11, 8, 3]
    rows = []
    for n in lengths:
        tokens = torch.randint(2, 40, (n,)).tolist()
        pad = 17 + 3 - n  # padded length 20 = 4 chunks of 5
        rows.append([1] * (pad // 5 * 5) + tokens + [1] * (pad % 5))
    x = torch.tensor(rows)
    assert torch.allclose(ours(x)[0], theirs(x)[0], atol=1e-5)
    # any row order gives each document the same output here (fastai needs the longest first)
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(ours(x[perm])[0], ours(x)[0][perm], atol=1e-5)
    # plain front padding (fastlight's batches) gives what fastai gives on its chunk layout
    front = torch.tensor([[1] * (20 - n) + [t for t in row if t != 1] for n, row in zip(lengths, x.tolist())])
    assert torch.allclose(ours(front)[0], theirs(x)[0], atol=1e-5)


def test_fastai_state_dict_loads_through_wt103_mapping_with_vocab_matching(fastai_text, tmp_path, one_thread):
    import pickle

    torch.manual_seed(1)
    theirs = small_fastai_lm(fastai_text, vocab=6).eval()
    theirs[1].decoder.bias.data.uniform_(-1, 1)  # fastai starts it at zero
    old_vocab = ["xxunk", "xxpad", "the", "movie", "was", "good"]
    torch.save(theirs.state_dict(), tmp_path / "lstm_fwd.pth")
    with open(tmp_path / "itos_wt103.pkl", "wb") as f:
        pickle.dump(old_vocab, f)
    new_vocab = ["xxunk", "xxpad", "good", "the", "film", "was"]  # reordered, one new word
    ours = AWDLSTMLanguageModel(6, drop_mult=0.0, weights_path=str(tmp_path / "lstm_fwd.pth"), **SMALL).eval()
    assert ours.load_pretrained(new_vocab)
    emb, old = ours[0].encoder.weight.detach(), theirs[0].encoder.weight.detach()
    assert torch.equal(emb[2], old[5]) and torch.equal(emb[3], old[2])
    assert torch.allclose(emb[4], old.mean(0))  # a new word starts at the mean embedding
    assert ours[1].decoder.bias[4].item() == pytest.approx(theirs[1].decoder.bias.mean().item())
    # same words in the same order: same outputs
    same = AWDLSTMLanguageModel(6, drop_mult=0.0, weights_path=str(tmp_path / "lstm_fwd.pth"), **SMALL).eval()
    same.load_pretrained(old_vocab)
    x = torch.randint(0, 6, (2, 7))
    assert torch.allclose(same(x)[0], theirs(x)[0], atol=1e-6)


def test_match_embeds_equals_fastai(fastai_text):
    from fastai.text.learner import match_embeds as fa_match

    torch.manual_seed(2)
    state = {"0.encoder.weight": torch.randn(4, 3), "0.encoder_dp.emb.weight": torch.randn(4, 3),
             "1.decoder.weight": torch.randn(4, 3), "1.decoder.bias": torch.randn(4)}
    state["0.encoder_dp.emb.weight"] = state["1.decoder.weight"] = state["0.encoder.weight"]
    old, new = ["a", "b", "c", "d"], ["d", "x", "a", "y", "b"]
    ours = match_embeds(state, old, new)
    theirs = fa_match({k: v.clone() for k, v in state.items()}, old, new)
    for k in ours:
        assert torch.allclose(ours[k], theirs[k]), k


# --- the dropouts -----------------------------------------------------------------------------------
def test_embedding_dropout_zeroes_whole_words_consistently():
    torch.manual_seed(0)
    emb = nn.Embedding(200, 6)
    drop = EmbeddingDropout(emb, 0.5).train()
    words = torch.arange(200).repeat(3, 1)  # every word three times
    out = drop(words)
    zero = (out == 0).all(-1)  # (3, 200): a word's vector is all zero or none of it is
    assert ((out == 0).any(-1) == zero).all()
    assert (zero == zero[0]).all()  # a dropped word is dropped everywhere in the batch
    assert 60 < int(zero[0].sum()) < 140
    kept = ~zero[0]
    assert torch.allclose(out[0, kept], emb.weight[kept] * 2)  # survivors scaled by 1/(1-p)
    assert torch.equal(drop.eval()(words), emb(words))


def test_locked_dropout_one_mask_per_sequence_across_time():
    torch.manual_seed(0)
    drop = RNNDropout(0.5).train()
    out = drop(torch.ones(4, 30, 16))
    assert (out == out[:, :1]).all()  # the same mask at every time step
    assert not (out[0] == out[1]).all()  # but not the same for every sequence
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(drop.eval()(torch.ones(2, 3, 4)), torch.ones(2, 3, 4))


def test_weight_dropout_changes_weight_hh_between_training_passes_not_in_eval():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, batch_first=True)
    wd = WeightDropout(lstm, 0.5)
    x = torch.randn(2, 4, 3)
    seen = []
    hook = lambda m, args: seen.append(m.weight_hh_l0.detach().clone())
    handle = lstm.register_forward_pre_hook(hook)
    wd.train()
    a, b = wd(x)[0], wd(x)[0]
    wd.eval()
    c, d = wd(x)[0], wd(x)[0]
    handle.remove()
    assert not torch.equal(seen[0], seen[1])  # a fresh DropConnect mask per training forward
    assert 0.3 < (seen[0] == 0).float().mean() < 0.7
    assert not torch.allclose(a, b)
    assert torch.equal(seen[2], lstm.weight_hh_l0.detach()) and torch.equal(c, d)
    assert torch.equal(lstm.weight_ih_l0, lstm.weight_ih_l0) and list(dict(lstm.named_parameters())) == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    # gradients reach the raw weight through the mask
    wd.train()
    wd(x)[0].sum().backward()
    assert lstm.weight_hh_l0.grad is not None and lstm.weight_hh_l0.grad.abs().sum() > 0


def test_ar_and_tar_add_the_expected_amounts_on_a_hand_made_tensor():
    raw = torch.tensor([[[1.0, 2.0], [3.0, 2.0], [3.0, 6.0]]])  # (bs 1, 3 steps, 2 features)
    dropped = torch.tensor([[[0.0, 2.0], [2.0, 0.0], [0.0, 4.0]]])
    # AR: alpha * mean(dropped^2) = 2 * (4+4+16)/6 = 8; TAR: beta * mean(diff^2) = ((4+0)+(0+16))/4 = 5
    assert ar_tar(raw, dropped, alpha=2.0, beta=1.0).item() == pytest.approx(8.0 + 5.0)
    assert ar_tar(raw, dropped, alpha=0.0, beta=0.0).item() == 0.0


# --- the hidden state -------------------------------------------------------------------------------
def test_hidden_state_carried_across_batches_detached_and_reset():
    torch.manual_seed(0)
    enc = AWDLSTM(30, 6, 8, 2, hidden_p=0, input_p=0, embed_p=0, weight_p=0).eval()
    x1, x2 = torch.randint(0, 30, (3, 5)), torch.randint(0, 30, (3, 5))
    enc.reset()
    enc(x1)
    carried = enc(x2)
    assert all(not h.requires_grad for pair in enc.hidden for h in pair)  # truncated BPTT
    enc.reset()
    fresh = enc(x2)
    assert not torch.allclose(carried, fresh)  # the state after x1 changed x2's outputs
    enc.reset()
    both = enc(torch.cat([x1, x2], 1))
    assert torch.allclose(both[:, 5:], carried, atol=1e-6)  # carrying = reading one long sequence
    enc(torch.randint(0, 30, (2, 5)))  # another batch size starts from zeros instead of failing
    assert enc.hidden[0][0].shape == (1, 2, 8)


def test_masked_concat_pool_ignores_padding():
    out = torch.arange(12.0).view(1, 6, 2)
    mask = torch.tensor([[True, True, False, False, False, True]])  # 2 front pads, 1 end pad
    pooled = masked_concat_pool(out, mask, bptt=3)
    real = out[0, 2:5]
    assert torch.equal(pooled[0], torch.cat([out[0, 4], real.max(0).values, real.mean(0)]))


def test_layer_groups_are_fastais_splits():
    lm = AWDLSTMLanguageModel(20, **SMALL)
    groups = lm.layer_groups()
    assert len(groups) == 4 and groups[0][0] is lm[0].rnns[0] and groups[3][2] is lm[1]
    clf = AWDLSTMClassifier(20, 2, **SMALL)
    groups = clf.layer_groups()
    assert len(groups) == 5 and groups[0][0] is clf[0].module.encoder and groups[-1] is clf[1]
    n = sum(p.numel() for g in groups for p in g.parameters())
    assert n == sum(p.numel() for p in clf.parameters())  # every parameter in exactly one group
