"""GAN models of lesson 7: DCGAN's generator and critic (the WGAN notebook) and fastai's `gan_critic`.

Each builder returns an `nn.Sequential` whose children sit at the same indices as fastai's
(`basic_generator`, `basic_critic`, `gan_critic`), so state dicts load across both libraries and
the oracle tests compare outputs with weights copied. `GANModel` pairs a generator and a critic
(plus the noise size) into the one `model` node a task is built from.

    basic_generator(32, 1)   noise (bs, 100) -> 4x4 -> ... -> (bs, 1, 32, 32) in [-1, 1] (tanh)
    basic_critic(32, 1)      (bs, 1, 32, 32) -> strided convs down to 4x4 -> one score (bs, 1)
    gan_critic()             spectral-norm convs, a dense residual block, self-attention:
                             a map of logits, one per patch, not pooled (lesson7-superres-gan)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

NORMS = ("batch", "none")


class AddChannels(nn.Module):
    """(bs, n) noise -> (bs, n, 1, 1): the 1x1 'image' the first transposed conv grows to 4x4."""

    def forward(self, x):
        return x.view(*x.shape, 1, 1)


def _init_conv(conv: nn.Module, act: nn.Module | None) -> nn.Module:
    # fastai's init_linear: kaiming for ReLU-family layers, biases ~N(0, 0.01).
    if isinstance(act, (nn.ReLU, nn.LeakyReLU)):
        nn.init.kaiming_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.normal_(conv.bias, 0.0, 0.01)
    return conv


def _bn(nf: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(nf)
    nn.init.constant_(bn.bias, 1e-3)  # fastai's BatchNorm init
    return bn


def conv_block(ni, nf, ks, stride, padding, norm: str | None = "batch", act: nn.Module | None = None,
               transpose=False, spectral=False, bias=None, extra: nn.Module | None = None) -> nn.Sequential:
    """conv -> [BatchNorm] -> [activation] -> [extra], fastai v2's ConvLayer order (BN first)."""
    norm = None if norm in (None, "none") else norm
    if norm not in (None, "batch"):
        raise ValueError(f"norm {norm!r} must be one of {NORMS}")
    bias = norm is None if bias is None else bias
    cls = nn.ConvTranspose2d if transpose else nn.Conv2d
    conv = _init_conv(cls(ni, nf, ks, stride=stride, padding=padding, bias=bias), act)
    layers: list[nn.Module] = [spectral_norm(conv) if spectral else conv]
    if norm == "batch":
        layers.append(_bn(nf))
    if act is not None:
        layers.append(act)
    if extra is not None:
        layers.append(extra)
    return nn.Sequential(*layers)


def basic_generator(out_size: int, n_channels: int, in_sz: int = 100, n_features: int = 64,
                    n_extra_layers: int = 0) -> nn.Sequential:
    """DCGAN generator: noise (bs, in_sz) -> images (bs, n_channels, out_size, out_size) in [-1, 1].

    Width halves while the size doubles, from n_features * out_size / 8 at 4x4 down to n_features.
    """
    size, ftrs = 4, n_features // 2
    while size < out_size:
        size, ftrs = size * 2, ftrs * 2
    layers: list[nn.Module] = [AddChannels(), conv_block(in_sz, ftrs, 4, 1, 0, act=nn.ReLU(), transpose=True)]
    size = 4
    while size < out_size // 2:
        layers.append(conv_block(ftrs, ftrs // 2, 4, 2, 1, act=nn.ReLU(), transpose=True))
        ftrs, size = ftrs // 2, size * 2
    layers += [conv_block(ftrs, ftrs, 3, 1, 1, act=nn.ReLU(), transpose=True) for _ in range(n_extra_layers)]
    layers += [nn.ConvTranspose2d(ftrs, n_channels, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def basic_critic(in_size: int, n_channels: int, n_features: int = 64, n_extra_layers: int = 0,
                 norm: str | None = "batch", leaky: float | None = 0.2) -> nn.Sequential:
    """DCGAN critic: images -> one unbounded score per image (bs, 1); no norm on the first conv.

    `leaky`: LeakyReLU slope (the lesson's 0.2; None: ReLU, fastai's default). `norm="none"` drops
    BatchNorm, which WGAN-GP wants (the penalty is per sample, batch statistics mix samples).
    """
    def act():
        return nn.ReLU() if leaky is None else nn.LeakyReLU(leaky)

    layers: list[nn.Module] = [conv_block(n_channels, n_features, 4, 2, 1, norm=None, act=act())]
    size, ftrs = in_size // 2, n_features
    layers += [conv_block(ftrs, ftrs, 3, 1, 1, norm=norm, act=act()) for _ in range(n_extra_layers)]
    while size > 4:
        layers.append(conv_block(ftrs, ftrs * 2, 4, 2, 1, norm=norm, act=act()))
        ftrs, size = ftrs * 2, size // 2
    final = nn.Conv2d(ftrs, 1, 4, padding=0)
    nn.init.kaiming_normal_(final.weight)
    nn.init.zeros_(final.bias)  # fastai's init_default
    layers += [final, nn.Flatten()]
    return nn.Sequential(*layers)


class SelfAttention(nn.Module):
    """SAGAN self-attention: every position looks at every other; starts as the identity (gamma 0).

    The critic's own copy of `fastlight.models.layers.SelfAttention`: fastai's gan_critic wraps these
    convs in torch's older `spectral_norm` hook (weight_orig, u, v in the state dict), so fastai's
    critic weights load here as they are; the U-Net's layer uses the newer parametrization."""

    def __init__(self, n_channels: int):
        super().__init__()
        self.query = self._conv(n_channels, n_channels // 8)
        self.key = self._conv(n_channels, n_channels // 8)
        self.value = self._conv(n_channels, n_channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    @staticmethod
    def _conv(ni: int, nf: int) -> nn.Sequential:
        conv = nn.Conv1d(ni, nf, 1, bias=False)
        nn.init.kaiming_normal_(conv.weight)
        return nn.Sequential(spectral_norm(conv))

    def forward(self, x):
        shape = x.shape
        x = x.flatten(2)  # (bs, c, h*w)
        f, g, h = self.query(x), self.key(x), self.value(x)
        beta = F.softmax(torch.bmm(f.transpose(1, 2), g), dim=1)
        return (self.gamma * torch.bmm(h, beta) + x).view(shape)


class DenseResBlock(nn.Module):
    """Two 3x3 convs whose output is concatenated with the input: nf -> 2 nf channels."""

    def __init__(self, nf: int):
        super().__init__()
        self.layers = nn.ModuleList([_sn_conv(nf, nf, 3, 1), _sn_conv(nf, nf, 3, 1)])

    def forward(self, x):
        out = x
        for layer in self.layers:
            out = layer(out)
        return torch.cat([out, x], dim=1)


def _sn_conv(ni, nf, ks, stride, extra: nn.Module | None = None) -> nn.Sequential:
    return conv_block(ni, nf, ks, stride, (ks - 1) // 2, norm=None, act=nn.LeakyReLU(0.2), spectral=True, extra=extra)


def gan_critic(n_channels: int = 3, nf: int = 128, n_blocks: int = 3, p: float = 0.15) -> nn.Sequential:
    """fastai's critic for the super-resolution GAN: a logit per receptive field (bs, n_patches).

    Spectral norm keeps the critic Lipschitz without clipping; dropout keeps it from memorising
    the few real images; self-attention (on the first downsampling block) sees global structure.
    """
    layers: list[nn.Module] = [_sn_conv(n_channels, nf, 4, 2), nn.Dropout2d(p / 2), DenseResBlock(nf)]
    nf *= 2
    for i in range(n_blocks):
        extra = SelfAttention(nf * 2) if i == 0 else None
        layers += [nn.Dropout2d(p), _sn_conv(nf, nf * 2, 4, 2, extra=extra)]
        nf *= 2
    layers += [conv_block(nf, 1, 4, 1, 0, norm=None, spectral=True, bias=False), nn.Flatten()]
    return nn.Sequential(*layers)


class GANModel(nn.Module):
    """A generator and a critic, trained against each other by a GAN task."""

    def __init__(self, generator: nn.Module, critic: nn.Module, noise_size: int | None = None):
        super().__init__()
        self.generator, self.critic, self.noise_size = generator, critic, noise_size

    def forward(self, x):
        return self.generator(x)


def dcgan(size: int, n_channels: int, noise_size: int = 100, n_features: int = 64, n_extra_layers: int = 0,
          critic_features: int | None = None, critic_norm: str | None = "batch", leaky: float | None = 0.2) -> GANModel:
    """The lesson-7 WGAN pair at `size` px (a power of two >= 8)."""
    if size < 8 or size & (size - 1):
        from fastlight.errors import ConfigError

        raise ConfigError(f"data.size={size} must be a power of two >= 8 for the DCGAN generator and critic")
    gen = basic_generator(size, n_channels, noise_size, n_features, n_extra_layers)
    crit = basic_critic(size, n_channels, critic_features or n_features, n_extra_layers, critic_norm, leaky)
    return GANModel(gen, crit, noise_size)


def mlp_gan(n_dim: int = 2, noise_size: int = 8, hidden: int = 128, n_layers: int = 3) -> GANModel:
    """A small MLP generator and critic for points (the 2-D mixture twin of the tests)."""
    def mlp(n_in, n_out, final=None):
        layers, n = [], n_in
        for _ in range(n_layers):
            layers += [nn.Linear(n, hidden), nn.ReLU()]
            n = hidden
        layers.append(nn.Linear(n, n_out))
        return nn.Sequential(*layers, *([final] if final else []))

    return GANModel(mlp(noise_size, n_dim), mlp(n_dim, 1), noise_size)


def unet_gan(arch: str = "resnet34", n_out: int = 3, pretrained: bool = True, weights_path: str | None = None,
             blur: bool = True, self_attention: bool = True, y_range=(-3.0, 3.0), norm_type: str | None = "weight",
             img_size: int = 128, critic_nf: int = 128, critic_blocks: int = 3, critic_p: float = 0.15,
             encoder: nn.Sequential | None = None) -> GANModel:
    """lesson7-superres-gan's pair: fastai's DynamicUnet generator (blur, self-attention, weight norm,
    y_range (-3, 3)) and `gan_critic`. The U-Net's keys stay at the top level of the config so that
    commands rebuilding a run can switch `pretrained` off (the checkpoint holds every weight)."""
    from fastlight.models.unet import DynamicUnet

    gen = DynamicUnet(arch=arch, n_out=n_out, pretrained=pretrained, weights_path=weights_path, img_size=img_size,
                      blur=blur, self_attention=self_attention, y_range=y_range, norm_type=norm_type, encoder=encoder)
    return GANModel(gen, gan_critic(n_out, critic_nf, critic_blocks, critic_p))
