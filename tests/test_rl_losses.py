"""PPO's and PRIME's losses and advantages on one hand-built batch, against direct numpy loops over its tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rldelta.train import rl_losses as L

# Three completions of lengths 4, 2 and 3, right-padded to 4.
MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=np.float64)
RNG = np.random.default_rng(7)
LOGPS = RNG.normal(-1.5, 0.5, MASK.shape)
OLD = LOGPS + RNG.normal(0, 0.3, MASK.shape)  # ratios well outside 1 +- 0.2: the clip acts
REF = LOGPS + RNG.normal(0, 0.2, MASK.shape)
VALUES = RNG.normal(0, 1, MASK.shape)
OLD_VALUES = VALUES + RNG.normal(0, 0.5, MASK.shape)
SCORES = np.array([1.0, 0.0, 2.0])


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def lengths() -> list[int]:
    return [int(n) for n in MASK.sum(1)]


def test_kl_shaped_rewards_and_gae_match_the_definitions():
    kl, gamma, lam = 0.1, 0.9, 0.8
    rewards = L.kl_shaped_rewards(t(SCORES), t(LOGPS), t(REF), t(MASK), kl).numpy()
    adv, ret = (x.numpy() for x in L.gae(t(rewards), t(VALUES), t(MASK), gamma, lam))
    for i, n in enumerate(lengths()):
        r = [-kl * (LOGPS[i, s] - REF[i, s]) for s in range(n)]
        r[-1] += SCORES[i]
        np.testing.assert_allclose(rewards[i, :n], r, rtol=1e-12)
        assert not rewards[i, n:].any()
        v_next = [*VALUES[i, 1:n], 0.0]  # no value past the last token
        for s in range(n):  # A_t = sum_l (gamma lam)^l delta_{t+l}, written out
            deltas = [r[u] + gamma * v_next[u] - VALUES[i, u] for u in range(s, n)]
            want = sum((gamma * lam) ** j * d for j, d in enumerate(deltas))
            assert adv[i, s] == pytest.approx(want, rel=1e-12, abs=1e-12)
            assert ret[i, s] == pytest.approx(want + VALUES[i, s], rel=1e-12, abs=1e-12)
        assert not adv[i, n:].any() and not ret[i, n:].any()


def test_whitening_uses_only_real_tokens():
    x = L.masked_whiten(t(VALUES), t(MASK)).numpy()
    real = VALUES[MASK == 1]
    np.testing.assert_allclose(x[MASK == 1], (real - real.mean()) / np.sqrt(real.var() + 1e-8), rtol=1e-10)
    assert not x[MASK == 0].any()


def test_ppo_policy_loss_matches_a_token_loop():
    adv = RNG.normal(0, 1, MASK.shape)
    logps = t(LOGPS).requires_grad_(True)
    loss, clipfrac = L.ppo_policy_loss(logps, t(OLD), t(adv), t(MASK), 0.2, 0.28)
    terms, clipped = [], []
    for i, n in enumerate(lengths()):
        for s in range(n):
            ratio = np.exp(LOGPS[i, s] - OLD[i, s])
            a, b = ratio * adv[i, s], min(max(ratio, 0.8), 1.28) * adv[i, s]
            terms.append(-min(a, b))
            clipped.append(b < a)
    assert float(loss.detach()) == pytest.approx(np.mean(terms), rel=1e-12)
    assert float(clipfrac) == pytest.approx(np.mean(clipped))
    assert 0 < np.mean(clipped) < 1  # the batch exercises both branches
    # The gradient flows only through unclipped tokens: d/dlogp = -ratio * A / N there, 0 where clipped.
    loss.backward()
    n_tok = MASK.sum()
    ratio = np.exp(LOGPS - OLD)
    want = np.where(MASK == 1, -ratio * adv / n_tok, 0.0)
    keep = np.array(clipped)
    want_flat = want[MASK == 1]
    want_flat[keep] = 0.0
    np.testing.assert_allclose(logps.grad.numpy()[MASK == 1], want_flat, rtol=1e-10, atol=1e-15)


def test_clipped_value_loss_matches_a_token_loop():
    returns = RNG.normal(0, 1, MASK.shape)
    got = float(L.clipped_value_loss(t(VALUES), t(OLD_VALUES), t(returns), t(MASK), 0.2))
    terms = []
    for i, n in enumerate(lengths()):
        for s in range(n):
            v, old, r = VALUES[i, s], OLD_VALUES[i, s], returns[i, s]
            vc = old + min(max(v - old, -0.2), 0.2)
            terms.append(0.5 * max((v - r) ** 2, (vc - r) ** 2))
    assert got == pytest.approx(np.mean(terms), rel=1e-12)


def _log_softmax_np(logits: np.ndarray) -> np.ndarray:
    m = logits.max(-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))


def test_prime_implicit_reward_from_independently_computed_log_probs():
    # Two "models" as raw next-token logits over a 5-token vocabulary; the log-probs of the sampled tokens are taken
    # here with numpy, and through torch's log_softmax + gather for the function under test.
    vocab, beta = 5, 0.05
    prm_logits, ref_logits = RNG.normal(0, 2, (*MASK.shape, vocab)), RNG.normal(0, 2, (*MASK.shape, vocab))
    tokens = RNG.integers(0, vocab, MASK.shape)

    def torch_logps(logits):
        return torch.log_softmax(t(logits), -1).gather(-1, torch.tensor(tokens).unsqueeze(-1)).squeeze(-1)

    r = L.implicit_process_rewards(torch_logps(prm_logits), torch_logps(ref_logits), t(MASK), beta).numpy()
    lp, lr = _log_softmax_np(prm_logits), _log_softmax_np(ref_logits)
    for i, n in enumerate(lengths()):
        for s in range(MASK.shape[1]):
            want = beta * (lp[i, s, tokens[i, s]] - lr[i, s, tokens[i, s]]) if s < n else 0.0
            assert r[i, s] == pytest.approx(want, rel=1e-12, abs=1e-15)
    labels = np.array([1.0, 0.0, 1.0])
    got = float(L.implicit_prm_loss(t(r), t(labels)))
    p = 1 / (1 + np.exp(-r.sum(1)))
    assert got == pytest.approx(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)), rel=1e-12)


def test_prime_advantages_match_the_papers_formula():
    # Two prompts, k = 2 completions each: rows 0-1 and 2-3.
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=np.float64)
    r = RNG.normal(0, 0.1, mask.shape) * mask
    outcome = np.array([1.0, 0.0, 0.0, 1.0])
    k = 2
    adv = L.prime_advantages(t(r), t(outcome), t(mask), k).numpy()
    for i in range(4):
        group = range(i - i % k, i - i % k + k)
        others = [j for j in group if j != i]
        base_r = np.mean([r[j].sum() for j in others])
        base_o = np.mean([outcome[j] for j in others])
        for s in range(3):
            want = (r[i, s:].sum() - base_r + outcome[i] - base_o) if mask[i, s] else 0.0
            assert adv[i, s] == pytest.approx(want, rel=1e-12, abs=1e-15)
