"""The one PPO update of prefrl (Schulman et al. 2017), shared by control agents and language models.

:func:`ppo_epochs` runs ``update_epochs`` passes of ``num_minibatches`` shuffled minibatches over
any batch of B rows: per-step control samples (tensors of shape (B,)) or per-token LM responses
(tensors of shape (B, T) with a 0/1 ``mask`` of valid tokens). For each minibatch it asks the
caller's ``evaluate(idx)`` for the new log-probs (and values, entropy, any extra loss term), then
applies the clipped surrogate, the (optionally clipped) value loss, the entropy bonus, global
gradient-norm clipping per optimiser, and the optimiser steps. :func:`ppo_diagnostics` is the one
place approx-KL (k3) and the clip fraction are computed; :func:`explained_variance` the one place
for the critic's explained variance. The losses themselves live in :mod:`prefrl.losses`.

The control agent calls :func:`ppo_update` (cleanrl's ``get_action_and_value`` interface over a
:class:`RolloutBuffer`); the LM trainers call :func:`ppo_epochs` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from prefrl.losses import clipped_surrogate_loss, clipped_value_loss, gae, kl_estimate, masked_mean
from prefrl.rl.ppo_config import PPOConfig

__all__ = [
    "PPOConfig",
    "RolloutBuffer",
    "ActorCriticPolicy",
    "MinibatchOutput",
    "ppo_epochs",
    "ppo_epoch_knobs",
    "minibatch_permutation",
    "ppo_update",
    "ppo_diagnostics",
    "explained_variance",
]


class ActorCriticPolicy(Protocol):
    """What :func:`ppo_update` needs of a policy (cleanrl's interface)."""

    def get_action_and_value(
        self, obs: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def parameters(self): ...  # noqa: ANN201 - torch.nn.Module.parameters


@dataclass
class RolloutBuffer:
    """A flattened rollout (B = T·N samples) with its advantages, ready for :func:`ppo_update`.

    Attributes:
        obs: (B, *obs_shape) policy inputs (already normalised).
        actions: (B, *act_shape) actions as sampled by the policy (unclipped for Box spaces).
        logprobs: (B,) log π_old(a|s).
        values: (B,) V_old(s).
        advantages: (B,) GAE advantages.
        returns: (B,) λ-returns, advantages + values (the value target).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def __post_init__(self) -> None:
        b = self.obs.shape[0]
        for name in ("actions", "logprobs", "values", "advantages", "returns"):
            t = getattr(self, name)
            if t.shape[0] != b:
                raise ValueError(f"{name} has {t.shape[0]} samples but obs has {b}")
        for name in ("logprobs", "values", "advantages", "returns"):
            if getattr(self, name).dim() != 1:
                raise ValueError(f"{name} must be (B,), got shape {tuple(getattr(self, name).shape)}")

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @classmethod
    def from_rollout(
        cls,
        obs: torch.Tensor,
        actions: torch.Tensor,
        logprobs: torch.Tensor,
        values: torch.Tensor,
        rewards: torch.Tensor,
        dones: torch.Tensor,
        last_values: torch.Tensor,
        gamma: float,
        gae_lambda: float,
    ) -> RolloutBuffer:
        """GAE over time-major (T, N, …) arrays, then flatten to (T·N, …).

        ``dones[t]`` marks that the episode ended at step t (terminated *or* truncated); a
        truncated step's bootstrap γ·V(s_final) must already be folded into ``rewards[t]``.
        """
        if rewards.dim() != 2:
            raise ValueError(f"rewards must be (T, N), got shape {tuple(rewards.shape)}")
        t, n = rewards.shape
        if obs.shape[:2] != (t, n) or actions.shape[:2] != (t, n):
            raise ValueError(
                f"obs {tuple(obs.shape)} and actions {tuple(actions.shape)} must start with (T, N) = {(t, n)}"
            )
        with torch.no_grad():
            advantages, returns = gae(rewards, values, last_values, dones, gamma, gae_lambda)  # (T, N)
        return cls(
            obs=obs.reshape(t * n, *obs.shape[2:]),
            actions=actions.reshape(t * n, *actions.shape[2:]),
            logprobs=logprobs.reshape(-1),
            values=values.reshape(-1),
            advantages=advantages.reshape(-1),
            returns=returns.reshape(-1),
        )


def explained_variance(
    y_pred: torch.Tensor, y_true: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """1 − Var[y − ŷ] / Var[y] over the valid entries (unbiased variances); NaN when Var[y] = 0.

    ``mask`` (0/1, the shape of ``y_true``) selects valid entries, e.g. LM response tokens.
    """
    if mask is not None:
        keep = mask.bool()
        y_pred, y_true = y_pred[keep], y_true[keep]
    if y_true.numel() < 2:
        return float("nan")
    var_y = torch.var(y_true)
    if var_y.item() == 0:
        return float("nan")
    return float(1.0 - torch.var(y_true - y_pred) / var_y)


def ppo_diagnostics(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    clip_coef: float,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``policy/approx_kl`` and ``policy/clipfrac`` of one minibatch (0-dim tensors, no grad).

    approx_kl is Schulman (2020)'s k3 estimator (r − 1) − log r of KL(π_old ‖ π_new), r = π_new/π_old,
    unbiased and non-negative; clipfrac the fraction of valid entries with |r − 1| > clip_coef.
    """
    with torch.no_grad():
        new_lp = new_logprobs.detach()
        approx_kl = masked_mean(kl_estimate(old_logprobs, new_lp, "k3"), mask)
        clipped = ((new_lp - old_logprobs).exp().sub_(1.0).abs_() > clip_coef).to(new_lp.dtype)
        return {"policy/approx_kl": approx_kl, "policy/clipfrac": masked_mean(clipped, mask)}


@dataclass
class MinibatchOutput:
    """What the caller's ``evaluate(idx)`` returns for the rows ``idx`` of a PPO batch.

    Attributes:
        logprobs: log π_new of the taken actions, shaped like the batch's ``old_logprobs[idx]``.
        values: V_new, same shape (None for a critic-free method).
        entropy: per-entry policy entropy for the bonus (None: no bonus).
        extra_loss: a scalar added to the loss as is (e.g. a KL-to-reference penalty).
    """

    logprobs: torch.Tensor
    values: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    extra_loss: torch.Tensor | None = None


def _clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Global-norm gradient clipping in two fused calls (same maths as ``clip_grad_norm_``)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef.to(grads[0].device))
    return total


def _minibatch_normalise(a: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero mean, unit (unbiased) std over a minibatch's valid entries (cleanrl's ``norm_adv``)."""
    if mask is None:
        return (a - a.mean()) / (a.std() + 1e-8)
    m = mask.to(a.dtype)
    n = m.sum()
    mean = (a * m).sum() / n.clamp(min=1.0)
    var = (((a - mean) ** 2) * m).sum() / (n - 1).clamp(min=1.0)
    return (a - mean) / (var.sqrt() + 1e-8) * m


def ppo_epochs(
    evaluate: Callable[[torch.Tensor], MinibatchOutput],
    optimizers: Sequence[torch.optim.Optimizer],
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    old_values: torch.Tensor | None = None,
    returns: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    update_epochs: int,
    num_minibatches: int,
    clip_coef: float,
    clip_vloss: float | None = None,
    vf_coef: float = 0.5,
    ent_coef: float = 0.0,
    max_grad_norm: float = 0.5,
    norm_adv: bool = False,
    target_kl: float | None = None,
    generator: torch.Generator | None = None,
    policy_loss: Callable[..., torch.Tensor] = clipped_surrogate_loss,
    group_size: int = 1,
) -> dict[str, float]:
    """``update_epochs`` epochs of minibatch PPO over a batch of B rows; return the diagnostics.

    Each epoch draws one permutation of the B rows and cuts it into ``num_minibatches`` slices
    of ⌊B / num_minibatches⌋ rows (the remainder sits the epoch out). With ``group_size`` = k > 1
    (rows in adjacent groups of k, e.g. the k completions of one prompt) and a minibatch size
    that is a multiple of k, the permutation is one of whole groups, so that no minibatch splits
    a group (the LM trainers then compute each group's shared prompt once). Per minibatch:

        L = L_clip(ρ, Â) + vf_coef · L_V − ent_coef · H + extra_loss,   ρ = π_new / π_old

    with Â normalised over the minibatch when ``norm_adv``, the means over valid entries of
    ``mask``; then per optimiser: clip its gradients to ``max_grad_norm`` (global norm), step,
    and free them. With ``target_kl`` the epochs stop once an epoch's mean approx-KL exceeds it.

    Args:
        evaluate: ``evaluate(idx) -> MinibatchOutput`` for the rows ``idx`` ((mb,) long tensor on
            the CPU); it moves what it needs to its device and runs the forward passes.
        optimizers: one per trained model (their parameters are clipped separately).
        old_logprobs: (B,) or (B, T) log π_old; ``advantages``, ``old_values``, ``returns`` and
            ``mask`` have the same shape. Their device is that of ``evaluate``'s outputs.
        old_values, returns: needed when ``evaluate`` returns values (the critic's loss).
        mask: 0/1 validity of each entry (None: all valid).
        clip_vloss: clip of the value change around ``old_values`` (None: unclipped value loss).
        generator: RNG of the permutations (explicit, for reproducibility).
        policy_loss: ``policy_loss(logprobs, old_logprobs, advantages, clip_coef, mask)`` → scalar;
            the token-mean clipped surrogate by default (critic-free LM trainers pass one with
            another loss aggregation, :func:`prefrl.losses.aggregate_token_loss`).

    Returns:
        Means over the last epoch's minibatches of ``loss/policy``, ``loss/value`` (when a
        critic is trained), ``loss/entropy`` (when ``evaluate`` returns entropy),
        ``policy/approx_kl`` and ``policy/clipfrac`` (:func:`ppo_diagnostics`), plus
        ``policy/epochs`` (epochs run).
    """
    b = int(old_logprobs.shape[0])
    if b < num_minibatches:
        raise ValueError(f"batch has {b} rows, fewer than num_minibatches = {num_minibatches}")
    if advantages.shape != old_logprobs.shape:
        raise ValueError(f"advantages {tuple(advantages.shape)} must match old_logprobs {tuple(old_logprobs.shape)}")
    mb_size = b // num_minibatches
    n_used = mb_size * num_minibatches
    param_groups = [[p for g in opt.param_groups for p in g["params"]] for opt in optimizers]
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)

    stats: dict[str, list[torch.Tensor]] = {}
    epochs_run = 0
    for epoch in range(update_epochs):
        stats = {}
        perm = minibatch_permutation(b, mb_size, group_size, generator)[:n_used]
        # The diagnostics are reported for the last epoch (and needed every epoch for target_kl).
        track = target_kl is not None or epoch == update_epochs - 1
        for start in range(0, n_used, mb_size):
            idx = perm[start : start + mb_size]
            dev_idx = idx.to(old_logprobs.device)
            mb_mask = None if mask is None else mask[dev_idx]
            mb_old_lp = old_logprobs[dev_idx]
            mb_adv = advantages[dev_idx]
            if norm_adv and mb_size > 1:
                mb_adv = _minibatch_normalise(mb_adv, mb_mask)
            out = evaluate(idx)
            pg_loss = policy_loss(out.logprobs, mb_old_lp, mb_adv, clip_coef, mb_mask)
            loss = pg_loss
            v_loss = None
            if out.values is not None:
                if old_values is None or returns is None:
                    raise ValueError("evaluate returned values, so old_values and returns are needed")
                v_loss = clipped_value_loss(out.values, old_values[dev_idx], returns[dev_idx], clip_vloss, mb_mask)
                loss = loss + vf_coef * v_loss
            entropy = None
            if out.entropy is not None:
                entropy = masked_mean(out.entropy, mb_mask)
                if ent_coef != 0.0:  # skipped, not multiplied by 0: fewer autograd nodes
                    loss = loss - ent_coef * entropy
            if out.extra_loss is not None:
                loss = loss + out.extra_loss

            loss.backward()
            for opt, params in zip(optimizers, param_groups):
                _clip_grad_norm(params, max_grad_norm)
                opt.step()
            # Free the gradients now, not before the next backward: they would otherwise sit in
            # memory next to the next minibatch's activations.
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)

            if track:
                row = ppo_diagnostics(out.logprobs, mb_old_lp, clip_coef, mb_mask)
                row["loss/policy"] = pg_loss.detach()
                if v_loss is not None:
                    row["loss/value"] = v_loss.detach()
                if entropy is not None:
                    row["loss/entropy"] = entropy.detach()
                for k, v in row.items():
                    stats.setdefault(k, []).append(v)
        epochs_run += 1
        if target_kl is not None and torch.stack(stats["policy/approx_kl"]).mean().item() > target_kl:
            break

    metrics = {k: torch.stack(v).mean().item() for k, v in stats.items()}
    metrics["policy/epochs"] = float(epochs_run)
    return metrics


def minibatch_permutation(b: int, mb_size: int, group_size: int, generator: torch.Generator | None) -> torch.Tensor:
    """(B,) a random order of the B rows; of whole adjacent groups of ``group_size`` rows when both B and
    ``mb_size`` are multiples of it (each slice of ``mb_size`` then holds whole groups), else of rows."""
    k = group_size
    if k > 1 and b % k == 0 and mb_size % k == 0:
        groups = torch.randperm(b // k, generator=generator)  # (B/k,)
        return (groups[:, None] * k + torch.arange(k)).reshape(-1)  # (B,): each group's rows together
    return torch.randperm(b, generator=generator)


def ppo_epoch_knobs(cfg: object) -> dict[str, object]:
    """The :func:`ppo_epochs` keywords read from a config with the shared (cleanrl) names.

    Both :class:`PPOConfig` and :class:`prefrl.lm.ppo_config.LMPPOConfig` name these knobs alike:
    ``update_epochs``, ``num_minibatches``, ``clip_coef``, ``clip_vloss`` (clip the value change
    by ``clip_coef``), ``vf_coef``, ``ent_coef``, ``max_grad_norm``, ``target_kl``.
    """
    return {
        "update_epochs": cfg.update_epochs,
        "num_minibatches": cfg.num_minibatches,
        "clip_coef": cfg.clip_coef,
        "clip_vloss": cfg.clip_coef if cfg.clip_vloss else None,
        "vf_coef": cfg.vf_coef,
        "ent_coef": cfg.ent_coef,
        "max_grad_norm": cfg.max_grad_norm,
        "target_kl": cfg.target_kl,
    }


def ppo_update(
    policy: ActorCriticPolicy,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBuffer,
    cfg: PPOConfig,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """:func:`ppo_epochs` over a control rollout, with cleanrl's policy interface.

    Loss per minibatch: L = L_clip − ent_coef·H + vf_coef·L_V, with advantages normalised per
    minibatch when ``cfg.norm_adv``.

    Args:
        policy: module with ``get_action_and_value(obs, action)``.
        optimizer: its optimiser (the caller sets the learning rate, e.g. annealed).
        batch: the flattened rollout with advantages and returns.
        cfg: hyper-parameters.
        generator: torch RNG for the minibatch permutations (explicit for reproducibility).

    Returns:
        ``loss/policy``, ``loss/value``, ``loss/entropy``, ``policy/approx_kl``,
        ``policy/clipfrac``, ``val/explained_variance``, ``policy/epochs`` (epochs run).
    """

    def evaluate(idx: torch.Tensor) -> MinibatchOutput:
        _, logprobs, entropy, values = policy.get_action_and_value(batch.obs[idx], batch.actions[idx])  # (mb,)
        return MinibatchOutput(logprobs=logprobs, values=values, entropy=entropy)

    metrics = ppo_epochs(
        evaluate,
        [optimizer],
        batch.logprobs,
        batch.advantages,
        old_values=batch.values,
        returns=batch.returns,
        norm_adv=cfg.norm_adv,
        generator=generator,
        **ppo_epoch_knobs(cfg),
    )
    metrics["val/explained_variance"] = explained_variance(batch.values, batch.returns)
    return metrics
