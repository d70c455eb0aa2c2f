"""Critic-free on-policy RL for language models: GRPO, RLOO and REINFORCE++.

Two models: the **policy** π_θ and its frozen **reference** π_ref (a copy, or a LoRA policy's
base), plus any reward function. No critic: the baseline of each response's reward comes from
the other responses — its prompt's group of k completions (GRPO: Shao et al. 2024; RLOO:
Ahmadian et al. 2024) or the whole batch (REINFORCE++: Hu et al. 2025). The update is PPO-clip
on the policy alone, through the shared :func:`prefrl.rl.ppo.ppo_epochs` (``values=None``).

One :meth:`CriticFreeTrainer.step` reads top to bottom like :meth:`prefrl.lm.ppo.LMPPOTrainer.step`:
rollout (k per prompt, adjacent) → score (log-probs, reference log-probs, task reward) → KL and
shaped reward → critic-free advantages (:mod:`prefrl.losses`) → epochs of clipped updates with
the chosen loss aggregation → KL controller → metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch

from prefrl.lm.critic_free_config import CriticFreeConfig, CriticFreeRunConfig
from prefrl.lm.logprobs import grouped_response_logprobs
from prefrl.lm.policy_trainer import LMPolicyTrainer
from prefrl.lm.reward_functions import RewardFn
from prefrl.lm.rollout import RolloutBatch
from prefrl.lm.training import release_free_memory
from prefrl.losses import (
    aggregate_token_loss,
    batch_baseline_advantages,
    clipped_surrogate_token_loss,
    group_relative_advantages,
    kl_estimate,
    leave_one_out_advantages,
)
from prefrl.rl.ppo import MinibatchOutput, ppo_diagnostics, ppo_epochs

__all__ = ["CriticFreeConfig", "CriticFreeRunConfig", "CriticFreeTrainer", "METRIC_NAMES", "run_critic_free"]

logger = logging.getLogger(__name__)

#: The metrics every step logs (plus timing entries under ``time/``).
METRIC_NAMES = (
    "objective/scores",
    "objective/kl",
    "objective/kl_token",
    "objective/kl_seq_max",
    "objective/entropy",
    "objective/non_score_reward",
    "objective/rlhf_reward",
    "objective/kl_coef",
    "objective/zero_std_groups",
    "policy/approx_kl",
    "policy/clipfrac",
    "loss/policy",
    "val/num_eos_tokens",
    "response/length",
)


class CriticFreeTrainer(LMPolicyTrainer):
    """GRPO / RLOO / REINFORCE++ trainer for a causal LM (``cfg.algo``).

    Args:
        policy: the causal LM to train (a ``PreTrainedModel`` or a PEFT model).
        ref_policy: the frozen reference; ``None``: the LoRA policy's base, or a frozen copy.
        reward_fn: scores rollouts per sequence, token or span (see ``prefrl.lm.reward_functions``).
        tokenizer: the policy's tokenizer (pad and EOS set).
        cfg: hyper-parameters.
        gold_fn: optional gold reward logged beside the proxy (``objective/gold``).
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        ref_policy: torch.nn.Module | None,
        reward_fn: RewardFn,
        tokenizer: Any,
        cfg: CriticFreeConfig,
        gold_fn: RewardFn | None = None,
    ) -> None:
        super().__init__(policy, ref_policy, reward_fn, tokenizer, cfg, gold_fn)
        self.name = cfg.algo
        self.group_size = cfg.num_generations
        logger.info("%s: %s", cfg.algo, cfg.kl_description)

    def rollout(self, prompts: Sequence[str]) -> RolloutBatch:
        """Sample ``num_generations`` responses per prompt (adjacent rows; the prompt's KV cache shared)."""
        return super().rollout(prompts, self.cfg.num_generations)

    def _advantages(self, seq_rewards: torch.Tensor, token_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, R) advantages of ``cfg.algo``; per-sequence ones broadcast over the response's tokens."""
        cfg = self.cfg
        if cfg.algo == "reinforce++":
            return batch_baseline_advantages(token_rewards, mask)
        if cfg.algo == "rloo":
            adv = leave_one_out_advantages(seq_rewards, cfg.num_generations)
        else:
            adv = group_relative_advantages(seq_rewards, cfg.num_generations, scale=cfg.scale_rewards)
        return adv[:, None] * mask  # (B, R)

    def shaped_advantages(
        self, score_rewards: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor
    ) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
        """β, KL_t, the reward's KL share −β·KL_t and the advantages of one rollout, all (B, R) but β.

        The KL (``cfg.kl_estimator``) enters each token's reward with ``kl_penalty="reward"``
        (k1 there is RLOO's r − β·Σ_t log π/π_ref) and only the loss otherwise
        (:meth:`minibatch_loss`); the advantages come from the shaped rewards.
        """
        beta, kl_t, non_score_rewards = self._kl_penalty(old_logprobs, ref_logprobs, mask)  # (B, R)
        token_rewards = score_rewards + non_score_rewards  # (B, R)
        advantages = self._advantages(token_rewards.sum(1), token_rewards, mask)  # (B, R)
        return beta, kl_t, non_score_rewards, advantages

    def minibatch_loss(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        ref_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        beta: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What one minibatch's update minimises, as (policy loss, KL loss): their sum is the loss.

        Policy: :meth:`policy_loss`; KL: β · the same aggregation of ``cfg.kl_estimator``(π_θ, π_ref)
        with ``kl_penalty="loss"`` (GRPO's objective, Shao et al. 2024 eq. 3), else 0.
        All tensors (mb, R).
        """
        pg_loss = self.policy_loss(logprobs, old_logprobs, advantages, self.cfg.clip_coef, mask)
        return pg_loss, self._kl_loss(logprobs, ref_logprobs, mask, beta)

    def _kl_loss(self, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
        cfg = self.cfg
        if cfg.kl_penalty != "loss":
            return torch.zeros((), device=logprobs.device)
        kl = kl_estimate(logprobs, ref_logprobs, cfg.kl_estimator)  # (mb, R)
        return beta * aggregate_token_loss(kl, mask, cfg.loss_aggregation, cfg.normaliser)

    def step(self, prompts: Sequence[str]) -> dict[str, float]:
        """Rollout of k responses to each of ``prompts`` (exactly ``cfg.batch_size``), then a clipped update."""
        cfg = self.cfg
        if len(prompts) != cfg.batch_size:
            raise ValueError(f"step needs batch_size={cfg.batch_size} prompts, got {len(prompts)}")
        t_start = time.perf_counter()

        # 1. rollout: k responses per prompt
        batch = self.rollout(prompts)
        t_rollout = time.perf_counter()
        b = batch.response_ids.shape[0]
        mask = batch.response_mask.float()  # (B, R)

        # 2. score: policy / reference log-probs, task reward
        scored = self._score_policy(batch)
        old_logprobs, ref_logprobs = scored["logprobs"], scored["ref_logprobs"]
        reward, scores, score_rewards = self._task_scores(batch)  # (B,), (B, R)

        # 3–4. KL per token (in the reward or the loss) and critic-free advantages
        beta, kl_t, non_score_rewards, advantages = self.shaped_advantages(
            score_rewards, old_logprobs, ref_logprobs, mask
        )  # (B, R) each
        groups = scores.reshape(-1, cfg.num_generations)
        zero_std = float((groups.max(1).values == groups.min(1).values).float().mean())
        release_free_memory()  # the sampler's KV cache and the scoring passes' logits, before the update's peak
        t_score = time.perf_counter()

        # 5. epochs of clipped updates of the policy alone
        stats = self._update(batch, old_logprobs, advantages, mask, ref_logprobs, beta)
        release_free_memory()
        t_update = time.perf_counter()

        # 6. KL controller on the mean sequence-summed KL
        self.kl_controller.update(float(kl_t.sum(1).mean()), b)
        self.global_step += 1
        self.n_samples += b

        # 7. metrics
        non_score_seq = non_score_rewards.sum(1)
        return {
            **self._instruments(batch, reward, scores, kl_t, mask, scored["entropy"]),
            "objective/non_score_reward": float(non_score_seq.mean()),
            "objective/rlhf_reward": float((scores + non_score_seq).mean()),
            "objective/kl_coef": beta,
            "objective/zero_std_groups": zero_std,  # groups whose k scores are all equal: no signal
            **stats,
            "time/rollout_s": t_rollout - t_start,
            "time/score_s": t_score - t_rollout,
            "time/update_s": t_update - t_score,
            "time/step_s": t_update - t_start,
            "step": float(self.global_step),
        }

    def policy_loss(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        clip_coef: float,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """PPO-clip per token, reduced by ``cfg.loss_aggregation`` (:func:`prefrl.losses.aggregate_token_loss`)."""
        loss_t = clipped_surrogate_token_loss(logprobs, old_logprobs, advantages, clip_coef)  # (mb, R)
        return aggregate_token_loss(loss_t, mask, self.cfg.loss_aggregation, self.cfg.normaliser)

    def _update(
        self,
        batch: RolloutBatch,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        ref_logprobs: torch.Tensor,
        beta: float,
    ) -> dict[str, float]:
        """Epochs of clipped policy updates (:func:`prefrl.rl.ppo.ppo_epochs`, no values)."""
        cfg, dev = self.cfg, self.device
        ids, attn, p = batch.input_ids, batch.attention_mask, batch.n_query
        b_mask, b_old_lp, b_ref_lp = mask.to(dev), old_logprobs.to(dev), ref_logprobs.to(dev)  # (B, R)
        self.last_minibatch_stats = []

        def evaluate(idx: torch.Tensor) -> MinibatchOutput:
            dev_idx = idx.to(dev)
            mb_mask = b_mask[dev_idx]
            # rows in batch order, so that a minibatch of whole groups computes each prompt once
            order = torch.argsort(idx)
            new_lp, entropy = grouped_response_logprobs(
                self.policy,
                ids[idx[order]].to(dev),
                attn[idx[order]].to(dev),
                p,
                self.group_size,
                cfg.temperature,
                with_entropy=cfg.ent_coef > 0,
            )  # (mb, R), sorted rows
            back = torch.argsort(order).to(dev)  # sorted → idx order
            new_lp, entropy = new_lp[back], None if entropy is None else entropy[back]
            kl_loss = self._kl_loss(new_lp, b_ref_lp[dev_idx], mb_mask, beta) if cfg.kl_penalty == "loss" else None
            # before this minibatch's update: the first entry shows ratio 1 when π_old = π_θ
            diag = ppo_diagnostics(new_lp, b_old_lp[dev_idx], cfg.clip_coef, mb_mask)
            self.last_minibatch_stats.append({k: float(v) for k, v in diag.items()})
            return MinibatchOutput(logprobs=new_lp, entropy=entropy, extra_loss=kl_loss)

        return ppo_epochs(
            evaluate,
            [self.policy_optimizer],
            b_old_lp,
            advantages.to(dev),
            mask=b_mask,
            update_epochs=cfg.update_epochs,
            num_minibatches=cfg.num_minibatches,
            clip_coef=cfg.clip_coef,
            ent_coef=cfg.ent_coef,
            max_grad_norm=cfg.max_grad_norm,
            target_kl=cfg.target_kl,
            generator=self.generator,
            policy_loss=self.policy_loss,
            group_size=cfg.num_generations,  # minibatches of whole prompt groups where the sizes allow
        )


# ---------------------------------------------------------------------- building and running


def run_critic_free(cfg: CriticFreeRunConfig) -> dict[str, Any]:
    """``prefrl lm rl``: build policy, reference and reward model from paths, train, save.

    The reference is the *starting* policy (``cfg.policy``), also when resuming; with LoRA it
    is the policy with its adapter disabled.
    """
    from prefrl.lm.launch import require_single_process
    from prefrl.lm.rl_run import (
        check_resume,
        load_policy_and_reference,
        load_reward_prompts_gold,
        run_trainer,
    )

    require_single_process(f"prefrl lm rl --algo {cfg.algo}")
    resume = check_resume(cfg, ("algo", "train_top_layers", "lora_r", "policy"))
    policy, ref_policy, tokenizer = load_policy_and_reference(cfg, resume)
    reward_fn, prompts, gold_fn = load_reward_prompts_gold(cfg, tokenizer)
    trainer = CriticFreeTrainer(policy, ref_policy, reward_fn, tokenizer, cfg, gold_fn=gold_fn)
    return {**run_trainer(trainer, cfg, prompts, resume), "algo": cfg.algo, "kl": cfg.kl_description}
