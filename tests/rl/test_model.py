"""The A2C agent: n-step returns, advantages and losses against hand computations; the CPC
auxiliary loss reads only the past; the baseline network does not change with CPC on."""

from __future__ import annotations

import math

import pytest
import torch

from cpc.rl.config import AgentConfig
from cpc.rl.model import A2CAgent, episode_segments, nstep_returns

OBS = (8, 8, 3)


def tiny_agent(cpc: bool = True, steps: int = 3, seed: int = 0) -> A2CAgent:
    torch.manual_seed(seed)
    cfg = AgentConfig(channels=[4], res_blocks=1, feature_dim=8, core_dim=8, cpc=cpc)
    cfg.cpc_steps = steps
    return A2CAgent(OBS, 3, cfg)


def unroll_batch(n: int = 2, t: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randint(0, 256, (n, t + 1, *OBS), generator=g, dtype=torch.uint8),
        "first": torch.zeros(n, t + 1, dtype=torch.bool),
        "actions": torch.randint(0, 3, (n, t), generator=g),
        "rewards": torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])[:n, :t],
        "dones": torch.tensor([[False, True, False], [False, False, False]])[:n, :t],
        "h0": torch.zeros(n, 8),
        "c0": torch.zeros(n, 8),
        "episodes": torch.tensor([1.0, 0.0])[:n],
        "episode_return": torch.tensor([3.5, 0.0])[:n],
    }


def test_nstep_returns_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    dones = torch.tensor([[False, True, False], [False, False, False]])
    got = nstep_returns(rewards, dones, torch.tensor([10.0, 5.0]), 0.9)
    # row 0: R2 = 2 + .9 * 10 = 11; the episode ends at t = 1: R1 = 0; R0 = 1 + .9 * 0 = 1
    # row 1: R2 = 1 + .9 * 5 = 5.5; R1 = 1 + .9 * 5.5 = 5.95; R0 = .9 * 5.95 = 5.355
    want = torch.tensor([[1.0, 0.0, 11.0], [5.355, 5.95, 5.5]])
    torch.testing.assert_close(got, want)


def test_losses_and_advantages_by_hand():
    """With the heads zeroed (uniform policy over 3 actions, V = 2 everywhere) the losses
    follow from the hand-computed returns alone."""
    agent = tiny_agent(cpc=False)
    with torch.no_grad():
        for head in (agent.policy, agent.value):
            head.weight.zero_()
            head.bias.zero_()
        agent.value.bias.fill_(2.0)
    agent.cfg.discount, agent.cfg.reward_clip = 0.9, 0.0
    agent.cfg.entropy_cost, agent.cfg.baseline_cost = 0.01, 0.5
    out = agent(unroll_batch())
    # bootstrap V = 2: row 0 returns [1, 0, 2 + 1.8], row 1 [.9 * 4.61, 1 + 1.62 * ... ]
    r0 = [1.0, 0.0, 2 + 0.9 * 2]
    r1_2 = 1 + 0.9 * 2
    r1_1 = 1 + 0.9 * r1_2
    r1 = [0.9 * r1_1, r1_1, r1_2]
    adv = [r - 2.0 for r in r0 + r1]
    log_p = math.log(1 / 3)
    assert out["pg_loss"].item() == pytest.approx(-log_p * sum(adv) / 6, rel=1e-6)
    assert out["value_loss"].item() == pytest.approx(0.5 * sum(a * a for a in adv) / 6, rel=1e-6)
    assert out["entropy"].item() == pytest.approx(math.log(3), rel=1e-6)
    total = out["pg_loss"] + 0.5 * out["value_loss"] - 0.01 * out["entropy"]
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    assert out["episodes"].item() == 1 and out["return_sum"].item() == 3.5


def test_reward_clipping_enters_the_returns():
    agent = tiny_agent(cpc=False)
    agent.cfg.reward_clip = 0.5
    with torch.no_grad():
        agent.value.weight.zero_()
        agent.value.bias.zero_()
    agent.cfg.discount = 0.0
    out = agent(unroll_batch())
    # discount 0, V = 0: returns = clipped rewards [[.5, 0, .5], [0, .5, .5]]
    assert out["value_loss"].item() == pytest.approx(0.5 * 4 * 0.25 / 6)


def test_episode_segments():
    first = torch.tensor([[False, False, True, False], [True, False, False, True]])
    index, lengths = episode_segments(first, min_len=3)
    assert lengths.tolist() == [2, 2, 3, 1]
    assert index.tolist() == [[0, 1, 0], [2, 3, 2], [4, 5, 6], [7, 7, 7]]


def test_cpc_predictions_read_only_the_past():
    """Changing the frame at t + k changes no prediction made at t <= t + k - 1, but does
    change the ones from t + k on."""
    agent = tiny_agent(cpc=True, steps=3)
    batch = unroll_batch(t=3)
    first = batch["first"]

    def predictions(obs):
        _, c = agent.unroll(obs, first, (batch["h0"], batch["c0"]))
        return agent.predictors(c)  # (N, T + 1, K, D)

    base = predictions(batch["obs"])
    for changed in range(1, 4):
        obs = batch["obs"].clone()
        obs[:, changed] = 255 - obs[:, changed]
        new = predictions(obs)
        torch.testing.assert_close(new[:, :changed], base[:, :changed], rtol=0, atol=0)
        assert not torch.allclose(new[:, changed], base[:, changed])


def test_cpc_loss_reports_per_k_accuracy_and_stays_within_episodes():
    agent = tiny_agent(cpc=True, steps=2)
    batch = unroll_batch(t=3)
    out = agent(batch)
    assert out["accuracy"].shape == (2,) and torch.isfinite(out["cpc_loss"])
    # An episode start at t = 2 in every row: contexts t = 0 predict k = 1 only (t + k < 2),
    # frames 2..3 form their own piece; the loss changes, so the boundary is honoured.
    cut = dict(batch, first=batch["first"].clone())
    cut["first"][:, 2] = True
    assert not torch.allclose(agent(cut)["cpc_loss"], out["cpc_loss"])


def test_baseline_network_unchanged_by_cpc():
    base, cpc = tiny_agent(cpc=False, seed=3), tiny_agent(cpc=True, seed=3)
    extra = set(cpc.state_dict()) - set(base.state_dict())
    assert extra and all(k.startswith("predictors.") for k in extra)
    for k, v in base.state_dict().items():
        assert torch.equal(v, cpc.state_dict()[k]), k
    out = cpc(unroll_batch())
    total = out["pg_loss"] + 0.5 * out["value_loss"] - 0.01 * out["entropy"]
    assert out["loss"].item() == pytest.approx((total + out["cpc_loss"]).item(), rel=1e-5)


def test_act_resets_the_core_at_episode_starts():
    agent = tiny_agent(cpc=False)
    obs = torch.randint(0, 256, (2, *OBS), dtype=torch.uint8)
    state = (torch.randn(2, 8), torch.randn(2, 8))
    g = torch.Generator().manual_seed(0)
    _, s_first = agent.act(obs, torch.tensor([True, True]), state, g)
    _, s_zero = agent.act(obs, torch.tensor([False, False]), agent.initial_state(2), g)
    torch.testing.assert_close(s_first[0], s_zero[0])
    actions, _ = agent.act(obs, torch.tensor([True, False]), state, g)
    assert actions.shape == (2,) and actions.max() < 3
