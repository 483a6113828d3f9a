"""Advantage estimators and the clipped loss against hand-computed values."""

import math

import pytest
import torch

from sppo_rl import objectives as obj


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


# ---- registry ------------------------------------------------------------------------------------------------


def test_registry_has_every_estimator():
    assert set(obj.ADVANTAGE_ESTIMATORS) >= {"sppo", "grpo", "rloo", "remax", "none", "gae"}


def test_unknown_estimator_names_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown advantage estimator 'ppo2'.*'grpo'"):
        obj.compute_advantages("ppo2", outcomes=t(1.0))


def test_register_custom_estimator_and_refuse_duplicates():
    @obj.register_advantage_estimator("test-half")
    def half(outcomes):
        return outcomes / 2

    try:
        assert torch.equal(obj.compute_advantages("test-half", outcomes=t(2.0, 4.0)), t(1.0, 2.0))
        with pytest.raises(ValueError, match="already registered"):
            obj.register_advantage_estimator("test-half")(lambda outcomes: outcomes)
    finally:
        del obj.ADVANTAGE_ESTIMATORS["test-half"]


# ---- sequence-level estimators --------------------------------------------------------------------------------


def test_sppo_is_outcome_minus_baseline_without_gradient():
    baselines = torch.tensor([0.25, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    adv = obj.compute_advantages("sppo", outcomes=t(1.0, 0.0, 1.0), baselines=baselines)
    assert torch.allclose(adv, t(0.75, -0.5, 0.1))
    assert not adv.requires_grad


def test_sppo_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="Shapes must match"):
        obj.sppo_advantages(t(1.0, 0.0), t(0.5))


def test_none_is_the_outcome():
    assert torch.equal(obj.compute_advantages("none", outcomes=t(1.0, 0.0)), t(1.0, 0.0))


def test_grpo_hand_computed():
    # group 0: [1, 0, 1, 1] mean 0.75, unbiased std sqrt(0.25) = 0.5; group 7: [0, 1] mean .5 std sqrt(.5)
    outcomes = t(1.0, 0.0, 1.0, 1.0, 0.0, 1.0)
    groups = torch.tensor([0, 0, 0, 0, 7, 7])
    adv = obj.grpo_advantages(outcomes, groups, eps=1e-6)
    std0, std7 = 0.5, math.sqrt(0.5)
    expected = t(0.25 / (std0 + 1e-6), -0.75 / (std0 + 1e-6), 0.25 / (std0 + 1e-6), 0.25 / (std0 + 1e-6),
                 -0.5 / (std7 + 1e-6), 0.5 / (std7 + 1e-6))  # fmt: skip
    assert torch.allclose(adv, expected)


def test_grpo_edge_cases_group_of_one_and_unanimous_group():
    outcomes = t(1.0, 0.0, 1.0, 1.0)
    adv = obj.grpo_advantages(outcomes, [0, 1, 2, 2])
    assert adv[0] == 1.0 and adv[1] == 0.0  # groups of one: A = R exactly
    assert torch.equal(adv[2:], t(0.0, 0.0))  # unanimous group: no signal


def test_grpo_without_std_is_centred_outcome():
    adv = obj.grpo_advantages(t(1.0, 0.0, 0.0), [3, 3, 3], normalize_by_std=False)
    assert torch.allclose(adv, t(2 / 3, -1 / 3, -1 / 3))


def test_grpo_accepts_string_like_labels_via_tensor():
    adv = obj.grpo_advantages(t(1.0, 0.0), torch.tensor([5, 5]))
    assert adv[0] > 0 > adv[1]


def test_rloo_is_leave_one_out_mean():
    outcomes = t(1.0, 0.0, 0.0, 1.0, 3.0)
    adv = obj.rloo_advantages(outcomes, [0, 0, 0, 0, 1])
    others = [(0 + 0 + 1) / 3, (1 + 0 + 1) / 3, (1 + 0 + 1) / 3, (1 + 0 + 0) / 3]
    assert torch.allclose(adv[:4], t(*[r - o for r, o in zip([1.0, 0.0, 0.0, 1.0], others, strict=True)]))
    assert adv[4] == 3.0  # group of one


def test_remax():
    assert torch.equal(obj.remax_advantages(t(1.0, 0.0, 1.0), t(1.0, 1.0, 0.0)), t(0.0, -1.0, 1.0))


def test_broadcast_gives_each_step_its_sequence_advantage_and_zero_padding():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    out = obj.broadcast_to_steps(t(0.5, -2.0), mask)
    assert torch.equal(out, t(0.5, 0.5, 0.5, -2.0, 0.0, 0.0).reshape(2, 3))


# ---- GAE ---------------------------------------------------------------------------------------------------


def test_gae_gamma_lambda_one_is_return_minus_value():
    # one outcome at the last valid step; padding after it
    rewards = t(0.0, 0.0, 1.0, 0.0, 0.0, 0.0).reshape(2, 3)
    values = t(0.2, 0.4, 0.9, 0.5, 9.0, 9.0).reshape(2, 3)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    adv, ret = obj.gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0, whiten=False)
    assert torch.allclose(adv, t(0.8, 0.6, 0.1, -0.5, 0.0, 0.0).reshape(2, 3))
    assert torch.allclose(ret, t(1.0, 1.0, 1.0, 0.0, 0.0, 0.0).reshape(2, 3))


def test_gae_matches_recursion_for_general_gamma_lambda():
    gamma, lam = 0.9, 0.8
    r = [1.0, -1.0, 2.0]
    v = [0.5, 0.1, -0.3]
    deltas = [r[0] + gamma * v[1] - v[0], r[1] + gamma * v[2] - v[1], r[2] - v[2]]
    a2 = deltas[2]
    a1 = deltas[1] + gamma * lam * a2
    a0 = deltas[0] + gamma * lam * a1
    adv, _ = obj.gae_advantages(t(*r)[None], t(*v)[None], torch.ones(1, 3), gamma=gamma, lam=lam, whiten=False)
    assert torch.allclose(adv[0], t(a0, a1, a2))


def test_gae_whitening_zero_mean_unit_std_over_valid_steps():
    rewards = torch.randn(4, 6, dtype=torch.float64)
    values = torch.randn(4, 6, dtype=torch.float64)
    mask = torch.ones(4, 6)
    mask[1, 3:] = 0
    adv, _ = obj.gae_advantages(rewards, values, mask, gamma=0.99, lam=0.95, whiten=True)
    valid = adv[mask.bool()]
    assert abs(valid.mean().item()) < 1e-6
    assert abs(valid.std().item() - 1.0) < 1e-4
    assert torch.all(adv[~mask.bool()] == 0)


# ---- loss aggregation --------------------------------------------------------------------------------------


@pytest.fixture
def loss_and_mask():
    loss = t(1.0, 2.0, 3.0, 4.0, 10.0, 99.0).reshape(2, 3)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return loss, mask


def test_token_mean(loss_and_mask):
    assert obj.aggregate_loss(*loss_and_mask, "token-mean").item() == pytest.approx((1 + 2 + 3 + 4 + 10) / 5)


def test_seq_mean_token_mean(loss_and_mask):
    assert obj.aggregate_loss(*loss_and_mask, "seq-mean-token-mean").item() == pytest.approx((2.0 + 7.0) / 2)


def test_seq_mean_token_sum(loss_and_mask):
    assert obj.aggregate_loss(*loss_and_mask, "seq-mean-token-sum").item() == pytest.approx((6.0 + 14.0) / 2)


def test_empty_sequences_are_left_out_of_sequence_means():
    loss = t(2.0, 4.0, 5.0, 5.0).reshape(2, 2)
    mask = torch.tensor([[1, 1], [0, 0]])
    assert obj.aggregate_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx(3.0)
    assert obj.aggregate_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx(6.0)


def test_unknown_aggregation_is_refused(loss_and_mask):
    with pytest.raises(ValueError, match="seq-mean-token-sum"):
        obj.aggregate_loss(*loss_and_mask, "sum")


# ---- clipped policy loss ------------------------------------------------------------------------------------


def _loss(ratios, advantages, mask=None, **kw):
    ratios = t(*ratios)[None]
    log_prob = torch.log(ratios).requires_grad_(True)
    old = torch.zeros_like(log_prob)
    adv = t(*advantages)[None]
    mask = torch.ones_like(adv) if mask is None else torch.tensor([mask])
    return obj.clipped_policy_loss(log_prob, old, adv, mask, **kw), log_prob


def test_clipped_loss_hand_computed_symmetric():
    # per step: max(-A r, -A clip(r, .8, 1.2))
    out, _ = _loss([1.5, 0.5, 1.1, 0.7], [1.0, 1.0, -2.0, -2.0], clip_range=0.2, dual_clip=None)
    per_step = [-1.2, -0.5, 2.2, 1.6]
    assert out.loss.item() == pytest.approx(sum(per_step) / 4)
    # clipped branch active at step 0 (r > 1.2 with A > 0) and step 3 (r < 0.8 with A < 0)
    assert out.clip_fraction.item() == pytest.approx(0.5)
    assert out.ratio_mean.item() == pytest.approx((1.5 + 0.5 + 1.1 + 0.7) / 4)


def test_clipped_loss_asymmetric_clip_high():
    out, _ = _loss([1.5], [1.0], clip_range=0.2, clip_range_high=0.28, dual_clip=None)
    assert out.loss.item() == pytest.approx(-1.28)


def test_dual_clip_caps_negative_advantage_loss():
    # r = 5 with A = -1: the plain clipped loss is 5, the dual clip caps it at 3
    out, log_prob = _loss([5.0, 5.0], [-1.0, 1.0], clip_range=0.2, dual_clip=3.0)
    assert out.loss.item() == pytest.approx((3.0 + -1.2) / 2)
    assert out.dual_clip_fraction.item() == pytest.approx(0.5)
    out.loss.backward()
    assert log_prob.grad[0, 0] == 0  # capped: no gradient through the ratio
    without, _ = _loss([5.0, 5.0], [-1.0, 1.0], clip_range=0.2, dual_clip=None)
    assert without.loss.item() == pytest.approx((5.0 + -1.2) / 2)


def test_gradient_matches_hand_computation():
    # unclipped step: d(-A r)/d log p = -A r
    out, log_prob = _loss([1.1, 1.0], [2.0, -1.0], clip_range=0.2, dual_clip=None)
    out.loss.backward()
    assert torch.allclose(log_prob.grad, t(-2.0 * 1.1 / 2, 1.0 * 1.0 / 2)[None])


def test_log_ratio_clamp_keeps_loss_finite():
    log_prob = torch.tensor([[100.0]], dtype=torch.float64)
    out = obj.clipped_policy_loss(log_prob, torch.zeros_like(log_prob), t(-1.0)[None], torch.ones(1, 1), dual_clip=None)
    assert math.isfinite(out.loss.item()) and out.loss.item() == pytest.approx(math.exp(20.0))


def test_padding_does_not_contribute():
    out_pad, _ = _loss([1.5, 1000.0], [1.0, -50.0], mask=[1, 0], dual_clip=None)
    out, _ = _loss([1.5], [1.0], dual_clip=None)
    assert out_pad.loss.item() == pytest.approx(out.loss.item())


def test_approx_kl_is_k3_and_zero_on_policy():
    out, _ = _loss([1.0, 1.0], [1.0, -1.0])
    assert out.approx_kl.item() == 0.0
    out, _ = _loss([2.0], [1.0])
    assert out.approx_kl.item() == pytest.approx(1.0 - math.log(2.0))


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"clip_range": 0.0}, "clip_range"), ({"dual_clip": 0.5}, "dual_clip"), ({"loss_agg_mode": "x"}, "loss_agg_mode")],
)
def test_bad_loss_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        _loss([1.0], [1.0], **kw)


def test_kl_penalty_k1_k3():
    lp, ref = t(-1.0, -2.0)[None], t(-1.5, -1.0)[None]
    assert torch.allclose(obj.kl_penalty(lp, ref, "k1"), t(0.5, -1.0)[None])
    d = t(-0.5, 1.0)
    assert torch.allclose(obj.kl_penalty(lp, ref, "k3"), (torch.exp(d) - d - 1)[None])
    assert torch.all(obj.kl_penalty(lp, ref, "k3") >= 0)
    with pytest.raises(ValueError, match="k2"):
        obj.kl_penalty(lp, ref, "k2")


# ---- what estimators declare, and the estimators added through the registry ---------------------------------


def test_each_builtin_declares_its_level_inputs_and_samples():
    declared = {
        name: (e.level, e.inputs, e.samples_per_context, e.needs_critic)
        for name, e in obj.ADVANTAGE_ESTIMATORS.items()
        if name in {"sppo", "grpo", "dr_grpo", "rloo", "remax", "none", "batch_mean", "ema", "gae"}
    }
    assert declared == {
        "sppo": ("sequence", ("outcomes", "baselines"), 1, True),
        "grpo": ("sequence", ("outcomes", "group_ids"), 8, False),
        "dr_grpo": ("sequence", ("outcomes", "group_ids"), 8, False),
        "rloo": ("sequence", ("outcomes", "group_ids"), 5, False),
        "remax": ("sequence", ("outcomes", "greedy_outcomes"), 1, False),
        "none": ("sequence", ("outcomes",), 1, False),
        "batch_mean": ("sequence", ("outcomes",), 1, False),
        "ema": ("sequence", ("outcomes",), 1, False),
        "gae": ("step", ("rewards", "values", "mask"), 1, True),
    }
    assert obj.get_advantage_estimator("grpo").min_samples_per_context == 2
    assert obj.get_advantage_estimator("ema").stateful


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inputs": ("outcomes", "logits")}, "Unknown estimator input"),
        ({"level": "token"}, "level must be one of"),
        ({"inputs": ("baselines",)}, "must read 'outcomes' or 'rewards'"),
        ({"inputs": ("outcomes", "group_ids"), "samples_per_context": 1}, "below min_samples_per_context"),
    ],
)
def test_bad_registrations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        obj.register_advantage_estimator("test-bad", **kwargs)


def test_options_are_checked_and_inputs_required():
    with pytest.raises(ValueError, match=r"'grpo' estimator does not accept the option\(s\) \['decay'\]"):
        obj.compute_advantages("grpo", outcomes=t(1.0, 0.0), group_ids=[0, 0], decay=0.5)
    with pytest.raises(ValueError, match=r"'sppo' estimator needs the input\(s\) \['baselines'\]"):
        obj.compute_advantages("sppo", outcomes=t(1.0, 0.0))
    # build() drops options an estimator does not take (a caller passes its generic settings to any estimator)
    fn = obj.get_advantage_estimator("grpo").build({"eps": 0.5, "gamma": 0.9})
    assert torch.allclose(
        fn(outcomes=t(1.0, 0.0), group_ids=[0, 0]), t(0.5 / (0.5**0.5 + 0.5), -0.5 / (0.5**0.5 + 0.5))
    )


def test_batch_mean_hand_computed():
    r = t(1.0, 0.0, 0.0, 1.0, 1.0)  # mean 0.6, unbiased var 0.3
    assert torch.allclose(obj.compute_advantages("batch_mean", outcomes=r), t(0.4, -0.6, -0.6, 0.4, 0.4))
    whitened = obj.compute_advantages("batch_mean", outcomes=r, whiten=True)
    assert torch.allclose(whitened, (r - 0.6) / math.sqrt(0.3 + 1e-8))
    assert torch.equal(obj.compute_advantages("batch_mean", outcomes=t(1.0, 1.0)), t(0.0, 0.0))


def test_ema_baseline_hand_computed_and_state_round_trip():
    ema = obj.get_advantage_estimator("ema").build({"decay": 0.5})
    # first batch: no past, its own mean (0.5) is the baseline; then b = 0.5
    assert torch.allclose(ema(outcomes=t(1.0, 0.0)), t(0.5, -0.5))
    # second batch mean 1.0: baseline is the past average 0.5; then b = 0.5 * 0.5 + 0.5 * 1.0 = 0.75
    assert torch.allclose(ema(outcomes=t(1.0, 1.0)), t(0.5, 0.5))
    state = ema.state_dict()
    assert state == {"baseline": 0.75, "updates": 2, "decay": 0.5}
    other = obj.get_advantage_estimator("ema").build({"decay": 0.5})
    other.load_state_dict(state)
    assert torch.allclose(other(outcomes=t(0.0)), t(-0.75)) and torch.allclose(ema(outcomes=t(0.0)), t(-0.75))
    with pytest.raises(ValueError, match="decay must be in"):
        obj.get_advantage_estimator("ema").build({"decay": 1.0})


def test_dr_grpo_is_grpo_without_the_std():
    r = t(1.0, 0.0, 1.0, 1.0, 0.0, 1.0)
    groups = [0, 0, 0, 0, 7, 7]
    expected = t(0.25, -0.75, 0.25, 0.25, -0.5, 0.5)
    assert torch.allclose(obj.compute_advantages("dr_grpo", outcomes=r, group_ids=groups), expected)
    assert torch.allclose(
        obj.compute_advantages("grpo", outcomes=r, group_ids=groups, normalize_by_std=False), expected
    )


def test_seq_mean_token_sum_norm_divides_by_a_constant_length(loss_and_mask):
    loss, mask = loss_and_mask
    seq_sums = (loss * mask).sum(-1)
    n_seq = (mask.sum(-1) > 0).sum()
    expected = seq_sums.sum() / (n_seq * mask.shape[-1])
    assert torch.allclose(obj.aggregate_loss(loss, mask, "seq-mean-token-sum-norm"), expected)
    assert torch.allclose(
        obj.aggregate_loss(loss, mask, "seq-mean-token-sum-norm", norm_length=10), seq_sums.sum() / (n_seq * 10)
    )
    # a constant normaliser: the loss does not depend on how much padding a micro-batch carries
    padded_loss = torch.cat([loss, torch.zeros(loss.shape[0], 3, dtype=loss.dtype)], 1)
    padded_mask = torch.cat([mask, torch.zeros(mask.shape[0], 3, dtype=mask.dtype)], 1)
    assert torch.allclose(
        obj.aggregate_loss(padded_loss, padded_mask, "seq-mean-token-sum-norm", norm_length=10),
        obj.aggregate_loss(loss, mask, "seq-mean-token-sum-norm", norm_length=10),
    )


def test_whitening_is_one_function_for_both_shapes():
    a = t(1.0, 2.0, 3.0, 6.0)
    w = obj.whiten_advantages(a)
    assert torch.allclose(w.mean(), t(0.0)[0], atol=1e-12) and torch.allclose(w.std(), t(1.0)[0], atol=1e-6)
    per_step = obj.whiten_advantages(a[:, None].expand(4, 3).clone(), torch.tensor([[1, 1, 0]] * 4))
    assert (per_step[:, 2] == 0).all()


# ---- value loss of a per-step critic ------------------------------------------------------------------------


def _value_case():
    values = t(1.0, 0.2, -0.5, -1.0, 7.0)[None].requires_grad_(True)
    old = torch.zeros(1, 5, dtype=torch.float64)
    returns = torch.ones(1, 5, dtype=torch.float64)
    mask = t(1.0, 1.0, 1.0, 1.0, 0.0)[None]  # the last step is padding
    return values, old, returns, mask


def test_clipped_value_loss_hand_computed():
    values, old, returns, mask = _value_case()
    out = obj.clipped_value_loss(values, old, returns, mask, clip_range=0.5)
    # step 1: v = 1 is exact, but clipped to 0.5 it errs by 0.25: the larger (clipped) error counts
    # step 2: 0.2 is inside the clip: (0.2 - 1)^2 = 0.64; step 3: -0.5 on the clip's edge: 2.25
    # step 4: -1 clipped to -0.5 errs less (2.25) than unclipped (4): the unclipped error counts
    assert out.loss.item() == pytest.approx((0.25 + 0.64 + 2.25 + 4.0) / 4)
    assert float(out.clip_fraction) == pytest.approx(1 / 4)
    out.loss.backward()
    # the clipped branch gives no gradient; elsewhere d/dv (v - 1)^2 / 4 = (v - 1) / 2; padding none
    torch.testing.assert_close(values.grad, t(0.0, -0.4, -0.75, -1.0, 0.0)[None])


def test_value_loss_without_clipping_is_the_mean_squared_error():
    values, old, returns, mask = _value_case()
    out = obj.clipped_value_loss(values, old, returns, mask, clip_range=None)
    assert out.loss.item() == pytest.approx((0.0 + 0.64 + 2.25 + 4.0) / 4)
    assert float(out.clip_fraction) == 0.0
    wide = obj.clipped_value_loss(values, old, returns, mask, clip_range=100.0)
    assert wide.loss.item() == pytest.approx(out.loss.item())
    with pytest.raises(ValueError, match="clip_range must be > 0"):
        obj.clipped_value_loss(values, old, returns, mask, clip_range=0.0)


def test_ppo_is_gae_under_the_standard_ppo_name():
    est = obj.get_advantage_estimator("ppo")
    assert est.fn is obj.gae_advantages and est.level == "step" and est.needs_critic
    assert est.inputs == ("rewards", "values", "mask") and est.samples_per_context == 1
