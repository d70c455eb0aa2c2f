"""AI judge teacher: both-order voting, the local-LM score, and the HTTP client (mocked)."""

from __future__ import annotations

import json
import math
import re

import httpx
import pytest
import torch

from prefrl.data.types import TextPair
from prefrl.teachers.ai_judge import AIJudgeTeacher, HTTPJudge, LocalLMJudge


class FnJudge:
    """A judge given by a function of (prompt, first, second); records its calls."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = []

    def scores(self, items):
        self.calls.extend(items)
        return [self.fn(*item) for item in items]


PAIRS = [
    TextPair("Say hi", "hello there friend", "hi"),
    TextPair("Say hi", "yo", "good morning to you"),
    TextPair("Say hi", "same", "same"),
]


def test_consistent_judge_gives_hard_labels_and_sees_both_orders():
    judge = FnJudge(lambda p, first, second: float(len(first) - len(second)))  # prefers longer, no bias
    teacher = AIJudgeTeacher(judge)
    assert teacher.answer(PAIRS) == [1.0, 0.0, 0.5]
    # every pair was asked as (a, b) and as (b, a)
    assert ("Say hi", "hello there friend", "hi") in judge.calls and ("Say hi", "hi", "hello there friend") in judge.calls
    assert len(judge.calls) == 2 * len(PAIRS)


@pytest.mark.parametrize("bias", [+5.0, -5.0])
def test_pure_position_bias_is_cancelled_to_equal(bias):
    teacher = AIJudgeTeacher(FnJudge(lambda p, first, second: bias))  # always "A" (or always "B")
    assert teacher.answer(PAIRS) == [0.5, 0.5, 0.5]


def test_bias_smaller_than_preference_is_cancelled_but_larger_flips_to_equal():
    pref = lambda p, f, s: float(len(f) - len(s))  # noqa: E731
    weak = AIJudgeTeacher(FnJudge(lambda p, f, s: pref(p, f, s) + 3.0))
    assert weak.answer(PAIRS[:2]) == [1.0, 0.0]  # |len diff| ≥ 16 > bias
    strong = AIJudgeTeacher(FnJudge(lambda p, f, s: pref(p, f, s) + 100.0))
    assert strong.answer(PAIRS[:2]) == [0.5, 0.5]


def test_no_answer_gives_none_and_margin_gives_equal():
    assert AIJudgeTeacher(FnJudge(lambda p, f, s: None)).answer(PAIRS[:1]) == [None]
    assert AIJudgeTeacher(FnJudge(lambda p, f, s: 0.1 if f.startswith("h") else -0.1), margin=0.5).answer(PAIRS[:1]) == [0.5]


def test_bad_input_raises():
    teacher = AIJudgeTeacher(FnJudge(lambda *a: 1.0))
    with pytest.raises(ValueError, match=r"pairs\[0\]"):
        teacher.answer([("p", "a", "b")])
    with pytest.raises(ValueError, match="margin"):
        AIJudgeTeacher(FnJudge(lambda *a: 1.0), margin=-1.0)
    with pytest.raises(ValueError, match="url"):
        HTTPJudge("localhost:8080")


# -- local causal LM ---------------------------------------------------------------------

def _tiny_lm():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["[UNK]", "A", "B", "Answer", ":", "Prompt", "Response", "Which", "better", "?", "hello", "bye"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=512, n_embd=16, n_layer=1, n_head=2,
                                       bos_token_id=0, eos_token_id=0))
    return model.eval(), tokenizer


def test_local_judge_score_is_logprob_difference_of_answer_tokens():
    model, tokenizer = _tiny_lm()
    judge = LocalLMJudge(model, tokenizer)
    items = [("Which ?", "hello", "bye"), ("Which ?", "bye", "hello")]
    scores = judge.scores(items)
    for (p, f, s), score in zip(items, scores):
        ids = tokenizer.encode(judge.judging_text(p, f, s), add_special_tokens=False)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1)
        assert score == pytest.approx(float(logp[1] - logp[2]), abs=1e-5)  # ids of "A" and "B"
    assert scores[0] != scores[1]  # the order changes the text the model sees


def test_local_judge_with_a_biased_model_answers_equal():
    model, tokenizer = _tiny_lm()
    with torch.no_grad():  # make "A" overwhelmingly likely whatever the context: pure position bias
        model.lm_head.weight.zero_()
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight[1, 0] = 10.0
    teacher = AIJudgeTeacher(LocalLMJudge(model, tokenizer))
    assert teacher.answer([TextPair("Which ?", "hello", "bye")]) == [0.5]


# -- HTTP (OpenAI-compatible) --------------------------------------------------------------

def _server(use_logprobs: bool, bias: float = 0.0, seen=None):
    """A fake chat-completions server that prefers the response containing 'polite'."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if seen is not None:
            seen.append((request, body))
        text = body["messages"][0]["content"]
        a = re.search(r"Response A:\n(.*?)\n\nResponse B:", text, re.S).group(1)
        b = re.search(r"Response B:\n(.*?)\n\nWhich", text, re.S).group(1)
        margin = 2.0 * (("polite" in a) - ("polite" in b)) + bias
        letter = "A" if margin > 0 else "B"
        choice = {"index": 0, "message": {"role": "assistant", "content": letter}, "finish_reason": "length"}
        if use_logprobs:
            lp_a = -math.log1p(math.exp(-margin))
            lp_b = -math.log1p(math.exp(margin))
            choice["logprobs"] = {"content": [{"token": letter, "logprob": max(lp_a, lp_b),
                                               "top_logprobs": [{"token": "A", "logprob": lp_a},
                                                                {"token": "B", "logprob": lp_b}]}]}
        return httpx.Response(200, json={"id": "x", "object": "chat.completion", "choices": [choice]})

    return httpx.Client(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("use_logprobs", [True, False])
def test_http_judge_end_to_end(use_logprobs):
    seen = []
    judge = HTTPJudge("http://judge.local/v1", model="m", api_key="sk-test", use_logprobs=use_logprobs,
                      client=_server(use_logprobs, seen=seen))
    pairs = [TextPair("Greet", "a polite hello", "go away"), TextPair("Greet", "go away", "a polite hello"),
             TextPair("Greet", "polite one", "polite two")]
    assert AIJudgeTeacher(judge).answer(pairs) == [1.0, 0.0, 0.5]
    request, body = seen[0]
    assert str(request.url) == "http://judge.local/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert body["model"] == "m" and body["max_tokens"] == 1 and body["temperature"] == 0.0
    assert body.get("logprobs", False) is use_logprobs


def test_http_judge_position_bias_cancelled_and_errors():
    biased = HTTPJudge("http://judge.local/v1/chat/completions", client=_server(True, bias=-9.0))
    assert AIJudgeTeacher(biased).answer([TextPair("Greet", "a polite hello", "go away")]) == [0.5]

    failing = HTTPJudge("http://judge.local/v1", client=httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(500, text="boom"))))
    with pytest.raises(RuntimeError, match="HTTP 500"):
        AIJudgeTeacher(failing).answer(PAIRS[:1])

    assert HTTPJudge.parse({"choices": [{"message": {"content": "I cannot decide"}}]}) is None
    assert HTTPJudge.parse({"choices": [{"message": {"content": "**B** is better"}}]}) == -1.0
    with pytest.raises(ValueError, match="chat-completions"):
        HTTPJudge.parse({"error": "nope"})


def test_answer_text_queries_labels_the_store_queue(tmp_path):
    from prefrl.data.store import PreferenceStore
    from prefrl.teachers.ai_judge import answer_text_queries

    with PreferenceStore(tmp_path / "prefs.db") as store:
        for pair in PAIRS:
            store.add_query(text_pair_id=store.add_text_pair(pair))
        teacher = AIJudgeTeacher(FnJudge(lambda p, f, s: float(len(f) - len(s))))
        assert answer_text_queries(store, teacher, limit=2) == 2
        assert answer_text_queries(store, teacher) == 1
        assert [mu for _, mu in store.text_preferences()] == [1.0, 0.0, 0.5]
        assert {c.teacher for c in store.comparisons()} == {"ai_judge"}
        assert {c.labeller for c in store.comparisons()} == {"ai_judge"}
        assert answer_text_queries(store, teacher) == 0
        with pytest.raises(ValueError, match="limit"):
            answer_text_queries(store, teacher, limit=-1)
