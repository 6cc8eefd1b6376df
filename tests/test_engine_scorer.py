"""Value models scored on the static engine with a prefix cache (search.common.cached_scorer)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from searchrl.engine.hidden import HiddenStates
from searchrl.models.value import ValueModel
from searchrl.search.common import TokenCounter, cached_scorer, score_counted


def value_model(kind: str) -> ValueModel:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256, pad_token_id=0)
    return ValueModel.from_policy(LlamaForCausalLM(cfg), kind, seed=0)


def seqs(n: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(1, 60, (7,), generator=g).tolist() for _ in range(n)]
    states = [torch.randint(1, 60, (int(k),), generator=g).tolist() for k in torch.randint(0, 90, (n,), generator=g)]
    return prompts, states


def test_hidden_states_are_the_backbones_last_hidden_state():
    vm = value_model("scalar").eval()
    prompts, states = seqs(5, 0)
    full = [p + s for p, s in zip(prompts, states)]
    hs = HiddenStates(vm.model)
    cache = hs.new_cache()
    got = hs.last(full, cache)
    with torch.no_grad():
        ref = torch.stack([vm.model(input_ids=torch.tensor([f])).last_hidden_state[0, -1] for f in full])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    # extending the same sequences computes only the new tokens, with the same result as from scratch
    longer = [f + [3, 4, 5] for f in full]
    before = dict(hs.stats)
    again = hs.last(longer, cache)
    assert hs.stats["prefill_tokens"] - before["prefill_tokens"] == 3 * len(full)
    torch.testing.assert_close(again, hs.last(longer), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["scalar", "3class"])
def test_engine_scorer_matches_the_models_own_score(kind):
    vm = value_model(kind)
    vm.train()  # score() must not depend on dropout, and must leave the mode as it was
    prompts, states = seqs(6, 1)
    fast = cached_scorer(vm)
    assert fast is not vm and cached_scorer(vm) is fast  # one per model
    torch.testing.assert_close(torch.tensor(fast.score(prompts, states)), torch.tensor(vm.score(prompts, states)),
                               atol=1e-6, rtol=1e-5)
    assert vm.training and vm.value_head.training


def test_a_search_call_reuses_each_problems_own_prefix():
    vm = value_model("scalar")
    prompts, states = seqs(4, 2)
    counter = TokenCounter.zeros(2)
    owners = [0, 0, 1, 1]
    first = score_counted(vm, prompts, states, owners, counter)
    grown = [s + [9] for s in states]
    second = score_counted(vm, prompts, grown, owners, counter)
    fast = cached_scorer(vm)
    assert fast.hidden.stats["cached_tokens"] >= sum(len(p) + len(s) - 1 for p, s in zip(prompts, states))
    assert len(counter.caches) == 2  # one cache per problem
    torch.testing.assert_close(torch.tensor(first + second),
                               torch.tensor(vm.score(prompts, states) + vm.score(prompts, grown)), atol=1e-6,
                               rtol=1e-5)
    # weights changed in place: the caches are dropped, values follow the new weights
    with torch.no_grad():
        for p in vm.model.parameters():
            p.mul_(1.1)
    torch.testing.assert_close(torch.tensor(score_counted(vm, prompts, grown, owners, counter)),
                               torch.tensor(vm.score(prompts, grown)), atol=1e-6, rtol=1e-5)


def test_switch_off_and_unsupported_models_keep_their_own_score(monkeypatch):
    vm = value_model("scalar")
    monkeypatch.setenv("SEARCHRL_ENGINE_SCORER", "0")
    assert cached_scorer(vm) is vm
    monkeypatch.delenv("SEARCHRL_ENGINE_SCORER")

    class Plain:  # any other scorer is used as it is
        def score(self, prompts, states):
            return [0.5] * len(states)

    plain = Plain()
    assert cached_scorer(plain) is plain
