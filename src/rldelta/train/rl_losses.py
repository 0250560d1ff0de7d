"""The losses and advantages of PPO and PRIME, as pure tensor functions (no model, no trainer), so each can be checked
against a direct computation of a hand-built batch (tests/test_rl_losses.py).

Shapes: (B, T) per completion token, right-padded; `mask` is 1 on real completion tokens and 0 on padding. Every
masked mean is over all real tokens of the batch (token-level, as the classic PPO recipe averages).
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the real tokens of the batch (population variance), padding left at zero."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def kl_shaped_rewards(
    scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """The classic RLHF reward: -kl_coef * (log pi - log pi_ref) at every token, plus the sequence's task score
    on its last real token."""
    rewards = -kl_coef * (logps - ref_logps) * mask
    last = (mask.sum(dim=1) - 1).clamp(min=0).long()
    return rewards.index_put((torch.arange(len(scores)), last), scores.to(rewards.dtype), accumulate=True)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation: (advantages, returns = advantages + values).

    delta_t = r_t + gamma * V_{t+1} - V_t with V = 0 past the last real token; A_t = delta_t + gamma * lam * A_{t+1}.
    """
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = (delta + gamma * lam * next_adv) * mask[:, t]
        advantages[:, t] = adv
        # A padded position hands on nothing: the sequence ended before it.
        next_value, next_adv = values[:, t], adv
    return advantages, advantages + values


def ppo_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, clipped fraction): the token mean of -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)."""
    ratio = torch.exp(logps - old_logps)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * advantages
    loss = masked_mean(-torch.min(unclipped, clipped), mask)
    return loss, masked_mean((clipped < unclipped).float(), mask)


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> torch.Tensor:
    """0.5 * token mean of max((V - R)^2, (old_V + clip(V - old_V, -clip, clip) - R)^2)."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def implicit_process_rewards(
    prm_logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """PRIME's token rewards r_t = beta * log(pi_phi(y_t | y_<t) / pi_ref(y_t | y_<t)), zero on padding."""
    return beta * (prm_logps - ref_logps) * mask


def implicit_prm_loss(process_rewards: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PRIME's reward-model loss: binary cross-entropy of sigmoid(sum_t r_t) against the outcome label (0 or 1)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(
        process_rewards.sum(dim=1), labels.to(process_rewards.dtype)
    )


def leave_one_out(x: torch.Tensor, k: int) -> torch.Tensor:
    """x_i minus the mean of the other k - 1 members of its group (groups: consecutive runs of k)."""
    g = x.view(-1, k)
    return (g - (g.sum(dim=1, keepdim=True) - g) / (k - 1)).view(-1)


def prime_advantages(process_rewards: torch.Tensor, outcome: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """PRIME's advantages (gamma = 1): A_t^i = sum_{s>=t} r_s^i - mean_{j != i} sum_s r_s^j + r_o^i - mean_{j != i} r_o^j.

    Each leave-one-out baseline is taken once per completion (the reference implementation puts it on the last
    token; with gamma = 1 it reaches every earlier token unchanged).
    """
    to_go = torch.flip(torch.cumsum(torch.flip(process_rewards * mask, [1]), 1), [1])
    implicit = process_rewards.sum(dim=1)
    others_implicit = implicit - leave_one_out(implicit, k)  # mean over the other completions of the prompt
    return (to_go - others_implicit.unsqueeze(1) + leave_one_out(outcome, k).unsqueeze(1)) * mask
