"""PPO for language models with four roles (InstructGPT; Ziegler et al. 2019).

- **policy** π_θ: the causal LM being trained (full fine-tuning or a LoRA adapter);
- **reference** π_ref: the frozen SFT model; with LoRA it is the same network with the
  adapter disabled, so no second copy is held;
- **critic** V_φ: a reward-model-shaped network (``per_token_scores``) initialised from the
  trained reward model and read per token;
- **reward**: any :class:`prefrl.lm.rewards.RewardFn` — a frozen reward model, a gold scorer,
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
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from prefrl.diagnostics.degenerate import degenerate_report
from prefrl.diagnostics.kl import kl_summary
from prefrl.diagnostics.overoptimisation import GoldProxyMonitor
from prefrl.lm.common import make_adamw, release_free_memory
from prefrl.lm.generation import RolloutBatch, response_logprobs, sample_responses
from prefrl.lm.models import freeze_all_but_top_layers
from prefrl.lm.ppo_config import LMPPOConfig, PPORunConfig
from prefrl.lm.rewards import RewardFn, place_rewards
from prefrl.losses import clipped_surrogate_loss, clipped_value_loss, gae, kl_estimate
from prefrl.rl.kl import make_kl_controller

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


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def _masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = _masked_mean(x, mask)
    var = _masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


class LMPPOTrainer:
    """PPO-RLHF trainer for a causal LM.

    Args:
        policy: the causal LM to train (a ``PreTrainedModel`` or a PEFT model).
        ref_policy: the frozen reference. ``None`` with a LoRA (PEFT) policy means "the
            policy with its adapter disabled"; ``None`` with a plain policy makes a frozen
            copy of the policy as it is now.
        critic: value network with ``per_token_scores(input_ids, attention_mask) -> (B, T)``,
            normally a ``prefrl.lm.reward_model.RewardModel`` initialised from the trained RM.
        reward_fn: scores rollouts per sequence, token or span (see ``prefrl.lm.rewards``).
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
        if ref_policy is None and not _is_peft(policy):
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
        reward_out = self.reward_fn(batch)
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
            advantages = _masked_whiten(advantages, mask)
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
        valid_returns = returns[mask.bool()]
        valid_values = old_values[mask.bool()]
        var_ret = torch.var(valid_returns) if valid_returns.numel() > 1 else torch.tensor(0.0)
        explained_var = (
            float(1.0 - torch.var(valid_returns - valid_values) / var_ret) if var_ret > 0 else float("nan")
        )
        non_score_seq = non_score_rewards.sum(1)
        metrics = {
            "objective/scores": float(scores.mean()),
            **kl_summary(kl_t, mask),  # objective/kl (sequence sum), kl_token, kl_seq_max, kl_front_loaded
            "objective/entropy": float(_masked_mean(scored["entropy"], mask)),
            "objective/non_score_reward": float(non_score_seq.mean()),
            "objective/rlhf_reward": float((scores + non_score_seq).mean()),
            "objective/kl_coef": beta,
            **stats,
            "val/explained_variance": explained_var,
            "val/num_eos_tokens": float(batch.has_eos.sum()),
            "response/length": float(mask.sum(1).mean()),
            **degenerate_report(batch.responses, rewards=scores.tolist()),
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
        spread = getattr(self.reward_fn, "last_disagreement", None)
        if spread is not None:
            out["reward/ensemble_std"] = float(spread.mean())  # disagreement on the policy's own samples
        if self.gold_fn is not None:
            gold = float(torch.as_tensor(self.gold_fn(batch), dtype=torch.float32).mean())
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
        cfg = self.cfg
        dev = self.device
        ids, attn, p = batch.input_ids, batch.attention_mask, batch.n_query
        n_resp = ids.shape[1] - p
        self.last_minibatch_stats = []
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(cfg.batch_size, generator=self.generator)
            for k in range(cfg.n_minibatches):
                idx = perm[k * cfg.mini_batch_size : (k + 1) * cfg.mini_batch_size]
                mb_ids, mb_attn = ids[idx].to(dev), attn[idx].to(dev)
                mb_mask = mask[idx].to(dev)
                mb_old_lp = old_logprobs[idx].to(dev)
                new_lp, _ = response_logprobs(self.policy, mb_ids, mb_attn, p, cfg.temperature)  # (mb, R)
                new_values = self.critic.per_token_scores(mb_ids, mb_attn)[:, p - 1 : p - 1 + n_resp].float()
                pg_loss = clipped_surrogate_loss(
                    new_lp, mb_old_lp, advantages[idx].to(dev), cfg.clip_coef, mb_mask
                )
                vf_loss = clipped_value_loss(
                    new_values, old_values[idx].to(dev), returns[idx].to(dev), cfg.value_clip_coef, mb_mask
                )
                loss = pg_loss + cfg.vf_coef * vf_loss
                if cfg.kl_penalty == "loss":
                    kl_loss = _masked_mean(kl_estimate(new_lp, ref_logprobs[idx].to(dev), cfg.kl_estimator), mb_mask)
                    loss = loss + beta * kl_loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    self.policy_optimizer.param_groups[0]["params"], cfg.max_grad_norm
                )
                torch.nn.utils.clip_grad_norm_(
                    self.critic_optimizer.param_groups[0]["params"], cfg.max_grad_norm
                )
                self.policy_optimizer.step()
                self.critic_optimizer.step()
                # Free the gradients now, not before the next backward: they would otherwise sit
                # in memory next to the next minibatch's activations.
                self.policy_optimizer.zero_grad(set_to_none=True)
                self.critic_optimizer.zero_grad(set_to_none=True)
                with torch.no_grad():
                    log_ratio = (new_lp - mb_old_lp) * mb_mask
                    self.last_minibatch_stats.append(
                        {
                            "policy/approx_kl": float(_masked_mean(0.5 * log_ratio**2, mb_mask)),
                            "policy/clipfrac": float(
                                _masked_mean(((log_ratio.exp() - 1.0).abs() > cfg.clip_coef).float(), mb_mask)
                            ),
                            "loss/policy": float(pg_loss),
                            "loss/value": float(vf_loss),
                        }
                    )
        n = len(self.last_minibatch_stats)
        return {
            key: sum(s[key] for s in self.last_minibatch_stats) / n for key in self.last_minibatch_stats[0]
        }

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
        tensorboard_dir: str | Path | None = None,
    ) -> list[dict[str, float]]:
        """Run PPO steps until ``global_step == total_steps`` (so a resumed run continues).

        Metrics of each step are passed to ``callback`` (which may add entries), then appended
        to ``log_path`` (JSONL);
        every ``save_every`` steps and at the end a checkpoint is written to ``checkpoint_dir``.
        """
        if total_steps < 0:
            raise ValueError(f"total_steps must be ≥ 0, got {total_steps}")
        if save_every < 0:
            raise ValueError(f"save_every must be ≥ 0, got {save_every}")
        history = []
        writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(tensorboard_dir))
        while self.global_step < total_steps:
            metrics = self.step(self.sample_prompts(prompts))
            history.append(metrics)
            if callback is not None:
                callback(metrics)  # may add entries (e.g. a gold score) before the metrics are logged
            if writer is not None:
                for key, value in metrics.items():
                    if key != "step" and math.isfinite(value):
                        writer.add_scalar(key, value, self.global_step)
                writer.flush()
            if log_path is not None:
                Path(log_path).parent.mkdir(parents=True, exist_ok=True)
                with open(log_path, "a") as f:
                    f.write(
                        json.dumps({k: (None if math.isnan(v) else v) for k, v in metrics.items()}) + "\n"
                    )
            if checkpoint_dir is not None and save_every and self.global_step % save_every == 0:
                self.save_checkpoint(checkpoint_dir)
        if checkpoint_dir is not None:
            self.save_checkpoint(checkpoint_dir)
        if writer is not None:
            writer.close()
        return history

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: str | Path) -> Path:
        """Write ``policy/`` (HF format + tokenizer), ``critic/`` and ``trainer_state.pt``.

        The policy directory loads with ``AutoModelForCausalLM.from_pretrained`` (or, for a
        LoRA policy, ``PeftModel.from_pretrained`` on the base); ``trainer_state.pt`` holds
        both optimisers, the KL controller, the counters and the RNG state.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(directory / "policy")
        self.tokenizer.save_pretrained(directory / "policy")
        if hasattr(self.critic, "save_pretrained"):
            self.critic.save_pretrained(directory / "critic")
        else:
            (directory / "critic").mkdir(exist_ok=True)
            torch.save(self.critic.state_dict(), directory / "critic" / "critic.pt")
        state = {
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "kl_controller": dict(vars(self.kl_controller)),
            "global_step": self.global_step,
            "n_samples": self.n_samples,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "config": self.cfg.to_dict(),
        }
        tmp = directory / "trainer_state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(directory / "trainer_state.pt")
        (directory / "ppo_config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        return directory

    def load_checkpoint(self, directory: str | Path, load_models: bool = True) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`.

        With ``load_models=False`` only the optimisers, KL controller, counters and RNG are
        restored (when the caller already built the policy and critic from the checkpoint's
        ``policy/`` and ``critic/`` directories).
        """
        directory = Path(directory)
        state_path = directory / "trainer_state.pt"
        if not state_path.is_file():
            raise FileNotFoundError(f"no trainer_state.pt in {directory}")
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if load_models:
            self._load_policy_weights(directory / "policy")
            self._load_critic_weights(directory / "critic")
        try:
            self.policy_optimizer.load_state_dict(state["policy_optimizer"])
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        except ValueError as exc:
            raise ValueError(
                f"{state_path}: the optimiser state does not fit this trainer's trainable parameters "
                "(resume with the same LoRA / train_top_layers settings as the saved run)"
            ) from exc
        for key, value in state["kl_controller"].items():
            setattr(self.kl_controller, key, value)
        self.global_step = int(state["global_step"])
        self.n_samples = int(state["n_samples"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

    def _load_policy_weights(self, path: Path) -> None:
        if _is_peft(self.policy):
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(self.policy, load_file(str(path / "adapter_model.safetensors")))
            return
        loaded = type(self.policy).from_pretrained(path, dtype=next(self.policy.parameters()).dtype)
        self.policy.load_state_dict(loaded.state_dict())

    def _load_critic_weights(self, path: Path) -> None:
        if (path / "critic.pt").is_file():
            self.critic.load_state_dict(torch.load(path / "critic.pt", map_location="cpu"))
            return
        loaded = type(self.critic).from_pretrained(path)
        self.critic.load_state_dict(loaded.state_dict())


# ---------------------------------------------------------------------- building and running


def run_ppo(cfg: PPORunConfig) -> dict[str, Any]:
    """``prefrl lm ppo``: build policy, reference, critic and reward model from paths, train, save.

    The reference is always the *starting* policy (``cfg.policy``), also when resuming;
    with LoRA it is the policy with its adapter disabled. The critic starts from
    ``cfg.critic`` or, by default, from the reward model (InstructGPT).
    """
    from prefrl.lm.data import load_prompts
    from prefrl.lm.models import LoraSpec, load_causal_lm
    from prefrl.lm.reward_model import RewardModel
    from prefrl.lm.rewards import RewardModelScorer

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
    policy, tokenizer = load_causal_lm(
        resume / "policy" if resume else cfg.policy, lora=lora, padding_side="left"
    )
    is_lora = _is_peft(policy)
    ref_policy = None if is_lora else load_causal_lm(cfg.policy)[0]
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
    trainer = LMPPOTrainer(policy, ref_policy, critic, reward_fn, tokenizer, cfg)
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
    )
    elapsed = time.perf_counter() - t0
    return {
        "output_dir": str(out),
        "global_step": trainer.global_step,
        "steps_per_s": (trainer.global_step - step0) / elapsed if elapsed > 0 else float("nan"),
        "history": history,
    }
