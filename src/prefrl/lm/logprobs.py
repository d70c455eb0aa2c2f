"""Log-probabilities under a causal LM: per token, per completion, per packed pair, per response.

Every function calls ``model(...)`` (so DDP hooks run) with position ids from the attention
mask, and computes log π as gather − logsumexp in float32 (no (B, T, V) log-softmax copy).
The LM head runs only where a token is scored (``logits_to_keep``): the completion tokens of
SFT/DPO rows, the response columns of PPO rollouts.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from prefrl.lm.encoding import additive_attention_mask, position_ids_from_mask

__all__ = [
    "logprobs_from_logits",
    "token_logprobs",
    "completion_logprobs",
    "packed_pair_logprobs",
    "response_logprobs",
    "cross_entropy_on_completion",
]

# ---------------------------------------------------------------- log-probabilities


class _TargetLogProb(torch.autograd.Function):
    """log softmax(logits)[labels] with a one-buffer backward.

    Autograd's gather − logsumexp backward builds the (…, V) gradient from several (…, V)
    temporaries (exp(x − lse), its product with the incoming gradient, the gather's zero-filled
    scatter, their sum); here it is one buffer, d/dx = g·(onehot(label) − softmax(x)), written in
    place. On SmolLM2's 49k vocabulary that is ~150 MB less at the start of an update's backward
    pass (its peak), with the same values (docs/benchmarks_lm.md).
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # noqa: D102
        lse = torch.logsumexp(logits, dim=-1)  # (…,)
        ctx.save_for_backward(logits, labels, lse)
        return torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1) - lse

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        logits, labels, lse = ctx.saved_tensors
        out = torch.sub(logits, lse.unsqueeze(-1)).exp_().mul_(-grad.unsqueeze(-1))  # −g·softmax, (…, V)
        return out.scatter_add_(-1, labels.unsqueeze(-1), grad.unsqueeze(-1)), None


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[labels]: (B, T, V), (B, T) → (B, T), without a (B, T, V) log-softmax copy.

    As gather − logsumexp in float32, with a backward pass that allocates one (B, T, V) buffer
    (:class:`_TargetLogProb`).
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    logits = logits.float()
    if not (torch.is_grad_enabled() and logits.requires_grad):
        picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)  # (B, T)
        return picked - torch.logsumexp(logits, dim=-1)
    return _TargetLogProb.apply(logits, labels)


def token_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """(B, T − 1): log π(x_{t+1} | x_{≤t}) for every position, under padding-aware positions.

    Entry t is the log-probability of token t + 1. Calls ``model(...)`` (so DDP hooks
    run) with position ids from the mask.
    """
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    logits = out.logits[:, :-1, :]  # (B, T-1, V)
    if temperature != 1.0:
        logits = logits / temperature
    return logprobs_from_logits(logits, input_ids[:, 1:])


def _kept_logits(model: Any, keep: torch.Tensor, **inputs: Any) -> torch.Tensor:
    """(N, V) logits at the N positions where ``keep`` (B, T) is True, from one ``model(...)`` call.

    Transformers ≥ 5 projects only those hidden states through the LM head
    (``logits_to_keep`` as a boolean mask), so the (B, T, V) logits never exist; older
    versions compute all logits and the kept rows are selected afterwards. The call goes
    through ``model(...)`` either way, so DDP hooks run.
    """
    if _has_masked_logits_to_keep():
        return model(**inputs, use_cache=False, logits_to_keep=keep).logits  # (N, V)
    return model(**inputs, use_cache=False).logits[keep]  # (B, T, V) → (N, V)


@functools.cache
def _has_masked_logits_to_keep() -> bool:
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    probe = slice_logits_to_keep(torch.zeros(1, 2, 1), torch.tensor([[False, True]]))
    return tuple(probe.shape) == (1, 1)


def _sequence_logprobs(
    logits: torch.Tensor, rows: torch.Tensor, labels: torch.Tensor, seq: torch.Tensor, n_seq: int
) -> torch.Tensor:
    """Σ log softmax(logits[rows])[labels] per sequence ``seq``: (N, V), (K,), (K,), (K,) → (n_seq,).

    gather − logsumexp in float32 (no log-softmax copy of the logits); a logit row may
    score several targets (a packed prompt's last token predicts both responses' first).
    """
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)  # (N,)
    token_lp = logits[rows, labels] - lse[rows]  # (K,)
    return token_lp.new_zeros(n_seq).index_add(0, seq, token_lp)


def completion_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    average: bool = False,
) -> torch.Tensor:
    """(B,) summed (or, with ``average``, mean) log π(completion | prompt) over completion tokens.

    Equal to summing :func:`token_logprobs` over the completion, but the LM head runs
    only at positions whose next token is a completion token (see :func:`_kept_logits`).
    """
    target = (completion_mask[:, 1:] * attention_mask[:, 1:]).bool()  # (B, T-1): token t+1 is scored
    keep = torch.zeros_like(attention_mask, dtype=torch.bool)
    keep[:, :-1] = target  # (B, T): position t predicts token t+1
    logits = _kept_logits(
        model,
        keep,
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
    )
    row_of, _ = keep.nonzero(as_tuple=True)  # kept rows are in row-major order
    labels = input_ids[:, 1:][target]  # (N,)
    n = torch.arange(row_of.shape[0], device=row_of.device)
    total = _sequence_logprobs(logits, n, labels, row_of, input_ids.shape[0])
    if average:
        return total / target.sum(-1).clamp(min=1).to(total.dtype)
    return total


def packed_pair_logprobs(model: Any, packed: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(2B,) summed log π(response | prompt) of :func:`pack_preference_pairs` rows: chosen then rejected.

    One ``model(...)`` call over the packed rows with the pair mask; the LM head runs only
    at the kept columns. Equals :func:`completion_logprobs` on the two-row batch.
    """
    dtype = next(p for p in model.parameters()).dtype
    logits = _kept_logits(
        model,
        packed["keep"],
        input_ids=packed["input_ids"],
        attention_mask=additive_attention_mask(packed["attention_allowed"], dtype),
        position_ids=packed["position_ids"],
    )  # (N, V)
    n_seq = 2 * packed["input_ids"].shape[0]
    return _sequence_logprobs(
        logits, packed["target_row"], packed["target_label"], packed["target_seq"], n_seq
    )


def cross_entropy_on_completion(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; labels of -100 (prompt, padding) are ignored. (B, T, V), (B, T)."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def response_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    n_query: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of the response tokens (and the policy entropy) from one forward.

    Logits at column P − 1 + t predict response token t; they are divided by the sampling
    ``temperature`` so that the probabilities are those of the distribution sampled from.
    Only the last R + 1 columns of logits are materialised (``logits_to_keep``).

    Args:
        input_ids: (B, P + R) prompt ‖ response.
        attention_mask: (B, P + R).
        n_query: P.

    Returns:
        ``(logprobs (B, R), entropy (B, R) or None)``.
    """
    n_resp = input_ids.shape[1] - n_query
    if n_resp <= 0:
        raise ValueError(f"input_ids has {input_ids.shape[1]} columns, not more than n_query={n_query}")
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=n_resp + 1,
        use_cache=False,
    )
    # column P − 1 + t predicts response token t; the last column predicts nothing and is dropped
    return _scored_tokens(out.logits, input_ids[:, n_query:], temperature, with_entropy)


def _scored_tokens(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(targets) (and the entropy) from (B, C, V) logits at ``temperature``, (B, R) each, R ≤ C.

    Logits columns past the R targets are scored against token 0 and their results dropped:
    slicing the (B, C, V) logits instead would make autograd allocate a zero-filled (B, C, V)
    gradient for the slice. At temperature 1 the logits are used as they are (a division by 1
    would copy the (B, C, V) tensor, and autograd would keep the copy until the backward pass).
    """
    n = targets.shape[1]
    if logits.shape[1] > n:
        targets = F.pad(targets, (0, logits.shape[1] - n))
    lp, ent = _scored_columns(logits, targets, temperature, with_entropy)
    return lp[:, :n], None if ent is None else ent[:, :n]


def _scored_columns(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if not with_entropy:  # gather − logsumexp: no (B, R, V) log-softmax copy (training minibatches)
        return logprobs_from_logits(logits, targets), None
    logp_all = F.log_softmax(logits, dim=-1)  # (B, R, V)
    logprobs = torch.gather(logp_all, 2, targets.unsqueeze(-1)).squeeze(-1)  # (B, R)
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # (B, R)
    return logprobs, entropy


__all__ += ["shared_prompt_groups", "grouped_response_logprobs"]


def shared_prompt_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor, n_query: int, k: int) -> bool:
    """Whether the (B, P + R) rows come in adjacent groups of ``k`` > 1 with one prompt each (ids and mask)."""
    b = input_ids.shape[0]
    if k <= 1 or b % k:
        return False
    ids, mask = input_ids[:, :n_query].view(b // k, k, -1), attention_mask[:, :n_query].view(b // k, k, -1)
    return bool((ids == ids[:, :1]).all() and (mask == mask[:, :1]).all())


def grouped_response_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    n_query: int,
    num_generations: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`response_logprobs` of rows whose ``num_generations`` = k adjacent rows share a prompt, the
    prompt computed once per group.

    The G = B / k prompts run through the model once; their KV cache is repeated k-fold and the
    B responses run on top of it (the prefix sharing of the k-completions sampler, here in the
    scoring and training passes; with gradients, which flow into the prompt's keys and values
    through the repeat). Same log-probabilities as :func:`response_logprobs` to float rounding,
    with (k − 1)·G·P fewer token positions computed. Rows that are not such groups
    (:func:`shared_prompt_groups`) go through :func:`response_logprobs`.
    """
    k, p = num_generations, n_query
    if not shared_prompt_groups(input_ids, attention_mask, p, k):
        return response_logprobs(model, input_ids, attention_mask, p, temperature, with_entropy)
    n_resp = input_ids.shape[1] - p
    if n_resp <= 0:
        raise ValueError(f"input_ids has {input_ids.shape[1]} columns, not more than n_query={n_query}")
    position = position_ids_from_mask(attention_mask)
    first = model(
        input_ids=input_ids[::k, :p],
        attention_mask=attention_mask[::k, :p],
        position_ids=position[::k, :p],
        use_cache=True,
        logits_to_keep=1,
    )  # (G, 1, V): predicts response token 0
    cache = first.past_key_values
    cache.batch_repeat_interleave(k)
    rest = model(
        input_ids=input_ids[:, p:],
        attention_mask=attention_mask,
        position_ids=position[:, p:],
        past_key_values=cache,
        use_cache=True,  # the cache is read; its update is dropped with it
        logits_to_keep=n_resp,
    )  # (B, R, V): column t predicts response token t + 1
    targets = input_ids[:, p:]
    # scored in two parts, concatenated as (B, R) log-probs: no copy of the (B, R, V) logits
    lp0, ent0 = _scored_tokens(first.logits.repeat_interleave(k, 0), targets[:, :1], temperature, with_entropy)
    lp, ent = _scored_tokens(rest.logits, targets[:, 1:], temperature, with_entropy)  # last column dropped
    return torch.cat([lp0, lp], 1), None if ent is None else torch.cat([ent0, ent], 1)
