"""Configuration of supervised fine-tuning (``prefrl lm sft``): :class:`SFTConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from prefrl.lm.train_config import TrainArgs
from prefrl.utils.config import doc

__all__ = ["SFTConfig"]


@dataclass
class SFTConfig(TrainArgs):
    """Supervised fine-tuning on prompt-completion data."""

    data: str = doc("Prompt-completion data: JSONL/JSON/Parquet file or datasets directory.", default="")
    skip_bad_rows: bool = doc("Skip malformed rows (and report how many) instead of failing.", default=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError("data: give a prompt-completion file")
