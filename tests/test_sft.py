"""Supervised fine-tuning: label masking, loss, batching, learning, exact resume, completion."""

import json
import math

import numpy as np
import pytest
import torch

from searchrl.data import read_jsonl
from searchrl.train.checkpoint import is_complete
from searchrl.train.sft import SFTConfig, collate, make_batches, sft_loss, tokenize_examples, train_sft

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = [str(i) for i in range(10)] + ["+", "=", "reverse", ":", "a", "b", "c", "d"]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[EOS]": 1, "[UNK]": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="[EOS]", pad_token="[PAD]", unk_token="[UNK]")


def tiny_model(vocab_size, dropout=0.0, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      attention_dropout=dropout, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def reverse_examples(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(2, 7))
        digits = [str(d) for d in rng.integers(0, 10, size=k)]
        out.append({"prompt": "reverse : " + " ".join(digits) + " =", "response": " ".join(digits[::-1])})
    return out


def cfg_for(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), lr=3e-3, warmup_steps=2, max_steps=20, tokens_per_batch=64,
                max_seq_len=16, bucket_size=8, save_every=1000, log_every=5, mixed_precision="no")
    base.update(kw)
    return SFTConfig(**base)


# ---------------------------------------------------------------- data and loss


def test_collate_masks_prompt_and_padding():
    batch = collate([([5, 6, 7, 8], 2), ([9, 10, 11], 1), ([3, 4], 1)], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 11, 0], [3, 4, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 8], [-100, 10, 11, -100], [-100, 4, -100, -100]]


def test_tokenize_text_and_ids(tokenizer):
    eos = tokenizer.eos_token_id
    data = tokenize_examples([{"prompt": "reverse : 1 2 =", "response": "2 1"},
                              {"prompt_ids": [4, 5], "response_ids": [6]}], tokenizer, max_seq_len=16)
    ids = tokenizer("reverse : 1 2 = 2 1", add_special_tokens=False)["input_ids"]
    assert data.seqs[0].tolist() == ids + [eos] and data.n_prompt[0] == 5
    assert data.seqs[1].tolist() == [4, 5, 6] and data.n_prompt[1] == 2  # pre-tokenized: as given, no EOS
    assert data.n_loss.tolist() == [3, 1]

    long = [{"prompt_ids": [4, 5, 6], "response_ids": [7, 8, 9, 10]},  # 7 > 5: truncated
            {"prompt_ids": [4, 5, 6, 7, 8], "response_ids": [9]}]  # prompt fills max_seq_len: dropped
    t = tokenize_examples(long, None, max_seq_len=5)
    assert [s.tolist() for s in t.seqs] == [[4, 5, 6, 7, 8]] and (t.truncated, t.dropped) == (1, 1)
    d = tokenize_examples(long, None, max_seq_len=5, truncation="drop")
    assert len(d.seqs) == 0 and d.dropped == 2
    with pytest.raises(ValueError, match="example 0: field 'response'"):
        tokenize_examples([{"prompt": "a"}], tokenizer, 16)


def test_loss_is_cross_entropy_over_response_tokens_only():
    torch.manual_seed(0)
    rows = [([5, 6, 7, 8, 9], 2), ([3, 4, 2], 1), ([1, 2, 3, 4], 3)]
    batch = collate(rows, pad_id=0)
    logits = torch.randn(3, 5, 12)
    loss_sum, n = sft_loss(logits, batch["labels"])
    manual, count = 0.0, 0
    for r, (ids, n_prompt) in enumerate(rows):
        for t in range(n_prompt, len(ids)):  # token t is predicted from position t - 1
            manual += -torch.log_softmax(logits[r, t - 1], -1)[ids[t]].item()
            count += 1
    assert n.item() == count == 3 + 2 + 1
    assert math.isclose(loss_sum.item(), manual, rel_tol=1e-5)
    # changing prompt tokens' targets or padding logits does not change the loss
    logits2 = logits.clone()
    logits2[1, 3:] += 100.0  # padding positions of row 1
    assert torch.allclose(sft_loss(logits2, batch["labels"])[0], loss_sum)


def test_batches_respect_budget_and_are_deterministic():
    lengths = np.random.default_rng(0).integers(1, 50, size=300)
    b0 = make_batches(lengths, 100, seed=1, epoch=0, bucket_size=64)
    assert sorted(i for b in b0 for i in b) == list(range(300))
    assert all(len(b) * max(lengths[i] for i in b) <= 100 for b in b0)
    assert b0 == make_batches(lengths, 100, seed=1, epoch=0, bucket_size=64)
    assert b0 != make_batches(lengths, 100, seed=1, epoch=1, bucket_size=64)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in b0)
    assert lengths.sum() / padded > 0.8  # length bucketing keeps padding small


# ---------------------------------------------------------------- training


def test_training_decreases_loss(tmp_path, tokenizer):
    model = tiny_model(len(tokenizer))
    out = train_sft(model, tokenizer, reverse_examples(8),
                    cfg_for(tmp_path, lr=1e-2, max_steps=80, log_every=10))
    losses = [r["losses/sft"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert len(losses) == 8
    assert losses[-1] < 0.2 * losses[0]
    assert out["steps"] == 80 and out["final_loss"] == losses[-1] and out["tokens"] > 0
    rec = read_jsonl(tmp_path / "metrics.jsonl")[-1]
    for key in ("losses/sft", "charts/lr", "charts/tokens_per_s", "charts/grad_norm", "step", "epoch", "tokens"):
        assert key in rec


def test_resume_matches_uninterrupted_run(tmp_path, tokenizer):
    examples = reverse_examples(24)
    kw = dict(max_steps=20, save_every=5, keep_last=1, log_every=5)
    # dropout on, so the restored torch RNG matters too
    model_a = tiny_model(len(tokenizer), dropout=0.1)
    train_sft(model_a, tokenizer, examples, cfg_for(tmp_path / "a", **kw))

    class Crash(Exception):
        pass

    def crash_at_13(step, logs):
        if step == 13:
            raise Crash

    model_b = tiny_model(len(tokenizer), dropout=0.1)
    with pytest.raises(Crash):
        train_sft(model_b, tokenizer, examples, cfg_for(tmp_path / "b", **kw), callback=crash_at_13)
    ckpts = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir())
    assert ckpts == ["step-10"]  # keep_last=1; nothing half-written left behind
    assert not is_complete(tmp_path / "b")
    state = json.loads((tmp_path / "b/checkpoints/step-10/trainer_state.json").read_text())
    assert state["step"] == 10 and "batch_index" in state and "epoch" in state

    seen = []
    model_b2 = tiny_model(len(tokenizer), dropout=0.1, seed=123)  # weights come from the checkpoint
    out = train_sft(model_b2, tokenizer, examples, cfg_for(tmp_path / "b", **kw),
                    callback=lambda step, logs: seen.append(step))
    assert out["resumed_from_step"] == 10 and seen == list(range(11, 21))
    sa, sb = model_a.state_dict(), model_b2.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ma, mb = read_jsonl(tmp_path / "a/metrics.jsonl"), read_jsonl(tmp_path / "b/metrics.jsonl")
    assert [r["step"] for r in mb] == [5, 10, 15, 20]
    assert [r["losses/sft"] for r in ma] == [r["losses/sft"] for r in mb]

    # a changed trajectory setting is refused instead of silently mixing runs
    with pytest.raises(ValueError, match="different settings"):
        (tmp_path / "b/final/train_state.json").unlink()
        train_sft(tiny_model(len(tokenizer)), tokenizer, examples, cfg_for(tmp_path / "b", **{**kw, "lr": 1e-2}))


def test_grad_accum_step_is_the_mean_over_all_its_batches(tmp_path, tokenizer):
    """One step with grad_accum=3 = one AdamW step on the mean loss over the plan's first 3 batches."""
    from searchrl.train.optim import lr_lambda

    examples = reverse_examples(40)
    cfg = cfg_for(tmp_path, grad_accum=3, max_steps=1, grad_clip=0.0, lr=1e-2, warmup_steps=1)
    model = tiny_model(len(tokenizer))
    ref = tiny_model(len(tokenizer))
    train_sft(model, tokenizer, examples, cfg, progress=False)
    dev = next(model.parameters()).device  # the reference on the same device: AdamW's first step amplifies
    ref.to(dev)  # rounding where a gradient is ~eps, and CPU and CUDA round differently

    data = tokenize_examples(examples, tokenizer, cfg.max_seq_len)
    first = make_batches(data.lengths, cfg.tokens_per_batch, cfg.seed, 0, cfg.bucket_size)[:3]
    total_loss, n_tokens = 0.0, 0
    for b in first:
        batch = collate([(data.seqs[i], int(data.n_prompt[i])) for i in b], pad_id=tokenizer.pad_token_id)
        loss_sum, n = sft_loss(ref(input_ids=batch["input_ids"].to(dev)).logits, batch["labels"].to(dev))
        total_loss, n_tokens = total_loss + loss_sum, n_tokens + int(n)
    (total_loss / n_tokens).backward()
    params = list(ref.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.0},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    lr = cfg.lr * lr_lambda(0, cfg.warmup_steps, 1, cfg.min_lr_ratio)
    torch.optim.AdamW(groups, lr=lr, betas=cfg.betas).step()
    # AdamW's first step is lr * g / (|g| + eps): where a gradient is as small as eps (1e-8), summation
    # order moves the update by up to ~1e-5 (seen on one CPU); a wrong batch plan moves whole signs (lr = 1e-2)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-5, msg=name)
    # and the step really moved the weights (the comparison is not vacuous)
    assert not torch.equal(next(model.parameters()).cpu(), next(tiny_model(len(tokenizer)).parameters()))


def test_grad_accum_resumes_exactly_and_counts_steps(tmp_path, tokenizer):
    examples = reverse_examples(24)
    kw = dict(grad_accum=2, epochs=3.0, max_steps=None, save_every=4, log_every=2)
    model_a = tiny_model(len(tokenizer))
    out_a = train_sft(model_a, tokenizer, examples, cfg_for(tmp_path / "a", **kw), progress=False)
    n_batches = len(make_batches(tokenize_examples(examples, tokenizer, 16).lengths, 64, 0, 0, 8))
    assert out_a["steps"] == 3 * math.ceil(n_batches / 2)  # a step takes two batches

    class Crash(Exception):
        pass

    def crash(step, logs):
        if step == 6:
            raise Crash

    with pytest.raises(Crash):
        train_sft(tiny_model(len(tokenizer)), tokenizer, examples, cfg_for(tmp_path / "b", **kw), callback=crash,
                  progress=False)
    model_b = tiny_model(len(tokenizer), seed=7)
    out_b = train_sft(model_b, tokenizer, examples, cfg_for(tmp_path / "b", **kw), progress=False)
    assert out_b["resumed_from_step"] == 4
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    (tmp_path / "b/final/train_state.json").unlink()
    with pytest.raises(ValueError, match="grad_accum"):
        train_sft(tiny_model(len(tokenizer)), tokenizer, examples,
                  cfg_for(tmp_path / "b", **{**kw, "grad_accum": 1}), progress=False)


def test_metrics_log_survives_a_line_cut_short(tmp_path):
    from searchrl.data import RecordError, append_jsonl, read_jsonl_log

    log = tmp_path / "metrics.jsonl"
    for step in (1, 2):
        append_jsonl(log, {"step": step, "loss": 0.5})
    assert read_jsonl_log(log) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.5}]
    with open(log, "a") as f:
        f.write('{"step": 3, "lo')  # a crash in the middle of a write
    assert [r["step"] for r in read_jsonl_log(log)] == [1, 2]
    log.write_text('{"step": 1}\n{"step": 2\n{"step": 3}\n')  # damage that is not a cut-off end
    with pytest.raises(RecordError, match=":2"):
        read_jsonl_log(log)


def test_final_is_loadable_and_rerun_is_skipped(tmp_path, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    examples = reverse_examples(8) + [{"prompt_ids": [3, 4, 5], "response_ids": [6, 7, 1]}]
    model = tiny_model(len(tokenizer))
    train_sft(model, tokenizer, examples, cfg_for(tmp_path, max_steps=6))
    assert is_complete(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    tok = AutoTokenizer.from_pretrained(tmp_path / "final")
    ids = torch.tensor([tok("reverse : 1 2 =", add_special_tokens=False)["input_ids"]])
    model.cpu().eval()  # trained where accelerate put it (a GPU if there is one)
    assert tok.eos_token == "[EOS]" and tok.pad_token == "[PAD]"
    assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-6)

    def never(step, logs):
        raise AssertionError("training ran again")

    fresh = tiny_model(len(tokenizer), seed=7)
    out = train_sft(fresh, tokenizer, examples, cfg_for(tmp_path, max_steps=6), callback=never)
    assert out["skipped"] and out["done"] and out["steps"] == 6
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
