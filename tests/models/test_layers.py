"""fastai's conv building blocks: ICNR upsampling without checkerboard, self-attention starting as the
identity, fastai's init, and ConvLayer / SelfAttention / ResBlock equal to fastai's with weights copied."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastlight.errors import ConfigError
from fastlight.models.layers import (
    ConvLayer,
    PixelShuffle_ICNR,
    ResBlock,
    SelfAttention,
    icnr_init,
    norm_kind,
)
from tests.models.oracle import copy_weights, leaf_types, perturb

# fastai still builds its weight norm with torch's deprecated hook
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning")


@pytest.mark.parametrize("norm_type", [None, "weight", "batch"])
@pytest.mark.parametrize("scale", [2, 3])
def test_pixel_shuffle_icnr_starts_as_conv_then_nearest_upsampling(norm_type, scale, one_thread):
    torch.manual_seed(0)
    shuf = PixelShuffle_ICNR(8, 4, scale=scale, norm_type=norm_type)
    conv = shuf[0][0]
    weight = conv.weight.detach()  # weight norm: the computed g * v / |v|
    sub = weight[:: scale**2]  # one kernel per output channel
    x = torch.randn(2, 8, 5, 7)
    out = shuf(x).detach()
    ref = F.conv2d(x, sub, None if conv.bias is None else conv.bias.detach()[:: scale**2])
    if norm_type == "batch":  # identical channels have identical batch statistics
        ref = F.batch_norm(ref, None, None, training=True, eps=shuf[0][1].eps) + 1e-3
    ref = F.interpolate(torch.relu(ref), scale_factor=scale, mode="nearest")
    assert out.shape == (2, 4, 5 * scale, 7 * scale)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # without ICNR the same layer has a checkerboard: neighbouring sub-pixels differ
    nn.init.kaiming_normal_(conv.parametrizations.weight.original1 if norm_type == "weight" else conv.weight)
    plain = shuf(x).detach()
    assert (plain[..., ::scale, :] - plain[..., 1::scale, :]).abs().max() > 0.1


def test_icnr_repeats_each_kernel_over_scale_squared_channels():
    w = icnr_init(torch.empty(12, 5, 3, 3), scale=2)
    assert w.shape == (12, 5, 3, 3)
    for o in range(12):
        assert torch.equal(w[o], w[o - o % 4])
    assert not torch.equal(w[0], w[4])
    assert w[::4].std().item() == pytest.approx((2 / 45) ** 0.5, rel=0.35)  # kaiming normal, fan_in 5*3*3


def test_self_attention_with_gamma_zero_is_the_identity_and_attends_otherwise(one_thread):
    torch.manual_seed(0)
    sa = SelfAttention(16).eval()
    x = torch.randn(2, 16, 5, 6)
    assert sa.gamma.item() == 0
    torch.testing.assert_close(sa(x), x, rtol=0, atol=0)
    with torch.no_grad():
        sa.gamma.fill_(0.7)
    flat = x.flatten(2)
    q, k, v = (F.conv1d(flat, conv[0].weight) for conv in (sa.query, sa.key, sa.value))
    attn = torch.softmax(q.transpose(1, 2) @ k, dim=1)  # normalised over the attending positions
    expected = (0.7 * (v @ attn) + flat).view_as(x)
    out = sa(x).detach()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    assert (out - x).abs().max() > 0.01
    assert sa.query[0].weight.shape == (2, 16, 1) and sa.value[0].weight.shape == (16, 16, 1)


def test_conv_layer_order_bias_and_init_are_fastais():
    torch.manual_seed(0)
    bn_layer = ConvLayer(256, 256)
    assert [type(m) for m in bn_layer] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]  # conv -> BN -> act
    assert bn_layer[0].bias is None and bn_layer[0].padding == (1, 1)
    assert torch.all(bn_layer[1].bias == 1e-3) and torch.all(bn_layer[1].weight == 1)
    fan_in = 256 * 9
    assert bn_layer[0].weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)  # kaiming (ReLU)
    plain = ConvLayer(256, 256, norm_type=None, act_cls=None)
    assert plain[0].weight.std().item() == pytest.approx((1 / (3 * fan_in)) ** 0.5, rel=0.05)  # torch's default
    assert plain[0].bias.std().item() == pytest.approx(0.01, rel=0.3)  # fastai's bias_std
    assert [type(m) for m in ConvLayer(4, 4, bn_1st=False)][1:] == [nn.ReLU, nn.BatchNorm2d]
    zero = ConvLayer(4, 4, norm_type="batch_zero")
    assert torch.all(zero[1].weight == 0)
    for kind, name in (("weight", "original1"), ("spectral", "original")):
        conv = ConvLayer(4, 8, ks=1, norm_type=kind)[0]
        assert hasattr(conv.parametrizations.weight, name) and conv.bias is not None
    assert ConvLayer(4, 8, ks=4, stride=2, transpose=True)[0].padding == (0, 0)
    with pytest.raises(ConfigError, match="norm_type='group'.*none, batch"):
        ConvLayer(4, 4, norm_type="group")
    assert norm_kind("NormType.Weight") == "weight" and norm_kind(None) == norm_kind("none") == "none"


@pytest.mark.parametrize("norm_type", [None, "batch", "weight", "spectral"])
def test_conv_layer_equals_fastais(norm_type, one_thread):
    layers = pytest.importorskip("fastai.layers")
    fa_norm = None if norm_type is None else getattr(layers.NormType, norm_type.capitalize())
    theirs = layers.ConvLayer(6, 10, ks=3, stride=2, norm_type=fa_norm)
    ours = ConvLayer(6, 10, ks=3, stride=2, norm_type=norm_type)
    assert leaf_types(ours) == leaf_types(theirs)
    perturb(theirs)
    copy_weights(theirs, ours)
    x = torch.randn(3, 6, 9, 11)
    theirs.eval(), ours.eval()
    torch.testing.assert_close(ours(x), theirs(x).as_subclass(torch.Tensor), atol=1e-5, rtol=1e-5)


def test_self_attention_and_res_block_equal_fastais(one_thread):
    layers = pytest.importorskip("fastai.layers")
    x = torch.randn(2, 16, 6, 5)
    for ours, theirs in ((SelfAttention(16), layers.SelfAttention(16)),
                         (ResBlock(16, 16), layers.ResBlock(1, 16, 16)),
                         (ResBlock(16, 8), layers.ResBlock(1, 16, 8)),
                         (ResBlock(16, 16, norm_type="weight"), layers.ResBlock(1, 16, 16, norm_type=layers.NormType.Weight))):
        assert leaf_types(ours) == leaf_types(theirs)
        perturb(theirs)
        copy_weights(theirs, ours)
        ours.eval(), theirs.eval()
        torch.testing.assert_close(ours(x), theirs(x).as_subclass(torch.Tensor), atol=1e-5, rtol=1e-5)


def test_res_block_starts_as_its_identity_path():
    block = ResBlock(8, 8).eval()  # the second conv's BN starts at weight 0
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(block(x), torch.relu(x), atol=2e-3, rtol=0)
    bottle = ResBlock(8, 8, nh=4)
    assert bottle.convpath[0][0].out_channels == 4 and bottle(x).shape == x.shape


def test_critic_style_conv_layer_equals_fastais(one_thread):
    # what fastai's gan_critic builds: spectral norm, LeakyReLU(0.2), self-attention as `xtra`
    layers = pytest.importorskip("fastai.layers")
    leaky = partial(nn.LeakyReLU, negative_slope=0.2)
    theirs = layers.ConvLayer(8, 16, ks=4, stride=2, act_cls=leaky, norm_type=layers.NormType.Spectral,
                              xtra=layers.SelfAttention(16))
    ours = ConvLayer(8, 16, ks=4, stride=2, act_cls=leaky, norm_type="spectral", xtra=SelfAttention(16))
    assert leaf_types(ours) == leaf_types(theirs)
    assert ours[1].negative_slope == 0.2
    perturb(theirs)
    copy_weights(theirs, ours)
    x = torch.randn(2, 8, 16, 12)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x).as_subclass(torch.Tensor), atol=1e-5, rtol=1e-5)
