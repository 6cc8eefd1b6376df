"""Memory settings of the trainer core: LoRA adapters through peft (only the adapters train, a crash
resumes exactly, the final directory is a plain merged model that transformers loads) and gradient
checkpointing (the same training, recomputed activations)."""

from __future__ import annotations

import copy

import pytest
import torch

from test_sft import cfg_for, reverse_examples, tiny_model, tokenizer  # noqa: F401  (fixture)

from searchrl.data import read_jsonl
from searchrl.train.sft import train_sft

pytest.importorskip("peft", reason="pip install 'searchrl[lora]'")

TARGETED = ("q_proj", "v_proj")


def test_lora_trains_only_adapters_and_writes_a_plain_merged_model(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM

    model = tiny_model(len(tokenizer))
    init = copy.deepcopy(model.state_dict())
    train_sft(model, tokenizer, reverse_examples(16), cfg_for(tmp_path, lr=3e-2, max_steps=30, lora_rank=4,
                                                              lora_targets="q_proj,v_proj"))
    after = {k: v.cpu() for k, v in model.state_dict().items()}  # trained on the GPU where there is one
    assert after.keys() == init.keys()  # the caller's model is plain again: adapters merged and removed
    for k in init:
        moved = not torch.equal(init[k], after[k])
        assert moved == any(t in k for t in TARGETED), k  # every other weight stayed frozen
    assert all(p.requires_grad for p in model.parameters())
    losses = [r["losses/sft"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert losses[-1] < 0.95 * losses[0]  # a random model with frozen MLPs learns slowly, but it learns
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final").eval()
    x = torch.tensor([[3, 4, 5, 6, 7]])
    assert torch.allclose(loaded(x).logits, model.cpu().eval()(x).logits, atol=1e-5)


def test_lora_resume_matches_the_uninterrupted_run(tmp_path, tokenizer):
    kw = dict(max_steps=12, save_every=5, lora_rank=4, lr=1e-2)
    examples = reverse_examples(16)
    a = tiny_model(len(tokenizer))
    train_sft(a, tokenizer, examples, cfg_for(tmp_path / "a", **kw))

    class Crash(Exception):
        pass

    def crash(step, logs):
        if step == 7:
            raise Crash

    with pytest.raises(Crash):
        train_sft(tiny_model(len(tokenizer)), tokenizer, examples, cfg_for(tmp_path / "b", **kw), callback=crash)
    b = tiny_model(len(tokenizer), seed=5)  # base weights and adapters both come from the checkpoint
    out = train_sft(b, tokenizer, examples, cfg_for(tmp_path / "b", **kw))
    assert out["resumed_from_step"] == 5
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # full fine-tuning cannot resume a LoRA checkpoint (or the reverse): the trajectory differs
    (tmp_path / "b/final/train_state.json").unlink()
    with pytest.raises(ValueError, match="different settings"):
        train_sft(tiny_model(len(tokenizer)), tokenizer, examples, cfg_for(tmp_path / "b", **{**kw, "lora_rank": 0}))


def test_gradient_checkpointing_gives_the_same_training(tmp_path, tokenizer):
    runs = []
    for name, ckpt in (("plain", False), ("ckpt", True)):
        model = tiny_model(len(tokenizer))
        during = []
        train_sft(model, tokenizer, reverse_examples(8), cfg_for(tmp_path / name, max_steps=6,
                                                                 gradient_checkpointing=ckpt),
                  callback=lambda step, logs: during.append(
                      any(getattr(m, "gradient_checkpointing", False) for m in model.modules())))
        assert set(during) == {ckpt}
        assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())  # off again
        runs.append(model.state_dict())
    assert max(float((runs[0][k] - runs[1][k]).abs().max()) for k in runs[0]) < 1e-6


def test_lora_with_no_matching_layer_is_refused(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="lora_targets"):
        train_sft(tiny_model(len(tokenizer)), tokenizer, reverse_examples(4),
                  cfg_for(tmp_path, max_steps=2, lora_rank=2, lora_targets="nonexistent_proj"))


def test_fsdp_refusals_name_the_reason(tmp_path, tokenizer):
    """Sharding (tested over 2 processes in test_multiprocess.py) is refused where it cannot work, saying why."""
    from searchrl.train.config import RLConfig

    model = tiny_model(len(tokenizer))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="torchrun"):  # one process: nothing to shard over
        train_sft(model, tokenizer, reverse_examples(4), cfg_for(tmp_path, max_steps=2, fsdp=True))
    assert type(model).__name__ == "LlamaForCausalLM" and all(torch.equal(v.cpu(), before[k])
                                                               for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="lora_rank"):
        cfg_for(tmp_path, fsdp=True, lora_rank=4)
    with pytest.raises(ValueError, match="lora_rank"):
        RLConfig(output_dir=str(tmp_path), fsdp=True, lora_rank=4)
