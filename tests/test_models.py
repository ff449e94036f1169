"""The model factory against direct smp builds (the reference for model shapes), weights init, errors."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base.modules import SCSEModule
from segmentation_models_pytorch.encoders._utils import patch_first_conv

from cryonet import models
from cryonet.config import get_profile

CI_ENCODER = get_profile("ci").encoder


@pytest.mark.parametrize("in_channels", [7, 30])
@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_every_model_maps_tiles_to_class_logits(name, in_channels):
    torch.manual_seed(0)
    model = models.create(name, in_channels, encoder=CI_ENCODER).eval()
    x = torch.randn(2, in_channels, 64, 64)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 4, 64, 64)
    assert torch.isfinite(y).all()
    assert not torch.allclose(y[0], y[1])  # the output depends on the input
    assert models.count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_cryonet_is_smp_unetplusplus_with_scse():
    torch.manual_seed(0)
    ours = models.create("cryonet", 30, classes=4, encoder=CI_ENCODER)
    torch.manual_seed(0)
    ref = smp.UnetPlusPlus(
        encoder_name=CI_ENCODER, encoder_weights=None, decoder_attention_type="scse", in_channels=30, classes=4
    )
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert all(ours_sd[k].shape == ref_sd[k].shape for k in ref_sd)
    # same seed, same draws: the factory adds nothing to smp's build
    assert all(torch.equal(ours_sd[k], ref_sd[k]) for k in ref_sd)


def test_paper_cryonet_parameter_count_equals_smp_and_torchvision():
    import torchvision

    ours = models.create("cryonet", 30)  # paper default encoder: ResNet-101
    ref = smp.UnetPlusPlus(
        encoder_name="resnet101", encoder_weights=None, decoder_attention_type="scse", in_channels=30, classes=4
    )
    assert models.count_parameters(ours) == models.count_parameters(ref)
    # the encoder is torchvision's ResNet-101 without its classifier, first conv widened from 3 to 30 channels
    tv = torchvision.models.resnet101(weights=None)
    expected = models.count_parameters(tv) - tv.fc.weight.numel() - tv.fc.bias.numel() + 64 * 27 * 7 * 7
    assert models.count_parameters(ours.encoder) == expected


def test_scse_attention_only_in_cryonet():
    cryonet = models.create("cryonet", 7, encoder=CI_ENCODER)
    unet = models.create("unet", 7, encoder=CI_ENCODER)
    n_scse = sum(isinstance(m, SCSEModule) for m in cryonet.decoder.modules())
    assert n_scse > 0
    assert sum(isinstance(m, SCSEModule) for m in unet.modules()) == 0
    # same encoder and input: the two models differ only in the decoder
    assert models.count_parameters(cryonet.encoder) == models.count_parameters(unet.encoder)


def test_paper_segformer_is_mix_transformer_with_any_channels():
    model = models.create("segformer", 30).eval()  # paper default: mit_b2
    assert model.encoder.patch_embed1.proj.in_channels == 30
    with torch.no_grad():
        assert model(torch.randn(1, 30, 64, 64)).shape == (1, 4, 64, 64)
    assert "mit_b2" in models.describe("segformer")


def test_local_encoder_weights_use_smps_first_conv_adaptation(tmp_path):
    torch.manual_seed(1)
    rgb = smp.encoders.get_encoder(CI_ENCODER, in_channels=3, weights=None)
    state = {k: v.clone() for k, v in rgb.state_dict().items()}
    # an ImageNet classifier checkpoint has a head, which the factory drops like smp does
    saved = {**state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    path = tmp_path / "resnet18_imagenet.pt"
    torch.save(saved, path)

    model = models.create("unet", 5, encoder=CI_ENCODER, weights=path)
    w = model.encoder.conv1.weight.detach()
    w0 = state["conv1.weight"]
    assert w.shape == (64, 5, 7, 7)
    # smp's rule: channel i gets RGB channel i mod 3, everything scaled by 3 / 5
    torch.testing.assert_close(w[:, :3], w0 * 3 / 5)
    torch.testing.assert_close(w[:, 3:], w0[:, :2] * 3 / 5)
    # and it is exactly what smp's own patch_first_conv does to the loaded encoder
    patch_first_conv(rgb, new_in_channels=5, pretrained=True)
    torch.testing.assert_close(w, rgb.conv1.weight.detach())
    # every other encoder tensor is copied unchanged
    sd = model.encoder.state_dict()
    assert all(torch.equal(sd[k], state[k]) for k in state if k != "conv1.weight")
    # the result has the structure of a model built directly for 5 channels
    direct = models.create("unet", 5, encoder=CI_ENCODER).state_dict()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in direct.items()}
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 5, 64, 64)).shape == (1, 4, 64, 64)


def test_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="cryonet, unet, deeplabv3plus, segformer"):
        models.create("fcn", 7)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.create("unet", 7, encoder=CI_ENCODER, weights=tmp_path / "missing.pt")
    other = tmp_path / "resnet34.pt"
    torch.save(smp.encoders.get_encoder("resnet34", weights=None).state_dict(), other)
    with pytest.raises(ValueError, match="do not match encoder 'resnet18'.*unexpected keys"):
        models.create("unet", 7, encoder=CI_ENCODER, weights=other)
    not_a_state = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_a_state)
    with pytest.raises(ValueError, match="expected a state dict"):
        models.create("unet", 7, encoder=CI_ENCODER, weights=not_a_state)
    with pytest.raises(ValueError, match="unknown encoder 'resnet19'"):
        models.create("unet", 7, encoder="resnet19")


def test_descriptions_cover_every_model():
    assert set(models.MODEL_DESCRIPTIONS) == set(models.MODEL_NAMES) == set(models.DEFAULT_ENCODERS)
    assert models.describe("cryonet", "resnet18") == (
        "cryonet: smp.UnetPlusPlus(encoder_name='resnet18', decoder_attention_type='scse') (paper: resnet101)"
    )
    assert models.describe("unet") == "unet: smp.Unet(encoder_name='resnet101')"


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_full_resolution_head_starts_as_the_bare_model_and_learns_at_pixel_scale(name):
    torch.manual_seed(0)
    bare = models.create(name, 9, encoder=CI_ENCODER).eval()
    torch.manual_seed(0)
    head = models.create(name, 9, encoder=CI_ENCODER, full_res_head=True).eval()
    assert isinstance(head, models.FullResolutionHead)
    assert head.encoder is head.net.encoder
    # same draws for the wrapped smp model; the head's own weights are drawn after it
    assert all(torch.equal(v, head.net.state_dict()[k]) for k, v in bare.state_dict().items())
    n_extra = models.count_parameters(head) - models.count_parameters(bare)
    assert n_extra == (9 + 4) * 32 * 9 + 32 * 32 * 9 + 32 * 4 + 4 + 2 * 2 * 32  # two convs, 1x1 conv, two BNs
    x = torch.randn(2, 9, 64, 64)
    with torch.no_grad():
        assert torch.equal(head(x), bare(x))  # zero-initialised residual: untrained head changes nothing
    # after one step the head reads the input at pixel scale: perturbing one input pixel (logits held fixed) moves
    # the refinement within the two 3x3 convolutions' 5x5 footprint and nowhere else
    head.train()
    opt = torch.optim.SGD(head.refine.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(head(x), torch.randint(0, 4, (2, 64, 64)))
    loss.backward()
    opt.step()
    head.eval()
    x2 = x.clone()
    x2[0, :, 32, 32] += 10.0
    with torch.no_grad():
        logits = head.net(x)
        delta = (head.refine(torch.cat([x2, logits], 1)) - head.refine(torch.cat([x, logits], 1))).abs().sum(1)[0]
    assert delta[30:35, 30:35].sum() > 0
    outside = delta.clone()
    outside[30:35, 30:35] = 0
    assert outside.max() == 0


def test_full_resolution_head_is_named_in_descriptions():
    assert models.describe("unet", "resnet18", full_res_head=True) == (
        "unet: smp.Unet(encoder_name='resnet18') + full-resolution head (paper: resnet101)"
    )
