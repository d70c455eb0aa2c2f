"""PPO for language models with four roles (InstructGPT; Ziegler et al. 2019).

- **policy** π_θ: the causal LM being trained (full fine-tuning or a LoRA adapter);
- **reference** π_ref: the frozen SFT model; with LoRA it is the same network with the
  adapter disabled, so no second copy is held;
- **critic** V_φ: a reward-model-shaped network (``per_token_scores``) initialised from the
  trained reward model and read per token;
- **reward**: any :class:`prefrl.lm.reward_functions.RewardFn` — a frozen reward model, a gold scorer,
  a per-token or per-span function.

One :meth:`LMPPOTrainer.step` reads top to bottom in cleanrl's order: rollout → score
(log-probs, reference log-probs, values, rewards) → shaped per-token rewards → GAE →
epochs of clipped updates → KL controller → metrics. Implementation details follow
"The N+ implementation details of RLHF with PPO" (Huang et al. 2024): temperature-scaled
log-probs, score on the EOS token, penalty for missing EOS, per-token KL in the reward,
advantage whitening over valid tokens, value clipping, no dropout.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from prefrl.lm.launch import require_single_process
from prefrl.lm.logprobs import response_logprobs
from prefrl.lm.models import freeze_all_but_top_layers
from prefrl.lm.policy_trainer import LMPolicyTrainer
from prefrl.lm.ppo_config import LMPPOConfig, PPORunConfig
from prefrl.lm.reward_functions import RewardFn
from prefrl.lm.rollout import RolloutBatch
from prefrl.lm.training import make_adamw, release_free_memory
from prefrl.losses import gae, kl_estimate, masked_mean, masked_whiten
from prefrl.rl.ppo import MinibatchOutput, explained_variance, ppo_diagnostics, ppo_epoch_knobs, ppo_epochs

__all__ = [
    "LMPPOConfig",
    "PPORunConfig",
    "LMPPOTrainer",
    "METRIC_NAMES",
    "freeze_all_but_top_layers",
    "run_ppo",
]

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
    "policy/approx_kl",
    "policy/clipfrac",
    "loss/policy",
    "loss/value",
    "val/explained_variance",
    "val/num_eos_tokens",
    "response/length",
)


class LMPPOTrainer(LMPolicyTrainer):
    """PPO-RLHF trainer for a causal LM.

    Args:
        policy: the causal LM to train (a ``PreTrainedModel`` or a PEFT model).
        ref_policy: the frozen reference. ``None`` with a LoRA (PEFT) policy means "the
            policy with its adapter disabled"; ``None`` with a plain policy makes a frozen
            copy of the policy as it is now.
        critic: value network with ``per_token_scores(input_ids, attention_mask) -> (B, T)``,
            normally a ``prefrl.lm.reward_model.RewardModel`` initialised from the trained RM.
        reward_fn: scores rollouts per sequence, token or span (see ``prefrl.lm.reward_functions``).
        tokenizer: the policy's tokenizer (pad and EOS set; they may be the same token).
        cfg: hyper-parameters.
    """

    name = "ppo"
    config_file = "ppo_config.json"

    def __init__(
        self,
        policy: torch.nn.Module,
        ref_policy: torch.nn.Module | None,
        critic: torch.nn.Module,
        reward_fn: RewardFn,
        tokenizer: Any,
        cfg: LMPPOConfig,
        gold_fn: RewardFn | None = None,
    ) -> None:
        """``gold_fn`` (optional): a gold reward (e.g. VADER, a synthetic teacher's true reward)
        logged beside the proxy as ``objective/gold``; a :class:`GoldProxyMonitor` logs how much of
        the proxy's gain reaches the gold (``objective/gold_transfer``) and warns when it does not
        (``objective/gold_proxy_diverging``)."""
        if not hasattr(critic, "per_token_scores"):
            raise ValueError("critic must provide per_token_scores(input_ids, attention_mask) -> (B, T)")
        super().__init__(policy, ref_policy, reward_fn, tokenizer, cfg, gold_fn)
        self.critic = critic
        self.critic.eval()
        critic_params = [p for p in critic.parameters() if p.requires_grad]
        if not critic_params:
            raise ValueError("critic has no trainable parameters")
        self.critic_optimizer = make_adamw(critic_params, cfg.critic_lr, 0.0, eps=cfg.adam_eps)

    @property
    def values_from_scoring(self) -> bool:
        """Whether the update's critic forward is the scoring pass's own (one epoch of one minibatch).

        With ``update_epochs = 1`` and the whole batch as the one minibatch, the update's critic
        forward would run the same weights on the same rows as the scoring pass: the scoring pass
        then keeps its autograd graph and its values serve as both V_old (detached) and V_new (the
        value loss's), so the critic runs once instead of twice per step, with the same loss and
        gradients (``tests/lm/test_ppo.py``).
        """
        return self.cfg.update_epochs == 1 and self.cfg.num_minibatches == 1

    def _score_rollouts(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """Log-probs + entropy, reference log-probs (:meth:`_score_policy`) and values, no grad, except
        ``values_graph`` (B, R) on the device, the values with their graph, when :attr:`values_from_scoring`."""
        scored = self._score_policy(batch)
        ids, mask, p = batch.input_ids.to(self.device), batch.attention_mask.to(self.device), batch.n_query
        n_resp, fb = ids.shape[1] - p, self.cfg.forward_batch_size
        with torch.set_grad_enabled(self.values_from_scoring):
            values = torch.cat(
                [
                    # value of the state before response token t sits at column P − 1 + t
                    self.critic.per_token_scores(ids[s : s + fb], mask[s : s + fb])[:, p - 1 : p - 1 + n_resp].float()
                    for s in range(0, ids.shape[0], fb)
                ]
            )  # (B, R)
        scored["values"] = values.detach().cpu()
        if self.values_from_scoring:
            scored["values_graph"] = values
        return scored

    # ------------------------------------------------------------------ one PPO step
    def step(self, prompts: Sequence[str]) -> dict[str, float]:
        """Rollout on ``prompts`` (exactly ``cfg.batch_size`` of them), then a PPO update."""
        cfg = self.cfg
        if len(prompts) != cfg.batch_size:
            raise ValueError(f"step needs batch_size={cfg.batch_size} prompts, got {len(prompts)}")
        t_start = time.perf_counter()

        # 1. rollout
        batch = self.rollout(prompts)
        t_rollout = time.perf_counter()
        b, r = batch.response_ids.shape
        mask = batch.response_mask.float()  # (B, R)

        # 2. score: policy / reference log-probs, values, task reward
        scored = self._score_rollouts(batch)
        old_logprobs, ref_logprobs, old_values = scored["logprobs"], scored["ref_logprobs"], scored["values"]
        reward, scores, score_rewards = self._task_scores(batch)  # (B,), (B, R)

        # 3. shaped per-token reward r_t = score_t − β·KL_t  (Ziegler et al. 2019, eq. 2)
        beta, kl_t, non_score_rewards = self._kl_penalty(old_logprobs, ref_logprobs, mask)  # (B, R); 0 with kl_penalty="loss"
        rewards = non_score_rewards + score_rewards
        old_values = old_values * mask

        # 4. GAE over response tokens; the episode ends at the last valid token
        dones = torch.zeros((b, r))
        dones[torch.arange(b), batch.last_index] = 1.0
        adv_t, ret_t = gae(
            rewards.T, old_values.T, torch.zeros(b), dones.T, cfg.gamma, cfg.gae_lambda
        )  # (R, B)
        advantages, returns = adv_t.T * mask, ret_t.T * mask  # (B, R)
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        t_score = time.perf_counter()

        # 5. epochs of clipped updates over minibatches
        release_free_memory()  # the sampler's KV cache and the scoring passes' logits, before the update's peak
        stats = self._update(
            batch, old_logprobs, old_values, advantages, returns, mask, ref_logprobs, beta, scored.pop("values_graph", None)
        )
        release_free_memory()  # hand the step's freed activations back to the OS (glibc heap)
        t_update = time.perf_counter()

        # 6. KL controller on the mean sequence-summed KL
        kl_seq = kl_t.sum(1)  # (B,)
        self.kl_controller.update(float(kl_seq.mean()), b)
        self.global_step += 1
        self.n_samples += b

        # 7. metrics
        non_score_seq = non_score_rewards.sum(1)
        metrics = {
            **self._instruments(batch, reward, scores, kl_t, mask, scored["entropy"]),
            "objective/non_score_reward": float(non_score_seq.mean()),
            "objective/rlhf_reward": float((scores + non_score_seq).mean()),
            "objective/kl_coef": beta,
            **stats,
            "val/explained_variance": explained_variance(old_values, returns, mask),
            "time/rollout_s": t_rollout - t_start,
            "time/score_s": t_score - t_rollout,
            "time/update_s": t_update - t_score,
            "time/step_s": t_update - t_start,
            "step": float(self.global_step),
        }
        return metrics

    def _update(
        self,
        batch: RolloutBatch,
        old_logprobs: torch.Tensor,
        old_values: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        mask: torch.Tensor,
        ref_logprobs: torch.Tensor,
        beta: float,
        values_graph: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Epochs of clipped policy and value updates (:func:`prefrl.rl.ppo.ppo_epochs`) over the batch.

        Policy and critic have their own optimisers, each clipped to ``max_grad_norm``; with
        ``kl_penalty="loss"`` the KL to the reference enters as ``extra_loss``. ``values_graph``
        (B, R): the scoring pass's values with their graph (:attr:`values_from_scoring`), read as
        V_new instead of a second critic forward.
        """
        cfg, dev = self.cfg, self.device
        ids, attn, p = batch.input_ids, batch.attention_mask, batch.n_query
        n_resp = ids.shape[1] - p
        b_mask, b_old_lp, b_ref_lp = mask.to(dev), old_logprobs.to(dev), ref_logprobs.to(dev)  # (B, R)
        self.last_minibatch_stats = []

        def evaluate(idx: torch.Tensor) -> MinibatchOutput:
            mb_ids, mb_attn, dev_idx = ids[idx].to(dev), attn[idx].to(dev), idx.to(dev)
            mb_mask = b_mask[dev_idx]
            new_lp, entropy = response_logprobs(
                self.policy, mb_ids, mb_attn, p, cfg.temperature, with_entropy=cfg.ent_coef > 0
            )  # (mb, R)
            if values_graph is not None:  # the one minibatch of the one epoch: the scoring pass's forward
                new_values = values_graph[dev_idx]
            else:  # value of the state before response token t sits at column P − 1 + t
                new_values = self.critic.per_token_scores(mb_ids, mb_attn)[:, p - 1 : p - 1 + n_resp].float()
            kl_loss = None
            if cfg.kl_penalty == "loss":
                kl_loss = beta * masked_mean(kl_estimate(new_lp, b_ref_lp[dev_idx], cfg.kl_estimator), mb_mask)
            # before this minibatch's update: the first entry shows ratio 1 when π_old = π_θ
            diag = ppo_diagnostics(new_lp, b_old_lp[dev_idx], cfg.clip_coef, mb_mask)
            self.last_minibatch_stats.append({k: float(v) for k, v in diag.items()})
            return MinibatchOutput(logprobs=new_lp, values=new_values, entropy=entropy, extra_loss=kl_loss)

        return ppo_epochs(
            evaluate,
            [self.policy_optimizer, self.critic_optimizer],
            b_old_lp,
            advantages.to(dev),
            old_values=old_values.to(dev),
            returns=returns.to(dev),
            mask=b_mask,
            norm_adv=False,  # advantages are whitened over the whole batch in step()
            generator=self.generator,
            **ppo_epoch_knobs(cfg),  # update_epochs, num_minibatches, clip_coef, clip_vloss, vf_coef, …
        )


# ---------------------------------------------------------------------- building and running


def run_ppo(cfg: PPORunConfig) -> dict[str, Any]:
    """``prefrl lm ppo``: build policy, reference, critic and reward model from paths, train, save.

    The reference is always the *starting* policy (``cfg.policy``), also when resuming;
    with LoRA it is the policy with its adapter disabled: a fresh adapter on ``cfg.policy``
    with any LoRA checkpoint there merged into the weights first. The critic starts from
    ``cfg.critic`` or, by default, from the reward model (InstructGPT).
    """
    from prefrl.lm.reward_model import RewardModel
    from prefrl.lm.rl_run import (
        check_resume,
        load_policy_and_reference,
        load_reward_prompts_gold,
        run_trainer,
    )

    require_single_process("prefrl lm ppo")
    resume = check_resume(cfg, ("train_top_layers", "lora_r", "policy"))
    policy, ref_policy, tokenizer = load_policy_and_reference(cfg, resume)
    critic = RewardModel.from_pretrained(resume / "critic" if resume else (cfg.critic or cfg.reward_model))
    if cfg.train_top_layers:
        freeze_all_but_top_layers(critic, cfg.train_top_layers)
    reward_fn, prompts, gold_fn = load_reward_prompts_gold(cfg, tokenizer)
    trainer = LMPPOTrainer(policy, ref_policy, critic, reward_fn, tokenizer, cfg, gold_fn=gold_fn)
    return run_trainer(trainer, cfg, prompts, resume)
