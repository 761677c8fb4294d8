import pytest
import torch
import torch.nn as nn

from cmisweep.models.he2019 import Bottleneck
from cmisweep.models.masked import MaskedConv2d
from cmisweep.models.pixelcnn import PixelCNNVAE, paper_kernel_sizes
from cmisweep.models.protocol import SequentialVAE


def small(**kw):
    torch.manual_seed(0)
    return PixelCNNVAE(z_dim=4, layers=kw.pop("layers", 7), maps=kw.pop("maps", 8), encoder_channels=8, **kw)


def he2019(**kw):
    """A he2019 model in eval mode with BatchNorm statistics and affine maps far from identity
    (a sampler or test that skipped a BatchNorm would show)."""
    m = small(decoder="he2019", **kw)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in (mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.5, generator=g)
            bn.running_var.uniform_(0.3, 3.0, generator=g)
            bn.weight.uniform_(0.5, 1.5, generator=g)
            bn.bias.normal_(0, 0.3, generator=g)
    return m.eval()


def test_paper_layout():
    assert paper_kernel_sizes(13) == [7] * 5 + [5] * 4 + [3] * 4
    m = PixelCNNVAE()
    assert [layer.k for layer in m.layers] == paper_kernel_sizes(13)
    assert [layer.mask_type for layer in m.layers] == ["A"] + ["B"] * 12
    assert all(layer.weight.shape[0] == 64 for layer in m.layers)
    # z (32) -> (4, 28, 28), concatenated to the input of layers 6..13 only
    assert m.z_to_map.out_features == 4 * 28 * 28
    assert [layer.cond is not None for layer in m.layers] == [False] * 5 + [True] * 8
    assert m.critic_spec.s_shape == (64, 28, 28) and m.z_dim == 32
    assert isinstance(m, SequentialVAE)


def test_he2019_paper_layout():
    """He et al. (2019)'s 13-layer PixelCNN (Sect. 6.1 of the paper): mask-A block, 12 bottlenecks
    (64 -> 32 -> 64), 11 direct connections (block i into block i + 3), z from layer 6 on."""
    m = PixelCNNVAE(decoder="he2019")
    d = m.he2019
    assert [b.conv.k for b in d.blocks] == [7] * 5 + [5] * 4 + [3] * 4
    assert [b.conv.mask_type for b in d.blocks] == ["A"] + ["B"] * 12
    assert d.blocks[0].conv.weight.shape[:2] == (64, 1) and d.blocks[0].conv.bias is None
    assert all(isinstance(b, Bottleneck) for b in list(d.blocks[1:]) + list(d.direct))
    assert all(b.reduce.out_channels == 32 and b.expand.out_channels == 64 for b in d.blocks[1:])
    assert [b.conv.k for b in d.direct] == paper_kernel_sizes(13)[1:12]
    assert [b.z_proj is not None for b in d.blocks[1:]] == [False] * 4 + [True] * 8
    assert all(b.z_proj is None for b in d.direct)
    assert m.critic_spec.s_shape == (64, 28, 28) and isinstance(m, SequentialVAE)
    assert sum(p.numel() for p in d.parameters()) == 502_592


@pytest.mark.parametrize("decoder", ["plain", "he2019"])
@pytest.mark.parametrize("layers,maps", [(7, 8), (13, 64)])
def test_decoder_is_causal(layers, maps, decoder):
    """d logit(pixel t) / d x(pixel u) is exactly zero for every u >= t in raster order, and the
    logits of pixels up to t do not move when pixel t changes (he2019: BatchNorm in eval mode;
    pixel 0, behind the mask-A block, sees no pixel at all)."""
    m = small(layers=layers, maps=maps) if decoder == "plain" else he2019(layers=layers, maps=maps)
    z = torch.randn(1, 4)
    x = torch.rand(1, 1, 28, 28).requires_grad_(True)  # continuous: no input sits at a ReLU kink
    conds = m.conditions(z)
    logits, _ = m.decode(x, conds)
    for t in [0, 1, 27, 28, 29, 300, 405, 783]:
        (g,) = torch.autograd.grad(logits.flatten()[t], x, retain_graph=True)
        g = g.flatten()
        assert torch.all(g[t:] == 0), f"pixel {t} sees pixels at or after it"
        if t > 0:
            assert g[:t].abs().sum() > 0, f"pixel {t} sees nothing before it"
    with torch.no_grad():
        base, _ = m.decode(x, conds)
        for t in [0, 5, 100, 400, 700]:
            x2 = x.detach().clone().flatten()
            x2[t] = 1 - x2[t]
            moved, _ = m.decode(x2.view(1, 1, 28, 28), conds)
            d = (moved - base).abs().flatten()
            assert float(d[: t + 1].max()) <= 1e-7  # exact up to float noise of the conv algorithm
            assert float(d[t + 1:].max()) > 1e-7  # and the change does reach later pixels


def test_cropped_masked_conv_equals_full_kernel():
    torch.manual_seed(0)
    for mask in "AB":
        full = MaskedConv2d(3, 5, 7, mask, cond_channels=2, cropped=False)
        crop = MaskedConv2d(3, 5, 7, mask, cond_channels=2, cropped=True)
        crop.load_full_weight(full)
        assert crop.weight.shape[2] == 4 and full.weight.shape[2] == 7
        h, c = torch.randn(2, 3, 28, 28), torch.randn(2, 2, 28, 28)
        torch.testing.assert_close(crop(h, crop.condition(c)), full(h, full.condition(c)), atol=1e-5, rtol=1e-5)


def _check_s_depends_on_x_only_and_logits_on_z(m) -> None:
    x = (torch.rand(2, 1, 28, 28) < 0.5).float()
    z1, z2 = torch.randn(2, 4), torch.randn(2, 4)
    l1, s1 = m.decode(x, m.conditions(z1))
    l2, s2 = m.decode(x, m.conditions(z2))
    assert torch.equal(s1, s2) and not torch.allclose(l1, l2)
    assert s1.shape == (2, 8, 28, 28) and m.critic_spec.s_shape == (8, 28, 28)
    assert torch.allclose(m.local_features(x, z1), s1)


def test_s_depends_on_x_only_and_logits_on_z():
    _check_s_depends_on_x_only_and_logits_on_z(small())


def test_elbo_terms_are_per_image_sums():
    m = small()
    x = (torch.rand(3, 1, 28, 28) < 0.5).to(torch.uint8)
    t = m.elbo_terms(x)
    assert t.recon.shape == t.kl_z.shape == (3,) and torch.all(t.kl_s == 0)
    # untrained logits are near 0: about log 2 per pixel, summed over 784
    assert 300 < float(t.recon.mean().detach()) < 800
    assert t.z.shape == (3, 4) and t.s.shape == (3, 8, 28, 28)


def test_generate_samples_each_pixel_from_its_conditional():
    """With noise u, x_t = [u_t < sigmoid(logit_t(x_<t, z))]: check it on the finished images
    with one full forward pass, which sees every x_<t at once."""
    m = small()
    z = torch.randn(2, 4)
    u = torch.rand(6, 1, 28, 28)
    x = m.generate(z, 3, noise=u)
    assert x.shape == (6, 1, 28, 28) and set(torch.unique(x).tolist()) <= {0.0, 1.0}
    logits, _ = m.decode(x, m.conditions(z.repeat_interleave(3, 0)))
    expected = (u < torch.sigmoid(logits)).float()
    assert torch.equal(x, expected)
    assert torch.equal(m.generate(z, 3, noise=u), x)  # same noise, same images
    assert not torch.equal(m.generate(z, 3), x)


@pytest.mark.parametrize("kw", [dict(layers=7), dict(layers=4, s_layer=2, kernel_sizes=[3, 5, 7, 3]),
                                dict(layers=13, maps=16)])
def test_cached_sampler_equals_naive_full_passes(kw):
    m = small(**kw)
    with torch.no_grad():
        for layer in m.layers:  # non-zero biases: a sampler that drops them would show
            layer.bias.normal_(0, 0.2)
    z = torch.randn(3, 4)
    u = torch.rand(6, 1, 28, 28)
    fast = m.generate(z, 2, noise=u)
    assert torch.equal(fast, m.generate_naive(z, 2, noise=u))
    assert 0.05 < float(fast.mean()) < 0.95


@pytest.mark.parametrize("kw", [dict(layers=6, maps=16), dict(layers=4, s_layer=2, kernel_sizes=[3, 5, 7, 3])])
def test_he2019_cached_sampler_equals_naive_full_passes(kw):
    m = he2019(**kw)
    z = torch.randn(2, 4)
    u = torch.rand(4, 1, 28, 28)
    fast = m.generate(z, 2, noise=u)
    assert torch.equal(fast, m.generate_naive(z, 2, noise=u))
    assert 0.05 < float(fast.mean()) < 0.95


def test_he2019_s_depends_on_x_only_and_sampling_keeps_the_mode():
    m = he2019()
    _check_s_depends_on_x_only_and_logits_on_z(m)

    # sampling runs in eval mode (running statistics, never updated) and gives the mode back
    tiny = he2019(layers=3, maps=4, s_layer=2, kernel_sizes=[3, 3, 3]).train()
    z1 = torch.randn(1, 4)
    stats = [b.clone() for b in tiny.buffers()]
    u = torch.rand(1, 1, 28, 28)
    x = tiny.generate_naive(z1[:1], 1, noise=u)
    assert tiny.training and all(torch.equal(a, b) for a, b in zip(stats, tiny.buffers()))
    assert torch.equal(tiny.generate(z1[:1], 1, noise=u), x)
    assert tiny.training and all(torch.equal(a, b) for a, b in zip(stats, tiny.buffers()))


def test_he2019_fast_path_trains_batchnorm():
    """bf16 autocast + channels-last (the fast path auto picks where bf16 is native): finite losses,
    BatchNorm running statistics move and stay fp32."""
    from cmisweep import regularizer as R
    from cmisweep.config import TrainConfig
    from cmisweep.models.critics import build_critics
    from cmisweep.training import Trainer
    from cmisweep.regularizer_api import PaperJ

    m = small(decoder="he2019", layers=6)
    reg = R.preset("cmi", 0.3)
    x = (torch.rand(100, 1, 28, 28) < 0.3).to(torch.uint8)
    cfg = TrainConfig(epochs=1, batch_size=25, lr=1e-3, precision="bf16")
    t = Trainer(m, PaperJ(reg, build_critics(4, m.critic_spec, reg.uses_m, reg.uses_c, width=16)), x, x[:50], cfg,
                critic_lr=1e-2)
    assert t.precision == "bf16" and t.channels_last
    bn = m.he2019.blocks[3].bn2
    before = bn.running_mean.clone()
    metrics = t.run_epoch()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert bn.running_mean.dtype == torch.float32 and not torch.equal(bn.running_mean, before)


def test_he2019_config_builds_and_validates():
    from pydantic import ValidationError

    from cmisweep.config import PixelCNNConfig
    from cmisweep.models import build_model

    m = build_model(PixelCNNConfig(decoder="he2019", layers=4, maps=8, s_layer=3))
    assert m.decoder == "he2019" and len(m.he2019.blocks) == 4 and len(m.he2019.direct) == 2
    assert build_model(PixelCNNConfig(layers=4, maps=8, s_layer=3)).decoder == "plain"
    with pytest.raises(ValidationError, match="even"):
        PixelCNNConfig(decoder="he2019", maps=33)
    with pytest.raises(ValidationError, match="decoder"):
        PixelCNNConfig(decoder="he2020")
