import pytest
import torch

from cmisweep.models.masked import MaskedConv2d
from cmisweep.models.pixelcnn import PixelCNNVAE, paper_kernel_sizes
from cmisweep.models.protocol import SequentialVAE


def small(**kw):
    torch.manual_seed(0)
    return PixelCNNVAE(z_dim=4, layers=kw.pop("layers", 7), maps=kw.pop("maps", 8), encoder_channels=8, **kw)


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


@pytest.mark.parametrize("layers,maps", [(7, 8), (13, 64)])
def test_decoder_is_causal(layers, maps):
    """d logit(pixel t) / d x(pixel u) is exactly zero for every u >= t in raster order, and the
    logits of pixels before t do not move when pixel t changes."""
    m = small(layers=layers, maps=maps)
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
        for t in [5, 100, 400, 700]:
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


def test_s_depends_on_x_only_and_logits_on_z():
    m = small()
    x = (torch.rand(2, 1, 28, 28) < 0.5).float()
    z1, z2 = torch.randn(2, 4), torch.randn(2, 4)
    l1, s1 = m.decode(x, m.conditions(z1))
    l2, s2 = m.decode(x, m.conditions(z2))
    assert torch.equal(s1, s2) and not torch.allclose(l1, l2)
    assert s1.shape == (2, 8, 28, 28)
    assert torch.allclose(m.local_features(x, z1), s1)


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
