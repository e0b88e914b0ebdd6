"""fastai's vision model: a torchvision ResNet body cut before its pooling, plus fastai's head.

    body  conv1 bn1 relu maxpool layer1 layer2 | layer3 layer4      (torchvision children[:-2])
    head  AdaptiveConcatPool2d (max, avg) -> Flatten -> BN -> Dropout(ps/2) -> Linear(2*nf, 512)
          -> ReLU -> BN -> Dropout(ps) -> Linear(512, n_out) [-> SigmoidRange(*y_range)]

As in fastai v2: a Linear right after a BN has no bias, the head's Linear layers are
kaiming-normal initialised, its BN layers start at weight 1, bias 1e-3. The layer groups (fastai's
`_resnet_split`) are body[:6], body[6:] and the head.

ImageNet weights come through torchvision's weights API (downloaded once into torch's cache,
`$TORCH_HOME/hub/checkpoints`); `weights_path` loads a local copy of the same file instead.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from fastlight.errors import ConfigError, DataError
from fastlight.models.embeddings import SigmoidRange

ARCHS = ("resnet18", "resnet34", "resnet50")
RESNET_SPLIT = 6  # body[:6] = stem, layer1, layer2; body[6:] = layer3, layer4


class AdaptiveConcatPool2d(nn.Module):
    """Max- and average-pool to 1x1 and concatenate (max first): twice the features of either."""

    def __init__(self):
        super().__init__()
        self.max, self.avg = nn.AdaptiveMaxPool2d(1), nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return torch.cat([self.max(x), self.avg(x)], 1)


def _bn(n: int) -> nn.BatchNorm1d:
    bn = nn.BatchNorm1d(n)
    nn.init.ones_(bn.weight)
    nn.init.constant_(bn.bias, 1e-3)
    return bn


def create_head(nf: int, n_out: int, lin_ftrs: list[int] | None = None, ps: float = 0.5,
                concat_pool: bool = True, y_range: tuple[float, float] | None = None) -> nn.Sequential:
    """fastai's `create_head`: pooling, then BN -> Dropout -> Linear blocks; `nf` = body features."""
    if concat_pool:
        nf *= 2
    sizes = [nf, *(lin_ftrs if lin_ftrs is not None else [512]), n_out]
    drops = [ps / 2] * (len(sizes) - 2) + [ps]
    layers: list[nn.Module] = [AdaptiveConcatPool2d() if concat_pool else nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    for i, (n_in, n_next, p) in enumerate(zip(sizes[:-1], sizes[1:], drops)):
        layers += [_bn(n_in)] + ([nn.Dropout(p)] if p else []) + [nn.Linear(n_in, n_next, bias=False)]
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    if y_range is not None:
        layers.append(SigmoidRange(*y_range))
    head = nn.Sequential(*layers)
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
    return head


class VisionModel(nn.Sequential):
    """body + head, split into fastai's three layer groups."""

    def __init__(self, body: nn.Sequential, head: nn.Sequential, split: int = RESNET_SPLIT):
        super().__init__(body, head)
        self.split = split

    def layer_groups(self) -> list[nn.Module]:
        body, head = self[0], self[1]
        return [body[: self.split], body[self.split :], head]


def _resnet(arch: str, pretrained: bool, weights_path: str | None) -> nn.Module:
    if arch not in ARCHS:
        raise ConfigError(f"model.arch={arch!r} is unknown; choose one of: {', '.join(ARCHS)}")
    model = getattr(torchvision.models, arch)(weights=None)
    if weights_path:
        state = _read_weights(Path(weights_path).expanduser(), arch)
    elif pretrained:
        state = imagenet_weights(arch)
    else:
        return model
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the head is replaced anyway
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise DataError(f"the weights do not fit {arch} (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                        f"give a torchvision {arch} state dict or set model.arch to the weights' architecture")
    return model


def imagenet_weights(arch: str, what: str | None = None, weights_key: str = "model.weights_path",
                     instead: str = "train from scratch with model.pretrained=false") -> dict:
    """torchvision's ImageNet state dict for `arch` (downloaded once, then cached), or one sentence
    saying where to put the file when it can't be had (no network)."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=True)  # uses the cached file when it is there
    except (OSError, RuntimeError) as e:  # URLError is an OSError; RuntimeError: hash mismatch
        why = str(getattr(e, "reason", None) or e).splitlines()[0]
        raise DataError(
            f"{what or f'ImageNet weights for {arch}'} are not in {cached.parent} and could not be downloaded "
            f"({why}); connect to the internet once, or copy {cached.name} there or pass {weights_key}=<file>, "
            f"or {instead}"
        ) from None


def _read_weights(path: Path, arch: str) -> dict:
    if not path.is_file():
        raise DataError(f"model.weights_path={path} does not exist; give a torchvision {arch} state dict (.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike: the file is not a state dict
        raise DataError(f"model.weights_path={path} is not a readable torch state dict ({type(e).__name__})") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def create_vision_model(
    n_out: int,
    arch: str = "resnet34",
    pretrained: bool = True,
    weights_path: str | None = None,
    ps: float = 0.5,
    lin_ftrs: list[int] | None = None,
    concat_pool: bool = True,
    y_range: list[float] | None = None,
) -> VisionModel:
    """fastai's `vision_learner` model for a torchvision ResNet."""
    resnet = _resnet(arch, pretrained, weights_path)
    nf = resnet.fc.in_features  # 512 for resnet18/34, 2048 for resnet50
    body = nn.Sequential(*list(resnet.children())[:-2])
    y_range = tuple(y_range) if y_range is not None else None
    head = create_head(nf, n_out, list(lin_ftrs) if lin_ftrs is not None else None, ps, concat_pool, y_range)
    return VisionModel(body, head)
