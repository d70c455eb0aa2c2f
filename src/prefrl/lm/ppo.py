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

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from prefrl.diagnostics.degenerate import degenerate_report
from prefrl.diagnostics.kl_profile import kl_summary
from prefrl.diagnostics.overoptimisation import GoldProxyMonitor
from prefrl.lm.launch import require_single_process
from prefrl.lm.logprobs import response_logprobs
from prefrl.lm.models import freeze_all_but_top_layers, is_peft
from prefrl.lm.ppo_checkpoint import load_ppo_checkpoint, save_ppo_checkpoint
from prefrl.lm.ppo_config import LMPPOConfig, PPORunConfig
from prefrl.lm.reward_functions import RewardFn, call_reward, place_rewards
from prefrl.lm.rollout import RolloutBatch, sample_responses
from prefrl.lm.training import make_adamw, release_free_memory
from prefrl.losses import gae, kl_estimate, masked_mean, masked_whiten
from prefrl.rl.kl_control import make_kl_controller
from prefrl.rl.ppo import MinibatchOutput, explained_variance, ppo_diagnostics, ppo_epoch_knobs, ppo_epochs
from prefrl.utils.metrics import MetricsSink

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


class LMPPOTrainer:
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
        logged beside the proxy as ``objective/gold``; a :class:`GoldProxyMonitor` warns when the
        proxy rises while the gold falls (``objective/gold_proxy_diverging``)."""
        if not hasattr(critic, "per_token_scores"):
            raise ValueError("critic must provide per_token_scores(input_ids, attention_mask) -> (B, T)")
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("tokenizer needs both an eos and a pad token (they may be the same)")
        self.cfg = cfg
        self.policy = policy
        self.critic = critic
        self.reward_fn = reward_fn
        self.gold_fn = gold_fn
        self.gold_monitor = GoldProxyMonitor(window=10)
        self.tokenizer = tokenizer
        if ref_policy is None and not is_peft(policy):
            ref_policy = copy.deepcopy(policy)
        self.ref_policy = ref_policy
        if self.ref_policy is not None:
            self.ref_policy.eval().requires_grad_(False)
        elif cfg.support_constrained:
            raise ValueError("support_top_p/support_min_p need an explicit reference model (not a LoRA adapter's base)")
        # Dropout off everywhere: the ratio π_θ/π_old must be 1 before the first update (N+ details).
        self.policy.eval()
        self.critic.eval()
        self.device = next(policy.parameters()).device
        policy_params = [p for p in policy.parameters() if p.requires_grad]
        critic_params = [p for p in critic.parameters() if p.requires_grad]
        if not policy_params:
            raise ValueError("policy has no trainable parameters")
        if not critic_params:
            raise ValueError("critic has no trainable parameters")
        # Adam = AdamW without weight decay; fused kernel where the device has one.
        self.policy_optimizer = make_adamw(policy_params, cfg.learning_rate, 0.0, eps=cfg.adam_eps)
        self.critic_optimizer = make_adamw(critic_params, cfg.critic_lr, 0.0, eps=cfg.adam_eps)
        self.kl_controller = make_kl_controller(cfg.kl_control, cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.global_step = 0
        self.n_samples = 0
        #: Per-minibatch statistics of the latest update, in order (for inspection and tests).
        self.last_minibatch_stats: list[dict[str, float]] = []

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _reference(self) -> Iterator[torch.nn.Module]:
        if self.ref_policy is not None:
            yield self.ref_policy
        else:  # LoRA: the base model is the reference
            with self.policy.disable_adapter():
                yield self.policy

    @torch.no_grad()
    def _score_rollouts(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """Log-probs + entropy, reference log-probs and values, chunked, no grad.

        The policy's log-probs and entropy come from the sampler when it recorded them
        (plain sampling); otherwise from one forward pass of the policy.
        """
        ids, mask, p = batch.input_ids.to(self.device), batch.attention_mask.to(self.device), batch.n_query
        n_resp = ids.shape[1] - p
        fb = self.cfg.forward_batch_size
        recorded = batch.logprobs is not None  # False for top-k / support-constrained sampling
        logprobs, entropy = ([batch.logprobs], [batch.entropy]) if recorded else ([], [])
        ref_logprobs, values = [], []
        for s in range(0, ids.shape[0], fb):
            mb_ids, mb_mask = ids[s : s + fb], mask[s : s + fb]
            if not recorded:
                lp, ent = response_logprobs(
                    self.policy, mb_ids, mb_mask, p, self.cfg.temperature, with_entropy=True
                )
                logprobs.append(lp)
                entropy.append(ent)
            with self._reference() as ref:
                ref_logprobs.append(response_logprobs(ref, mb_ids, mb_mask, p, self.cfg.temperature)[0])
            # value of the state before response token t sits at column P − 1 + t
            values.append(self.critic.per_token_scores(mb_ids, mb_mask)[:, p - 1 : p - 1 + n_resp].float())
        return {
            "logprobs": torch.cat(logprobs).cpu(),  # (B, R)
            "entropy": torch.cat(entropy).cpu(),  # (B, R)
            "ref_logprobs": torch.cat(ref_logprobs).cpu(),  # (B, R)
            "values": torch.cat(values).cpu(),  # (B, R)
        }

    def rollout(self, prompts: Sequence[str]) -> RolloutBatch:
        """Sample one response per prompt from the current policy."""
        return sample_responses(
            self.policy,
            self.tokenizer,
            prompts,
            max_new_tokens=self.cfg.max_new_tokens,
            temperature=self.cfg.temperature,
            top_k=self.cfg.top_k,
            max_prompt_length=self.cfg.max_prompt_length,
            generator=self.generator,
            support_ref=self.ref_policy if self.cfg.support_constrained else None,
            support_top_p=self.cfg.support_top_p,
            support_min_p=self.cfg.support_min_p,
        )

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
        reward = call_reward(self.reward_fn, batch)
        reward_out = reward.rewards
        if isinstance(reward_out, torch.Tensor) and reward_out.dim() == 1 and cfg.score_clip is not None:
            reward_out = reward_out.clamp(-cfg.score_clip, cfg.score_clip)
        scores, score_rewards = place_rewards(reward_out, batch)  # (B,), (B, R)
        if cfg.missing_eos_penalty is not None:
            no_eos = ~batch.has_eos
            score_rewards[no_eos, batch.last_index[no_eos]] -= cfg.missing_eos_penalty
            scores = scores - cfg.missing_eos_penalty * no_eos.float()

        # 3. shaped per-token reward r_t = score_t − β·KL_t  (Ziegler et al. 2019, eq. 2)
        beta = float(self.kl_controller.value)
        kl_t = kl_estimate(old_logprobs, ref_logprobs, cfg.kl_estimator) * mask  # (B, R)
        # With kl_penalty="loss" the KL acts in the policy loss instead (see _update), not in the reward.
        non_score_rewards = -beta * kl_t if cfg.kl_penalty == "reward" else torch.zeros_like(kl_t)
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
        stats = self._update(batch, old_logprobs, old_values, advantages, returns, mask, ref_logprobs, beta)
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
            "objective/scores": float(scores.mean()),
            **kl_summary(kl_t, mask),  # objective/kl (sequence sum), kl_token, kl_seq_max, kl_front_loaded
            "objective/entropy": float(masked_mean(scored["entropy"], mask)),
            "objective/non_score_reward": float(non_score_seq.mean()),
            "objective/rlhf_reward": float((scores + non_score_seq).mean()),
            "objective/kl_coef": beta,
            **stats,
            "val/explained_variance": explained_variance(old_values, returns, mask),
            "val/num_eos_tokens": float(batch.has_eos.sum()),
            "response/length": float(mask.sum(1).mean()),
            **degenerate_report(batch.responses, rewards=scores.tolist()),
            **reward.metrics,  # e.g. reward/ensemble_std: the heads' disagreement on the policy's own samples
            **self._gold_metrics(batch, scores, kl_seq),
            "time/rollout_s": t_rollout - t_start,
            "time/score_s": t_score - t_rollout,
            "time/update_s": t_update - t_score,
            "time/step_s": t_update - t_start,
            "step": float(self.global_step),
        }
        return metrics

    def _gold_metrics(self, batch: RolloutBatch, scores: torch.Tensor, kl_seq: torch.Tensor) -> dict[str, float]:
        out = {}
        if self.gold_fn is not None:
            gold_rewards = call_reward(self.gold_fn, batch).rewards
            gold = float(torch.as_tensor(gold_rewards, dtype=torch.float32).mean())
            out["objective/gold"] = gold
            diverging = self.gold_monitor.record(
                self.global_step, proxy=float(scores.mean()), gold=gold, kl=float(kl_seq.mean())
            )
            out["objective/gold_proxy_diverging"] = float(diverging)
        return out

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
    ) -> dict[str, float]:
        """Epochs of clipped policy and value updates (:func:`prefrl.rl.ppo.ppo_epochs`) over the batch.

        Policy and critic have their own optimisers, each clipped to ``max_grad_norm``; with
        ``kl_penalty="loss"`` the KL to the reference enters as ``extra_loss``.
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
            # value of the state before response token t sits at column P − 1 + t
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

    # ------------------------------------------------------------------ outer loop
    def sample_prompts(self, prompts: Sequence[str]) -> list[str]:
        """``batch_size`` prompts drawn without replacement (with replacement if too few)."""
        n = len(prompts)
        if n == 0:
            raise ValueError("prompts is empty")
        if n >= self.cfg.batch_size:
            idx = torch.randperm(n, generator=self.generator)[: self.cfg.batch_size]
        else:
            idx = torch.randint(0, n, (self.cfg.batch_size,), generator=self.generator)
        return [prompts[int(i)] for i in idx]

    def train(
        self,
        prompts: Sequence[str],
        total_steps: int,
        *,
        log_path: str | Path | None = None,
        checkpoint_dir: str | Path | None = None,
        save_every: int = 0,
        callback: Callable[[dict[str, float]], None] | None = None,
        stop: Callable[[dict[str, float]], bool] | None = None,
        tensorboard_dir: str | Path | None = None,
        progress: bool = True,
        keep_checkpoints: int = 3,
    ) -> list[dict[str, float]]:
        """Run PPO steps until ``global_step == total_steps`` (so a resumed run continues).

        Each step's metrics go to ``callback`` (which may add entries), then to one
        :class:`~prefrl.utils.metrics.MetricsSink` (JSONL ``log_path``, TensorBoard, progress
        bar); ``stop(metrics)`` returning True ends the run after that step. Every
        ``save_every`` steps and at the end a checkpoint is written to ``checkpoint_dir``
        (atomically; the last ``keep_checkpoints`` are kept).
        Returns the metrics of the steps run.
        """
        if total_steps < 0:
            raise ValueError(f"total_steps must be ≥ 0, got {total_steps}")
        if save_every < 0:
            raise ValueError(f"save_every must be ≥ 0, got {save_every}")
        history: list[dict[str, float]] = []
        sink = MetricsSink(
            tensorboard_dir,
            log_path,
            total=total_steps if progress else None,
            desc="ppo",
            initial=self.global_step,
            postfix=("objective/scores", "objective/kl", "policy/approx_kl", "response/length"),
        )
        try:
            while self.global_step < total_steps:
                metrics = self.step(self.sample_prompts(prompts))
                if callback is not None:
                    callback(metrics)  # may add entries (e.g. a gold score) before the metrics are logged
                sink.log(metrics, self.global_step)
                history.append(metrics)
                if stop is not None and stop(metrics):
                    break
                if checkpoint_dir is not None and save_every and self.global_step % save_every == 0:
                    self.save_checkpoint(checkpoint_dir, keep_checkpoints)
        finally:
            sink.close()
        if checkpoint_dir is not None:
            self.save_checkpoint(checkpoint_dir, keep_checkpoints)
        return history

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: str | Path, keep_last: int = 3) -> Path:
        """Save a resumable checkpoint into run directory ``directory``, atomically, keeping the last
        ``keep_last`` (:func:`prefrl.lm.ppo_checkpoint.save_ppo_checkpoint`); returns its directory."""
        return save_ppo_checkpoint(self, directory, keep_last=keep_last)

    def load_checkpoint(self, directory: str | Path, load_models: bool = True) -> None:
        """Restore :meth:`save_checkpoint`'s checkpoint (:func:`prefrl.lm.ppo_checkpoint.load_ppo_checkpoint`)."""
        load_ppo_checkpoint(self, directory, load_models=load_models)


# ---------------------------------------------------------------------- building and running


def run_ppo(cfg: PPORunConfig) -> dict[str, Any]:
    """``prefrl lm ppo``: build policy, reference, critic and reward model from paths, train, save.

    The reference is always the *starting* policy (``cfg.policy``), also when resuming;
    with LoRA it is the policy with its adapter disabled: a fresh adapter on ``cfg.policy``
    with any LoRA checkpoint there merged into the weights first. The critic starts from
    ``cfg.critic`` or, by default, from the reward model (InstructGPT).
    """
    from prefrl.lm.data import load_prompts
    from prefrl.lm.models import LoraSpec, load_causal_lm
    from prefrl.lm.reward_functions import RewardModelScorer, gold_reward
    from prefrl.lm.reward_model import RewardModel

    require_single_process("prefrl lm ppo")
    out = Path(cfg.output_dir)
    resume = Path(cfg.resume) if cfg.resume else None
    if resume is not None:
        saved = torch.load(resume / "trainer_state.pt", map_location="cpu", weights_only=False)["config"]
        for key in ("train_top_layers", "lora_r", "policy"):
            if key in saved and saved[key] != getattr(cfg, key):
                raise ValueError(
                    f"resume: the checkpoint was trained with {key}={saved[key]!r}, not {getattr(cfg, key)!r}"
                )
    lora = LoraSpec(cfg.lora_r, cfg.lora_alpha, 0.0) if cfg.lora_r and resume is None else None
    if resume is not None:  # the run's own weights (a LoRA adapter stays trainable)
        policy, tokenizer = load_causal_lm(resume / "policy", padding_side="left")
    else:  # a LoRA checkpoint is merged first, so "adapter disabled" is this policy (#12)
        policy, tokenizer = load_causal_lm(cfg.policy, lora=lora, padding_side="left", seed=cfg.seed, merge_adapter=True)
    is_lora = is_peft(policy)
    ref_policy = None if is_lora else load_causal_lm(cfg.policy, merge_adapter=True)[0]
    critic = RewardModel.from_pretrained(resume / "critic" if resume else (cfg.critic or cfg.reward_model))
    reward_model = RewardModel.from_pretrained(cfg.reward_model, trainable=False)
    reward_fn = RewardModelScorer(reward_model, RewardModel.load_tokenizer(cfg.reward_model))
    if cfg.train_top_layers:
        if not is_lora:
            freeze_all_but_top_layers(policy, cfg.train_top_layers)
        freeze_all_but_top_layers(critic, cfg.train_top_layers)
    prompts = [p.prompt for p in load_prompts(cfg.prompts, tokenizer)]
    if cfg.max_prompts:
        prompts = prompts[: cfg.max_prompts]
    trainer = LMPPOTrainer(policy, ref_policy, critic, reward_fn, tokenizer, cfg, gold_fn=gold_reward(cfg.gold))
    if resume is not None:
        trainer.load_checkpoint(resume, load_models=False)
    out.mkdir(parents=True, exist_ok=True)
    t0, step0 = time.perf_counter(), trainer.global_step
    history = trainer.train(
        prompts,
        cfg.total_steps,
        log_path=out / "metrics.jsonl",
        tensorboard_dir=out / "tensorboard",
        checkpoint_dir=out,
        save_every=cfg.save_every,
        keep_checkpoints=cfg.keep_checkpoints,
    )
    elapsed = time.perf_counter() - t0
    return {
        "output_dir": str(out),
        "global_step": trainer.global_step,
        "steps_per_s": (trainer.global_step - step0) / elapsed if elapsed > 0 else float("nan"),
        "history": history,
    }
