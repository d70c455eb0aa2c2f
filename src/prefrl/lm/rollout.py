"""PPO rollouts for language models: sample responses to prompts, find where each ends.

(Sampling for the CLI — ``prefrl lm generate`` — lives in :mod:`prefrl.lm.generate`; the
log-probabilities of sampled responses in :func:`prefrl.lm.logprobs.response_logprobs`.)

Conventions used across ``prefrl.lm.ppo`` and ``prefrl.lm.reward_functions``:

- prompts ("queries") are **left-padded** to a common length P, so every response
  starts at column P of ``input_ids = [query ‖ response]``;
- a response of R columns is valid **up to and including its first EOS token**. The
  EOS is found as the first generated ``eos_token_id`` — never by masking pad tokens,
  because SmolLM2's pad token *is* its EOS token;
- position ids are computed from the attention mask (as ``generate`` does), so a
  left-padded row is scored at the same positions it was sampled at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from prefrl.lm.encoding import position_ids_from_mask
from prefrl.utils.rng import seeded_global_rng

__all__ = [
    "RolloutBatch",
    "encode_prompts",
    "find_first_eos",
    "sample_responses",
]


@dataclass
class RolloutBatch:
    """B sampled responses with their left-padded prompts.

    Attributes:
        query_ids: (B, P) left-padded prompt tokens.
        query_mask: (B, P) 1 on prompt tokens, 0 on left padding.
        response_ids: (B, R) generated tokens (anything after the first EOS is filler).
        response_mask: (B, R) 1 on tokens up to and including the first EOS.
        has_eos: (B,) whether the response emitted EOS within ``max_new_tokens``.
        last_index: (B,) column of the last valid response token (the EOS when present).
        prompts: the prompt strings.
        responses: the decoded responses (special tokens removed, cut at EOS).
        logprobs: (B, R) log π(y_t | x, y<t) of the sampled tokens at the sampling
            temperature, recorded while sampling (``None`` when the sampler could not:
            top-k or support-constrained sampling). Zero after the first EOS.
        entropy: (B, R) entropy of π(· | x, y<t) at the sampling temperature, or ``None``.
    """

    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    has_eos: torch.Tensor
    last_index: torch.Tensor
    prompts: list[str]
    responses: list[str]
    logprobs: torch.Tensor | None = None
    entropy: torch.Tensor | None = None

    @property
    def input_ids(self) -> torch.Tensor:
        """(B, P + R) prompt ‖ response."""
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, P + R) valid prompt and response tokens (left padding and post-EOS filler are 0)."""
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    @property
    def n_query(self) -> int:
        return int(self.query_ids.shape[1])

    def __len__(self) -> int:
        return int(self.query_ids.shape[0])

    def select(self, idx: torch.Tensor) -> RolloutBatch:
        """The rows ``idx`` (a 1-D index tensor) as a new batch."""
        rows = idx.tolist()
        return RolloutBatch(
            self.query_ids[idx],
            self.query_mask[idx],
            self.response_ids[idx],
            self.response_mask[idx],
            self.has_eos[idx],
            self.last_index[idx],
            [self.prompts[i] for i in rows],
            [self.responses[i] for i in rows],
            None if self.logprobs is None else self.logprobs[idx],
            None if self.entropy is None else self.entropy[idx],
        )


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_prompt_length: int,
    add_special_tokens: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise prompts left-padded (and left-truncated) to a common length.

    Without special tokens by default, as :func:`prefrl.lm.encoding.encode_prompt_completion`
    tokenises prompts for the reward model and DPO (chat-rendered prompts carry their own).

    Returns ``(query_ids, query_mask)``, both (B, P) with P ≤ ``max_prompt_length``.
    """
    if len(prompts) == 0:
        raise ValueError("prompts is empty")
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; set tokenizer.pad_token (e.g. to the EOS token)")
    rows = [
        tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"][-max_prompt_length:] for p in prompts
    ]
    if any(len(r) == 0 for r in rows):
        raise ValueError("a prompt tokenises to zero tokens; every prompt needs at least one token")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


def find_first_eos(
    response_ids: torch.Tensor, eos_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Locate the first EOS of each response.

    Args:
        response_ids: (B, R) generated tokens.
        eos_token_id: the EOS id (may equal the pad id).

    Returns:
        ``(has_eos (B,), last_index (B,), response_mask (B, R))``: the last valid column is
        the first EOS when there is one, else R − 1; the mask covers columns ≤ last_index.
    """
    if response_ids.dim() != 2:
        raise ValueError(f"response_ids must be (B, R), got shape {tuple(response_ids.shape)}")
    is_eos = response_ids == eos_token_id  # (B, R)
    has_eos = is_eos.any(dim=1)
    first = torch.argmax(is_eos.to(torch.int64), dim=1)  # index of the first True (0 when none)
    last_index = torch.where(has_eos, first, torch.full_like(first, response_ids.shape[1] - 1))
    cols = torch.arange(response_ids.shape[1], device=response_ids.device)
    response_mask = (cols[None, :] <= last_index[:, None]).to(torch.long)
    return has_eos, last_index, response_mask


def _eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos_token_id")
    return int(tokenizer.eos_token_id)


@torch.no_grad()
def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int = 0,
    max_prompt_length: int = 512,
    generator: torch.Generator | None = None,
    query: tuple[torch.Tensor, torch.Tensor] | None = None,
    support_ref: torch.nn.Module | None = None,
    support_top_p: float | None = None,
    support_min_p: float | None = None,
    num_generations: int = 1,
) -> RolloutBatch:
    """Sample ``num_generations`` responses per prompt (left-padded prompts, stop at EOS), batched.

    The k = ``num_generations`` responses of a prompt are adjacent rows of the batch (its
    ``prompts`` repeat each prompt k times). On the KV-cached path the prompt is read once and
    its cache expanded k-fold (prefix sharing); ``generate`` reads each of the k copies.

    Plain sampling at ``temperature`` runs prefrl's own KV-cached decoding loop, which
    records each sampled token's log-probability and the policy entropy on the way
    (``RolloutBatch.logprobs`` / ``.entropy``), so PPO needs no separate scoring pass
    of the policy. ``top_k`` or a support constraint goes through ``generate`` with
    logits processors instead (their log-probabilities are then left to the caller).

    Randomness comes from ``generator`` alone; the global RNG is not touched (the
    ``generate`` path installs a seed drawn from ``generator`` inside a forked RNG state).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if not isinstance(num_generations, int) or num_generations < 1:
        raise ValueError(f"num_generations must be a positive integer, got {num_generations!r}")
    k = num_generations
    if query is None:
        query_ids, query_mask = encode_prompts(tokenizer, prompts, max_prompt_length)
    else:
        query_ids, query_mask = query
    device = next(model.parameters()).device
    eos = _eos_id(tokenizer)
    logprobs = entropy = None
    if top_k == 0 and support_ref is None:
        with _tall_linears(model):
            response_ids, logprobs, entropy = _decode(
                model, query_ids.to(device), query_mask.to(device), max_new_tokens, temperature, eos, generator, k
            )
        query_ids, query_mask = query_ids.repeat_interleave(k, 0), query_mask.repeat_interleave(k, 0)
    else:
        query_ids, query_mask = query_ids.repeat_interleave(k, 0), query_mask.repeat_interleave(k, 0)
        response_ids = _generate(
            model,
            query_ids,
            query_mask,
            max_new_tokens,
            temperature,
            top_k,
            eos,
            tokenizer.pad_token_id,
            generator,
            support_ref,
            support_top_p,
            support_min_p,
        )
    if response_ids.shape[1] == 0:
        raise RuntimeError("generate returned no new tokens")
    has_eos, last_index, response_mask = find_first_eos(response_ids, eos)
    if logprobs is not None:
        logprobs, entropy = logprobs * response_mask, entropy * response_mask
    responses = [
        tokenizer.decode(r[: int(n) + 1].tolist(), skip_special_tokens=True)
        for r, n in zip(response_ids, last_index, strict=True)
    ]
    return RolloutBatch(
        query_ids,
        query_mask,
        response_ids,
        response_mask,
        has_eos,
        last_index,
        [p for p in prompts for _ in range(k)],
        responses,
        logprobs,
        entropy,
    )


def _decode(
    model: torch.nn.Module,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    eos: int,
    generator: torch.Generator | None,
    num_generations: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KV-cached ancestral sampling; returns CPU ``(response_ids, logprobs, entropy)``, each (B·k, R).

    With k = ``num_generations`` > 1 the prompts' forward pass runs once on the B prompts and
    its KV cache, last logits, mask and positions are repeated k-fold (row i·k + j is prompt
    i's j-th response): prefix sharing, the prompt is not recomputed per response.

    Finished rows keep emitting EOS (their columns past the first EOS are filler) and the
    loop stops once every row has finished, as ``generate`` does. Positions continue from
    each row's own prompt length, so a left-padded row is sampled at the positions
    ``response_logprobs`` scores it at. ``sample_responses`` runs it inside :func:`_tall_linears`.
    """
    k = num_generations
    device = query_ids.device
    # draw on the generator's device: a CPU generator cannot drive CUDA sampling
    g = generator
    if generator is not None and generator.device != device:
        g = torch.Generator(device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    b = query_ids.shape[0] * k
    mask = query_mask
    position = position_ids_from_mask(mask)
    out = model(
        input_ids=query_ids, attention_mask=mask, position_ids=position, use_cache=True, logits_to_keep=1
    )
    if k > 1:  # prefix sharing: expand the prompts' cache instead of reading each prompt k times
        out.past_key_values.batch_repeat_interleave(k)
        out.logits = out.logits.repeat_interleave(k, 0)
        mask, position = mask.repeat_interleave(k, 0), position.repeat_interleave(k, 0)
    next_position = position[:, -1:] + 1  # (B, 1)
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    tokens, logprobs, entropy = [], [], []
    for t in range(max_new_tokens):
        logp = F.log_softmax(out.logits[:, -1, :].float() / temperature, dim=-1)  # (B, V)
        probs = logp.exp()
        token = _inverse_cdf_sample(probs, g)  # (B,)
        token = torch.where(finished, torch.full_like(token, eos), token)
        tokens.append(token)
        logprobs.append(logp.gather(1, token[:, None]).squeeze(1))
        entropy.append(-(probs * logp).sum(-1))
        finished = finished | (token == eos)
        if t == max_new_tokens - 1 or bool(finished.all()):
            break
        mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=device)], dim=1)
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=next_position,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
        next_position = next_position + 1
    return (
        torch.stack(tokens, 1).cpu(),
        torch.stack(logprobs, 1).cpu(),
        torch.stack(entropy, 1).cpu(),
    )


@contextlib.contextmanager
def _tall_linears(model: torch.nn.Module) -> Iterator[None]:
    """While decoding on the CPU, compute every plain ``nn.Linear`` as (W · hᵀ)ᵀ instead of h · Wᵀ.

    A decoding step projects B ≈ 8 hidden states through each weight matrix, read from memory once per
    step. MKL runs the same product faster with the weight on the left, most for tall matrices: SmolLM2's
    output head (V = 49152, H = 576) took 63 → 30 ms per step at B = 8, the 30 layers' projections
    about 20 % less together (135 → 108 ms per step with the weights out of cache), and a whole
    rollout −5 % CPU (docs/benchmarks_lm.md). Only ``nn.Linear`` modules whose weight is on the CPU are
    swapped (a LoRA layer's base and adapters are such modules), for the duration of the loop; the
    output is made contiguous, as ``F.linear``'s is, so the ops after it run as before.
    """
    linears = [  # not one whose forward is already replaced (accelerate's hooks): restoring would drop it
        m
        for m in model.modules()
        if type(m) is torch.nn.Linear and m.weight.device.type == "cpu" and "forward" not in vars(m)
    ]

    def tall(linear: torch.nn.Linear):  # noqa: ANN202 - a bound forward
        def forward(hidden: torch.Tensor) -> torch.Tensor:
            flat = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
            out = torch.mm(linear.weight, flat.t()).t().contiguous()  # (N, O)
            if linear.bias is not None:
                out = out + linear.bias
            return out.view(*hidden.shape[:-1], -1)

        return forward

    for m in linears:
        m.forward = tall(m)  # an instance attribute shadows nn.Linear.forward until deleted
    try:
        yield
    finally:
        for m in linears:
            del m.forward


def _inverse_cdf_sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(B,) one draw per row of ``probs`` (B, V): the first token whose CDF exceeds u ~ U[0, 1).

    The same distribution as ``torch.multinomial`` at about a third of its CPU cost over a
    49k vocabulary. The CDF is summed in float64 so rounding cannot hand a token with
    negligible probability a visible share; ``right=True`` never picks a zero-probability
    token, even for u = 0.
    """
    cdf = probs.double().cumsum(-1)  # (B, V)
    u = torch.rand((probs.shape[0], 1), generator=generator, dtype=torch.float64, device=probs.device)
    token = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return token.squeeze(1).clamp_max_(probs.shape[1] - 1)


def _generate(
    model: torch.nn.Module,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    eos: int,
    pad: int | None,
    generator: torch.Generator | None,
    support_ref: torch.nn.Module | None,
    support_top_p: float | None,
    support_min_p: float | None,
) -> torch.Tensor:
    """``model.generate`` with top-k / support-constraint processors; returns CPU (B, R) ids."""
    device = next(model.parameters()).device
    gen_cfg = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=top_k,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    processors = None
    if support_ref is not None:
        from transformers import LogitsProcessorList

        from prefrl.lm.support import ReferenceSupportProcessor

        processors = LogitsProcessorList(
            [ReferenceSupportProcessor(support_ref, query_mask.to(device), support_top_p, support_min_p)]
        )
    # generate() samples from the global RNG: with a generator, seed it (inside a forked state) from that
    ctx = contextlib.nullcontext()
    if generator is not None:
        ctx = seeded_global_rng(int(torch.randint(0, 2**62, (1,), generator=generator).item()), device)
    with ctx:
        out = model.generate(
            input_ids=query_ids.to(device),
            attention_mask=query_mask.to(device),
            generation_config=gen_cfg,
            logits_processor=processors,
        )
    return out[:, query_ids.shape[1] :].cpu()
