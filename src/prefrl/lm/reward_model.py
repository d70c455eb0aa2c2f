"""A scalar reward model on a causal-LM backbone (Ouyang et al. 2022 §3.5; Stiennon et al. 2020).

r_θ(x, y) = w · h_T + b, where h_T is the backbone's last hidden state at the last
*non-pad* token of prompt‖response. Several heads on one backbone form a cheap
ensemble: ``forward`` is their mean, ``member_scores`` their spread. After training the
scores are normalised so responses of the reference policy score mean 0, std 1
(Stiennon et al. 2020 §3.4), via the buffers ``score_mean``/``score_std``.

The PPO critic is a ``RewardModel`` initialised from the trained one and read per
token (``per_token_scores``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prefrl.lm.encoding import additive_attention_mask, last_token_index, position_ids_from_mask
from prefrl.lm.models import LoraSpec, load_tokenizer
from prefrl.utils.rng import seeded_global_rng

__all__ = ["RewardModel", "HEAD_FILE", "CONFIG_FILE"]

HEAD_FILE = "reward_head.safetensors"
CONFIG_FILE = "reward_model.json"


class RewardModel(nn.Module):
    """Causal-LM backbone (no LM head) + ``n_heads`` linear scalar heads.

    Args:
        backbone: the base transformer (e.g. ``LlamaModel``, or a ``peft`` wrapper of one)
            returning ``last_hidden_state``.
        hidden_size: width of the backbone's hidden states.
        n_heads: ensemble members M (heads sharing the backbone).
        seed: seed of the heads' initialisation (a private generator).
    """

    def __init__(self, backbone: nn.Module, hidden_size: int, n_heads: int = 1, seed: int = 0) -> None:
        super().__init__()
        if n_heads < 1:
            raise ValueError(f"n_heads must be ≥ 1, got {n_heads}")
        self.backbone = backbone
        self.n_heads = n_heads
        self.hidden_size = hidden_size
        with seeded_global_rng(seed):  # nn.Linear's own init draws from the global RNG; overwritten below
            self.head = nn.Linear(hidden_size, n_heads)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            # N(0, 1/(d+1)) as in Stiennon et al. 2020, so initial scores are O(1)
            self.head.weight.copy_(torch.randn(n_heads, hidden_size, generator=g) / (hidden_size + 1) ** 0.5)
            self.head.bias.zero_()
        self.register_buffer("score_mean", torch.zeros(n_heads))
        self.register_buffer("score_std", torch.ones(n_heads))

    # ------------------------------------------------------------ construction

    @classmethod
    def from_causal_lm(
        cls, model: nn.Module, n_heads: int = 1, lora: LoraSpec | None = None, seed: int = 0
    ) -> RewardModel:
        """Take the base model (the causal LM without its LM head) as backbone."""
        backbone = model.base_model if hasattr(model, "base_model") else model
        if lora is not None:
            from prefrl.lm.models import add_lora

            backbone = add_lora(backbone, lora, task_type=None, seed=seed)
        return cls(backbone, hidden_size=int(model.config.hidden_size), n_heads=n_heads, seed=seed)

    @classmethod
    def from_pretrained_lm(
        cls,
        name_or_path: str | os.PathLike[str],
        n_heads: int = 1,
        lora: LoraSpec | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> RewardModel:
        """A fresh reward model on the backbone of a causal-LM checkpoint (or ``"smollm2"``/``"tiny"``)."""
        from prefrl.lm.models import load_causal_lm

        lm, _ = load_causal_lm(name_or_path, dtype=dtype)
        return cls.from_causal_lm(lm, n_heads=n_heads, lora=lora, seed=seed)

    @property
    def config(self) -> Any:
        """The backbone's transformers config."""
        return self.backbone.config

    # ------------------------------------------------------------ scores

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) last hidden states, positions counted from each row's first real token."""
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        )
        return out.last_hidden_state

    def member_per_token_scores(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True
    ) -> torch.Tensor:
        """(M, B, T): every head's score read at every position."""
        h = self.hidden_states(input_ids, attention_mask)  # (B, T, H)
        scores = self.head(h.to(self.head.weight.dtype)).permute(2, 0, 1)  # (M, B, T)
        if normalize:
            scores = (scores - self.score_mean[:, None, None]) / self.score_std[:, None, None]
        return scores

    def per_token_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T): the ensemble-mean score read at every position (the PPO critic's values)."""
        return self.member_per_token_scores(input_ids, attention_mask).mean(0)

    def member_scores(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = True
    ) -> torch.Tensor:
        """(M, B): each head's score at the last non-pad token."""
        scores = self.member_per_token_scores(input_ids, attention_mask, normalize)  # (M, B, T)
        idx = last_token_index(attention_mask)  # (B,)
        return scores.gather(2, idx[None, :, None].expand(scores.shape[0], -1, 1)).squeeze(-1)

    def pair_member_scores(self, packed: dict[str, torch.Tensor], normalize: bool = True) -> torch.Tensor:
        """(M, 2B): each head's score of the chosen then the rejected responses of packed pairs.

        ``packed`` comes from :func:`prefrl.lm.encoding.pack_preference_pairs` (one row per
        pair, the prompt computed once); the scores equal :meth:`member_scores` of the
        two-row batch. The heads run only at the 2B last tokens.
        """
        out = self.backbone(
            input_ids=packed["input_ids"],
            attention_mask=additive_attention_mask(packed["attention_allowed"], self.head.weight.dtype),
            position_ids=packed["position_ids"],
            use_cache=False,
        )
        h = out.last_hidden_state[packed["last_row"], packed["last_col"]]  # (2B, H)
        scores = self.head(h.to(self.head.weight.dtype)).T  # (M, 2B)
        if normalize:
            scores = (scores - self.score_mean[:, None]) / self.score_std[:, None]
        return scores

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_members: bool = False,
        normalize: bool = True,
        packed: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B,) ensemble-mean score at the last non-pad token; (M, B) with ``return_members``.

        Correct under left and right padding: the last real token is read from
        ``attention_mask`` (pad = EOS for SmolLM2) and positions restart at each row's
        first real token. With ``packed`` (instead of ids and mask) the scores are
        :meth:`pair_member_scores`: (2B,) or (M, 2B), chosen then rejected.
        """
        if packed is not None:
            members = self.pair_member_scores(packed, normalize)
        elif input_ids is None or attention_mask is None:
            raise ValueError("give input_ids and attention_mask, or packed")
        else:
            members = self.member_scores(input_ids, attention_mask, normalize)
        return members if return_members else members.mean(0)

    # ------------------------------------------------------------ normalisation

    def set_normalisation(self, raw_member_scores: torch.Tensor) -> None:
        """Set ``score_mean``/``score_std`` from raw (M, N) scores of reference responses."""
        if raw_member_scores.dim() != 2 or raw_member_scores.shape[0] != self.n_heads:
            raise ValueError(
                f"raw_member_scores must be (M={self.n_heads}, N), got {tuple(raw_member_scores.shape)}"
            )
        if raw_member_scores.shape[1] < 2:
            raise ValueError("normalisation needs at least 2 reference scores")
        self.score_mean.copy_(raw_member_scores.mean(1))
        self.score_std.copy_(raw_member_scores.std(1).clamp(min=1e-6))

    @torch.no_grad()
    def fit_normalisation(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch_size: int = 16
    ) -> None:
        """Normalise so that these (reference) sequences score mean 0, std 1 per head."""
        raw = [
            self.member_scores(
                input_ids[i : i + batch_size], attention_mask[i : i + batch_size], normalize=False
            )
            for i in range(0, input_ids.shape[0], batch_size)
        ]
        self.set_normalisation(torch.cat(raw, dim=1))

    # ------------------------------------------------------------ persistence

    def save_pretrained(self, directory: str | os.PathLike[str], tokenizer: Any = None) -> Path:
        """Backbone in HF format (or its LoRA adapter), heads + normalisation, optional tokenizer."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(d)
        head_state = {
            "weight": self.head.weight.detach().cpu().contiguous(),
            "bias": self.head.bias.detach().cpu().contiguous(),
            "score_mean": self.score_mean.cpu(),
            "score_std": self.score_std.cpu(),
        }
        save_file(head_state, str(d / HEAD_FILE))
        (d / CONFIG_FILE).write_text(
            json.dumps({"n_heads": self.n_heads, "hidden_size": self.hidden_size, "format": 1}, indent=2)
        )
        if tokenizer is not None:
            tokenizer.save_pretrained(d)
        return d

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], dtype: torch.dtype = torch.float32, trainable: bool = True
    ) -> RewardModel:
        """Load what :meth:`save_pretrained` wrote (a LoRA backbone is rebuilt on its base)."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        d = Path(directory)
        if not (d / CONFIG_FILE).exists():
            raise FileNotFoundError(f"{d} is not a reward model directory (no {CONFIG_FILE})")
        meta = json.loads((d / CONFIG_FILE).read_text())
        adapter_cfg = d / "adapter_config.json"
        if adapter_cfg.exists():
            from peft import PeftModel

            from prefrl.lm.models import resolve_model_path

            base_path = resolve_model_path(json.loads(adapter_cfg.read_text())["base_model_name_or_path"])
            base = AutoModel.from_pretrained(base_path, dtype=dtype)
            backbone: nn.Module = PeftModel.from_pretrained(base, str(d), is_trainable=trainable)
        else:
            backbone = AutoModel.from_pretrained(str(d), dtype=dtype)
        model = cls(backbone, hidden_size=int(meta["hidden_size"]), n_heads=int(meta["n_heads"]))
        state = load_file(str(d / HEAD_FILE))
        with torch.no_grad():
            model.head.weight.copy_(state["weight"])
            model.head.bias.copy_(state["bias"])
            model.score_mean.copy_(state["score_mean"])
            model.score_std.copy_(state["score_std"])
        return model

    @staticmethod
    def load_tokenizer(directory: str | os.PathLike[str], padding_side: str = "right") -> Any:
        """The tokenizer saved next to a reward model."""
        return load_tokenizer(directory, padding_side=padding_side)  # type: ignore[arg-type]
