"""fastai's convolutional building blocks, shared by the U-Net, its decoder and the GAN critic.

    ConvLayer          conv -> [BN] -> [act], padding (ks-1)//2, bias only without BN, fastai's init;
                       norm_type none | batch | batch_zero (BN weight 0) | weight | spectral | instance
    PixelShuffle_ICNR  1x1 ConvLayer to nf*scale**2 -> PixelShuffle [-> blur], ICNR-initialised so that at
                       init it equals a conv followed by nearest-neighbour upsampling (no checkerboard)
    SelfAttention      SAGAN attention over the pixels; gamma starts at 0, so it starts as the identity
    ResBlock           fastai v2's ResBlock(expansion=1): two ConvLayers, the second's BN starting at 0,
                       plus a 1x1 ConvLayer on the identity path when the width changes

fastai's init, written out: a ConvLayer followed by a ReLU gets kaiming-uniform weights, one followed
by a sigmoid/tanh xavier-uniform, one without activation torch's default; its bias is drawn from
N(0, bias_std). BatchNorm layers start at weight 1 (0 for batch_zero), bias 1e-3. Weight and spectral
normalisation go through torch's parametrizations (their state dicts hold g, v / the original weight
in the same order and shapes as fastai's older hooks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from fastlight.errors import ConfigError
from fastlight.models.embeddings import SigmoidRange, sigmoid_range  # noqa: F401  (re-exported for the U-Net)

NORM_TYPES = ("none", "batch", "batch_zero", "weight", "spectral", "instance")


def norm_kind(norm_type: str | None) -> str:
    """'batch', 'weight', ... from a config value (None, 'none', 'Batch', 'NormType.Weight' all work)."""
    if norm_type is None:
        return "none"
    kind = str(norm_type).split(".")[-1].lower()
    kind = {"batchzero": "batch_zero", "null": "none"}.get(kind, kind)
    if kind not in NORM_TYPES:
        raise ConfigError(f"norm_type={norm_type!r} is unknown; choose one of: {', '.join(NORM_TYPES)}")
    return kind


def batch_norm(nf: int, ndim: int = 2, zero: bool = False) -> nn.Module:
    """fastai's BatchNorm: weight 1 (0 when `zero`, so a residual branch starts switched off), bias 1e-3."""
    bn = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[ndim - 1](nf)
    with torch.no_grad():
        bn.weight.fill_(0.0 if zero else 1.0)
        bn.bias.fill_(1e-3)
    return bn


def make_act(act_cls) -> nn.Module | None:
    """An activation instance; a ReLU works in place (it only ever sees its own layer's fresh output,
    which saves a copy of every activation map: fastai's ReLUs are not in place, the maths is the same)."""
    if act_cls is None:
        return None
    return nn.ReLU(inplace=True) if act_cls is nn.ReLU else act_cls()


def _default_init(act: nn.Module | None):
    if isinstance(act, (nn.ReLU, nn.ReLU6, nn.LeakyReLU)):
        return nn.init.kaiming_uniform_
    if isinstance(act, (nn.Sigmoid, nn.Tanh)):
        return nn.init.xavier_uniform_
    return None  # torch's own init stays


def is_normalised(conv: nn.Module) -> bool:
    """True for a conv under weight or spectral norm (its `weight` is computed, not a parameter)."""
    return parametrize.is_parametrized(conv, "weight")


def init_plain_convs(module: nn.Module, init=nn.init.kaiming_normal_) -> None:
    """fastai's `apply_init`: re-init every conv/linear weight (bias 0), leaving norm layers and
    weight-/spectral-normalised convs alone (fastai's init does not reach those either)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)) and not is_normalised(m):
            with torch.no_grad():
                init(m.weight)
                if m.bias is not None:
                    m.bias.zero_()


class ConvLayer(nn.Sequential):
    """fastai's ConvLayer: conv (ni -> nf) then [BN] then [activation] (`bn_1st`), or [xtra] last."""

    def __init__(self, ni: int, nf: int, ks: int = 3, stride: int = 1, padding: int | None = None,
                 bias: bool | None = None, ndim: int = 2, norm_type: str | None = "batch", bn_1st: bool = True,
                 act_cls=nn.ReLU, transpose: bool = False, init="auto", xtra: nn.Module | None = None,
                 bias_std: float = 0.01, groups: int = 1, dilation: int = 1):
        kind = norm_kind(norm_type)
        if padding is None:
            padding = 0 if transpose else (ks - 1) // 2
        has_bn = kind in ("batch", "batch_zero", "instance")
        if bias is None:
            bias = not has_bn
        convs = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d) if transpose else (nn.Conv1d, nn.Conv2d, nn.Conv3d)
        conv = convs[ndim - 1](ni, nf, kernel_size=ks, stride=stride, padding=padding, bias=bias, groups=groups,
                               dilation=dilation)
        act = make_act(act_cls)
        init_fn = _default_init(act) if init == "auto" else init
        with torch.no_grad():
            if init_fn is not None:
                init_fn(conv.weight)
            if conv.bias is not None:
                conv.bias.normal_(0, bias_std) if bias_std else conv.bias.zero_()
        if kind == "weight":
            conv = weight_norm(conv)
        elif kind == "spectral":
            conv = spectral_norm(conv)
        after: list[nn.Module] = []
        if kind in ("batch", "batch_zero"):
            after.append(batch_norm(nf, ndim, zero=kind == "batch_zero"))
        elif kind == "instance":
            after.append((nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)[ndim - 1](nf, affine=True))
        if act is not None:
            after.insert(len(after) if bn_1st else 0, act)
        if xtra is not None:
            after.append(xtra)
        super().__init__(conv, *after)


def icnr_init(weight: torch.Tensor, scale: int = 2, init=nn.init.kaiming_normal_) -> torch.Tensor:
    """ICNR (Aitken et al. 2017): a kernel for nf*scale**2 outputs where each run of scale**2
    consecutive output channels is one kernel, so PixelShuffle spreads one value over an s x s patch."""
    n_out, *rest = weight.shape
    sub = init(weight.new_zeros([n_out // scale**2, *rest]))
    return sub.repeat_interleave(scale**2, dim=0)


class PixelShuffle_ICNR(nn.Sequential):
    """Upsample by `scale` from ni to nf channels (default ni): 1x1 ConvLayer, PixelShuffle, optional blur
    (ReplicationPad2d((1,0,1,0)) + AvgPool2d(2, stride 1), which smooths what remains of a checkerboard)."""

    def __init__(self, ni: int, nf: int | None = None, scale: int = 2, blur: bool = False,
                 norm_type: str | None = "weight", act_cls=nn.ReLU):
        nf = ni if nf is None else nf
        kind = norm_kind(norm_type)
        # build the conv plain, ICNR its weight, then normalise: weight norm then starts at g = |v|
        conv_layer = ConvLayer(ni, nf * scale**2, ks=1, norm_type="none" if kind in ("weight", "spectral") else kind,
                               act_cls=act_cls, bias_std=0)
        conv = conv_layer[0]
        with torch.no_grad():
            conv.weight.copy_(icnr_init(conv.weight, scale))
        if kind == "weight":
            conv_layer[0] = weight_norm(conv)
        elif kind == "spectral":
            conv_layer[0] = spectral_norm(conv)
        layers: list[nn.Module] = [conv_layer, nn.PixelShuffle(scale)]
        if blur:
            layers += [nn.ReplicationPad2d((1, 0, 1, 0)), nn.AvgPool2d(2, stride=1)]
        super().__init__(*layers)


class SelfAttention(nn.Module):
    """SAGAN self-attention for `n_channels`: query/key to C/8, value to C (spectral-norm 1x1 Conv1d, no
    bias); out = gamma * (value @ softmax(query^T key)) + x, gamma a learned scalar starting at 0."""

    def __init__(self, n_channels: int):
        super().__init__()
        self.query = self._conv(n_channels, n_channels // 8)
        self.key = self._conv(n_channels, n_channels // 8)
        self.value = self._conv(n_channels, n_channels)
        self.gamma = nn.Parameter(torch.zeros(1))

    @staticmethod
    def _conv(n_in: int, n_out: int) -> ConvLayer:
        return ConvLayer(n_in, n_out, ks=1, ndim=1, norm_type="spectral", act_cls=None, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape
        flat = x.flatten(2)  # (n, c, h*w)
        f, g, h = self.query(flat), self.key(flat), self.value(flat)
        beta = F.softmax(torch.bmm(f.transpose(1, 2), g), dim=1)  # (n, hw, hw): attention over positions
        return (self.gamma * torch.bmm(h, beta) + flat).view(size)


class ResBlock(nn.Module):
    """fastai v2's `ResBlock(1, ni, nf)`: act(convs(x) + idpath(x)). `nh` is the inner width (fastai's
    `nh2`, the U-Net's `bottle`: ni//2); the second conv's BN starts at 0 so the block starts as the
    identity path."""

    def __init__(self, ni: int, nf: int | None = None, nh: int | None = None, stride: int = 1, ks: int = 3,
                 norm_type: str | None = "batch", act_cls=nn.ReLU):
        super().__init__()
        nf = ni if nf is None else nf
        nh = nf if nh is None else nh
        kind = norm_kind(norm_type)
        second = "batch_zero" if kind == "batch" else kind
        self.convpath = nn.Sequential(ConvLayer(ni, nh, ks, stride=stride, norm_type=kind, act_cls=act_cls),
                                      ConvLayer(nh, nf, ks, norm_type=second, act_cls=None))
        idpath: list[nn.Module] = []
        if ni != nf:
            idpath.append(ConvLayer(ni, nf, 1, act_cls=None, norm_type="batch"))
        if stride != 1:
            idpath.insert(0, nn.AvgPool2d(stride, ceil_mode=True))
        self.idpath = nn.Sequential(*idpath)
        self.act = make_act(act_cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convpath(x) + self.idpath(x))
