"""DPO: the loss by hand, sequence log-probabilities, pair records, learning a preference, exact resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from searchrl.data import read_jsonl
from searchrl.train.checkpoint import is_complete
from searchrl.train.config import DPOConfig
from searchrl.train.dpo import collate_pairs, pair_logps, tokenize_pairs, train_dpo
from searchrl.train.losses import get_loss, sequence_logps

transformers = pytest.importorskip("transformers")

VOCAB = 32
GOOD, BAD = 30, 31  # chosen responses end in GOOD, rejected ones in BAD


def tiny_llama(seed=0, dropout=0.0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                      attention_dropout=dropout, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def preference_pairs(n=24, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        prompt = rng.integers(3, 20, size=int(rng.integers(2, 5))).tolist()
        body = rng.integers(3, 20, size=int(rng.integers(1, 4))).tolist()
        other = rng.integers(3, 20, size=int(rng.integers(1, 4))).tolist()
        out.append({"prompt_ids": prompt, "chosen_ids": body + [GOOD], "rejected_ids": other + [BAD]})
    return out


def cfg_for(path, **kw):
    base = dict(output_dir=str(path), lr=1e-2, warmup_steps=2, max_steps=30, beta=0.5, tokens_per_batch=64,
                max_seq_len=16, bucket_size=8, save_every=1000, log_every=5, mixed_precision="no")
    base.update(kw)
    return DPOConfig(**base)


def margins(model, ref_model, pairs, beta=1.0):
    """beta * ((log pi_c - log ref_c) - (log pi_r - log ref_r)) of every pair, in eval mode."""
    data = tokenize_pairs(pairs, None, 64)
    rows = list(range(len(pairs)))
    with torch.no_grad():
        pc, pr = pair_logps(model.eval(), data, rows, 0, next(model.parameters()).device)
        rc, rr = pair_logps(ref_model.eval(), data, rows, 0, next(ref_model.parameters()).device)
        pc, pr, rc, rr = pc.cpu(), pr.cpu(), rc.cpu(), rr.cpu()
    return beta * ((pc - rc) - (pr - rr))


# ---------------------------------------------------------------- loss and log-probabilities


def test_dpo_loss_matches_hand_computation_with_and_without_label_smoothing():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -2.5])
    beta = 0.5
    # logits: 0.5 * ((-3 + 3.5) - (-4 + 3)) = 0.75 and 0.5 * ((-5 + 4) - (-2 + 2.5)) = -0.75
    h = [0.75, -0.75]
    logsig = lambda x: -math.log1p(math.exp(-x))  # noqa: E731
    total, n = get_loss("dpo")(pc, pr, rc, rr, beta)
    assert int(n) == 2
    assert math.isclose(float(total), -logsig(h[0]) - logsig(h[1]), rel_tol=1e-6)
    ls = 0.1
    total, n = get_loss("dpo")(pc, pr, rc, rr, beta, label_smoothing=ls)
    by_hand = sum(-(1 - ls) * logsig(x) - ls * logsig(-x) for x in h)
    assert int(n) == 2 and math.isclose(float(total), by_hand, rel_tol=1e-6)
    # policy == reference: every pair costs log 2, and the gradient pushes chosen up, rejected down
    p_c, p_r = torch.tensor([-1.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)
    total, _ = get_loss("dpo")(p_c, p_r, p_c.detach(), p_r.detach(), 0.1)
    total.backward()
    assert math.isclose(float(total.detach()), math.log(2), rel_tol=1e-6)
    assert float(p_c.grad) < 0 < float(p_r.grad)


def test_sequence_logps_is_the_sum_of_response_token_logprobs():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])  # row 1: padded after 3 tokens
    lp = torch.log_softmax(logits, dim=-1)
    by_hand = torch.stack([lp[0, 1, 3] + lp[0, 2, 4] + lp[0, 3, 5], lp[1, 0, 1] + lp[1, 1, 2]])
    assert torch.allclose(sequence_logps(logits, labels), by_hand, atol=1e-6)
    # bf16 logits are promoted to fp32 before the softmax
    assert sequence_logps(logits.bfloat16(), labels).dtype == torch.float32


def test_pairs_collate_chosen_then_rejected_and_bad_records_are_named():
    pairs = [{"prompt_ids": [5, 6], "chosen_ids": [7, 8, 9], "rejected_ids": [10]},
             {"prompt_ids": [5], "chosen_ids": [11], "rejected_ids": [12, 13]},
             {"prompt_ids": [1] * 10, "chosen_ids": [2], "rejected_ids": [3]}]
    data = tokenize_pairs(pairs, None, max_seq_len=6)
    assert data.dropped == 1 and len(data.seqs) == 2  # too long: dropped, never cut
    assert data.lengths.tolist() == [2 * 5, 2 * 3] and data.n_loss.tolist() == [4, 3]
    batch = collate_pairs(data, [1, 0], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 11, 0, 0, 0], [5, 6, 7, 8, 9], [5, 12, 13, 0, 0], [5, 6, 10, 0, 0]]
    assert batch["labels"][:, :3].tolist() == [[-100, 11, -100], [-100, -100, 7], [-100, 12, 13], [-100, -100, 10]]
    # the split between chosen and rejected is part of the fingerprint
    moved = tokenize_pairs([{**pairs[0], "chosen_ids": [7, 8], "rejected_ids": [9, 10]}], None, 6)
    same = tokenize_pairs([pairs[0]], None, 6)
    assert moved.fingerprint() != same.fingerprint()

    with pytest.raises(ValueError, match=r"pair 1: field 'rejected_ids'"):
        tokenize_pairs([pairs[0], {**pairs[1], "rejected_ids": "12 13"}], None, 6)
    with pytest.raises(ValueError, match=r"pair 0: field 'chosen_ids': empty"):
        tokenize_pairs([{**pairs[0], "chosen_ids": []}], None, 6)
    with pytest.raises(ValueError, match=r"pair 2: field 'chosen_ids': missing"):
        tokenize_pairs(pairs[:2] + [{"prompt_ids": [1], "rejected_ids": [2]}], None, 6)
    with pytest.raises(ValueError, match=r"pair 0: field 'rejected'"):
        tokenize_pairs([{"prompt": "a", "chosen": "b"}], None, 6)
    with pytest.raises(ValueError, match=r"pair 0: field 'prompt_ids': token ids must be in \[0, 32\)"):
        tokenize_pairs([{**pairs[0], "prompt_ids": [40]}], None, 6, vocab_size=VOCAB)


def test_text_pairs_are_tokenized_apart_with_eos_on_each_response():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[EOS]": 1, "[UNK]": 2, "a": 3, "b": 4, "c": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="[EOS]", pad_token="[PAD]")
    data = tokenize_pairs([{"prompt": "a b", "chosen": "c", "rejected": "b c"}], tokenizer, 16)
    assert [x.tolist() for x in data.parts(0)] == [[3, 4], [5, 1], [4, 5, 1]]


# ---------------------------------------------------------------- training on the core


def test_training_raises_the_preference_margin_and_leaves_the_reference_alone(tmp_path):
    pairs = preference_pairs()
    model, reference = tiny_llama(), tiny_llama()
    frozen = {k: v.clone() for k, v in reference.state_dict().items()}
    before = margins(model, reference, pairs)
    assert torch.allclose(before, torch.zeros_like(before), atol=1e-5)  # same weights: no preference yet
    out = train_dpo(model, reference, None, pairs, cfg_for(tmp_path), progress=False)
    after = margins(model, reference, pairs)
    assert float(after.mean()) > 1.0 and float((after > 0).float().mean()) == 1.0, after
    # held-out pairs of the same kind: the preference generalises (it is "end in GOOD, not BAD")
    held_out = margins(model, reference, preference_pairs(8, seed=1))
    assert float((held_out > 0).float().mean()) == 1.0
    assert all(torch.equal(v.cpu(), frozen[k]) for k, v in reference.state_dict().items())
    assert out["steps"] == 30 and out["trained_pairs"] == len(pairs) and out["reward_accuracy"] == 1.0
    losses = [r["losses/dpo"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert len(losses) == 6 and abs(losses[0] - math.log(2)) < 0.2 and losses[-1] < 0.3 * losses[0]
    assert is_complete(tmp_path) and json.loads((tmp_path / "final/train_state.json").read_text())[
        "reward_accuracy"] == 1.0
    # a rerun of a finished run loads its weights and trains nothing
    again = tiny_llama(seed=5)
    assert train_dpo(again, None, None, pairs, cfg_for(tmp_path), progress=False)["skipped"]
    assert all(torch.equal(v.cpu(), model.state_dict()[k].cpu()) for k, v in again.state_dict().items())


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    pairs = preference_pairs(16)
    kw = dict(max_steps=8, save_every=1, keep_last=1, log_every=1)  # a window per step: comparable
    # dropout on, so the restored torch RNG matters; reference=None: the model as given is the reference
    model_a = tiny_llama(dropout=0.1)
    out_a = train_dpo(model_a, None, None, pairs, cfg_for(tmp_path / "a", **kw), progress=False)

    class Crash(Exception):
        pass

    def crash_after_5(step, logs):
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        train_dpo(tiny_llama(dropout=0.1), None, None, pairs, cfg_for(tmp_path / "b", **kw), callback=crash_after_5,
                  progress=False)
    assert sorted(p.name for p in (tmp_path / "b/checkpoints").iterdir()) == ["step-5"]
    assert not is_complete(tmp_path / "b")
    # a rerun given another starting model would compare against another reference: refused
    with pytest.raises(ValueError, match="different settings or data"):
        train_dpo(tiny_llama(seed=1, dropout=0.1), None, None, pairs, cfg_for(tmp_path / "b", **kw), progress=False)

    seen = []
    model_b = tiny_llama(dropout=0.1)  # the same starting model; its weights then come from the checkpoint
    out_b = train_dpo(model_b, None, None, pairs, cfg_for(tmp_path / "b", **kw),
                      callback=lambda step, logs: seen.append(step), progress=False)
    assert out_b["resumed_from_step"] == 5 and seen == [6, 7, 8]
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ma, mb = read_jsonl(tmp_path / "a/metrics.jsonl"), read_jsonl(tmp_path / "b/metrics.jsonl")
    assert [r["step"] for r in mb] == list(range(1, 9))
    assert [r["losses/dpo"] for r in ma] == [r["losses/dpo"] for r in mb]
    assert out_a["final_loss"] == out_b["final_loss"]
    # a changed DPO setting is refused too
    (tmp_path / "b/final/train_state.json").unlink()
    with pytest.raises(ValueError, match="different settings"):
        train_dpo(tiny_llama(dropout=0.1), None, None, pairs, cfg_for(tmp_path / "b", **{**kw, "beta": 0.2}),
                  progress=False)


def test_config_validation():
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(output_dir="x", beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOConfig(output_dir="x", label_smoothing=0.5)
    with pytest.raises(ValueError, match="2 \\* max_seq_len"):
        DPOConfig(output_dir="x", max_seq_len=1024, tokens_per_batch=1500)
    with pytest.raises(ValueError, match="never cut"):
        DPOConfig(output_dir="x", truncation="truncate")
    assert {"beta", "label_smoothing"} <= set(DPOConfig.trajectory_fields)
