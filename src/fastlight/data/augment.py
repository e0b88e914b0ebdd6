"""Augmentation that moves a mask with its image (segmentation): fastai's `aug_transforms` recipe.

`seg_transforms` builds the chain: a random crop or a resize, a flip, then fastai's affine part
(`AffineWarp`: rotation, zoom and warp through one reflection-padded sampling grid, nearest-neighbour
for the mask) and fastai's lighting (`Lighting`: brightness and contrast in logit space), each part
with probability 0.75 as fastai draws them; or torchvision's rotation with void corners.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from fastlight.errors import ConfigError


class AffineWarp(torch.nn.Module):
    """fastai's affine augmentation of an (image, mask) pair, each part with probability `p`: a rotation
    of up to `max_rotate` degrees, a zoom in of 1..`max_zoom` around a random centre, a perspective warp
    moving the corners by up to `max_warp` (normalised coordinates; its x and y magnitudes each drawn
    with probability `p`, as fastai's `Warp` draws them). One sampling grid for both, with
    fastai's reflection padding (nothing comes from outside the picture); bilinear for the image,
    nearest for the mask. A grid_sample per item: cheaper than torchvision's pad + rotate + warp chain."""

    def __init__(self, max_rotate: float = 10.0, max_zoom: float = 1.1, max_warp: float = 0.2, p: float = 0.75):
        super().__init__()
        self.max_rotate, self.max_zoom, self.max_warp, self.p = max_rotate, max_zoom, max_warp, p

    def matrix(self) -> torch.Tensor | None:
        """The 3x3 map from output to input coordinates, or None for the identity (drawn from torch's RNG)."""
        u = torch.rand(7).tolist()
        on = (torch.rand(4) < self.p).tolist()  # rotate, zoom, warp x, warp y
        m, warped = torch.eye(3), False
        if self.max_warp and (on[2] or on[3]):  # homography moving the corners (-1,-1), (-1,1), (1,-1), (1,1)
            mx, my = ((2 * v - 1) * self.max_warp * o for v, o in zip(u[5:7], on[2:]))
            src = [(-1, -1), (-1, 1), (1, -1), (1, 1)]
            dst = [(-1 - my, -1 - mx), (-1 + my, 1 + mx), (1 + my, -1 + mx), (1 - my, 1 - mx)]
            rows = []
            for (x, y), (X, Y) in zip(src, dst):
                rows += [[x, y, 1, 0, 0, 0, -X * x, -X * y], [0, 0, 0, x, y, 1, -Y * x, -Y * y]]
            h = torch.linalg.solve(torch.tensor(rows, dtype=torch.float64), torch.tensor(dst, dtype=torch.float64).flatten())
            m, warped = torch.cat([h, torch.ones(1, dtype=torch.float64)]).view(3, 3).float(), True
        a = torch.eye(3)
        if self.max_rotate and on[0]:
            t = math.radians((2 * u[0] - 1) * self.max_rotate)
            a = torch.tensor([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]]) @ a
        if self.max_zoom > 1 and on[1]:
            s = 1 / (1 + u[1] * (self.max_zoom - 1))  # the input region shrinks: a zoom in
            a = torch.tensor([[s, 0, (1 - s) * (2 * u[2] - 1)], [0, s, (1 - s) * (2 * u[3] - 1)], [0, 0, 1]]) @ a
        if not warped and torch.equal(a, torch.eye(3)):
            return None
        return a @ m

    def forward(self, img, mask):
        m = self.matrix()
        if m is None:
            return img, mask
        h, w = img.shape[-2:]
        ys, xs = torch.meshgrid(torch.linspace(-1 + 1 / h, 1 - 1 / h, h), torch.linspace(-1 + 1 / w, 1 - 1 / w, w),
                                indexing="ij")
        pts = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ m.T
        grid = (pts[..., :2] / pts[..., 2:]).unsqueeze(0)
        sample = lambda t, mode: F.grid_sample(t[None].float(), grid, mode=mode, padding_mode="reflection",
                                               align_corners=False)[0]
        out = sample(img, "bilinear").round_().clamp_(0, 255).to(img.dtype)
        return tv_tensors.wrap(out, like=img), tv_tensors.wrap(sample(mask[None], "nearest")[0].long(), like=mask)


def seg_transforms(size, train: bool, fill: int, min_scale: float, max_rotate: float, max_lighting: float,
                   do_flip: bool, max_zoom: float = 1.0, max_warp: float = 0.0, pad_mode: str = "zeros"):
    """Training: a random crop of min_scale..1 of the area (min_scale < 1) or a resize, a flip, the affine
    part (p 0.75 each: rotation up to max_rotate degrees, zoom in 1..max_zoom, warp max_warp) and fastai's
    lighting (brightness and contrast in logit space, p 0.75 each).
    `pad_mode=reflection` is fastai's (`AffineWarp`); `zeros` rotates with torchvision, the pixels turned
    in black in the image and void (`fill`) in the mask, which the metrics skip (no zoom, no warp)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if not train:
        return v2.Compose([v2.Resize(size, antialias=True)])
    if pad_mode not in ("zeros", "reflection"):
        raise ConfigError(f"data.pad_mode={pad_mode!r} must be zeros or reflection")
    aspect = size[1] / size[0]
    if min_scale < 1:
        ts = [v2.RandomResizedCrop(size, scale=(min_scale, 1.0), ratio=(aspect * 0.9, aspect * 1.1), antialias=True)]
    else:
        ts = [v2.Resize(size, antialias=True)]
    if do_flip:
        ts.append(v2.RandomHorizontalFlip())
    if pad_mode == "reflection" and (max_rotate or max_zoom > 1 or max_warp):
        ts.append(AffineWarp(max_rotate, max_zoom, max_warp))
    elif max_rotate:
        ts.append(v2.RandomApply([v2.RandomRotation(max_rotate, fill={tv_tensors.Image: 0, tv_tensors.Mask: fill})],
                                 p=0.75))
    if max_lighting:
        ts.append(Lighting(max_lighting))
    return v2.Compose(ts)


class Lighting(torch.nn.Module):
    """fastai's `Brightness` and `Contrast`, each with probability `p`, on the logits of the [0, 1] image:
    brightness adds logit(b), b uniform in 0.5 * (1 +- max_lighting); contrast multiplies the logits by c,
    log c uniform in +-log(1 - max_lighting). The mask passes through."""

    def __init__(self, max_lighting: float = 0.2, p: float = 0.75):
        super().__init__()
        self.max_lighting, self.p = max_lighting, p

    def forward(self, img, mask):
        u, on = torch.rand(2).tolist(), (torch.rand(2) < self.p).tolist()
        b = 0.5 * (1 + (2 * u[0] - 1) * self.max_lighting) if on[0] else 0.5
        c = math.exp((2 * u[1] - 1) * -math.log(1 - self.max_lighting)) if on[1] else 1.0
        return (img if not (on[0] or on[1]) else tv_tensors.wrap(lighting(img, b, c), like=img)), mask


def lighting(img: torch.Tensor, brightness: float = 0.5, contrast: float = 1.0) -> torch.Tensor:
    """A uint8 image with fastai's lighting: sigmoid((logit(x) + logit(brightness)) * contrast), x in [0, 1]."""
    x = (img.float() / 255).clamp_(1e-7, 1 - 1e-7)
    out = torch.sigmoid((torch.logit(x) + math.log(brightness / (1 - brightness))) * contrast)
    return out.mul_(255).round_().to(img.dtype)
