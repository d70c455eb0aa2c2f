"""Pure loss functions of preference-based RL and RLHF.

Every function here is pure torch: no state, no modules, no imports from the rest of
prefrl. Inputs are shape-checked on entry so that a transposed batch fails loudly
instead of broadcasting silently. Trainers above this module only orchestrate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefrl.names import DPOLossType, KLEstimator

__all__ = [
    "preference_probability",
    "preference_log_probabilities",
    "bradley_terry_loss",
    "gae",
    "clipped_surrogate_loss",
    "clipped_value_loss",
    "dpo_loss",
    "kl_estimate",
    "masked_mean",
    "masked_whiten",
    "soft_q_target",
    "sac_critic_loss",
    "sac_actor_loss",
    "sac_temperature_loss",
    "KLEstimator",
    "DPOLossType",
]



def _same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_b} has shape {tuple(b.shape)} but {name_a} has shape {tuple(a.shape)}")


def _check_random_response(random_response: float) -> None:
    if not 0.0 <= random_response < 1.0:
        raise ValueError(f"random_response must be in [0, 1), got {random_response}")


def preference_log_probabilities(
    returns_left: torch.Tensor, returns_right: torch.Tensor, random_response: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """log P[left ≻ right] and log P[right ≻ left], computed stably.

    With ε = ``random_response``, P = (1 − ε)·σ(Δ) + ε/2 and Δ = R_left − R_right.
    Written as a log-sum-exp of log(1 − ε) + log σ(Δ) and log(ε/2), it stays finite
    for |Δ| of 1e4 and beyond.
    """
    _same_shape("returns_left", returns_left, "returns_right", returns_right)
    _check_random_response(random_response)
    delta = returns_left - returns_right
    if random_response == 0.0:
        return F.logsigmoid(delta), F.logsigmoid(-delta)
    log_keep = torch.log1p(torch.tensor(-random_response, dtype=delta.dtype, device=delta.device))
    log_random = torch.log(torch.tensor(random_response / 2, dtype=delta.dtype, device=delta.device))
    log_p_left = torch.logaddexp(log_keep + F.logsigmoid(delta), log_random)
    log_p_right = torch.logaddexp(log_keep + F.logsigmoid(-delta), log_random)
    return log_p_left, log_p_right


def preference_probability(
    returns_left: torch.Tensor, returns_right: torch.Tensor, random_response: float = 0.1
) -> torch.Tensor:
    """Probability that a teacher prefers the left segment (Christiano et al. 2017, §2.2.3).

    P[σ¹ ≻ σ²] = (1 − ε)·σ(R¹ − R²) + ε/2, where Rⁱ = Σ_t r̂(oⁱ_t, aⁱ_t) is the sum of the
    predicted per-step rewards over segment i and ε the chance that the teacher answers
    uniformly at random (the paper uses ε = 0.1).

    Args:
        returns_left: predicted segment returns R¹, any shape.
        returns_right: predicted segment returns R², same shape.
        random_response: ε in [0, 1).
    """
    return preference_log_probabilities(returns_left, returns_right, random_response)[0].exp()


def bradley_terry_loss(
    returns_left: torch.Tensor,
    returns_right: torch.Tensor,
    mu: torch.Tensor,
    random_response: float = 0.1,
) -> torch.Tensor:
    """Mean Bradley-Terry cross-entropy of preference labels (Christiano et al. 2017, eq. 1).

    loss = −mean[ μ·log P[σ¹ ≻ σ²] + (1 − μ)·log P[σ² ≻ σ¹] ]

    with P from :func:`preference_probability`. μ is the preference mass on the left
    segment: 1 (left better), 0 (right better) or 0.5 (equally good).
    """
    _same_shape("returns_left", returns_left, "mu", mu)
    if torch.any((mu < 0) | (mu > 1)) or torch.any(torch.isnan(mu)):
        raise ValueError("mu must lie in [0, 1]")
    log_p_left, log_p_right = preference_log_probabilities(returns_left, returns_right, random_response)
    mu = mu.to(log_p_left.dtype)
    return -(mu * log_p_left + (1.0 - mu) * log_p_right).mean()


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    last_values: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, "High-Dimensional Continuous Control").

    δ_t = r_t + γ·(1 − d_t)·V(s_{t+1}) − V(s_t),   A_t = δ_t + γλ·(1 − d_t)·A_{t+1}

    Index convention: ``dones[t] = 1`` means the episode ended at step t, so there is no
    bootstrap from s_{t+1} and the advantage chain is cut there. V(s_T) is
    ``last_values``, the value of the state after the last step of the rollout.

    Args:
        rewards: (T, N) rewards r_t.
        values: (T, N) values V(s_t).
        last_values: (N,) values V(s_T).
        dones: (T, N) episode-end flags (0/1, bool or float).
        gamma: discount γ in [0, 1].
        lam: GAE λ in [0, 1].

    Returns:
        (advantages, returns), both (T, N), with returns = advantages + values.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (T, N), got shape {tuple(rewards.shape)}")
    _same_shape("rewards", rewards, "values", values)
    _same_shape("rewards", rewards, "dones", dones)
    if last_values.shape != rewards.shape[1:]:
        raise ValueError(f"last_values must be (N,) = {tuple(rewards.shape[1:])}, got {tuple(last_values.shape)}")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")
    not_done = 1.0 - dones.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_values = last_values
    last_adv = torch.zeros_like(last_values)
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * not_done[t] * next_values - values[t]
        last_adv = delta + gamma * lam * not_done[t] * last_adv
        advantages[t] = last_adv
        next_values = values[t]
    return advantages, advantages + values


def clipped_surrogate_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_coef: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """PPO-clip policy loss (Schulman et al. 2017, eq. 7).

    L = −mean[ min(ρ·A, clip(ρ, 1 − c, 1 + c)·A) ],   ρ = exp(logprobs − old_logprobs)

    ``mask`` (same shape, 0/1) restricts the mean to valid entries, e.g. response tokens.
    """
    _same_shape("logprobs", logprobs, "old_logprobs", old_logprobs)
    _same_shape("logprobs", logprobs, "advantages", advantages)
    if clip_coef <= 0:
        raise ValueError(f"clip_coef must be positive, got {clip_coef}")
    ratio = torch.exp(logprobs - old_logprobs)
    surrogate = torch.min(ratio * advantages, torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef) * advantages)
    return -masked_mean(surrogate, mask)


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip_coef: float | None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Value loss ½·mean[max((V − R)², (V_clip − R)²)], V_clip = old + clip(V − old, ±c).

    With ``clip_coef=None`` it is the plain ½·mean[(V − R)²].
    """
    _same_shape("values", values, "returns", returns)
    _same_shape("values", values, "old_values", old_values)
    unclipped = (values - returns) ** 2
    if clip_coef is None:
        return 0.5 * masked_mean(unclipped, mask)
    clipped = old_values + torch.clamp(values - old_values, -clip_coef, clip_coef)
    return 0.5 * masked_mean(torch.max(unclipped, (clipped - returns) ** 2), mask)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    loss_type: DPOLossType = "sigmoid",
) -> torch.Tensor:
    """Per-example direct preference optimisation loss (Rafailov et al. 2023).

    h = (log π(y_c|x) − log π_ref(y_c|x)) − (log π(y_r|x) − log π_ref(y_r|x))

    - ``"sigmoid"`` (DPO; with s = ``label_smoothing`` > 0 the conservative cDPO of
      Mitchell 2023): −(1 − s)·log σ(β·h) − s·log σ(−β·h)
    - ``"ipo"`` (Azar et al. 2023): (h − 1/(2β))²

    Inputs are (B,) summed sequence log-probabilities; the result is (B,).
    """
    for name, t in (
        ("policy_rejected_logps", policy_rejected_logps),
        ("ref_chosen_logps", ref_chosen_logps),
        ("ref_rejected_logps", ref_rejected_logps),
    ):
        _same_shape("policy_chosen_logps", policy_chosen_logps, name, t)
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    if loss_type == "sigmoid":
        return -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    if loss_type == "ipo":
        return (h - 1.0 / (2.0 * beta)) ** 2
    raise ValueError(f"unknown dpo loss_type {loss_type!r}; choose 'sigmoid' or 'ipo'")


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from tokens sampled from π (Schulman 2020, "Approximating KL").

    With log r = ref_logprobs − logprobs:
    - ``"k1"`` = −log r                 (unbiased, high variance, can be negative)
    - ``"k2"`` = ½·(log r)²             (biased, low variance, ≥ 0)
    - ``"k3"`` = (r − 1) − log r        (unbiased, low variance, ≥ 0)
    """
    _same_shape("logprobs", logprobs, "ref_logprobs", ref_logprobs)
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; choose 'k1', 'k2' or 'k3'")


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (all entries when ``mask`` is None).

    mean = Σ x·m / max(Σ m, 1); ``mask`` has the shape of ``x`` (e.g. (B, T) response tokens).
    """
    if mask is None:
        return x.mean()
    _same_shape("values", x, "mask", mask)
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / sqrt(var + eps) over the valid entries, 0 elsewhere (biased variance).

    The advantage whitening of RLHF PPO (Huang et al. 2024, "N+ implementation details").
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if mask is None else out * mask.to(x.dtype)



def soft_q_target(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    next_q1: torch.Tensor,
    next_q2: torch.Tensor,
    next_logprobs: torch.Tensor,
    alpha: float | torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Soft Bellman target of SAC with clipped double Q (Haarnoja et al. 2018, eq. 3; Fujimoto et al. 2018).

    y = r + γ·(1 − d)·( min(Q̄₁(s', a'), Q̄₂(s', a')) − α·log π(a'|s') ),   a' ~ π(·|s')

    Q̄ are the target networks; d = 1 only where the episode *terminated* (a time-limit
    truncation bootstraps). All inputs are (B,); the result is (B,) and carries no gradient.
    """
    for name, x in (("terminated", terminated), ("next_q1", next_q1), ("next_q2", next_q2),
                    ("next_logprobs", next_logprobs)):
        _same_shape("rewards", rewards, name, x)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    soft_value = torch.min(next_q1, next_q2) - alpha * next_logprobs
    return (rewards + gamma * (1.0 - terminated.to(rewards.dtype)) * soft_value).detach()


def sac_critic_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Twin soft-Q loss J_Q = ½·mean[(Q₁(s, a) − y)²] + ½·mean[(Q₂(s, a) − y)²] (Haarnoja et al. 2018, eq. 5).

    ``q1``, ``q2`` and the (detached) target ``y`` of :func:`soft_q_target` are (B,).
    """
    _same_shape("target", target, "q1", q1)
    _same_shape("target", target, "q2", q2)
    target = target.detach()
    return 0.5 * ((q1 - target) ** 2).mean() + 0.5 * ((q2 - target) ** 2).mean()


def sac_actor_loss(
    logprobs: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor, alpha: float | torch.Tensor
) -> torch.Tensor:
    """SAC policy loss J_π = mean[ α·log π(ã|s) − min(Q₁(s, ã), Q₂(s, ã)) ] (Haarnoja et al. 2018, eq. 7).

    ã = f(ε; s) is the reparameterised action sampled from π, so gradients reach the policy
    through both terms. All inputs are (B,); α is treated as a constant here.
    """
    _same_shape("logprobs", logprobs, "q1", q1)
    _same_shape("logprobs", logprobs, "q2", q2)
    alpha = alpha.detach() if isinstance(alpha, torch.Tensor) else alpha
    return (alpha * logprobs - torch.min(q1, q2)).mean()


def sac_temperature_loss(log_alpha: torch.Tensor, logprobs: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """Automatic entropy temperature J(α) = mean[ −log α·(log π(a|s) + H̄) ] (Haarnoja et al. 2018b, eq. 18).

    Minimised over log α (a scalar tensor; optimising log α keeps α > 0, as cleanrl and SB3 do):
    α grows while the policy's entropy −log π is below the target H̄ (commonly −dim(A)) and
    shrinks above it. ``logprobs`` is (B,) and carries no gradient.
    """
    if log_alpha.dim() != 0:
        raise ValueError(f"log_alpha must be a scalar tensor, got shape {tuple(log_alpha.shape)}")
    if logprobs.dim() != 1:
        raise ValueError(f"logprobs must have shape (B,), got {tuple(logprobs.shape)}")
    return -(log_alpha * (logprobs.detach() + target_entropy)).mean()


# ---------------------------------------------------------------------- critic-free policy gradients
__all__ += [
    "group_relative_advantages",
    "leave_one_out_advantages",
    "batch_baseline_advantages",
    "clipped_surrogate_token_loss",
    "aggregate_token_loss",
]


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) rewards, B = G·k with the k completions of a prompt adjacent → (G, k)."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be (B,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(f"group_size {group_size} must be ≥ 1 and divide the batch of {rewards.shape[0]}")
    return rewards.reshape(-1, group_size)


def group_relative_advantages(
    rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """GRPO's outcome advantage (Shao et al. 2024, DeepSeekMath §4.1.2), one per completion.

    A_i = (r_i − mean_g r) / (std_g r + eps)    (``scale=True``; unbiased std, as in TRL)
    A_i =  r_i − mean_g r                       (``scale=False``: Dr. GRPO, Liu et al. 2025)

    ``rewards`` is (B,) with each prompt's ``group_size`` completions adjacent (rows
    g·k … g·k + k − 1). A group whose rewards are all equal gets advantage 0 (never NaN,
    also for k = 1). Returns (B,).
    """
    r = _grouped(rewards, group_size)  # (G, k)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale:
        std = r.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(r[:, :1])
        centred = centred / (std + eps)
    return centred.reshape(-1)


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO's advantage (Kool et al. 2019; Ahmadian et al. 2024), one per completion.

    A_i = r_i − (1 / (k − 1)) Σ_{j ≠ i} r_j  =  k / (k − 1) · (r_i − mean_g r)

    over each prompt's k = ``group_size`` ≥ 2 adjacent completions. Returns (B,).
    """
    if group_size < 2:
        raise ValueError(f"leave-one-out needs group_size ≥ 2, got {group_size}")
    r = _grouped(rewards, group_size)  # (G, k)
    baseline = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)
    return (r - baseline).reshape(-1)


def batch_baseline_advantages(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """REINFORCE++'s advantage (Hu et al. 2025): returns-to-go whitened over the whole batch.

    G_t = Σ_{s ≥ t} γ^{s−t} r_s over each response's valid tokens, then
    A_t = (G_t − mean_batch G) / std_batch G over every valid token of the batch: the batch
    mean is the baseline, no critic and no per-prompt group. ``token_rewards`` and ``mask``
    are (B, T) (e.g. −β·KL_t on every token plus the score on the last). Returns (B, T), 0 on padding.
    """
    _same_shape("token_rewards", token_rewards, "mask", mask)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    m = mask.to(token_rewards.dtype)
    r = token_rewards * m
    returns = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        running = r[:, t] + gamma * running
        returns[:, t] = running
    return masked_whiten(returns, m)


def clipped_surrogate_token_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, clip_coef: float
) -> torch.Tensor:
    """Per-entry PPO-clip loss −min(ρ·A, clip(ρ, 1 − c, 1 + c)·A), ρ = exp(logprobs − old_logprobs).

    The terms :func:`clipped_surrogate_loss` averages; reduce them with :func:`aggregate_token_loss`.
    """
    _same_shape("logprobs", logprobs, "old_logprobs", old_logprobs)
    _same_shape("logprobs", logprobs, "advantages", advantages)
    if clip_coef <= 0:
        raise ValueError(f"clip_coef must be positive, got {clip_coef}")
    ratio = torch.exp(logprobs - old_logprobs)
    return -torch.min(ratio * advantages, torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef) * advantages)


def aggregate_token_loss(
    loss_t: torch.Tensor, mask: torch.Tensor, aggregation: str, normaliser: float | None = None
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss over the valid tokens of ``mask``; the length bias lives here.

    - ``"token-mean"``: Σ_{i,t} ℓ·m / Σ m  (DAPO; every token weighs the same, longer
      responses weigh more in total);
    - ``"sequence-mean"``: (1/B) Σ_i (Σ_t ℓ·m / Σ_t m)  (GRPO's paper; each response weighs the
      same, so a token of a short response weighs more);
    - ``"constant"``: Σ_{i,t} ℓ·m / (B · ``normaliser``)  (Dr. GRPO, Liu et al. 2025: e.g. the
      longest response allowed; no length bias from the normalisation).
    """
    _same_shape("loss_t", loss_t, "mask", mask)
    m = mask.to(loss_t.dtype)
    if aggregation == "token-mean":
        return (loss_t * m).sum() / m.sum().clamp(min=1.0)
    if aggregation == "sequence-mean":
        return ((loss_t * m).sum(1) / m.sum(1).clamp(min=1.0)).mean()
    if aggregation == "constant":
        if normaliser is None or not normaliser > 0:
            raise ValueError(f"constant aggregation needs a positive normaliser, got {normaliser!r}")
        return (loss_t * m).sum() / (loss_t.shape[0] * normaliser)
    raise ValueError(f"unknown loss aggregation {aggregation!r}; choose 'token-mean', 'sequence-mean' or 'constant'")


# ---------------------------------------------------------------------- unpaired feedback
__all__ += ["kto_reference_point", "kto_loss"]


def kto_reference_point(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z_ref = max(0, mean_batch[log π(y'|x) − log π_ref(y'|x)]), no gradient.

    Estimated on *mismatched* pairs (x, y') of the batch, as in Ethayarajh et al. (2024) §4.1
    and TRL. Inputs (B,) summed log-probabilities; returns a 0-dim tensor.
    """
    _same_shape("policy_kl_logps", policy_kl_logps, "ref_kl_logps", ref_kl_logps)
    return (policy_kl_logps - ref_kl_logps).mean().clamp(min=0.0).detach()


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    reference_point: torch.Tensor,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """Per-example Kahneman–Tversky optimisation loss (Ethayarajh et al. 2024, eq. 8).

    r = log π(y|x) − log π_ref(y|x),   z = ``reference_point`` (:func:`kto_reference_point`)

    - desirable y:   λ_D · (1 − σ(β·(r − z)))
    - undesirable y: λ_U · (1 − σ(β·(z − r)))

    ``policy_logps``, ``ref_logps`` are (B,) summed log-probabilities, ``desirable`` a (B,)
    boolean label; the result is (B,) (its mean is TRL's ``KTOTrainer`` loss).
    """
    _same_shape("policy_logps", policy_logps, "ref_logps", ref_logps)
    _same_shape("policy_logps", policy_logps, "desirable", desirable)
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if desirable_weight < 0 or undesirable_weight < 0:
        raise ValueError("desirable_weight and undesirable_weight must be non-negative")
    r = policy_logps - ref_logps
    z = reference_point.to(r.dtype)
    good = desirable_weight * (1.0 - torch.sigmoid(beta * (r - z)))
    bad = undesirable_weight * (1.0 - torch.sigmoid(beta * (z - r)))
    return torch.where(desirable.bool(), good, bad)
