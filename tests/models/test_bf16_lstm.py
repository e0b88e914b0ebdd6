"""The bf16 LSTM layer: PyTorch's LSTM to bf16 rounding (outputs, state, every gradient), and the AWD-LSTM
trains through it under CPU bf16 autocast with its dropouts exactly as at fp32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastlight.models.awd_lstm import AWDLSTMLanguageModel, LinearDecoder
from fastlight.models.bf16_lstm import bf16_lstm, use_bf16_lstm
from fastlight.tasks.lm import ar_tar

pytestmark = pytest.mark.usefixtures("one_thread")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize(("n_in", "hid"), [(24, 16), (16, 40)])
def test_bf16_lstm_equals_nn_lstm_to_bf16_rounding(n_in, hid):
    torch.manual_seed(0)
    ref = nn.LSTM(n_in, hid, batch_first=True).double()
    x = torch.randn(6, 30, n_in, dtype=torch.double, requires_grad=True)
    h0 = (0.5 * torch.randn(1, 6, hid, dtype=torch.double)).requires_grad_()
    c0 = (0.5 * torch.randn(1, 6, hid, dtype=torch.double)).requires_grad_()
    weights = [ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0]
    out, (h, c) = ref(x, (h0, c0))
    # a loss that reaches every output: the sequence and both final states
    w_out, w_h, w_c = torch.randn_like(out), torch.randn_like(h), torch.randn_like(c)
    expected = [out, h, c, *torch.autograd.grad((out * w_out).sum() + (h * w_h).sum() + (c * w_c).sum(),
                                                 (x, h0, c0, *weights))]

    leaves = [t.detach().float().requires_grad_() for t in (x, h0, c0, *weights)]
    with torch.autocast("cpu", torch.bfloat16):
        out, (h, c) = bf16_lstm(leaves[0], (leaves[1], leaves[2]), *leaves[3:])
    loss = (out * w_out.float()).sum() + (h * w_h.float()).sum() + (c * w_c.float()).sum()
    got = [out, h, c, *torch.autograd.grad(loss, leaves)]

    assert [g.dtype for g in got[:3]] == [torch.float32] * 3  # the cell state stays fp32
    names = ["output", "h", "c", "d_x", "d_h0", "d_c0", "d_w_ih", "d_w_hh", "d_b_ih", "d_b_hh"]
    errors = {n: rel(g, e) for n, g, e in zip(names, got, expected)}
    # bf16 keeps 8 significant bits (relative rounding 2e-3 per operand); a wrong gate, sign or step is O(1)
    assert max(errors.values()) < 1.5e-2, errors
    assert got[8] is not got[9]  # each bias gets a gradient of its own (clipping scales each .grad once)


def test_bf16_lstm_is_chosen_only_to_train_under_cpu_bf16_autocast():
    lstm = nn.LSTM(4, 5, batch_first=True)
    x = torch.randn(2, 3, 4)
    assert not use_bf16_lstm(lstm, x)  # fp32: nn.LSTM (oneDNN's fp32 RNN is the faster one there)
    with torch.autocast("cpu", torch.bfloat16):
        assert use_bf16_lstm(lstm, x)
        with torch.no_grad():
            assert not use_bf16_lstm(lstm, x)  # evaluation: nn.LSTM's bf16 forward is the faster one
        assert not use_bf16_lstm(nn.LSTM(4, 5, num_layers=2, batch_first=True), x)
        assert not use_bf16_lstm(nn.LSTM(4, 5), x)  # not batch-first
        assert not use_bf16_lstm(lstm.requires_grad_(False), x)  # nothing to train: no backward to speed up


def lm_step(model, x, y):
    logits, raw, dropped = model(x)
    loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
    loss = loss + ar_tar(raw, dropped, 2.0, 1.0)
    return loss, torch.autograd.grad(loss, list(model.parameters())), raw


def test_awd_lstm_trains_through_it_with_every_dropout_as_at_fp32():
    """Same seed, so the same five dropout masks: the bf16-autocast step must give the fp32 step's loss and
    gradients to bf16 rounding. Skipping weight dropout (or any other) on the bf16 path breaks this."""
    torch.manual_seed(0)
    model = AWDLSTMLanguageModel(60, emb_sz=16, n_hid=24, n_layers=3).train()
    x, y = torch.randint(2, 60, (4, 12)), torch.randint(2, 60, (4, 12))
    torch.manual_seed(1)
    loss32, grads32, _ = lm_step(model, x, y)
    model.reset()
    torch.manual_seed(1)
    with torch.autocast("cpu", torch.bfloat16):
        loss16, grads16, raw = lm_step(model, x, y)
    assert raw.dtype == torch.float32  # the LSTMs ran here, not in nn.LSTM's bf16 (whose output is bf16)
    assert float(loss16) == pytest.approx(float(loss32), rel=1e-2)
    errors = [rel(g16, g32) for g16, g32 in zip(grads16, grads32)]
    assert max(errors) < 3e-2, errors
    # and another seed draws other masks: the comparison above is not blind to dropout
    model.reset()
    torch.manual_seed(2)
    _, grads_other, _ = lm_step(model, x, y)
    lstms = [i for i, (name, _) in enumerate(model.named_parameters()) if ".rnns." in name]
    assert min(rel(grads_other[i], grads32[i]) for i in lstms) > 10 * max(errors)


def test_decoder_logits_stay_fp32_under_bf16_autocast():
    """bf16 logits (8 bits) destabilised a from-scratch LM; the decoder runs its product in fp32 instead."""
    torch.manual_seed(0)
    decoder = LinearDecoder(50, 8, output_p=0.0)
    x = torch.randn(2, 3, 8)
    with torch.autocast("cpu", torch.bfloat16):
        logits = decoder(x)[0]
    assert logits.dtype == torch.float32
    assert torch.equal(logits, decoder(x)[0])  # exactly the fp32 product
