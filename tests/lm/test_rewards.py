"""Reward functions at sequence, token and span granularity land on the right tokens."""

from __future__ import annotations

import pytest
import torch

from prefrl.lm.models import tiny_causal_lm
from prefrl.lm.reward_functions import (
    RewardModelScorer,
    TextReward,
    TokenFrequencyReward,
    VaderScorer,
    place_rewards,
)
from prefrl.lm.reward_model import RewardModel
from prefrl.lm.rollout import RolloutBatch, find_first_eos

EOS = 9


def batch_from(
    responses: list[list[int]], prompts: list[str] | None = None, texts: list[str] | None = None
) -> RolloutBatch:
    resp = torch.tensor(responses)
    has_eos, last, mask = find_first_eos(resp, EOS)
    b = len(responses)
    q = torch.tensor([[0, 1, 2]] * b)
    return RolloutBatch(
        q, torch.ones_like(q), resp, mask, has_eos, last, prompts or [""] * b, texts or [""] * b
    )


def test_sequence_score_lands_on_eos():
    batch = batch_from([[1, 2, EOS, EOS, EOS], [1, 2, 3, 4, 5]])  # pad == eos after the end
    scores, tok = place_rewards(torch.tensor([2.0, -1.0]), batch)
    assert tok.tolist() == [[0, 0, 2.0, 0, 0], [0, 0, 0, 0, -1.0]]
    assert scores.tolist() == [2.0, -1.0]


def test_token_rewards_are_masked_after_eos():
    batch = batch_from([[1, EOS, 3, 3, 3], [1, 2, 3, 4, 5]])
    scores, tok = place_rewards(torch.arange(10, dtype=torch.float32).reshape(2, 5), batch)
    assert tok.tolist() == [[0, 1, 0, 0, 0], [5, 6, 7, 8, 9]]
    assert scores.tolist() == [1.0, 35.0]


def test_span_rewards_land_on_the_last_token_of_each_span():
    batch = batch_from([[1, 2, 3, EOS, EOS], [1, 2, 3, 4, 5]])
    spans = [[(0, 2, 1.0), (2, 5, 0.5)], [(1, 3, -2.0), (1, 3, 1.0), (4, 5, 3.0)]]
    scores, tok = place_rewards(spans, batch)
    # row 0: the second span runs past EOS (column 3) and is clipped there
    assert tok.tolist() == [[0, 1.0, 0, 0.5, 0], [0, 0, -1.0, 0, 3.0]]
    assert scores.tolist() == [1.5, 2.0]


@pytest.mark.parametrize(
    "spans, match",
    [
        ([[(2, 2, 1.0)], []], "start < end"),
        ([[(0, 6, 1.0)], []], "start < end"),
        ([[(4, 5, 1.0)], []], "starts after the response ends"),
        ([[(0, 1)], []], r"\(start, end, score\)"),
        ([[]], "one list per response"),
    ],
)
def test_bad_spans_raise(spans, match):
    batch = batch_from([[1, 2, EOS, EOS, EOS], [1, 2, 3, 4, 5]])
    with pytest.raises(ValueError, match=match):
        place_rewards(spans, batch)


def test_bad_tensor_shapes_and_values_raise():
    batch = batch_from([[1, 2, EOS, EOS, EOS], [1, 2, 3, 4, 5]])
    with pytest.raises(ValueError, match="per token"):
        place_rewards(torch.zeros(2, 4), batch)
    with pytest.raises(ValueError, match="non-finite"):
        place_rewards(torch.tensor([float("nan"), 0.0]), batch)


def test_token_frequency_reward():
    batch = batch_from([[7, 7, EOS, 7, 7], [7, 1, 7, 1, 1]])
    assert TokenFrequencyReward(7, "token")(batch).sum(1).tolist() == [2.0, 2.0]
    assert TokenFrequencyReward(7, "sequence")(batch).tolist() == pytest.approx([2 / 3, 2 / 5])
    with pytest.raises(ValueError, match="granularity"):
        TokenFrequencyReward(7, "span")


def test_vader_scores_sentiment_of_response():
    batch = batch_from(
        [[1, EOS, 0, 0, 0]] * 2,
        prompts=["It was", "It was"],
        texts=[" wonderful, I loved it!", " awful and boring."],
    )
    scores = VaderScorer()(batch)
    assert scores[0] > 0.5 and scores[1] < -0.3
    assert VaderScorer().score_texts(["the"]).tolist() == [0.0]


def test_text_reward_checks_length():
    batch = batch_from([[1, EOS, 0, 0, 0]] * 2, texts=["ab", "abcd"])
    assert TextReward(lambda p, r: [len(x) for x in r])(batch).tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match="3 scores for 2"):
        TextReward(lambda p, r: [1, 2, 3])(batch)


def test_reward_model_scorer_reads_the_eos_token_under_left_padding():
    torch.set_num_threads(1)
    lm, tok = tiny_causal_lm(seed=2)
    rm = RewardModel.from_causal_lm(lm)
    eos = tok.eos_token_id
    a, b = tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("b")
    # row 0 has a shorter prompt (left padding) and ends in EOS followed by pad (= EOS) filler
    q = torch.tensor([[eos, a, b], [a, b, a]])
    qm = torch.tensor([[0, 1, 1], [1, 1, 1]])
    resp = torch.tensor([[b, eos, eos], [a, a, eos]])
    has_eos, last, mask = find_first_eos(resp, eos)
    batch = RolloutBatch(q, qm, resp, mask, has_eos, last, ["", ""], ["", ""])
    scores = RewardModelScorer(rm)(batch)
    with torch.no_grad():
        alone = rm(torch.tensor([[a, b, b, eos]]), torch.ones(1, 4, dtype=torch.long))
    assert scores[0] == pytest.approx(float(alone[0]), abs=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        RewardModelScorer(rm, batch_size=0)


@pytest.mark.parametrize("max_length", [512, 7])
def test_reward_model_scores_rows_sharing_a_prompt_with_the_prompt_computed_once(max_length):
    """The k completions of a prompt: the scorer runs the prompt once (its KV cache shared) and gives the
    scores of the plain rows prompt ‖ completion, also when truncation cuts a group's prompts differently
    (they are then different prompts) and for a chunk whose rows share nothing (the plain path)."""
    from prefrl.lm.encoding import collate_prompt_completion

    lm, tok = tiny_causal_lm(seed=1)
    rm = RewardModel.from_causal_lm(lm, n_heads=3).eval()
    rm.set_normalisation(torch.randn(3, 10, generator=torch.Generator().manual_seed(0)))
    prompts = ["the cat sat"] * 3 + ["x"] * 3 + ["a good film because"]
    texts = ["on the mat", "", "quietly, and then it left", "y", "yy", "no", "was long"]
    batch = batch_from([[1, EOS]] * len(prompts), prompts, texts)
    calls = []
    real = rm.backbone.forward

    def spy(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        calls.append(tuple(kw["input_ids"].shape))
        return real(*a, **kw)

    rm.backbone.forward = spy
    scorer = RewardModelScorer(rm, tok, batch_size=5, max_length=max_length)
    members = torch.cat([scorer._member_scores(batch, slice(0, 5)), scorer._member_scores(batch, slice(5, 7))], 1)
    got = scorer(batch)
    del rm.backbone.forward
    enc = collate_prompt_completion(tok, prompts, texts, max_length)
    with torch.no_grad():
        plain = rm.member_scores(enc["input_ids"], enc["attention_mask"])  # (M, B)
    torch.testing.assert_close(members, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, plain.mean(0), atol=1e-5, rtol=0)
    # first chunk: its distinct prompts once, then its 5 completions on their cache; second chunk: 2 plain rows
    n_prompts = len({tuple(r) for r in _prompt_rows(tok, prompts[:5], texts[:5], max_length)})
    assert calls[0][0] == n_prompts < 5 and calls[1][0] == 5 and calls[2][0] == 2


def _prompt_rows(tok, prompts, texts, max_length):  # noqa: ANN001, ANN202
    from prefrl.lm.encoding import encode_prompt_completion

    out = []
    for p, t in zip(prompts, texts, strict=True):
        ids, cmask = encode_prompt_completion(tok, p, t, max_length)
        out.append(ids[: len(ids) - sum(cmask)])
    return out
