"""The A2C agent with an optional CPC auxiliary loss (paper section 3.4).

Agent (IMPALA's architecture): a conv encoder (per section: 3x3 conv, 3x3 max-pool with
stride 2, ``res_blocks`` residual blocks of two 3x3 convs; then a linear layer) maps each
frame to ``z_t``; an LSTM core maps ``z_1..z_t`` to ``c_t``; linear policy and value heads
read ``c_t``. The core state is reset at the first frame of every episode.

Losses over a batch of unrolls (``N`` environments x ``T`` steps, plus the observation
after the last step for bootstrapping): the n-step returns of :func:`nstep_returns`
(bootstrapped from the value of the last observation, cut at episode ends), the policy
gradient with advantages ``R_t - V(c_t)``, ``baseline_cost`` x half the squared error of
the value, minus ``entropy_cost`` x the policy entropy.

CPC auxiliary (``model.cpc``): linear predictors ``W_k c_t`` of the future encoder outputs
``z_{t+k}``, k = 1..K, scored with InfoNCE against every frame of the unroll batch
(:func:`cpc.infonce.info_nce_all_pairs`); the prediction is never made across an episode
end (each episode piece of an unroll is its own sequence). Only the predictors are added: the
baseline network is the same with or without them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cpc.infonce import Predictors, info_nce_all_pairs
from cpc.rl.config import AgentConfig

State = tuple[torch.Tensor, torch.Tensor]


def nstep_returns(
    rewards: torch.Tensor, dones: torch.Tensor, bootstrap: torch.Tensor, discount: float
) -> torch.Tensor:
    """n-step returns ``R_t = r_t + discount * (1 - done_t) * R_{t+1}``, ``R_T = bootstrap``.

    ``rewards``, ``dones``: (N, T); ``bootstrap``: (N,) the value after the last step.
    Returns (N, T).
    """
    out = torch.empty_like(rewards)
    ret = bootstrap
    keep = 1.0 - dones.to(rewards.dtype)
    for t in range(rewards.shape[1] - 1, -1, -1):
        ret = rewards[:, t] + discount * keep[:, t] * ret
        out[:, t] = ret
    return out


def episode_segments(first: torch.Tensor, min_len: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split unrolls at episode starts.

    ``first``: (N, L) bool, frame ``t`` of row ``n`` starts an episode (frame 0 always
    starts a piece). Returns ``index`` (S, M) of flat frame indices ``n * L + t`` (padding
    points at the piece's first frame) and ``lengths`` (S,), one row per piece, in order;
    ``M = max(longest piece, min_len)``.
    """
    n, length = first.shape
    starts = first.clone().bool()
    starts[:, 0] = True
    flat_starts = starts.reshape(-1)
    seg = torch.cumsum(flat_starts.long(), 0) - 1  # piece of each frame
    num = int(seg[-1]) + 1
    start_pos = torch.nonzero(flat_starts).squeeze(1)  # flat index of each piece's start
    lengths = torch.bincount(seg, minlength=num)
    width = max(int(lengths.max()), min_len)
    offs = torch.arange(width).view(1, width)
    index = start_pos.view(num, 1) + offs
    index = torch.where(offs < lengths.view(num, 1), index, start_pos.view(num, 1))
    return index, lengths


class ResidualBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(F.relu(self.conv0(F.relu(x))))


class ImpalaEncoder(nn.Module):
    """IMPALA's conv encoder: frames ``(B, H, W, C)`` uint8 -> ``z`` ``(B, feature_dim)``."""

    def __init__(self, obs_shape: tuple[int, int, int], cfg: AgentConfig) -> None:
        super().__init__()
        h, w, c = obs_shape
        layers: list[nn.Module] = []
        for ch in cfg.channels:
            layers += [nn.Conv2d(c, ch, 3, padding=1), nn.MaxPool2d(3, stride=2, padding=1)]
            layers += [ResidualBlock(ch) for _ in range(cfg.res_blocks)]
            c, h, w = ch, (h + 1) // 2, (w + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(c * h * w, cfg.feature_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        x = F.relu(self.convs(x))
        return F.relu(self.fc(x.flatten(1)))


class A2CAgent(nn.Module):
    """Encoder, LSTM core, policy and value heads (+ CPC predictors); see the module doc.

    ``forward(batch)`` is the training loss of a batch of unrolls (keys: ``obs`` (N, T+1,
    H, W, C) uint8, ``first`` (N, T+1) bool, ``actions`` (N, T) long, ``rewards`` (N, T),
    ``dones`` (N, T) bool, ``h0``/``c0`` (N, core_dim) the core state before frame 0, and
    ``episodes``/``episode_return`` (N,) episodes finished in the unroll and their summed
    returns, reported as metrics). :meth:`act` picks actions while collecting.
    """

    def __init__(self, obs_shape: tuple[int, int, int], num_actions: int, cfg: AgentConfig):
        super().__init__()
        self.cfg, self.num_actions, self.obs_shape = cfg, num_actions, tuple(obs_shape)
        self.encoder = ImpalaEncoder(obs_shape, cfg)
        self.core = nn.LSTMCell(cfg.feature_dim, cfg.core_dim)
        self.policy = nn.Linear(cfg.core_dim, num_actions)
        self.value = nn.Linear(cfg.core_dim, 1)
        self.predictors = (
            Predictors(cfg.core_dim, cfg.feature_dim, cfg.cpc_steps) if cfg.cpc else None
        )

    def initial_state(self, n: int, device: torch.device | None = None) -> State:
        z = torch.zeros(n, self.cfg.core_dim, device=device)
        return z, z.clone()

    def _core_step(self, z: torch.Tensor, state: State, first: torch.Tensor) -> State:
        keep = (~first).to(z.dtype).unsqueeze(1)
        return self.core(z, (state[0] * keep, state[1] * keep))

    def unroll(
        self, obs: torch.Tensor, first: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` (N, L, feature_dim) and ``c`` (N, L, core_dim) of frames ``obs`` (N, L, H,
        W, C), starting from core ``state``, resetting it where ``first``."""
        n, length = obs.shape[:2]
        z = self.encoder(obs.reshape(n * length, *obs.shape[2:])).view(n, length, -1)
        cs = []
        for t in range(length):
            state = self._core_step(z[:, t], state, first[:, t])
            cs.append(state[0])
        return z, torch.stack(cs, 1)

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        first: torch.Tensor,
        state: State,
        generator: torch.Generator | None = None,
        greedy: bool = False,
    ) -> tuple[torch.Tensor, State]:
        """Actions (N,) for one frame per environment, sampled from the policy (or its mode),
        and the new core state."""
        z = self.encoder(obs)
        state = self._core_step(z, state, first)
        logits = self.policy(state[0]).float()
        if greedy:
            return logits.argmax(-1), state
        probs = torch.softmax(logits, -1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1), state

    def cpc_loss(self, z: torch.Tensor, c: torch.Tensor, first: torch.Tensor) -> dict:
        """InfoNCE of ``W_k c_t`` against ``z_{t+k}`` within each episode piece, negatives from
        every frame of the batch (all pairs)."""
        n, length, _ = z.shape
        index, lengths = episode_segments(first.cpu(), min_len=self.cfg.cpc_steps + 1)
        index, lengths = index.to(z.device), lengths.to(z.device)
        z_seg = z.reshape(n * length, -1)[index]
        c_seg = c.reshape(n * length, -1)[index]
        return info_nce_all_pairs(
            self.predictors(c_seg), z_seg, self.cfg.cpc_negatives, lengths=lengths
        )

    def forward(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict:
        cfg = self.cfg
        obs, first, actions = batch["obs"], batch["first"], batch["actions"]
        z, c = self.unroll(obs, first, (batch["h0"], batch["c0"]))
        t = actions.shape[1]
        logits = self.policy(c[:, :t]).float()
        values = self.value(c).squeeze(-1).float()  # (N, T + 1)
        rewards = batch["rewards"].float()
        if cfg.reward_clip > 0:
            rewards = rewards.clamp(-cfg.reward_clip, cfg.reward_clip)
        rewards = rewards * cfg.reward_scale
        returns = nstep_returns(rewards, batch["dones"], values[:, t].detach(), cfg.discount)
        adv = returns - values[:, :t]
        logp_all = torch.log_softmax(logits, -1)
        logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        pg_loss = -(logp * adv.detach()).mean()
        value_loss = 0.5 * adv.pow(2).mean()
        entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
        loss = pg_loss + cfg.baseline_cost * value_loss - cfg.entropy_cost * entropy
        out = {
            "pg_loss": pg_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy.detach(),
            "episodes": batch["episodes"].float().sum(),
            "return_sum": batch["episode_return"].float().sum(),
        }
        if self.predictors is not None:
            nce = self.cpc_loss(z, c, first)
            loss = loss + cfg.cpc_weight * nce["loss"]
            out |= {
                "cpc_loss": nce["loss"].detach(),
                "accuracy": nce["accuracy"],
                "mi_bound": nce["mi_bound"],
            }
        return {"loss": loss, **out}
