"""An AI teacher for text pairs (RLAIF): an LLM judge asked in both orders.

A judge scores ``(prompt, first, second)``: a positive score means it prefers the response
shown *first* (as "A"), a negative one the response shown second ("B"), ``None`` means it
gave no usable answer. Judges show position bias (they favour "A" or "B" regardless of
content; Zheng et al. 2023, *Judging LLM-as-a-judge*, §3.3), so :class:`AIJudgeTeacher`
asks every pair twice, as (a, b) and as (b, a), and keeps an answer only when both
orders pick the same response; when they disagree the teacher answers *equal* (μ = 0.5),
as in Lee et al. 2023 (*RLAIF*, §2.1.2 "position bias"). No usable answer in an order → ``None``.

Two judges:

- :class:`LocalLMJudge`: a local ``transformers`` causal LM; the score is
  log p("A") − log p("B") for the next token after the judging prompt.
- :class:`HTTPJudge`: an OpenAI-compatible ``/v1/chat/completions`` endpoint (any URL:
  vLLM, llama.cpp server, OpenAI…) called with ``httpx``. The score is taken from the
  returned top log-probabilities when the server gives them, else from the first letter
  of the reply (±1).

Usage::

    teacher = AIJudgeTeacher(HTTPJudge("http://127.0.0.1:8080/v1", model="qwen"))
    mus = teacher.answer([TextPair(prompt, response_a, response_b)])   # μ on response_a
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from prefrl.data.types import TextPair

#: The judging prompt; ``{prompt}``, ``{first}`` and ``{second}`` are filled in.
JUDGE_TEMPLATE = (
    "You are a careful judge of AI assistant responses. Read the user's prompt and two "
    "responses, A and B, and decide which one is more helpful, correct and harmless. "
    "Judge the content only: ignore the order and the length of the responses.\n\n"
    "Prompt:\n{prompt}\n\n"
    "Response A:\n{first}\n\n"
    "Response B:\n{second}\n\n"
    "Which response is better? Answer with a single letter, A or B."
)


class Judge(Protocol):
    """Scores ``(prompt, first, second)`` items: > 0 prefers ``first``, < 0 ``second``, None = no answer."""

    def scores(self, items: Sequence[tuple[str, str, str]]) -> list[float | None]: ...


def _render(template: str, prompt: str, first: str, second: str) -> str:
    return template.format(prompt=prompt, first=first, second=second)


class LocalLMJudge:
    """A local causal LM judge: score = log p(A) − log p(B) at the answer position.

    Args:
        model: a ``transformers`` causal LM (``model(input_ids).logits`` of shape (B, T, V)).
        tokenizer: its tokenizer.
        template: the judging prompt.
        use_chat_template: wrap the prompt as a user turn with the tokenizer's chat
            template (instruction-tuned judges); otherwise the prompt is followed by
            ``"\\nAnswer:"`` and the candidates are " A" / " B".
        max_length: prompts longer than this many tokens are cut from the left.
    """

    def __init__(self, model: Any, tokenizer: Any, template: str = JUDGE_TEMPLATE,
                 use_chat_template: bool = False, max_length: int = 2048) -> None:
        if max_length < 8:
            raise ValueError(f"max_length must be ≥ 8, got {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.use_chat_template = use_chat_template
        self.max_length = max_length
        prefix = "" if use_chat_template else " "
        self.token_a = self._single_token(prefix + "A")
        self.token_b = self._single_token(prefix + "B")

    def _single_token(self, text: str) -> int:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"the judge's tokenizer must encode {text!r} as one token, got {ids}")
        return int(ids[0])

    def judging_text(self, prompt: str, first: str, second: str) -> str:
        """The full text fed to the model, ending where the answer letter comes."""
        body = _render(self.template, prompt, first, second)
        if self.use_chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True)
        return body + "\nAnswer:"

    def scores(self, items: Sequence[tuple[str, str, str]]) -> list[float | None]:
        import torch

        out: list[float | None] = []
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for prompt, first, second in items:  # one at a time: no padding subtleties
                    ids = self.tokenizer.encode(self.judging_text(prompt, first, second), add_special_tokens=False)
                    ids = ids[-self.max_length:]
                    input_ids = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
                    logits = self.model(input_ids=input_ids).logits[0, -1].float()  # (V,)
                    logp = torch.log_softmax(logits, dim=-1)
                    out.append(float(logp[self.token_a] - logp[self.token_b]))
        finally:
            self.model.train(was_training)
        return out


class HTTPJudge:
    """A judge behind an OpenAI-compatible chat-completions endpoint.

    Args:
        url: the API base (``http://host:port/v1``) or the full ``…/chat/completions`` URL.
        model: the model name sent in the request.
        api_key: sent as ``Authorization: Bearer …`` when given.
        client: an ``httpx.Client`` (tests pass one with ``httpx.MockTransport``).
        timeout: seconds per request.
        template: the judging prompt.
        use_logprobs: ask for top log-probabilities (scores become log p(A) − log p(B)).
    """

    def __init__(self, url: str, model: str = "default", api_key: str | None = None, client: Any = None,
                 timeout: float = 60.0, template: str = JUDGE_TEMPLATE, use_logprobs: bool = True) -> None:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model = model
        self.template = template
        self.use_logprobs = use_logprobs
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client if client is not None else httpx.Client(timeout=timeout)
        self._headers = headers

    def request_body(self, prompt: str, first: str, second: str) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": _render(self.template, prompt, first, second)}],
            "max_tokens": 1,
            "temperature": 0.0,
        }
        if self.use_logprobs:
            body.update(logprobs=True, top_logprobs=5)
        return body

    @staticmethod
    def parse(response: dict) -> float | None:
        """Score from a chat-completions response; ``None`` when it names neither A nor B."""
        try:
            choice = response["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"not a chat-completions response: {str(response)[:200]}") from None
        content = (choice.get("logprobs") or {}).get("content") or []
        if content:
            top = {str(t.get("token", "")).strip().upper(): float(t["logprob"])
                   for t in reversed(content[0].get("top_logprobs") or []) if "logprob" in t}
            lp_a, lp_b = top.get("A"), top.get("B")
            if lp_a is not None or lp_b is not None:
                return (lp_a if lp_a is not None else -math.inf) - (lp_b if lp_b is not None else -math.inf)
        text = str((choice.get("message") or {}).get("content") or "").strip().lstrip("*(\"' ").upper()
        if text.startswith("A"):
            return 1.0
        if text.startswith("B"):
            return -1.0
        return None

    def scores(self, items: Sequence[tuple[str, str, str]]) -> list[float | None]:
        out: list[float | None] = []
        for prompt, first, second in items:
            r = self.client.post(self.url, json=self.request_body(prompt, first, second), headers=self._headers)
            if r.status_code >= 400:
                raise RuntimeError(f"judge endpoint {self.url} answered HTTP {r.status_code}: {r.text[:200]}")
            out.append(self.parse(r.json()))
        return out


class AIJudgeTeacher:
    """A teacher for text pairs that asks a judge in both orders (position-bias cancelling).

    ``answer(pairs)`` returns μ on ``response_a`` per pair: 1 or 0 when both orders agree,
    0.5 when they disagree (or a score falls within ``margin`` of zero), ``None`` when the
    judge gave no usable answer in one of the orders.
    """

    compares = "text"

    def __init__(self, judge: Judge, name: str = "ai_judge", margin: float = 0.0, lease_as: str | None = None) -> None:
        if not (margin >= 0.0 and math.isfinite(margin)):
            raise ValueError(f"margin must be a finite number ≥ 0, got {margin}")
        self.judge = judge
        self.name = name
        self.margin = margin
        self.lease_as = lease_as or name
        """The labeller it leases the store's queries as (default: its name)."""

    def _vote(self, score: float | None) -> int | None:
        """+1 first preferred, −1 second, 0 undecided, None no answer."""
        if score is None or math.isnan(score):
            return None
        return 1 if score > self.margin else (-1 if score < -self.margin else 0)

    def answer(self, pairs: Sequence[TextPair]) -> list[float | None]:
        for i, pair in enumerate(pairs):
            if not isinstance(pair, TextPair):
                raise ValueError(f"pairs[{i}] must be a TextPair, got {type(pair).__name__}")
            pair.validate()
        forward = self.judge.scores([(p.prompt, p.response_a, p.response_b) for p in pairs])
        backward = self.judge.scores([(p.prompt, p.response_b, p.response_a) for p in pairs])
        if len(forward) != len(pairs) or len(backward) != len(pairs):
            raise RuntimeError("the judge returned a different number of scores than pairs")
        mus: list[float | None] = []
        for s_ab, s_ba in zip(forward, backward):
            v_ab, v_ba = self._vote(s_ab), self._vote(s_ba)
            if v_ab is None or v_ba is None:
                mus.append(None)  # an order without an answer: no position-free evidence
            else:
                a_first, a_second = v_ab, -v_ba  # both now: +1 = response_a preferred
                mus.append(1.0 if a_first == a_second == 1 else 0.0 if a_first == a_second == -1 else 0.5)
        return mus


def answer_text_queries(store: Any, teacher: AIJudgeTeacher, labeller: str = "ai_judge", *,
                        lease_seconds: float = 120.0, limit: int | None = None) -> int:
    """Deprecated: :func:`prefrl.teachers.queue.answer_queries` pumps any teacher (``teacher.lease_as``)."""
    from prefrl.teachers.queue import answer_queries

    teacher.lease_as = labeller
    return answer_queries(store, teacher, lease_seconds=lease_seconds, limit=limit)
