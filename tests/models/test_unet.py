"""fastai's DynamicUnet: skips where the encoder changes size, any input size, fastai's module tree,
parameter count and outputs (weights copied), the 3 layer groups, and the residual option."""

from __future__ import annotations

import socket

import pytest
import torch
import torchvision
from torch import nn

from fastlight.errors import ConfigError, DataError
from fastlight.models.layers import SelfAttention
from fastlight.models.unet import DynamicUnet, size_change_indices
from tests.models.oracle import copy_weights, leaf_types, perturb

# fastai still builds its weight norm with torch's deprecated hook
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning")


def no_network(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")  # what a lookup says offline


def resnet_body(arch: str) -> nn.Sequential:
    return nn.Sequential(*list(getattr(torchvision.models, arch)().children())[:-2])


@pytest.mark.parametrize(("arch", "channels"), [("resnet18", [64, 64, 128, 256, 512]),
                                                ("resnet34", [64, 64, 128, 256, 512]),
                                                ("resnet50", [64, 256, 512, 1024, 2048])])
def test_skips_land_where_the_encoder_changes_size(arch, channels):
    with torch.device("meta"):  # shapes only: no weights initialised, nothing computed
        encoder = resnet_body(arch)
        idxs, shapes = size_change_indices(encoder, (96, 128))
    assert idxs == [2, 4, 5, 6]  # stem relu (/2), layer1 (/4), layer2 (/8), layer3 (/16)
    assert [shapes[i][1] for i in idxs] + [shapes[-1][1]] == channels
    assert [tuple(shapes[i][-2:]) for i in idxs] == [(48, 64), (24, 32), (12, 16), (6, 8)]
    assert tuple(shapes[-1][-2:]) == (3, 4)


def test_skips_follow_any_encoder_and_the_decoder_mirrors_them(one_thread):
    def conv(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1), nn.ReLU())

    encoder = nn.Sequential(conv(3, 8, 1), conv(8, 16, 2), conv(16, 16, 1), conv(16, 32, 2), conv(32, 32, 1))
    model = DynamicUnet(encoder=encoder, n_out=2, img_size=32)
    assert model.skip_idxs == [0, 2]  # full size (8 ch) and /2 (16 ch); /4 is the bottom
    assert [b.bn.num_features for b in model.blocks] == [16, 8]
    assert model.shuf is None  # the last skip is already at the image's size
    assert model(torch.randn(2, 3, 20, 28)).shape == (2, 2, 20, 28)
    assert [len(list(g.parameters())) > 0 for g in model.layer_groups()] == [True, True]  # too short to split


@pytest.mark.parametrize("size", [(97, 131), (64, 64), (33, 40)])
def test_any_input_size_comes_back_at_its_size(size, one_thread):
    torch.manual_seed(0)
    model = DynamicUnet("resnet18", n_out=5, img_size=64, blur=True, self_attention=True, norm_type="weight")
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, *size))
    assert out.shape == (1, 5, *size) and torch.isfinite(out).all()


@pytest.mark.parametrize("options", [
    {},  # fastai's defaults: norm_type None
    {"blur": True, "self_attention": True, "y_range": (-3.0, 3.0), "norm_type": "weight"},  # the lesson's GAN generator
    {"norm_type": "batch", "last_cross": False, "blur": True, "blur_final": False},
])
def test_unet_equals_fastais_dynamic_unet_for_resnet34(options, one_thread):
    unet = pytest.importorskip("fastai.vision.models.unet")
    from fastai.layers import NormType
    from fastai.vision.learner import create_body

    fa_options = dict(options)
    if options.get("norm_type"):
        fa_options["norm_type"] = getattr(NormType, options["norm_type"].capitalize())
    torch.manual_seed(0)
    theirs = unet.DynamicUnet(create_body(torchvision.models.resnet34(), pretrained=False), 3, (64, 64), **fa_options)
    ours = DynamicUnet("resnet34", n_out=3, img_size=(64, 64), **options)
    assert leaf_types(ours) == leaf_types(theirs)
    n_params = sum(p.numel() for p in theirs.parameters())
    assert sum(p.numel() for p in ours.parameters()) == n_params
    assert [m.gamma.shape for m in ours.modules() if isinstance(m, SelfAttention)] == (
        [(1,)] if options.get("self_attention") else [])
    perturb(theirs)  # self-attention's gamma too: every path counts
    copy_weights(theirs, ours)
    theirs.eval(), ours.eval()
    for size in ((64, 64), (57, 71)):
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x).as_subclass(torch.Tensor), atol=1e-4, rtol=1e-4)
    if options.get("self_attention"):
        return  # in training, torch's spectral norm does its power step as u-then-v, fastai's old hook v-then-u
    # training mode (batch statistics) and the backward pass agree too: in-place ReLUs lose nothing
    theirs.train(), ours.train()
    x = torch.randn(2, 3, 48, 48)
    grads = []
    for model in (theirs, ours):
        xi = x.clone().requires_grad_()
        model(xi).as_subclass(torch.Tensor).square().mean().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-3)


def test_layer_groups_are_the_resnet_split_with_the_decoder_last(one_thread):
    model = DynamicUnet("resnet18", img_size=64, self_attention=True, residual=True)
    groups = model.layer_groups()
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    resnet = torchvision.models.resnet18()
    assert [type(m) for m in groups[0]] == [type(getattr(resnet, n)) for n in names[:6]]
    assert [type(m) for m in groups[1]] == [type(getattr(resnet, n)) for n in names[6:]]
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}  # a partition
    assert id(model.final_conv[0].weight) in {id(p) for p in groups[2].parameters()}


def test_bottle_narrows_the_last_res_block_and_runs(one_thread):
    # fastai 2.8.12's bottle=True builds a final conv of the wrong width and fails at the first forward
    model = DynamicUnet("resnet18", img_size=64, bottle=True)
    assert model.res_block.convpath[0][0].out_channels == model.res_block.convpath[0][0].in_channels // 2
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 3, 48, 48)


def test_residual_unet_starts_at_its_input_and_learns_a_correction(one_thread):
    torch.manual_seed(0)
    model = DynamicUnet("resnet18", img_size=32, residual=True, y_range=(-3, 3), norm_type="weight")
    x = torch.randn(2, 3, 32, 32).clamp(-3, 3)
    torch.testing.assert_close(model(x), x, rtol=0, atol=0)
    target = x + 0.5
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = (model(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(0.25, abs=1e-6)  # the identity's error: it starts at its input
    # and learns the correction: every weight of the zero-initialised last conv moves from step one
    assert model.final_conv[0].weight.ne(0).all() and losses[1] < losses[0] and min(losses) < 0.2
    plain = DynamicUnet("resnet18", img_size=32, y_range=(-3, 3), norm_type="weight")
    assert (plain(x) - target).pow(2).mean() > 0.5  # a plain U-Net starts far from its input
    assert model(x * 10).abs().max() <= 3  # y_range clamps the residual output
    with pytest.raises(ConfigError, match="n_out"):
        DynamicUnet("resnet18", n_out=4, img_size=32, residual=True)
    scaled = DynamicUnet("resnet18", img_size=32, residual=True, y_range=(-3, 3), norm_type="weight", residual_scale=0.25)
    scaled.load_state_dict(model.state_dict())
    model.eval(), scaled.eval()
    with torch.no_grad():  # residual_scale multiplies the correction, nothing else
        a, b = scaled(x), model(x)
        inside = (a.abs() < 2.99) & (b.abs() < 2.99)  # y_range clamps the rest
        torch.testing.assert_close((a - x)[inside], 0.25 * (b - x)[inside], atol=1e-5, rtol=1e-4)


def test_bad_options_and_offline_weights_say_one_sentence(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="norm_type='layer'"):
        DynamicUnet("resnet18", norm_type="layer")
    with pytest.raises(ConfigError, match="resnet18, resnet34, resnet50"):
        DynamicUnet("vgg16")
    missing = tmp_path / "nope.pth"
    with pytest.raises(DataError, match="model.weights_path="):
        DynamicUnet("resnet18", weights_path=str(missing))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(DataError) as e:
        DynamicUnet("resnet18", pretrained=True)
    assert "model.weights_path" in str(e.value) and "model.pretrained=false" in str(e.value)
    assert "\n" not in str(e.value)


def test_local_encoder_weights_are_loaded(tmp_path, one_thread):
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model = DynamicUnet("resnet18", img_size=32, weights_path=str(tmp_path / "r18.pth"))
    assert torch.equal(model.encoder[0].weight, reference.conv1.weight)
    assert torch.equal(model.encoder[7][1].bn2.running_var, reference.layer4[1].bn2.running_var)
