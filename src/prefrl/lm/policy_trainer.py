"""What every on-policy LM trainer shares: PPO (:mod:`prefrl.lm.ppo`) and the critic-free ones
(:mod:`prefrl.lm.critic_free`: GRPO, RLOO, REINFORCE++).

:class:`LMPolicyTrainer` holds the policy, its reference (a frozen copy, or a LoRA policy's
base with the adapter disabled), the reward and gold functions, the policy's optimiser, the KL
controller, the trainer's own generator and the counters; it samples rollouts, scores them
(policy and reference log-probs, entropy, task scores), computes the instruments every step logs
(KL per token and per sequence, degenerate outputs, gold vs proxy, the reward's own metrics), runs
the outer loop and writes resumable checkpoints (:mod:`prefrl.lm.ppo_checkpoint`). Subclasses
define :meth:`step`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from prefrl.diagnostics.degenerate import degenerate_report
from prefrl.diagnostics.kl_profile import kl_summary
from prefrl.diagnostics.overoptimisation import GoldProxyMonitor
from prefrl.lm.logprobs import grouped_response_logprobs
from prefrl.lm.models import is_peft
from prefrl.lm.ppo_checkpoint import load_ppo_checkpoint, save_ppo_checkpoint
from prefrl.lm.reward_functions import RewardFn, RewardResult, call_reward, place_rewards
from prefrl.lm.rl_config import LMRLConfig
from prefrl.lm.rollout import RolloutBatch, sample_responses
from prefrl.lm.training import make_adamw
from prefrl.losses import kl_estimate, masked_mean
from prefrl.rl.kl_control import make_kl_controller
from prefrl.utils.metrics import MetricsSink

__all__ = ["LMPolicyTrainer"]


class LMPolicyTrainer:
    """Base of the on-policy LM trainers (see the module docstring); subclasses define ``step``.

    ``cfg`` needs the fields of :class:`prefrl.lm.rl_config.LMSamplingConfig`; an
    :class:`~prefrl.lm.rl_config.LMRLConfig` also sets the KL controller.
    """

    #: Name in progress bars and logs.
    name = "rl"
    #: Adjacent rows of a rollout that share a prompt (k completions per prompt); their prompt is
    #: computed once in the scoring passes (:func:`prefrl.lm.logprobs.grouped_response_logprobs`).
    group_size = 1
    #: The JSON copy of the config in each checkpoint, beside ``trainer_state.pt``.
    config_file = "rl_config.json"
    #: Metrics the progress bar shows.
    #: Shown on the progress bar when present (gold and its transfer only with a gold reward).
    progress_postfix: tuple[str, ...] = (
        "objective/scores", "objective/kl", "policy/approx_kl", "response/length", "objective/gold", "objective/gold_transfer"
    )

    def __init__(
        self,
        policy: torch.nn.Module,
        ref_policy: torch.nn.Module | None,
        reward_fn: RewardFn,
        tokenizer: Any,
        cfg: Any,
        gold_fn: RewardFn | None = None,
    ) -> None:
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("tokenizer needs both an eos and a pad token (they may be the same)")
        self.cfg = cfg
        self.policy = policy
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
        # Dropout off: the ratio π_θ/π_old must be 1 before the first update (N+ details).
        self.policy.eval()
        self.device = next(policy.parameters()).device
        policy_params = [p for p in policy.parameters() if p.requires_grad]
        if not policy_params:
            raise ValueError("policy has no trainable parameters")
        # Adam = AdamW without weight decay; fused kernel where the device has one.
        self.policy_optimizer = make_adamw(policy_params, cfg.learning_rate, 0.0, eps=cfg.adam_eps)
        # β of the KL penalty (RL trainers); a trainer without one (online DPO) keeps a fixed 0
        self.kl_controller = (
            make_kl_controller(cfg.kl_control, cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
            if isinstance(cfg, LMRLConfig)
            else make_kl_controller("fixed", 0.0, 1.0)
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.global_step = 0
        self.n_samples = 0
        #: Per-minibatch statistics of the latest update, in order (for inspection and tests).
        self.last_minibatch_stats: list[dict[str, float]] = []
        self._sink: MetricsSink | None = None  # the progress bar's sink while :meth:`train` runs

    def bar_note(self, **fields: str) -> None:
        """Show ``fields`` on the progress bar now, within a step (a no-op outside :meth:`train`)."""
        if self._sink is not None:
            self._sink.note(**fields)

    def step(self, prompts: Sequence[str]) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ rollouts and scores
    @contextlib.contextmanager
    def _reference(self) -> Iterator[torch.nn.Module]:
        if self.ref_policy is not None:
            yield self.ref_policy
        else:  # LoRA: the base model is the reference
            with self.policy.disable_adapter():
                yield self.policy

    def rollout(self, prompts: Sequence[str], num_generations: int = 1) -> RolloutBatch:
        """Sample ``num_generations`` responses per prompt (adjacent rows) from the current policy."""
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
            num_generations=num_generations,
        )

    @torch.no_grad()
    def _score_policy(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """Policy log-probs + entropy and reference log-probs of a rollout, chunked, no grad.

        The policy's come from the sampler when it recorded them (plain sampling); otherwise
        from one forward pass of the policy. Chunks holding whole groups of ``group_size``
        completions of one prompt compute that prompt once.
        """
        ids, mask, p = batch.input_ids.to(self.device), batch.attention_mask.to(self.device), batch.n_query
        fb = self.cfg.forward_batch_size
        recorded = batch.logprobs is not None  # False for top-k / support-constrained sampling
        logprobs, entropy = ([batch.logprobs], [batch.entropy]) if recorded else ([], [])
        ref_logprobs = []
        for s in range(0, ids.shape[0], fb):
            mb_ids, mb_mask = ids[s : s + fb], mask[s : s + fb]
            k, temp = self.group_size, self.cfg.temperature
            if not recorded:
                lp, ent = grouped_response_logprobs(self.policy, mb_ids, mb_mask, p, k, temp, with_entropy=True)
                logprobs.append(lp)
                entropy.append(ent)
            with self._reference() as ref:
                ref_logprobs.append(grouped_response_logprobs(ref, mb_ids, mb_mask, p, k, temp)[0])
        return {
            "logprobs": torch.cat(logprobs).cpu(),  # (B, R)
            "entropy": torch.cat(entropy).cpu(),  # (B, R)
            "ref_logprobs": torch.cat(ref_logprobs).cpu(),  # (B, R)
        }

    def _kl_penalty(
        self, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor
    ) -> tuple[float, torch.Tensor, torch.Tensor]:
        """β, the per-token KL_t (B, R) of ``cfg.kl_estimator``, and the reward's share −β·KL_t.

        r_t = score_t − β·KL_t (Ziegler et al. 2019, eq. 2); with ``kl_penalty="loss"`` the KL acts
        in the policy loss instead, so the reward's share is 0.
        """
        beta = float(self.kl_controller.value)
        kl_t = kl_estimate(logprobs, ref_logprobs, self.cfg.kl_estimator) * mask  # (B, R)
        non_score = -beta * kl_t if self.cfg.kl_penalty == "reward" else torch.zeros_like(kl_t)
        return beta, kl_t, non_score

    def _task_scores(self, batch: RolloutBatch) -> tuple[RewardResult, torch.Tensor, torch.Tensor]:
        """The reward function's output, per-sequence scores (B,) and the per-token placement (B, R).

        Sequence scores are clipped to ±``score_clip``; a response without EOS loses
        ``missing_eos_penalty`` (on its last token).
        """
        cfg = self.cfg
        reward = call_reward(self.reward_fn, batch)
        reward_out = reward.rewards
        if isinstance(reward_out, torch.Tensor) and reward_out.dim() == 1 and cfg.score_clip is not None:
            reward_out = reward_out.clamp(-cfg.score_clip, cfg.score_clip)
        scores, score_rewards = place_rewards(reward_out, batch)  # (B,), (B, R)
        if cfg.missing_eos_penalty is not None:
            no_eos = ~batch.has_eos
            score_rewards[no_eos, batch.last_index[no_eos]] -= cfg.missing_eos_penalty
            scores = scores - cfg.missing_eos_penalty * no_eos.float()
        return reward, scores, score_rewards

    def _instruments(
        self,
        batch: RolloutBatch,
        reward: RewardResult,
        scores: torch.Tensor,
        kl_t: torch.Tensor,
        mask: torch.Tensor,
        entropy: torch.Tensor,
    ) -> dict[str, float]:
        """The metrics every trainer logs about its rollouts (after ``global_step`` moved on)."""
        return {
            "objective/scores": float(scores.mean()),
            **kl_summary(kl_t, mask),  # objective/kl (sequence sum), kl_token, kl_seq_max, kl_front_loaded
            "objective/entropy": float(masked_mean(entropy, mask)),
            "val/num_eos_tokens": float(batch.has_eos.sum()),
            "response/length": float(mask.sum(1).mean()),
            **degenerate_report(batch.responses, rewards=scores.tolist()),
            **reward.metrics,  # e.g. reward/ensemble_std: the heads' disagreement on the policy's own samples
            **self._gold_metrics(batch, scores, kl_t.sum(1)),
        }

    def _gold_metrics(self, batch: RolloutBatch, scores: torch.Tensor, kl_seq: torch.Tensor) -> dict[str, float]:
        out = {}
        if self.gold_fn is not None:
            gold_samples = torch.as_tensor(call_reward(self.gold_fn, batch).rewards, dtype=torch.float32)
            gold = float(gold_samples.mean())
            out["objective/gold"] = gold
            self.gold_monitor.record(
                self.global_step,
                proxy=float(scores.mean()),
                gold=gold,
                kl=float(kl_seq.mean()),
                **(
                    {"proxy_samples": scores.tolist(), "gold_samples": gold_samples.tolist()}
                    if gold_samples.shape == scores.shape  # one gold score per sequence
                    else {}
                ),
            )
            out.update(self.gold_monitor.metrics())  # slopes' t, gold transfer, diverging
        return out

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
        """Run steps until ``global_step == total_steps`` (so a resumed run continues).

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
            desc=self.name,
            initial=self.global_step,
            postfix=self.progress_postfix,
        )
        self._sink = sink
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
            self._sink = None
            sink.close()
        if checkpoint_dir is not None:
            self.save_checkpoint(checkpoint_dir, keep_checkpoints)
        return history

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: str | Path, keep_last: int = 3) -> Path:
        """Save a resumable checkpoint into run directory ``directory``, atomically, keeping the last
        ``keep_last`` (:func:`prefrl.lm.ppo_checkpoint.save_ppo_checkpoint`); returns its directory."""
        return save_ppo_checkpoint(self, directory, keep_last=keep_last)

    def extra_state(self) -> dict[str, Any]:
        """What a subclass adds to ``trainer_state.pt`` (restored by :meth:`load_extra_state`)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved (``state`` is the whole ``trainer_state.pt``)."""

    def load_checkpoint(self, directory: str | Path, load_models: bool = True) -> None:
        """Restore :meth:`save_checkpoint`'s checkpoint (:func:`prefrl.lm.ppo_checkpoint.load_ppo_checkpoint`)."""
        load_ppo_checkpoint(self, directory, load_models=load_models)
