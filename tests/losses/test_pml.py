"""pytorch-metric-learning losses as baselines (``pml:<LossClass>``), checked against PML itself."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses, miners

from fermetric.errors import ConfigError
from fermetric.losses import create_loss


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(24, 16, generator=g), torch.arange(24) % 4


def test_a_pml_loss_with_a_miner_equals_pml_called_directly():
    z, y = batch()
    ours = create_loss("pml:TripletMarginLoss", 4, 16, margin=0.2, miner="BatchHardMiner")
    expected = losses.TripletMarginLoss(margin=0.2)(z, y, miners.BatchHardMiner()(z, y))
    assert ours(z, y).item() == pytest.approx(expected.item(), rel=1e-6)
    assert ours.embedding_space.kind == "l2"


def test_sizes_come_from_the_dataset_and_model_and_parameters_train():
    z, y = batch(1)
    arcface = create_loss("pml:ArcFaceLoss", 4, 16)
    assert arcface.loss.W.shape == (16, 4)  # embedding_size x num_classes
    assert any(p.requires_grad for p in arcface.parameters())  # the engine gives them to the optimiser
    z.requires_grad_(True)
    arcface(z.to(torch.bfloat16), y).backward()  # half input: computed in float32
    assert z.grad is not None and torch.isfinite(z.grad).all()
    supcon = create_loss("pml:SupConLoss", 4, 16, temperature=0.1)
    assert torch.isfinite(supcon(z, y))


def test_unknown_names_and_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="no loss 'NoSuchLoss'"):
        create_loss("pml:NoSuchLoss", 4, 16)
    with pytest.raises(ConfigError, match="no miner 'NoSuchMiner'"):
        create_loss("pml:TripletMarginLoss", 4, 16, miner="NoSuchMiner")
    with pytest.raises(ConfigError, match="come from the dataset and model"):
        create_loss("pml:ArcFaceLoss", 4, 16, num_classes=3)
    with pytest.raises(ConfigError, match="pml:TripletMarginLoss"):
        create_loss("pml:TripletMarginLoss", 4, 16, margn=0.2)
