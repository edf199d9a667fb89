"""Selective attention: the documented gate, on a hand-set case, and its gradients."""

from __future__ import annotations

import pytest
import torch

from fermetric.models import SelectiveAttention


def test_gate_formula_on_hand_set_branches():
    # Zero the last layer of each branch so S and A are known constants:
    # S = sigmoid(0.4) everywhere, A_c = sigmoid(b_c); G = a*S + (1-a)*A + beta*S*A.
    torch.manual_seed(0)
    attn = SelectiveAttention(16, reduction=4, alpha_init=0.3).eval()
    with torch.no_grad():
        attn.spatial[-1].weight.zero_()
        attn.spatial[-1].bias.fill_(0.4)
        attn.channel[-1].weight.zero_()
        attn.channel[-1].bias.copy_(torch.linspace(-2, 2, 16))
    fmap = torch.randn(2, 16, 5, 7)
    s = 1 / (1 + torch.exp(torch.tensor(-0.4)))
    a = 1 / (1 + torch.exp(-torch.linspace(-2, 2, 16)))
    gate = 0.3 * s + 0.7 * a + 1.0 * s * a
    with torch.no_grad():
        out = attn(fmap)
    torch.testing.assert_close(out, fmap * gate[None, :, None, None])
    torch.testing.assert_close(attn.alpha, torch.tensor(0.3))
    torch.testing.assert_close(attn.beta, torch.tensor(1.0))


def test_spatial_gate_varies_per_pixel_and_channel_gate_per_channel():
    torch.manual_seed(0)
    attn = SelectiveAttention(32).eval()
    fmap = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        spatial, channel = attn.gates(fmap)
        out = attn(fmap)
    assert spatial.shape == (2, 1, 6, 6) and channel.shape == (2, 32, 1, 1)
    assert ((spatial > 0) & (spatial < 1)).all() and ((channel > 0) & (channel < 1)).all()
    assert spatial.flatten(1).std(1).min() > 0  # not a constant map
    assert out.shape == fmap.shape
    assert not torch.allclose(out, fmap)
    ratio = out / fmap  # the gate itself; in (0, 1 + beta)
    assert ratio.min() > 0 and ratio.max() < 2


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    attn = SelectiveAttention(8, alpha_init=0.5).train()
    attn(torch.randn(2, 8, 3, 4)).square().sum().backward()
    missing = [n for n, p in attn.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_reduced_width_never_below_8_and_alpha_init_checked():
    assert SelectiveAttention(32, reduction=16).channel[0].out_features == 8
    assert SelectiveAttention(512, reduction=16).channel[0].out_features == 32
    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(ValueError, match="alpha_init"):
            SelectiveAttention(8, alpha_init=bad)
