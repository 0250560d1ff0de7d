"""PPO and PRIME, built on TRL's GRPOTrainer machinery (TRL 1.x ships no PPO trainer and never shipped PRIME).

What TRL gives: generation, the task rewards, the sampler, the reference model and its log-probs (created when
`beta != 0`), old log-probs and the reuse of one rollout batch over `num_iterations` optimizer steps (the PPO
epochs), checkpoints and resume. What is added here: a second model next to the policy (PPO's value model, PRIME's
implicit process reward model), its own optimizer, the advantages computed from it (`_score_batch`), and the clipped
policy loss on per-token advantages (`_compute_loss`). The formulas are the pure functions of rl_losses.py.

The second model is a separate copy of the base, never a head on the policy's trunk: its loss then cannot put a
gradient into any policy weight, so `--mask` stays exact on the policy and the policy checkpoints hold the policy
alone. It lives in each Trainer resume point (`side_model.safetensors`, its optimizer and the rollout batch being
reused in `side_state.pt`), apart from the policy's checkpoints, and `--resume` restores it bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from transformers import AutoModelForCausalLM
from trl import GRPOTrainer
from trl.trainer.utils import add_fused_lm_head, disable_dropout_in_model

from rldelta.train import rl_losses as L

SIDE_MODEL = "side_model.safetensors"
SIDE_STATE = "side_state.pt"


class ValueModel(torch.nn.Module):
    """A scalar head (zero-initialised: V = 0 at the start, no random draw) on a copy of the base's trunk."""

    def __init__(self, causal_lm):
        super().__init__()
        self.trunk = causal_lm.base_model
        self.head = torch.nn.Linear(causal_lm.config.hidden_size, 1, dtype=causal_lm.dtype)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask, n_completion: int) -> torch.Tensor:
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        # V_t is read where token t is predicted: the positions before each completion token.
        return self.head(hidden[:, -n_completion - 1 : -1]).squeeze(-1)


def _base_copy(trainer, path: str):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=trainer.model.dtype, use_safetensors=True)
    disable_dropout_in_model(model)
    return model.to(trainer.accelerator.device)


class _SideModelTrainer(GRPOTrainer):
    """GRPOTrainer with a second trained model whose state travels with every resume point."""

    side_lr_field = ""  # the TrainConfig field of the second model's learning rate

    def __init__(self, *args, rl, **kwargs):
        super().__init__(*args, **kwargs)
        self.rl = rl
        self.side = self._make_side_model(rl.model)
        lr = getattr(rl, self.side_lr_field)
        self.side_optimizer = torch.optim.AdamW(
            self.side.parameters(), lr=rl.lr if lr is None else lr, betas=(rl.adam_beta1, rl.adam_beta2)
        )

    def _make_side_model(self, path: str) -> torch.nn.Module:
        raise NotImplementedError

    # ---- TRL hooks ----

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if "old_per_token_logps" not in out:  # one epoch: TRL skips them, the reward shaping still needs them
            with torch.no_grad():
                out["old_per_token_logps"] = self._logps(self.model, out)
        out["advantages"] = self._score_batch(out)
        return out

    def _compute_loss(self, model, inputs):
        mask = _loss_mask(inputs)
        logps, entropies, _ = self._get_per_token_logps_and_entropies(model, *_sequences(inputs), compute_entropy=True)
        loss, clipped = L.ppo_policy_loss(
            logps, inputs["old_per_token_logps"], inputs["advantages"], mask, self.epsilon_low, self.epsilon_high
        )
        self._after_policy_loss(inputs, mask)
        self._log("policy_loss", loss)
        self._log("clip_ratio/region_mean", clipped)
        self._log("entropy", L.masked_mean(entropies, mask))
        return loss

    def _score_batch(self, out) -> torch.Tensor:
        raise NotImplementedError

    def _after_policy_loss(self, inputs, mask) -> None:
        pass

    # ---- helpers ----

    def _logps(self, model, out) -> torch.Tensor:
        return self._get_per_token_logps_and_entropies(model, *_sequences(out))[0]

    def _scores(self) -> torch.Tensor:
        """Each completion's task reward (the weighted sum of the reward functions), as GRPO sums them."""
        per_func = self._rewards_per_func
        return (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)

    def _side_step(self, loss: torch.Tensor) -> None:
        self.side_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.args.max_grad_norm and self.args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.side.parameters(), self.args.max_grad_norm)
        self.side_optimizer.step()

    def _log(self, name: str, value) -> None:
        self._metrics["train"][name].append(float(value.detach() if torch.is_tensor(value) else value))

    # ---- the second model in each resume point ----

    def _save_checkpoint(self, model, trial):
        # Written before the Trainer's files: a resume point counts once its trainer_state.json (written last) exists.
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        save_model(self.side, str(folder / SIDE_MODEL))
        state = {"optimizer": self.side_optimizer.state_dict(), "step": self._step, "buffer": self._buffered_inputs}
        torch.save(state, folder / SIDE_STATE)
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        load_model(self.side, os.path.join(checkpoint, SIDE_MODEL), device=str(self.accelerator.device))
        state = torch.load(os.path.join(checkpoint, SIDE_STATE), map_location=self.accelerator.device)
        self.side_optimizer.load_state_dict(state["optimizer"])
        # The rollout batch of the PPO epochs still to run, and where in them the run was: without them the resumed
        # run would sample a fresh batch where the uninterrupted one reuses the old.
        self._step, self._buffered_inputs = state["step"], state["buffer"]


def _sequences(batch) -> tuple[torch.Tensor, torch.Tensor, int]:
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    return ids, attention, batch["completion_ids"].size(1)


def _loss_mask(batch) -> torch.Tensor:
    mask = batch["completion_mask"]
    return mask if "tool_mask" not in batch else mask * batch["tool_mask"]


class PPOTrainer(_SideModelTrainer):
    """PPO as in the classic RLHF recipe: KL-shaped per-token rewards, GAE, whitened advantages, the clipped policy
    objective, a clipped value loss, `num_iterations` epochs per rollout batch (one optimizer step each)."""

    side_lr_field = "value_lr"

    def _make_side_model(self, path: str) -> torch.nn.Module:
        return ValueModel(_base_copy(self, path)).to(self.accelerator.device)

    def _score_batch(self, out) -> torch.Tensor:
        mask = _loss_mask(out)
        old = out["old_per_token_logps"]
        ref = out.get("ref_per_token_logps", old)  # --beta 0: no KL penalty
        with torch.no_grad():
            values = self.side(*_sequences(out)).float() * mask
        rewards = L.kl_shaped_rewards(self._scores(), old, ref, mask, self.beta)
        advantages, returns = L.gae(rewards, values, mask, self.rl.gae_gamma, self.rl.gae_lambda)
        out["old_values"], out["returns"] = values, returns
        self._log("value/mean", L.masked_mean(values, mask))
        self._log("kl", L.masked_mean(old - ref, mask))
        return L.masked_whiten(advantages, mask)

    def _after_policy_loss(self, inputs, mask) -> None:
        # Its own graph and optimizer: nothing of this reaches the policy's gradients.
        values = self.side(*_sequences(inputs)).float()
        loss = L.clipped_value_loss(values, inputs["old_values"], inputs["returns"], mask, self.epsilon_low)
        self._side_step(loss)
        self._log("value_loss", loss)


class PRIMETrainer(_SideModelTrainer):
    """PRIME (arXiv:2502.01456): an implicit process reward model pi_phi, initialised from the base and updated on
    every rollout batch with the cross-entropy of sigmoid(beta * sum_t log pi_phi/pi_ref) against the outcome label;
    token rewards beta * log(pi_phi/pi_ref) plus the outcome reward, leave-one-out (RLOO) advantages, the PPO-clipped
    policy loss. As in the paper's algorithm the rewards are read before the reward model's update on the batch.
    Not included: the paper's filter of prompts by accuracy."""

    side_lr_field = "reward_model_lr"

    def _make_side_model(self, path: str) -> torch.nn.Module:
        model = _base_copy(self, path)
        add_fused_lm_head(model, temperature=self.temperature)
        return model

    def _score_batch(self, out) -> torch.Tensor:
        mask = _loss_mask(out)
        outcome = self._scores()
        labels = self._correctness().clamp(0, 1).to(outcome.dtype)
        with torch.enable_grad():
            rewards = L.implicit_process_rewards(
                self._logps(self.side, out), out["ref_per_token_logps"], mask, self.beta
            )
            loss = L.implicit_prm_loss(rewards.float(), labels)
            self._side_step(loss)
        rewards = rewards.detach().float()
        self._log("prm_loss", loss)
        self._log("implicit_reward/mean", rewards.sum(dim=1).mean())
        return L.prime_advantages(rewards, outcome, mask, self.num_generations)

    def _correctness(self) -> torch.Tensor:
        """The outcome label: the task's correctness reward where it is among the rewards, else their sum. A task
        with partial credit (digits) gives a soft label in [0, 1]; a verifier's 0/1 gives the paper's hard one."""
        names = [n for n in self.reward_func_names if n.endswith("correctness")]
        if not names:
            return self._scores()
        return self._rewards_per_func[:, self.reward_func_names.index(names[0])].nan_to_num(0.0)
