"""The lesson-7 feature (perceptual + style) loss on VGG16-bn activations.

    loss = L1(pred, target)
         + sum_i w_i        * L1(f_i(pred), f_i(target))                  (perceptual, Johnson et al.)
         + sum_i w_i**2*5e3 * L1(gram(f_i(pred)), gram(f_i(target)))      (style, Gatys et al.)

f_i are the activations of vgg16_bn.features at the ReLUs just before its max-pools, the lesson's
`blocks[2:5]` (features[22], [32], [42]: before the 3rd, 4th and 5th pools, 256/512/512 channels),
with weights (5, 15, 2). Images are compared in the space the data module gives them (ImageNet-normalised,
as VGG expects). The VGG is frozen, always in eval mode, and not part of the state dict: it is rebuilt
from torchvision's weights (or `weights_path`) whenever the loss is built, so checkpoints stay small.

`pretrained=False` uses an untrained VGG (drawn from a fixed seed, so every run and every reload sees
the same one): fine for tests and benchmarks, but then the perceptual and style terms mean little.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fastlight.errors import ConfigError, DataError

log = logging.getLogger(__name__)

LAYER_IDS = (22, 32, 42)  # vgg16_bn.features indices: the ReLU before the 3rd, 4th, 5th MaxPool2d
STYLE_SCALE = 5e3


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) -> (n, c, c): channel correlations x x^T / (c*h*w)."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def vgg16_bn_features(pretrained: bool = True, weights_path: str | None = None) -> nn.Sequential:
    """torchvision's vgg16_bn `.features`, with ImageNet weights, a local copy of them, or untrained.

    Only the convolutional part is built (torchvision's `make_layers`): the 120M-parameter classifier
    would take seconds to initialise and is never used."""
    if not weights_path and not pretrained:
        with torch.random.fork_rng(devices=[]):  # the same untrained VGG every time, global RNG untouched
            torch.manual_seed(0)
            return _init_like_torchvision(_features())
    state = _read_state(Path(weights_path).expanduser()) if weights_path else _imagenet_state()
    features = _features()
    state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    try:
        features.load_state_dict(state)
    except RuntimeError:
        raise DataError(f"loss.weights_path={weights_path} does not hold vgg16_bn weights; give torchvision's "
                        "vgg16_bn state dict (vgg16_bn-6c64b313.pth) or set loss.pretrained=false") from None
    return features


def _features() -> nn.Sequential:
    return torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=True)


def _init_like_torchvision(features: nn.Sequential) -> nn.Sequential:
    """torchvision's VGG init: kaiming-normal (fan_out) convs with zero bias, BN at 1 and 0."""
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return features


def _imagenet_state() -> dict:
    from fastlight.models.vision import imagenet_weights

    return imagenet_weights("vgg16_bn", "VGG16-bn ImageNet weights for the feature loss", "loss.weights_path",
                            "use an untrained VGG with loss.pretrained=false")


def _read_state(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"loss.weights_path={path} does not exist; give torchvision's vgg16_bn state dict (.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (pickle, zip and torch errors alike: not a state dict)
        raise DataError(f"loss.weights_path={path} is not a readable torch state dict ({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise DataError(f"loss.weights_path={path} is not a state dict")
    return state.get("state_dict", state)


class FeatureLoss(nn.Module):
    """fastai lesson 7's FeatureLoss(vgg16_bn, blocks[2:5], layer_wgts). `forward(pred, target)` returns
    the scalar loss; `last_terms` keeps its parts (pixel, feat_i, gram_i) for logging."""

    def __init__(self, layer_wgts=(5, 15, 2), pretrained: bool = True, weights_path: str | None = None,
                 layer_ids=LAYER_IDS):
        super().__init__()
        self.layer_ids = tuple(int(i) for i in layer_ids)
        self.layer_wgts = tuple(float(w) for w in layer_wgts)
        if len(self.layer_wgts) != len(self.layer_ids):
            raise ConfigError(f"loss.layer_wgts has {len(self.layer_wgts)} weights for {len(self.layer_ids)} layers")
        if not pretrained and not weights_path:
            log.warning("feature loss on an untrained VGG (loss.pretrained=false): its perceptual and style terms "
                        "then mean little; only the pixel L1 term is a real measure")
        features = vgg16_bn_features(pretrained, weights_path)
        self.vgg = features[: max(self.layer_ids) + 1].eval()  # nothing after the last layer used is needed
        for p in self.vgg.parameters():
            p.requires_grad_(False)
        self.last_terms: dict[str, torch.Tensor] = {}
        # the VGG is rebuilt from its source, never saved: keep it out of checkpoints
        self.register_state_dict_post_hook(_drop_vgg_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_vgg)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vgg.eval()  # BN statistics of the VGG are fixed
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in self.layer_ids:
                out.append(x)  # the next layer (a max-pool) does not write in place: no copy needed
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_feats = self.features(target)
        pred_feats = self.features(pred)
        pixel = F.l1_loss(pred, target)
        feat = [w * F.l1_loss(p, t) for p, t, w in zip(pred_feats, target_feats, self.layer_wgts)]
        gram = [w**2 * STYLE_SCALE * F.l1_loss(gram_matrix(p), gram_matrix(t))
                for p, t, w in zip(pred_feats, target_feats, self.layer_wgts)]
        self.last_terms = {"pixel": pixel.detach(), **{f"feat_{i}": v.detach() for i, v in enumerate(feat)},
                           **{f"gram_{i}": v.detach() for i, v in enumerate(gram)}}
        return pixel + sum(feat) + sum(gram)


def _drop_vgg_keys(module, state_dict, prefix, local_metadata):
    for key in [k for k in state_dict if k.startswith(prefix + "vgg.")]:
        del state_dict[key]


def _ignore_missing_vgg(module, incompatible_keys):
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if ".vgg." not in f".{k}"]
