"""The lesson-7 feature loss: the Gram matrix, the formula term by term against the lesson's recipe
(hooks on torchvision's vgg16_bn before its max-pools), zero for identical images, growing with
distortion, a frozen VGG kept out of checkpoints, and one sentence when VGG weights are missing."""

from __future__ import annotations

import logging
import socket

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fastlight.errors import DataError
from fastlight.models.feature_loss import FeatureLoss, gram_matrix


@pytest.fixture(scope="module")
def loss_fn():
    return FeatureLoss(pretrained=False)


def test_gram_matrix_on_a_hand_made_tensor():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # 2 channels of 1x2 pixels
    expected = torch.tensor([[1 + 4, 3 + 8], [3 + 8, 9 + 16]]) / (2 * 1 * 2)  # x x^T / (c h w)
    torch.testing.assert_close(gram_matrix(x), expected.view(1, 2, 2))
    batch = torch.randn(3, 4, 5, 6)
    grams = gram_matrix(batch)
    assert grams.shape == (3, 4, 4) and torch.allclose(grams, grams.transpose(1, 2))
    torch.testing.assert_close(grams[1], batch[1].reshape(4, 30) @ batch[1].reshape(4, 30).T / 120)


def test_feature_loss_is_the_lessons_formula(loss_fn, one_thread):
    vgg = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=True).eval()  # vgg16_bn
    missing, _ = vgg.load_state_dict(loss_fn.vgg.state_dict(keep_vars=True), strict=False)  # the loss's weights
    assert missing == []  # the loss's VGG is vgg16_bn's features up to [42]
    blocks = [i - 1 for i, m in enumerate(vgg) if isinstance(m, nn.MaxPool2d)]
    assert blocks[2:5] == [22, 32, 42] == list(loss_fn.layer_ids)
    stored = []
    for i in blocks[2:5]:
        vgg[i].register_forward_hook(lambda m, inp, out: stored.append(out.clone()))
    torch.manual_seed(1)
    target = torch.randn(2, 3, 48, 48)
    pred = target + 0.3 * torch.randn_like(target)
    with torch.no_grad():
        vgg(pred)
        vgg(target)
    p_feats, t_feats = stored[:3], stored[3:]
    expected = F.l1_loss(pred, target)
    for p, t, w in zip(p_feats, t_feats, (5, 15, 2)):
        expected = expected + w * F.l1_loss(p, t) + w**2 * 5e3 * F.l1_loss(gram_matrix(p), gram_matrix(t))
    with torch.no_grad():
        value = loss_fn(pred, target)
    torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-5)
    assert set(loss_fn.last_terms) == {"pixel", "feat_0", "feat_1", "feat_2", "gram_0", "gram_1", "gram_2"}


def test_feature_loss_is_zero_for_identical_images_and_grows_with_distortion(loss_fn, one_thread):
    torch.manual_seed(0)
    target = torch.randn(2, 3, 32, 32)
    noise = torch.randn_like(target)
    with torch.no_grad():
        values = [loss_fn(target + s * noise, target).item() for s in (0.0, 0.05, 0.2, 0.8)]
        blurred = loss_fn(F.avg_pool2d(target, 3, 1, 1), target).item()
    assert values[0] == 0
    assert values[1] < values[2] < values[3]
    assert blurred > 0


def test_vgg_is_frozen_in_eval_and_kept_out_of_checkpoints(loss_fn, one_thread):
    holder = nn.Module()
    holder.net, holder.loss = nn.Conv2d(3, 3, 1), loss_fn
    holder.train()
    assert not loss_fn.vgg.training and loss_fn.training  # its BN statistics never move
    assert all(not p.requires_grad for p in loss_fn.vgg.parameters())
    assert list(holder.state_dict()) == ["net.weight", "net.bias"]
    holder.load_state_dict(holder.state_dict())  # strict loading still works without the VGG
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    loss_fn(holder.net(x), torch.randn(1, 3, 32, 32)).backward()
    assert holder.net.weight.grad.abs().sum() > 0


def test_untrained_vgg_is_the_same_every_time_and_says_so(caplog):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    with caplog.at_level(logging.WARNING):
        a = FeatureLoss(pretrained=False)
    assert torch.equal(torch.rand(1), before)  # the global RNG is untouched: runs stay seeded
    assert "mean little" in caplog.text and "loss.pretrained=false" in caplog.text
    b = FeatureLoss(pretrained=False)
    assert all(torch.equal(p, q) for p, q in zip(a.vgg.parameters(), b.vgg.parameters()))


def test_vgg_weights_from_a_file_or_one_sentence(monkeypatch, tmp_path):
    source = nn.Module()  # laid out as torchvision's vgg16_bn state dict: features.*, classifier.*
    source.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=True)
    source.classifier = nn.Linear(2, 2)
    torch.save(source.state_dict(), tmp_path / "vgg.pth")
    loss = FeatureLoss(weights_path=str(tmp_path / "vgg.pth"))
    assert torch.equal(loss.vgg[0].weight, source.features[0].weight)
    assert torch.equal(loss.vgg[41].running_var, source.features[41].running_var)
    with pytest.raises(DataError, match="loss.weights_path=.*does not exist"):
        FeatureLoss(weights_path=str(tmp_path / "missing.pth"))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(DataError, match="does not hold vgg16_bn weights"):
        FeatureLoss(weights_path=str(tmp_path / "other.pth"))

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(DataError) as e:
        FeatureLoss(pretrained=True)
    msg = str(e.value)
    assert "vgg16_bn-6c64b313.pth" in msg and "loss.weights_path" in msg and "loss.pretrained=false" in msg
    assert "\n" not in msg
