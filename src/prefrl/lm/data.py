"""Text datasets for the LM stages, in TRL's conventions.

Files: JSON Lines (``.jsonl``), a JSON list (``.json``), Parquet (``.parquet``) or a
directory written by ``datasets.Dataset.save_to_disk`` (the ``train`` split of a
``DatasetDict``). Row formats:

- prompt-only: ``{"prompt": str | messages}``
- prompt-completion: ``{"prompt": …, "completion": …}`` or ``{"messages": [...]}``
  (the last assistant turn is the completion)
- preference: ``{"prompt": …, "chosen": …, "rejected": …}``; conversational rows may
  leave the prompt implicit (``chosen``/``rejected`` full conversations sharing a
  prefix); or ``{"question": str, "response_chosen": str, "response_rejected": str}``

Conversational values are lists of ``{"role", "content"}`` dicts, rendered to text
with the tokenizer's chat template (ChatML when no tokenizer is given). A malformed row
raises :class:`DataError` naming file, line and field, unless ``skip_bad_rows=True``,
in which case it is counted in ``LoadResult.skipped``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

__all__ = [
    "DataError",
    "PromptExample",
    "CompletionExample",
    "PreferenceExample",
    "UnpairedExample",
    "LoadResult",
    "load_prompts",
    "load_completions",
    "load_preferences",
    "load_unpaired",
    "read_rows",
    "render_messages",
    "write_jsonl",
]

Messages = list[dict[str, str]]
T = TypeVar("T")


class DataError(ValueError):
    """A malformed data file or row; the message names file, line (or row) and field."""


@dataclass
class PromptExample:
    """A prompt, rendered to text (chat template applied, generation prompt added)."""

    prompt: str


@dataclass
class CompletionExample:
    """A prompt and its demonstration completion (SFT data)."""

    prompt: str
    completion: str


@dataclass
class PreferenceExample:
    """A prompt with a chosen and a rejected response; ``mu`` = preference mass on ``chosen``.

    ``mu`` is 1 for files; pairs from the PreferenceStore may be ties (0.5).
    """

    prompt: str
    chosen: str
    rejected: str
    mu: float = 1.0


@dataclass
class UnpairedExample:
    """A prompt, one response and whether it is desirable (KTO data, TRL's unpaired format)."""

    prompt: str
    completion: str
    label: bool


@dataclass
class LoadResult(Generic[T], Sequence):  # type: ignore[type-arg]
    """The examples of a file and the number of rows skipped as malformed."""

    examples: list[T] = field(default_factory=list)
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: Any) -> Any:
        return self.examples[i]

    def __iter__(self) -> Iterator[T]:
        return iter(self.examples)


# ---------------------------------------------------------------- reading rows


def read_rows(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(location, row)`` pairs; location is ``"file:line N"`` or ``"file:row N"``."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    if p.is_dir():
        yield from _read_datasets_dir(p)
        return
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        with p.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    yield f"{p}:line {lineno}", _BadRow(_not_utf8(raw, exc))
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"{p}:line {lineno}", _BadRow(f"invalid JSON ({exc.msg})")
                    continue
                yield f"{p}:line {lineno}", row
    elif suffix == ".json":
        raw = p.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise DataError(f"{p}:line {line}: {_not_utf8(raw, exc)}") from None
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
        if not isinstance(rows, list):
            raise DataError(f"{p}: a .json file must hold a list of rows")
        for i, row in enumerate(rows):
            yield f"{p}:row {i}", row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(p).to_pylist()):
            yield f"{p}:row {i}", row
    else:
        raise DataError(
            f"{p}: unknown data format {suffix!r}; use .jsonl, .json, .parquet or a datasets directory"
        )


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    start = raw.rfind(b"\n", 0, exc.start) + 1  # the byte's column within its line
    return f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start - start + 1}); save the file as UTF-8"


def _read_datasets_dir(p: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(p))
    except Exception as exc:  # noqa: BLE001 - datasets raises several types
        raise DataError(f"{p}: not a datasets.save_to_disk directory ({exc})") from None
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise DataError(f"{p}: DatasetDict without a 'train' split (has {list(ds)})")
        ds = ds["train"]
    for i, row in enumerate(ds):
        yield f"{p}:row {i}", dict(row)


class _BadRow(dict):  # type: ignore[type-arg]
    """Marker for a row that could not be parsed at all."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def write_jsonl(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> Path:
    """Write rows as JSON Lines (UTF-8, one object a line); parent directories are created."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return p


# ---------------------------------------------------------------- rendering


def render_messages(messages: Messages, tokenizer: Any = None, add_generation_prompt: bool = False) -> str:
    """Render a conversation to text with the tokenizer's chat template (ChatML without one)."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


#: Chat roles a conversation may use (those of TRL's and OpenAI's message formats).
ROLES = ("system", "user", "assistant", "tool")


def _check_messages(value: Any, where: str, name: str) -> Messages:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field {name!r} must be a non-empty list of messages")
    for i, m in enumerate(value):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise DataError(f"{where}: field {name!r} message {i} needs string 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(
                f"{where}: field {name!r} message {i} has unknown role {m['role']!r} (use one of {', '.join(ROLES)})"
            )
    return value


def _text(row: dict[str, Any], name: str, where: str, allow_empty: bool = False) -> str:
    """The string field ``name``; empty (or blank) only where ``allow_empty`` (a generated reply may be silence)."""
    if name not in row or row[name] is None:
        raise DataError(f"{where}: missing field {name!r}")
    value = row[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(f"{where}: field {name!r} is empty")
    return value


def _continuation(prompt_msgs: Messages, full_msgs: Messages, tokenizer: Any) -> str:
    """Text of ``full_msgs`` after the rendered ``prompt_msgs`` + generation prompt."""
    prompt_text = render_messages(prompt_msgs, tokenizer, add_generation_prompt=True)
    full_text = render_messages(full_msgs, tokenizer)
    if not full_text.startswith(prompt_text):
        # templates that do not render a prefix-stable conversation: fall back to the last turn
        return full_msgs[-1]["content"]
    return full_text[len(prompt_text) :]


def _parse_prompt(row: dict[str, Any], where: str, tokenizer: Any) -> str:
    if "prompt" not in row:
        raise DataError(f"{where}: missing field 'prompt'")
    if _is_messages(row["prompt"]):
        return render_messages(_check_messages(row["prompt"], where, "prompt"), tokenizer, True)
    return _text(row, "prompt", where)


def _parse_completion(row: dict[str, Any], where: str, tokenizer: Any) -> CompletionExample:
    if "messages" in row and "prompt" not in row:
        msgs = _check_messages(row["messages"], where, "messages")
        if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
            raise DataError(f"{where}: field 'messages' must end with an assistant turn after a prompt")
        return CompletionExample(
            render_messages(msgs[:-1], tokenizer, True), _continuation(msgs[:-1], msgs, tokenizer)
        )
    prompt = _parse_prompt(row, where, tokenizer)
    if "completion" not in row:
        raise DataError(f"{where}: missing field 'completion'")
    if _is_messages(row["prompt"]):
        p_msgs = row["prompt"]
        c_msgs = _check_messages(row["completion"], where, "completion")
        return CompletionExample(prompt, _continuation(p_msgs, p_msgs + c_msgs, tokenizer))
    return CompletionExample(prompt, _text(row, "completion", where, allow_empty=True))


def _parse_preference(row: dict[str, Any], where: str, tokenizer: Any) -> PreferenceExample:
    if "question" in row:
        return PreferenceExample(
            _text(row, "question", where),
            _text(row, "response_chosen", where),
            _text(row, "response_rejected", where),
        )
    for name in ("chosen", "rejected"):
        if name not in row or row[name] is None:
            raise DataError(f"{where}: missing field {name!r}")
    if _is_messages(row["chosen"]) or _is_messages(row["rejected"]):
        chosen = _check_messages(row["chosen"], where, "chosen")
        rejected = _check_messages(row["rejected"], where, "rejected")
        if "prompt" in row and row["prompt"] is not None:
            p_msgs = _check_messages(row["prompt"], where, "prompt")
            chosen, rejected = p_msgs + chosen, p_msgs + rejected
        else:  # implicit prompt: the longest shared prefix of whole turns
            n = 0
            while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
                n += 1
            if n == 0:
                raise DataError(
                    f"{where}: 'chosen' and 'rejected' share no prompt turn and there is no 'prompt'"
                )
            p_msgs = chosen[:n]
        return PreferenceExample(
            render_messages(p_msgs, tokenizer, True),
            _continuation(p_msgs, chosen, tokenizer),
            _continuation(p_msgs, rejected, tokenizer),
        )
    return PreferenceExample(
        _text(row, "prompt", where), _text(row, "chosen", where), _text(row, "rejected", where)
    )


def _load(path: str | os.PathLike[str], parse: Any, tokenizer: Any, skip_bad_rows: bool) -> LoadResult[Any]:
    result: LoadResult[Any] = LoadResult()
    for where, row in read_rows(path):
        try:
            if isinstance(row, _BadRow):
                raise DataError(f"{where}: {row.reason}")
            if not isinstance(row, dict):
                raise DataError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
            result.examples.append(parse(row, where, tokenizer))
        except DataError:
            if not skip_bad_rows:
                raise
            result.skipped += 1
    if not result.examples:
        raise DataError(f"{path}: no usable rows ({result.skipped} skipped)")
    return result


def load_prompts(
    path: str | os.PathLike[str], tokenizer: Any = None, skip_bad_rows: bool = False
) -> LoadResult[PromptExample]:
    """Prompts from any file with a ``prompt`` (or ``question``) column; other columns are ignored."""

    def parse(row: dict[str, Any], where: str, tok: Any) -> PromptExample:
        if "prompt" not in row and "question" in row:
            return PromptExample(_text(row, "question", where))
        if "messages" in row and "prompt" not in row:
            msgs = _check_messages(row["messages"], where, "messages")
            if msgs[-1]["role"] == "assistant":
                msgs = msgs[:-1]
            return PromptExample(render_messages(msgs, tok, True))
        return PromptExample(_parse_prompt(row, where, tok))

    return _load(path, parse, tokenizer, skip_bad_rows)


def load_completions(
    path: str | os.PathLike[str], tokenizer: Any = None, skip_bad_rows: bool = False
) -> LoadResult[CompletionExample]:
    """Prompt-completion pairs (``prompt``/``completion`` or ``messages``) for SFT."""
    return _load(path, _parse_completion, tokenizer, skip_bad_rows)


def load_preferences(
    path: str | os.PathLike[str], tokenizer: Any = None, skip_bad_rows: bool = False
) -> LoadResult[PreferenceExample]:
    """Preference pairs (``prompt``/``chosen``/``rejected`` or ``question``/``response_*``)."""
    return _load(path, _parse_preference, tokenizer, skip_bad_rows)


def _parse_unpaired(row: dict[str, Any], where: str, tokenizer: Any) -> UnpairedExample:
    if "label" not in row or row["label"] is None:
        raise DataError(f"{where}: missing field 'label'")
    label = row["label"]
    if not isinstance(label, bool):
        raise DataError(f"{where}: field 'label' must be true or false, got {type(label).__name__} {label!r}")
    example = _parse_completion(row, where, tokenizer)
    if not example.completion:
        raise DataError(f"{where}: field 'completion' is empty")
    return UnpairedExample(example.prompt, example.completion, label)


def load_unpaired(
    path: str | os.PathLike[str], tokenizer: Any = None, skip_bad_rows: bool = False
) -> LoadResult[UnpairedExample]:
    """Unpaired feedback for KTO: ``prompt``/``completion`` (text or messages) and ``label`` (a JSON boolean)."""
    return _load(path, _parse_unpaired, tokenizer, skip_bad_rows)
