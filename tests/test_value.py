"""Value models: heads, losses (3-class masked to roll-out tokens), files, training on the trainer core."""

from __future__ import annotations

import math

import pytest
import torch

from searchrl.models import load_policy
from searchrl.models.value import ValueModel, is_value_dir
from searchrl.tasks.countdown import build_countdown_tokenizer
from searchrl.train.config import ValueTrainConfig
from searchrl.train.losses import value_ce_loss, value_mse_loss
from searchrl.train.value import collate_value, tokenize_value_records, train_value


@pytest.fixture(scope="module")
def tokenizer():
    return build_countdown_tokenizer()


def micro_value(tokenizer, kind="scalar", seed=0):
    policy, _ = load_policy("micro", tokenizer, max_seq_len=64, seed=seed)
    return ValueModel.from_policy(policy, kind)


def test_ce_loss_is_masked_to_rollout_tokens_and_averaged_per_sequence():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3)
    labels = torch.tensor([1, 2])
    # row 0: roll-in 2 tokens, roll-out 3; row 1: roll-in 4, roll-out 1
    ids, mask = collate_value([torch.arange(5).numpy(), torch.arange(5).numpy()], [2, 4], pad_id=0)
    total, n = value_ce_loss(logits, labels, mask)
    lp = torch.log_softmax(logits, -1)
    by_hand = -(lp[0, 2:, 1].mean() + lp[1, 4:, 2].mean())
    assert int(n) == 2 and torch.allclose(total, by_hand)
    # changing the roll-in positions' logits changes nothing
    moved = logits.clone()
    moved[0, :2] += 5.0
    moved[1, :4] -= 3.0
    assert torch.allclose(value_ce_loss(moved, labels, mask)[0], total)
    # a token-mean (not per-sequence) would weigh row 0 three times as much as row 1
    token_mean = -(lp[0, 2:, 1].sum() + lp[1, 4:, 2].sum()) / 4 * 2
    assert not torch.allclose(total, token_mean)


def test_mse_loss_reads_only_masked_positions():
    values = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.4, 0.0]])
    mask = torch.tensor([[False, False, True], [False, True, False]])
    total, n = value_mse_loss(values, torch.tensor([1.0, 0.0]), mask)
    assert int(n) == 2 and math.isclose(float(total), 0.1 ** 2 + 0.4 ** 2, rel_tol=1e-6)


def test_records_become_sequences_with_loss_starts(tokenizer):
    recs = [{"prompt_ids": [5, 6], "state_ids": [7], "target": 0.25},
            {"prompt_ids": [5], "state_ids": [7, 8, 9, 10], "target": 1.0}]
    data, targets = tokenize_value_records(recs, "scalar", max_seq_len=4)
    assert data.dropped == 1 and len(data.seqs) == 1  # too long: dropped, never cut
    assert data.n_prompt.tolist() == [2] and data.n_loss.tolist() == [1] and targets.tolist() == [0.25]
    three = [{"prompt_ids": [5, 6], "state_ids": [7], "rollout_ids": [8, 9], "label": 2}]
    data, targets = tokenize_value_records(three, "3class", max_seq_len=10)
    assert data.n_prompt.tolist() == [3] and data.n_loss.tolist() == [2] and targets.tolist() == [2]
    with pytest.raises(ValueError, match="record 0: field 'label'"):
        tokenize_value_records([{**three[0], "label": 3}], "3class", 10)
    with pytest.raises(ValueError, match="record 0: field 'target'"):
        tokenize_value_records([{**recs[0], "target": 1.5}], "scalar", 10)


@pytest.mark.parametrize("kind", ["scalar", "3class"])
def test_save_load_round_trip_and_values_at_every_position(tmp_path, tokenizer, kind):
    model = micro_value(tokenizer, kind)
    with torch.no_grad():
        for p in model.value_head.parameters():
            p.normal_(0, 0.5)  # make the head matter
    model.save_pretrained(tmp_path)
    assert is_value_dir(tmp_path)
    loaded = ValueModel.from_pretrained(tmp_path)
    assert loaded.kind == kind
    prompts, states = [[3, 4, 5], [6, 7]], [[8, 9], [10, 11, 12, 13]]
    a, b = model.score(prompts, states), loaded.score(prompts, states)
    assert a == b and all(0.0 <= v <= 1.0 for v in a)
    # the state value is the value at its last token, batching and padding change nothing
    seq = prompts[1] + states[1]
    with torch.no_grad():
        per_position = model.eval().values(torch.tensor([seq]))[0]  # eval: no dropout
    assert math.isclose(float(per_position[-1]), a[1], rel_tol=1e-5)
    assert math.isclose(model.score([seq[:3]], [[]])[0], float(per_position[2]), rel_tol=1e-5)
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(tmp_path)  # the backbone is a plain HF model
    assert torch.equal(backbone.embed_tokens.weight, model.model.embed_tokens.weight)


def test_a_policy_directory_is_refused_as_a_value_model(tmp_path, tokenizer):
    policy, _ = load_policy("micro", tokenizer, max_seq_len=64)
    policy.save_pretrained(tmp_path)
    from searchrl.data import InputError

    with pytest.raises(InputError, match="not a searchrl value model"):
        ValueModel.from_pretrained(tmp_path)


def _separable(kind: str, n: int = 48) -> list[dict]:
    """States ending in token 20 lead to success, ending in 21 to failure."""
    recs = []
    for i in range(n):
        good = i % 2 == 0
        state = [5 + i % 7, 20 if good else 21]
        if kind == "3class":
            recs.append({"prompt_ids": [3, 4], "state_ids": state[:1], "rollout_ids": state[1:] + [9],
                         "label": 1 if good else 2})
        else:
            recs.append({"prompt_ids": [3, 4], "state_ids": state, "target": 1.0 if good else 0.0})
    return recs


@pytest.mark.parametrize("kind", ["scalar", "3class"])
def test_training_on_the_core_learns_and_resumes(tmp_path, tokenizer, kind):
    recs = _separable(kind)
    cfg = ValueTrainConfig(output_dir=str(tmp_path / "v"), kind=kind, lr=3e-3, max_steps=40, warmup_steps=2,
                           tokens_per_batch=64, max_seq_len=16, log_every=10, save_every=20)
    model = micro_value(tokenizer, kind)
    out = train_value(model, tokenizer, recs, cfg, progress=False)
    assert out["steps"] == 40 and out["trained_examples"] == len(recs)
    good = model.score([[3, 4]] * 2, [[5, 20], [6, 20]])
    bad = model.score([[3, 4]] * 2, [[5, 21], [6, 21]])
    assert min(good) > 0.7 and max(bad) < 0.3, (good, bad)
    assert (tmp_path / "v/final/model.safetensors").exists() and is_value_dir(tmp_path / "v/final")
    # a rerun of a finished run loads its weights and trains nothing
    again = micro_value(tokenizer, kind, seed=1)
    assert train_value(again, tokenizer, recs, cfg, progress=False)["skipped"]
    assert again.score([[3, 4]], [[5, 20]]) == good[:1]
    with pytest.raises(ValueError, match="head is"):
        train_value(micro_value(tokenizer, "3class" if kind == "scalar" else "scalar"), tokenizer, recs,
                    ValueTrainConfig(output_dir=str(tmp_path / "w"), kind=kind), progress=False)


def test_prefix_values_from_one_pass_equal_scoring_each_prefix(tokenizer):
    """PRM-min with a value model reads all step prefixes from one forward pass: same numbers as
    scoring every prefix on its own (the generic Scorer path)."""
    from searchrl.search.common import ActionSplitter
    from searchrl.search.vm_mcts import prm_min_scores

    model = micro_value(tokenizer)
    with torch.no_grad():
        model.value_head.weight.normal_(0, 0.5)
    nl = tokenizer("\n", add_special_tokens=False)["input_ids"]
    a, b = tokenizer("12", add_special_tokens=False)["input_ids"], tokenizer("3+4", add_special_tokens=False)["input_ids"]
    prompts, responses = [[3, 4, 5], [6]], [a + nl + b + nl + a, b + nl]
    splitter = ActionSplitter(tokenizer, "\n")

    class Plain:  # the same model without values_at: every prefix scored separately
        def score(self, p, s):
            return model.score(p, s)

    fast, slow = prm_min_scores(model, splitter, prompts, responses), prm_min_scores(Plain(), splitter, prompts, responses)
    assert fast == pytest.approx(slow, rel=1e-5)
    by_hand = min(model.score([prompts[0]] * 3, [responses[0][:len(a) + len(nl)], responses[0][:-len(a)],
                                                  responses[0]]))
    assert fast[0] == pytest.approx(by_hand, rel=1e-5)


def test_math_shepherd_step_labels_by_hand():
    """A step is good when a completion sampled from it reaches a correct answer (Math-Shepherd's hard
    estimation); the whole response is labelled by its own grade."""
    from search_fakes import EchoTask, ScriptedGenerator

    from searchrl.config import ValueDataConfig
    from searchrl.pipelines.value import _shepherd_records

    gen = ScriptedGenerator({"": ["a\nb\nd$"], "a\n": ["x$", "d$"], "a\nb\n": ["y$"]})
    done = []
    recs = _shepherd_records(gen, EchoTask(), [{"q": "1", "answer": "d"}], 3,
                             ValueDataConfig(samples=1, rollouts=2), done.append)
    text = gen.tokenizer.decode
    assert [(text(r["state_ids"], skip_special_tokens=False), r["target"], r["index"]) for r in recs] == [
        ("a\n", 1.0, 3), ("a\nb\n", 0.0, 3), ("a\nb\nd$", 1.0, 3)]  # "a\nd" is correct; "a\nb\ny" twice is not
    assert [(t, p.n, p.max_tokens) for t, p in gen.calls[1:]] == [("a\n", 2, 896 - 2), ("a\nb\n", 2, 896 - 4)]
    assert done == [1]
