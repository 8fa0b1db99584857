"""The parts of our PPO (rlphf_cli.training.ppo) against hand-computed values."""

import math

import pytest
import torch

from rlphf_cli.training.ppo import (
    AdaptiveKLController,
    RunningMoments,
    gae,
    masked_mean,
    masked_whiten,
    policy_loss,
    response_mask,
    token_rewards,
    value_loss,
)


def test_response_mask_stops_after_first_eos():
    eos = 2
    responses = torch.tensor([[5, 6, 2, 0, 0], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]])
    assert response_mask(responses, eos).tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1],  # no EOS: the whole (truncated) response counts
        [1, 0, 0, 0, 0],
    ]


def test_token_rewards_put_the_kl_penalty_on_each_token_and_the_score_on_the_last():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards = token_rewards(torch.tensor([1.0, -2.0]), kl, mask, kl_coef=0.5)
    expected = [[-0.05, -0.1 + 1.0, 0.0], [-0.25, -0.25, -0.25 - 2.0]]
    assert torch.allclose(rewards, torch.tensor(expected))


def test_gae_matches_hand_computation():
    # One response of 3 tokens, then padding; gamma=1, lam=0.5.
    rewards = torch.tensor([[0.0, 0.0, 1.0, 9.0]])  # the 9 lies past the end and must be ignored
    values = torch.tensor([[0.5, 0.2, 0.4, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    d2 = 1.0 + 0.0 - 0.4  # terminal: next value 0
    d1 = 0.0 + 0.4 - 0.2
    d0 = 0.0 + 0.2 - 0.5
    a2 = d2
    a1 = d1 + 0.5 * a2
    a0 = d0 + 0.5 * a1
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[a0 + 0.5, a1 + 0.2, a2 + 0.4, 0.0]]))


def test_gae_with_discount():
    rewards = torch.tensor([[1.0, 2.0]])
    values = torch.tensor([[0.0, 0.0]])
    adv, _ = gae(rewards, values, torch.ones(1, 2), gamma=0.9, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[1.0 + 0.9 * 2.0, 2.0]]))


def test_policy_loss_clips_the_ratio():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    loss, clipfrac, approx_kl = policy_loss(new, old, adv, torch.ones(1, 3), cliprange=0.2)
    # per token: max(-A r, -A clip(r)): 1.5 -> clip 1.2 -> max(-1.5, -1.2) = -1.2;
    # 0.5 -> clip 0.8, A=-1 -> max(0.5, 0.8) = 0.8; 1.1 -> unclipped -> -2.2
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3)
    assert clipfrac.item() == pytest.approx(2 / 3)
    logr = torch.log(torch.tensor([1.5, 0.5, 1.1]))
    assert approx_kl.item() == pytest.approx(0.5 * (logr**2).mean().item())


def test_policy_loss_ignores_masked_tokens():
    loss, _, _ = policy_loss(
        torch.tensor([[0.0, 5.0]]),
        torch.zeros(1, 2),
        torch.tensor([[1.0, 100.0]]),
        torch.tensor([[1.0, 0.0]]),
        0.2,
    )
    assert loss.item() == pytest.approx(-1.0)


def test_value_loss_is_clipped_around_the_old_values():
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[2.0, 1.0]])
    loss, clipfrac = value_loss(values, old, returns, torch.ones(1, 2), cliprange_value=0.2)
    # token 0: v=1 -> (1-2)^2=1; clipped v=0.2 -> (0.2-2)^2=3.24 -> max 3.24; token 1: both (0-1)^2 = 1
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.0) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_masked_statistics():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    w = masked_whiten(x, mask)
    assert w[0, :2].tolist() == pytest.approx([-1.0, 1.0], abs=1e-4)


def test_adaptive_kl_controller_moves_towards_the_target():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=100)
    ctl.update(current_kl=12.0, n_steps=10)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.2 * (1 + 0.2 * 10 / 100))
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=100)
    ctl.update(current_kl=5.4, n_steps=10)  # error -0.1
    assert ctl.value == pytest.approx(0.2 * (1 - 0.1 * 10 / 100))
    fixed = AdaptiveKLController(0.2, target=None, horizon=100)
    fixed.update(50.0, 10)
    assert fixed.value == 0.2


def test_running_moments_match_the_whole_sample():
    xs = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    m = RunningMoments()
    m.update(xs[:2])
    m.update(xs[2:])
    assert m.mean == pytest.approx(xs.mean().item())
    assert m.std == pytest.approx(xs.std(unbiased=True).item())
    again = RunningMoments()
    again.load_state_dict(m.state_dict())
    assert again.mean == m.mean and math.isclose(again.std, m.std)


def test_several_gpus_in_one_unlaunched_training_process_are_refused(monkeypatch, tmp_path):
    """TRL >= 1.15 refuses nn.DataParallel (several GPUs, one process) with a traceback: one line instead."""
    import torch

    from rlphf_cli.config import compose
    from rlphf_cli.errors import UserError
    from rlphf_cli.training.common import trainer_kwargs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = compose([f"run_dir={tmp_path}", "device=auto"])
    with pytest.raises(
        UserError, match="2 GPUs are visible to one training process: set launcher.num_processes=2"
    ):
        trainer_kwargs(cfg, tmp_path, "x")
    trainer_kwargs(cfg, tmp_path, "x", hf_trainer=False)  # PPO's own loop: one device, no DataParallel
    monkeypatch.setenv("WORLD_SIZE", "2")  # under accelerate launch: one GPU per process
    assert trainer_kwargs(cfg, tmp_path, "x")["use_cpu"] is False
    assert trainer_kwargs(compose([f"run_dir={tmp_path}", "device=cpu"]), tmp_path, "x")["use_cpu"] is True
