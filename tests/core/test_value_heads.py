"""Value heads: baselines, losses, outcome checks, running statistics, custom heads."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sppo_rl.value_heads import (
    BernoulliValueHead,
    GaussianValueHead,
    OutcomeError,
    ValueHead,
    brier_score,
    make_value_head,
)


def _constant_head(cls, value, **kw):
    head = cls(3, **kw)
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.fill_(value)
    return head


def test_bernoulli_baseline_is_sigmoid_and_loss_is_bce():
    head = _constant_head(BernoulliValueHead, 0.4)
    features = torch.randn(5, 3)
    assert torch.allclose(head.baseline(features), torch.full((5,), 1 / (1 + math.exp(-0.4))))
    outcomes = torch.tensor([1.0, 0.0, 1.0, 0.3, 0.0])
    p = torch.sigmoid(torch.tensor(0.4))
    expected = -(outcomes * torch.log(p) + (1 - outcomes) * torch.log(1 - p)).mean()
    assert head.loss(features, outcomes).item() == pytest.approx(expected.item(), rel=1e-6)


def test_bernoulli_rejects_outcomes_outside_unit_interval_and_suggests_gaussian():
    head = BernoulliValueHead(2)
    with pytest.raises(OutcomeError, match=r"got 37\.5 for sequence 1.*value_head='gaussian'"):
        head.check_outcomes(torch.tensor([1.0, 37.5]))
    with pytest.raises(OutcomeError, match="not finite"):
        head.check_outcomes(torch.tensor([float("nan")]))
    head.check_outcomes(torch.tensor([0.0, 0.5, 1.0]))  # soft targets are fine


def test_gaussian_running_statistics_match_numpy():
    head = GaussianValueHead(2)
    rng = np.random.default_rng(0)
    batches = [rng.normal(100, 30, size=n) for n in (7, 1, 20, 3)]
    for b in batches:
        head.update_statistics(torch.tensor(b))
    data = np.concatenate(batches)
    assert head.mean.item() == pytest.approx(data.mean())
    assert head.std.item() == pytest.approx(data.std(ddof=1))


def test_gaussian_normalised_baseline_and_loss():
    head = _constant_head(GaussianValueHead, 0.5)
    head.update_statistics(torch.tensor([10.0, 20.0, 30.0]))  # mean 20, std 10
    features = torch.randn(2, 3)
    assert torch.allclose(head.baseline(features), torch.tensor([25.0, 25.0]))
    outcomes = torch.tensor([30.0, 10.0])  # normalised targets 1 and -1
    assert head.loss(features, outcomes).item() == pytest.approx(((0.5 - 1) ** 2 + (0.5 + 1) ** 2) / 2)


def test_gaussian_without_normalisation_is_plain_mse():
    head = _constant_head(GaussianValueHead, 2.0, normalize=False)
    head.update_statistics(torch.tensor([100.0, 200.0]))
    features = torch.randn(2, 3)
    assert torch.allclose(head.baseline(features), torch.tensor([2.0, 2.0]))
    outcomes = torch.tensor([0.0, 4.0])
    assert head.loss(features, outcomes).item() == pytest.approx(F.mse_loss(torch.tensor([2.0, 2.0]), outcomes).item())


def test_gaussian_statistics_are_saved_in_state_dict():
    head = GaussianValueHead(2)
    head.update_statistics(torch.tensor([1.0, 5.0]))
    clone = GaussianValueHead(2)
    clone.load_state_dict(head.state_dict())
    assert clone.mean.item() == 3.0 and clone.std.item() == pytest.approx(head.std.item())


def test_make_value_head_by_name_class_and_instance():
    assert isinstance(make_value_head("bernoulli", 4), BernoulliValueHead)
    assert isinstance(make_value_head(GaussianValueHead, 4, normalize=False), GaussianValueHead)
    instance = BernoulliValueHead(4)
    assert make_value_head(instance, 4) is instance
    with pytest.raises(ValueError, match="expects 4 features but the critic gives 8"):
        make_value_head(instance, 8)
    with pytest.raises(ValueError, match="Unknown value head 'beta'"):
        make_value_head("beta", 4)
    with pytest.raises(TypeError):
        make_value_head(42, 4)


def test_custom_head_subclass():
    class HuberHead(ValueHead):
        name = "huber"

        def loss_from_output(self, output, outcomes):
            return F.huber_loss(output, outcomes)

    head = _constant_head(HuberHead, 0.0)
    assert head.loss(torch.zeros(1, 3), torch.tensor([3.0])).item() == pytest.approx(2.5)
    assert head.baseline(torch.zeros(1, 3)).item() == 0.0


def test_brier_score():
    assert brier_score(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 1.0])) == pytest.approx(0.125)
