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

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prefrl.lm.encoding import additive_attention_mask, last_token_index, position_ids_from_mask
from prefrl.lm.models import LoraSpec, load_tokenizer
from prefrl.utils.files import atomic_write
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
        cls,
        model: nn.Module,
        n_heads: int = 1,
        lora: LoraSpec | None = None,
        seed: int = 0,
        base_name_or_path: str | os.PathLike[str] | None = None,
    ) -> RewardModel:
        """Take the base model (the causal LM without its LM head) as backbone.

        With ``lora`` the backbone gets fresh adapters; ``base_name_or_path`` (where ``model``
        came from) is what their ``adapter_config.json`` names as base.
        """
        backbone = model.base_model if hasattr(model, "base_model") else model
        if lora is not None:
            from prefrl.lm.models import add_lora

            backbone = add_lora(backbone, lora, task_type=None, seed=seed, base_name_or_path=base_name_or_path)
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

        lm, _ = load_causal_lm(name_or_path, dtype=dtype, merge_adapter=True)  # a LoRA checkpoint is merged
        return cls.from_causal_lm(lm, n_heads=n_heads, lora=lora, seed=seed, base_name_or_path=name_or_path)

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
        """(M, B): each head's score at the last non-pad token (the heads run there only)."""
        h = self.hidden_states(input_ids, attention_mask)  # (B, T, H)
        last = last_token_index(attention_mask)  # (B,)
        return self._head_scores(h[torch.arange(h.shape[0], device=h.device), last], normalize)

    def shared_prompt_member_scores(self, shared: dict[str, torch.Tensor], normalize: bool = True) -> torch.Tensor:
        """(M, B): :meth:`member_scores` of the rows prompt ‖ completion of ``shared``, each prompt computed once.

        ``shared`` comes from :func:`prefrl.lm.encoding.collate_shared_prompts`: U distinct prompts
        (left-padded), the prompt row ``group`` of each of the B rows, their completions (right-padded). The
        U prompts run through the backbone once; their KV cache is indexed by ``group`` and the B completions
        run on top of it, at the positions they have in their own rows. Same scores as the B rows, to float
        rounding, with B − U fewer prompts computed (the k completions of a GRPO / RLOO prompt).
        """
        p_mask, group, c_mask = shared["prompt_mask"], shared["group"], shared["completion_mask"]
        first = self.backbone(
            input_ids=shared["prompt_ids"],
            attention_mask=p_mask,
            position_ids=position_ids_from_mask(p_mask),
            use_cache=True,
        )
        cache = first.past_key_values
        cache.batch_select_indices(group)  # (U, …) → (B, …): each row's prompt
        n_prompt = p_mask.sum(1)[group]  # (B,)
        cols = torch.arange(c_mask.shape[1], device=c_mask.device)
        out = self.backbone(
            input_ids=shared["completion_ids"],
            attention_mask=torch.cat([p_mask[group], c_mask], 1),
            position_ids=n_prompt[:, None] + cols[None, :],
            past_key_values=cache,
            use_cache=True,  # the cache is read; its update is dropped with it
        )
        h = out.last_hidden_state  # (B, C, H)
        last = c_mask.sum(1) - 1  # (B,) the completion's last token (its EOS)
        return self._head_scores(h[torch.arange(h.shape[0], device=h.device), last], normalize)

    def _head_scores(self, h: torch.Tensor, normalize: bool) -> torch.Tensor:
        """(M, N) scores of the heads on hidden states ``h`` (N, H), normalised when asked."""
        scores = self.head(h.to(self.head.weight.dtype)).T  # (M, N)
        if normalize:
            scores = (scores - self.score_mean[:, None]) / self.score_std[:, None]
        return scores

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
        return self._head_scores(h, normalize)  # (M, 2B)

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
        """Write a standard Hugging Face sequence classifier plus what prefrl needs to resume.

        ``AutoModelForSequenceClassification.from_pretrained(directory)`` loads it (``config.json``
        with ``num_labels = 1`` and a pad token that is not EOS, ``model.safetensors`` with the
        backbone and ``score.weight``, the normalised ensemble-mean head; a LoRA backbone as its
        base weights plus ``adapter_config.json`` / ``adapter_model.safetensors``, which
        transformers applies on load) and scores a sequence at its last non-pad token as prefrl
        does: its logit + ``score_offset`` (in ``config.json``) is :meth:`forward`'s score. The
        offset is (b − μ)/σ averaged over the heads, which a bias-free HF score head cannot hold;
        Bradley-Terry margins, rankings and best-of-n picks are the HF logits' own. prefrl's own
        files: ``reward_head.safetensors`` (every head, bias and normalisation),
        ``reward_model.json`` and, for LoRA, ``adapter/`` (the adapter as PEFT saved it).
        """
        from safetensors.torch import load_file, save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        pad_id = _export_pad_id(tokenizer, self.config)
        weight, offset = self.exported_head()
        base = self.backbone
        state = {}
        if hasattr(self.backbone, "peft_config"):
            self.backbone.save_pretrained(d / "adapter")
            base = self.backbone.get_base_model()
            # the same adapter for transformers, its keys under the sequence classifier's "model."
            adapter = load_file(str(d / "adapter" / "adapter_model.safetensors"))
            hf_adapter = {k.replace("base_model.model.", "base_model.model.model.", 1): v for k, v in adapter.items()}
            atomic_write(d / "adapter_model.safetensors", lambda tmp: save_file(hf_adapter, str(tmp), metadata={"format": "pt"}))
            atomic_write(d / "adapter_config.json", (d / "adapter" / "adapter_config.json").read_text())
        for k, v in base.state_dict().items():
            if "lora_" not in k:
                state["model." + k.replace(".base_layer", "")] = v.detach().cpu().contiguous()
        config = copy.deepcopy(base.config)
        config.architectures = [_sequence_classifier_name(config)]
        config.num_labels = 1
        config.id2label, config.label2id = {0: "score"}, {"score": 0}
        config.pad_token_id = pad_id
        config.score_offset = offset
        config.save_pretrained(d)
        state["score.weight"] = weight.contiguous()
        atomic_write(d / "model.safetensors", lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
        head_state = {
            "weight": self.head.weight.detach().cpu().contiguous(),
            "bias": self.head.bias.detach().cpu().contiguous(),
            "score_mean": self.score_mean.cpu(),
            "score_std": self.score_std.cpu(),
        }
        atomic_write(d / HEAD_FILE, lambda tmp: save_file(head_state, str(tmp)))
        meta = {
            "n_heads": self.n_heads,
            "hidden_size": self.hidden_size,
            "format": 2,
            "score_offset": offset,
            # config.json's pad is the export's; the backbone keeps its own (embedding padding_idx)
            "backbone_pad_token_id": base.config.pad_token_id,
        }
        atomic_write(d / CONFIG_FILE, json.dumps(meta, indent=2))
        if tokenizer is not None:
            tokenizer = copy.deepcopy(tokenizer)
            if pad_id is not None and pad_id != tokenizer.pad_token_id:
                tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
            tokenizer.save_pretrained(d)
        return d

    @torch.no_grad()
    def exported_head(self) -> tuple[torch.Tensor, float]:
        """``(w (1, H), c)`` with w·h + c = the normalised ensemble-mean score of hidden state h."""
        scale = 1.0 / self.score_std.detach().cpu()  # (M,)
        w = (self.head.weight.detach().cpu() * scale[:, None]).mean(0, keepdim=True)  # (1, H)
        c = ((self.head.bias.detach().cpu() - self.score_mean.detach().cpu()) * scale).mean()
        return w.float(), float(c)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], dtype: torch.dtype = torch.float32, trainable: bool = True
    ) -> RewardModel:
        """Load what :meth:`save_pretrained` wrote (a LoRA backbone is rebuilt on its base)."""
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / CONFIG_FILE).exists():
            raise FileNotFoundError(f"{d} is not a reward model directory (no {CONFIG_FILE})")
        meta = json.loads((d / CONFIG_FILE).read_text())
        adapter_dir = d / "adapter"
        if (adapter_dir / "adapter_config.json").exists() or not (d / "config.json").exists():
            # LoRA: the base weights beside it (format 2), or the base it names (format 1)
            from peft import PeftModel

            if not (adapter_dir / "adapter_config.json").exists():
                adapter_dir = d
            if (d / "config.json").exists():
                base = _load_backbone(d, dtype, meta)
            else:
                from prefrl.lm.models import load_causal_lm

                base_path = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
                base = load_causal_lm(base_path, dtype=dtype, merge_adapter=True)[0].base_model
            backbone: nn.Module = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=trainable)
        else:
            backbone = _load_backbone(d, dtype, meta)
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


def _load_backbone(d: Path, dtype: torch.dtype, meta: dict[str, Any]) -> nn.Module:
    """The backbone (no head) from an RM directory's ``model.safetensors``, as it was trained."""
    import transformers
    from transformers import AutoModel

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the sequence classifier's score.weight is ours to load
    try:
        backbone = AutoModel.from_pretrained(str(d), dtype=dtype)
    finally:
        transformers.logging.set_verbosity(verbosity)
    if "backbone_pad_token_id" in meta:  # config.json's pad is the export's; training used its own
        pad = meta["backbone_pad_token_id"]
        backbone.config.pad_token_id = pad
        backbone.get_input_embeddings().padding_idx = pad
    return backbone


def _sequence_classifier_name(config: Any) -> str:
    """``LlamaForSequenceClassification`` for a Llama config, and so on."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification._model_mapping[type(config)].__name__


def _export_pad_id(tokenizer: Any, config: Any) -> int | None:
    """A pad token id that is not EOS, for Hugging Face's "last non-pad token" rule.

    HF sequence classifiers score the rightmost token that is not ``pad_token_id``; with
    SmolLM2's pad = EOS that would be the token *before* the EOS, where prefrl reads the score
    at the EOS itself. So the exported pad is another special token that never ends a scored
    sequence (``<|endoftext|>`` or unk where the vocabulary has one, else BOS).
    """
    if tokenizer is None:
        return config.pad_token_id
    eos = tokenizer.eos_token_id
    vocab = tokenizer.get_vocab()
    for token in ("<|endoftext|>", tokenizer.unk_token, tokenizer.bos_token, "<|im_start|>"):
        if token is not None and token in vocab and vocab[token] != eos:
            return int(vocab[token])
    return tokenizer.pad_token_id
