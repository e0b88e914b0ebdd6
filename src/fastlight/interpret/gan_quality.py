"""Quality numbers for generated images: GAN losses say little about quality (lesson 7), these do.

For MNIST, a small CNN classifier (32 px) trained once on MNIST's training set (cached under
`cache_root("mnist_classifier", ...)`) judges the samples:
  fid         Fréchet distance between the classifier's penultimate features of the samples and of
              real test digits (FID with a digit classifier instead of Inception; lower is better)
  confident   share of samples the classifier labels with probability >= 0.9 (digit-like samples)
  entropy     entropy of the histogram of predicted classes (mode coverage; log 10 = 2.303 is perfect)
`MnistJudge.reference` gives the same numbers for real digits (held-out training digits against the
test digits), the value a perfect generator would reach with the same sample size.
"""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastlight.data.core import cache_root

CLASSIFIER_VERSION = "cnn32-v2"  # bump when the classifier or its training changes: a new cache key


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the Fréchet distance of two Gaussians."""
    from scipy import linalg

    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular covariances (fewer samples than features) are expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean, _ = linalg.sqrtm(sigma1 @ sigma2, disp=False)
    if not np.isfinite(covmean).all():  # a near-singular product: regularise as the FID reference code does
        eps = np.eye(len(mu1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps))
    covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def gaussian_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = features.double().cpu().numpy()
    return f.mean(0), np.cov(f, rowvar=False)


JUDGE_SIZE = 32  # the judge sees 32 px digits, the usual WGAN size: no resize round trip there


def to_judge(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (n, 1, h, w) at any size -> the judge's 32 px input."""
    if x.shape[-1] != JUDGE_SIZE or x.shape[-2] != JUDGE_SIZE:
        x = F.interpolate(x, size=(JUDGE_SIZE, JUDGE_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x


class MnistClassifier(nn.Module):
    """32x32 digits in [0, 1] -> 10 logits; `features` is the 128-d layer the Fréchet distance uses."""

    def __init__(self):
        super().__init__()

        def block(ni, nf, stride):
            return [nn.Conv2d(ni, nf, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(nf), nn.ReLU()]

        self.body = nn.Sequential(
            *block(1, 32, 1), *block(32, 32, 2),      # 16x16
            *block(32, 64, 1), *block(64, 64, 2),     # 8x8
            *block(64, 128, 2),                       # 4x4
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(128, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def _key(x: torch.Tensor) -> str:
    return hashlib.md5(x[:: max(1, len(x) // 997)].numpy().tobytes()).hexdigest()[:10]


def train_classifier(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                     epochs: int = 2, seed: int = 0) -> tuple[MnistClassifier, float]:
    """The judge, trained once on 32 px digits in [0, 1]: Adam + one-cycle, bs 128, random shifts
    of up to 2 px (so slightly misplaced strokes in samples are still read); returns (model, test acc)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MnistClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    bs = 128
    steps = epochs * math.ceil(len(x) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps)
    padded = F.pad(x, (2, 2, 2, 2))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), bs):
            idx = order[i : i + bs]
            dy, dx = torch.randint(0, 5, (2,), generator=g).tolist()
            xb = padded[idx, :, dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x_test[i : i + 1000]).argmax(1) for i in range(0, len(x_test), 1000)])
    return model, float((pred == y_test).float().mean())


def cached_classifier(x, y, x_test, y_test) -> tuple[MnistClassifier, float]:
    """The judge for these digits (uint8, 28 px) from the cache, trained (minutes on a CPU) if absent."""
    path = cache_root("mnist_classifier", CLASSIFIER_VERSION) / f"{_key(x)}-{_key(x_test)}.pt"
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = MnistClassifier()
        model.load_state_dict(state["state_dict"])
        return model.eval(), float(state["test_acc"])
    print(f"[fastlight] training the MNIST judge classifier once (cached at {path})")
    with torch.inference_mode(False), torch.enable_grad():
        model, acc = train_classifier(to_judge(x.float() / 255), y, to_judge(x_test.float() / 255), y_test)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "test_acc": acc}, tmp)
    tmp.replace(path)
    print(f"[fastlight] MNIST judge: test accuracy {acc:.4f}")
    return model, acc


class MnistJudge:
    """Scores images in the GAN's space ([-1, 1], any size) against real test digits."""

    def __init__(self, classifier: MnistClassifier, test_acc: float, real_test: torch.Tensor, real_holdout: torch.Tensor):
        self.classifier, self.test_acc = classifier.eval(), test_acc
        self.real_stats = gaussian_stats(self.features_and_probs(real_test)[0])
        self.holdout = real_holdout  # real digits (same count as the samples) for the reference numbers
        self._reference: dict | None = None

    @torch.no_grad()
    def features_and_probs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.classifier.to(images.device)
        x = to_judge((images.float() + 1) / 2)  # [-1, 1] -> [0, 1] at 32 px, as the judge was trained
        feats, probs = [], []
        for i in range(0, len(x), 500):
            f = self.classifier.features(x[i : i + 500])
            feats.append(f.cpu())
            probs.append(self.classifier.head(f).softmax(1).cpu())
        return torch.cat(feats), torch.cat(probs)

    def score(self, images: torch.Tensor) -> dict[str, float]:
        feats, probs = self.features_and_probs(images)
        conf, pred = probs.max(1)
        hist = torch.bincount(pred, minlength=10).double() / len(pred)
        entropy = float(-(hist[hist > 0] * hist[hist > 0].log()).sum())
        return {
            "fid": frechet_distance(*gaussian_stats(feats), *self.real_stats),
            "confident": float((conf >= 0.9).float().mean()),
            "entropy": entropy,
        }

    def reference(self) -> dict[str, float]:
        if self._reference is None:
            self._reference = self.score(self.holdout)
        return self._reference


class VggFrechet:
    """The Fréchet distance of restored images to real ones in the feature space of the feature loss's
    VGG16-bn (lesson7-superres: vgg16_bn.features, ImageNet-normalised inputs): each image is the
    mean over positions of `features[layer]` (default 42, the ReLU before the last max-pool, 512-d).

    `pretrained=False` uses the untrained VGG the feature loss builds then (seed 0, the same every
    time): a fixed random projection, comparable across runs but not a perceptual measure like
    Inception's FID. With fewer images than feature dimensions the covariances are singular and the
    distance is a biased, noisier estimate: compare runs on the same validation images only.
    """

    def __init__(self, pretrained: bool = False, weights_path: str | None = None, layer: int = 42):
        from fastlight.models.feature_loss import vgg16_bn_features

        self.pretrained = bool(pretrained or weights_path)
        self.vgg = vgg16_bn_features(pretrained, weights_path)[: int(layer) + 1].eval()
        for p in self.vgg.parameters():
            p.requires_grad_(False)
        self.reset()

    def reset(self) -> None:
        self.fake: list[torch.Tensor] = []
        self.real: list[torch.Tensor] = []

    @torch.no_grad()
    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        self.vgg.to(x.device)
        return self.vgg(x.float()).mean((2, 3)).double().cpu()

    def update(self, fake: torch.Tensor, real: torch.Tensor) -> None:
        self.fake.append(self.pooled(fake))
        self.real.append(self.pooled(real))

    def compute(self) -> float | None:
        """The distance over everything updated since the last reset (None below 2 images)."""
        if sum(len(f) for f in self.fake) < 2:
            return None
        return frechet_distance(*gaussian_stats(torch.cat(self.fake)), *gaussian_stats(torch.cat(self.real)))
