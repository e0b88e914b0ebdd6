"""The GAN models equal fastai's: same module trees, parameter counts, and outputs with weights copied."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from fastlight.models.gan import basic_critic, basic_generator, dcgan, gan_critic


def leaf_types(model: nn.Module) -> list[tuple[str, str]]:
    """(position, class) of every parameter-holding or activation leaf, in order."""
    return [(name, type(m).__name__) for name, m in model.named_modules() if not list(m.children())
            and type(m).__name__ not in ("AddChannels", "Flatten", "MergeLayer")]


def assert_same(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    assert leaf_types(ours) == leaf_types(theirs)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in theirs_sd.items()}
    ours.load_state_dict(theirs_sd)
    for mode in (True, False):  # training mode (batch statistics, dropout) and eval mode
        ours.train(mode), theirs.train(mode)
        torch.manual_seed(0)
        a = ours(x)
        torch.manual_seed(0)
        b = theirs(x)
        assert a.shape == b.shape
        torch.testing.assert_close(a, b)


@pytest.fixture
def fastai_gan():
    pytest.importorskip("fastai")
    from fastai.vision import gan

    return gan


@pytest.mark.parametrize("size,n_channels,n_features,extra", [(32, 1, 16, 0), (64, 3, 8, 1)])
def test_basic_generator_equals_fastai(fastai_gan, one_thread, size, n_channels, n_features, extra):
    ours = basic_generator(size, n_channels, n_features=n_features, n_extra_layers=extra)
    theirs = fastai_gan.basic_generator(size, n_channels, n_features=n_features, n_extra_layers=extra)
    assert_same(ours, theirs, torch.randn(4, 100))
    assert ours(torch.randn(2, 100)).shape == (2, n_channels, size, size)


@pytest.mark.parametrize("size,n_channels,n_features,extra", [(32, 1, 16, 0), (64, 3, 8, 1)])
def test_basic_critic_equals_fastai_with_the_lessons_leaky_relu(fastai_gan, one_thread, size, n_channels, n_features, extra):
    ours = basic_critic(size, n_channels, n_features=n_features, n_extra_layers=extra)
    theirs = fastai_gan.basic_critic(size, n_channels, n_features=n_features, n_extra_layers=extra,
                                     act_cls=partial(nn.LeakyReLU, negative_slope=0.2))
    assert_same(ours, theirs, torch.randn(4, n_channels, size, size))


def test_basic_critic_with_relu_equals_fastais_default(fastai_gan, one_thread):
    assert_same(basic_critic(32, 3, 16, leaky=None), fastai_gan.basic_critic(32, 3, 16), torch.randn(4, 3, 32, 32))


def test_gan_critic_equals_fastai_including_spectral_norm_and_self_attention(fastai_gan, one_thread):
    ours, theirs = gan_critic(3, nf=16, n_blocks=3, p=0.15), fastai_gan.gan_critic(3, nf=16, n_blocks=3, p=0.15)
    with torch.no_grad():  # gamma starts at 0 (attention off): switch it on so the attention path is compared
        theirs[4][2].gamma.fill_(0.7)
    assert_same(ours, theirs, torch.randn(2, 3, 64, 64))
    assert sum(isinstance(m, nn.Dropout2d) for m in ours.modules()) == 4


def test_gan_critic_gives_a_map_of_logits_not_one_score(one_thread):
    out = gan_critic(3, nf=8)(torch.randn(2, 3, 128, 128))
    assert out.shape == (2, 25)  # 128 -> 64 -> 32 -> 16 -> 8, then a 4x4 valid conv: 5x5 patches


def test_dcgan_rejects_a_size_that_is_not_a_power_of_two():
    from fastlight.errors import ConfigError

    with pytest.raises(ConfigError, match="data.size=48"):
        dcgan(48, 1)
