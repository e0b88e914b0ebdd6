"""fastai's DynamicUnet on a torchvision ResNet encoder (lessons 3 and 7).

    encoder   resnet children[:-2] (conv1 bn1 relu maxpool layer1..layer4), as the vision task's body
    middle    BN -> ReLU -> ConvLayer(ni, 2ni) -> ConvLayer(2ni, ni)
    decoder   one UnetBlock per skip connection, deepest first: PixelShuffle_ICNR(up -> up//2) on the
              way up, BN on the skip, concat, ReLU, two ConvLayers (self-attention after the second one
              in the third block from the end); then PixelShuffle_ICNR back to the input's size, resize
              (nearest) to exactly the input's size (odd sizes too), last_cross: concat the input, a
              ResBlock; a 1x1 ConvLayer to n_out; y_range -> SigmoidRange.

The skip connections are found the way fastai finds them: a dummy image is run through the encoder and
every layer whose output has a different spatial size from the next layer's is a skip (for ResNets:
relu /2, layer1 /4, layer2 /8, layer3 /16; layer4 /32 is the bottom). The forward pass walks the
encoder and keeps those outputs, so no hooks stay attached to the model (it deep-copies cleanly; save it
through its state_dict: torch refuses to pickle weight-/spectral-normalised layers whole).

`residual=True` goes beyond fastai: the U-Net predicts a correction added to its input,
out = x + final_conv(h), with that last 1x1 conv plain (no weight norm) and zero-initialised, so a
restoration model starts exactly at the degraded input's PSNR and every weight of the last conv gets a
gradient from the first step. (A scalar gate at 0 in front of the correction, the first design, hardly
opened in a short run: Adam moves one scalar by ~lr a step. A weight norm's g at 0 would do the same.)
With `y_range` the residual output is clamped to the range (a sigmoid would move the identity).

Layer groups are fastai's `_resnet_split`: encoder[:6], encoder[6:], the decoder (all the rest).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastlight.errors import ConfigError
from fastlight.models.layers import (
    ConvLayer,
    PixelShuffle_ICNR,
    ResBlock,
    SelfAttention,
    SigmoidRange,
    batch_norm,
    init_plain_convs,
    make_act,
    norm_kind,
)
from fastlight.models.vision import RESNET_SPLIT, _resnet


def size_change_indices(encoder: nn.Sequential, img_size: tuple[int, int]) -> tuple[list[int], list[torch.Size]]:
    """Run a dummy image through `encoder`; return the indices of the children after which the spatial
    size changes (fastai's skip connections) and every child's output shape."""
    shapes: list[torch.Size] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: shapes.append(out.shape)) for m in encoder]
    was_training = encoder.training
    try:
        param = next(encoder.parameters())
        x = torch.zeros(1, in_channels(encoder), *img_size, dtype=param.dtype, device=param.device).uniform_(-1, 1)
        with torch.no_grad():
            encoder.eval()(x)
    finally:
        for h in hooks:
            h.remove()
        encoder.train(was_training)
    idxs = [i for i in range(len(shapes) - 1) if shapes[i][-2:] != shapes[i + 1][-2:]]
    return idxs, shapes


def in_channels(model: nn.Module) -> int:
    """Input channels of the first 2-d conv of `model`."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ConfigError("the U-Net encoder has no Conv2d layer to take images")


class UnetBlock(nn.Module):
    """Upsample the path from below (PixelShuffle_ICNR, up_in_c -> up_in_c//2), concatenate the BN'd skip
    connection, ReLU, two ConvLayers; `final_div=False` halves the width (the last block)."""

    def __init__(self, up_in_c: int, x_in_c: int, final_div: bool = True, blur: bool = False, act_cls=nn.ReLU,
                 self_attention: bool = False, norm_type: str | None = None, init=nn.init.kaiming_normal_):
        super().__init__()
        self.shuf = PixelShuffle_ICNR(up_in_c, up_in_c // 2, blur=blur, act_cls=act_cls, norm_type=norm_type)
        self.bn = batch_norm(x_in_c)
        ni = up_in_c // 2 + x_in_c
        nf = ni if final_div else ni // 2
        self.conv1 = ConvLayer(ni, nf, act_cls=act_cls, norm_type=norm_type)
        self.conv2 = ConvLayer(nf, nf, act_cls=act_cls, norm_type=norm_type,
                               xtra=SelfAttention(nf) if self_attention else None)
        self.relu = make_act(act_cls)
        init_plain_convs(nn.Sequential(self.conv1, self.conv2), init)

    def forward(self, up_in: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.shuf(up_in)
        if up.shape[-2:] != skip.shape[-2:]:  # odd sizes: the encoder rounded up on the way down
            up = F.interpolate(up, skip.shape[-2:], mode="nearest")
        return self.conv2(self.conv1(self.relu(torch.cat([up, self.bn(skip)], dim=1))))


class DynamicUnet(nn.Module):
    """fastai's DynamicUnet for a torchvision ResNet (`arch` resnet18/34/50); see the module docstring.

    `norm_type` defaults to fastai's DynamicUnet default (None: plain convs with bias); the lesson's
    restoration models use "weight". `img_size` is only the dummy image's size: any input size works.
    `encoder` replaces the ResNet by any `nn.Sequential` (tests use tiny ones); `split` is where its first
    layer group ends.
    """

    def __init__(self, arch: str = "resnet34", n_out: int = 3, pretrained: bool = False,
                 weights_path: str | None = None, img_size=(128, 128), blur: bool = False, blur_final: bool = True,
                 self_attention: bool = False, y_range=None, last_cross: bool = True, bottle: bool = False,
                 norm_type: str | None = None, residual: bool = False, act_cls=nn.ReLU,
                 init=nn.init.kaiming_normal_, encoder: nn.Sequential | None = None, split: int = RESNET_SPLIT,
                 residual_scale: float = 1.0):
        super().__init__()
        self.split = int(split)
        norm_type = norm_kind(norm_type)
        img_size = (int(img_size), int(img_size)) if isinstance(img_size, (int, float)) else tuple(map(int, img_size))
        if encoder is None:
            encoder = nn.Sequential(*list(_resnet(arch, pretrained, weights_path).children())[:-2])
        self.encoder = encoder
        self.skip_idxs, shapes = size_change_indices(encoder, img_size)
        if not self.skip_idxs:
            raise ConfigError(f"model.img_size={list(img_size)} is too small: the encoder never changes its size")
        n_in = in_channels(encoder)
        if residual and n_out != n_in:
            raise ConfigError(f"model.residual=true adds the input to the output, so n_out ({n_out}) must equal "
                              f"the input channels ({n_in})")

        ni = shapes[-1][1]
        self.bn = batch_norm(ni)
        self.relu = nn.ReLU(inplace=True)
        self.middle_conv = nn.Sequential(ConvLayer(ni, ni * 2, act_cls=act_cls, norm_type=norm_type),
                                         ConvLayer(ni * 2, ni, act_cls=act_cls, norm_type=norm_type))
        blocks, up_in_c, up_size = [], ni, shapes[-1][-2:]
        n_blocks = len(self.skip_idxs)
        for i, idx in enumerate(reversed(self.skip_idxs)):  # deepest first
            not_final = i != n_blocks - 1
            block = UnetBlock(up_in_c, shapes[idx][1], final_div=not_final, blur=blur and (not_final or blur_final),
                              act_cls=act_cls, self_attention=self_attention and i == n_blocks - 3,
                              norm_type=norm_type, init=init)
            blocks.append(block)
            up_in_c = block.conv2[0].out_channels
            up_size = shapes[idx][-2:]
        self.blocks = nn.ModuleList(blocks)
        ni = up_in_c
        # ResNets end the decoder at the stem's /2: one more upsampling back to the image's size
        self.shuf = PixelShuffle_ICNR(ni, act_cls=act_cls, norm_type=norm_type) if tuple(up_size) != img_size else None
        self.last_cross = last_cross
        if last_cross:
            ni += n_in
            # bottle: a bottleneck inside the block (fastai v1's res_block); the output keeps ni channels
            self.res_block = ResBlock(ni, ni, ni // 2 if bottle else ni, act_cls=act_cls, norm_type=norm_type)
        self.residual, self.residual_scale = bool(residual), float(residual_scale)
        if residual:  # the correction's conv, zero at the start: the model starts as the identity
            self.final_conv = ConvLayer(ni, n_out, ks=1, act_cls=None, norm_type="none")
            nn.init.zeros_(self.final_conv[0].weight)
            nn.init.zeros_(self.final_conv[0].bias)
        else:
            self.final_conv = ConvLayer(ni, n_out, ks=1, act_cls=None, norm_type=norm_type)
        init_plain_convs(self.middle_conv, init)
        if last_cross:
            init_plain_convs(self.res_block, init)
        self.y_range = tuple(float(v) for v in y_range) if y_range is not None else None
        self.sigmoid_range = SigmoidRange(*self.y_range) if self.y_range is not None and not residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, h = [], x
        for i, layer in enumerate(self.encoder):
            h = layer(h)
            if i in self.skip_idxs:
                skips.append(h)
        h = self.middle_conv(self.relu(self.bn(h)))
        for block, skip in zip(self.blocks, reversed(skips)):
            h = block(h, skip)
        if self.shuf is not None:
            h = self.shuf(h)
        if h.shape[-2:] != x.shape[-2:]:
            h = F.interpolate(h, x.shape[-2:], mode="nearest")
        if self.last_cross:
            h = self.res_block(torch.cat([h, x], dim=1))
        h = self.final_conv(h)
        if self.residual:
            h = x + self.residual_scale * h
            return h.clamp(*self.y_range) if self.y_range is not None else h
        return self.sigmoid_range(h) if self.sigmoid_range is not None else h

    def decoder(self) -> nn.ModuleList:
        """Everything after the encoder, in order (the last layer group)."""
        parts = [self.bn, self.relu, self.middle_conv, *self.blocks, self.shuf,
                 self.res_block if self.last_cross else None, self.final_conv, self.sigmoid_range]
        return nn.ModuleList([p for p in parts if p is not None])

    def layer_groups(self) -> list[nn.Module]:
        """fastai's ResNet split: encoder[:6] (stem, layer1, layer2), encoder[6:] (layer3, layer4), decoder.
        An encoder too short to split is one group."""
        if len(self.encoder) <= self.split:
            return [self.encoder, self.decoder()]
        return [self.encoder[: self.split], self.encoder[self.split :], self.decoder()]
