"""The search-method registry: it lists every method with its label, the model it needs and its settings
section; names are checked against it; and a method declared outside the package (a toy pool method
and a toy greedy search here) runs through ``compare-search`` and ``search --method`` like the
built-in ones, with nothing else changed."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict

import pytest

from searchrl.cli import main
from searchrl.config import SearchConfig
from searchrl.data import InputError, read_jsonl
from searchrl.search import registry
from searchrl.search.config import BeamConfig, VMMCTSConfig
from searchrl.search.registry import PoolMethod, TreeMethod

# name: (kind, label, needs, settings section)
BUILTIN = {
    "bon-oracle": ("pool", "BoN, verifier (oracle)", None, None),
    "bon-value": ("pool", "BoN, value model", "value", None),
    "bon-orm": ("pool", "BoN, ORM", "orm", None),
    "vote": ("pool", "majority vote", None, None),
    "weighted-vote": ("pool", "value-weighted vote", "value", None),
    "orm-vote": ("pool", "ORM-weighted vote", "orm", None),
    "prm-min": ("pool", "BoN, PRM (min step)", "prm", None),
    "prm-vote": ("pool", "PRM-weighted vote (min step)", "prm", None),
    "mcts-star-vote": ("pool", "MCTS*-value-weighted vote", "mcts_star_value", None),
    "bon-classifier": ("pool", "BoN, VGS classifier", "classifier", None),
    "classifier-vote": ("pool", "classifier-weighted vote", "classifier", None),
    "vm-mcts": ("tree", "VM-MCTS", "value", "vm_mcts"),
    "orm-mcts": ("tree", "ORM-MCTS", "orm", "vm_mcts"),
    "mcts-star": ("tree", "MCTS*", "mcts_star_value", "mcts_star"),
    "beam": ("tree", "VGS beam (w=2)", "classifier", "beam"),
    "dvts": ("tree", "VGS DVTS", "classifier", "beam"),
}


def test_the_registry_lists_every_method_with_label_needs_and_section():
    got = {m.name: (m.kind, m.label, m.needs, getattr(m, "section", None)) for m in registry.methods()}
    assert got == BUILTIN and registry.names() == list(BUILTIN)  # the listing order is the modules' order
    assert registry.aliases() == {"bon": "bon-value"} and registry.get("bon") is registry.get("bon-value")
    assert [m.name for m in registry.methods() if m.oracle] == ["bon-oracle"]
    assert [m.name for m in registry.methods() if getattr(m, "score", None) == "min"] == ["prm-min", "prm-vote"]
    # every section and every model a method names is a field of the search config
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    assert all(m.section in fields for m in registry.methods() if isinstance(m, TreeMethod))
    assert all(m.needs in fields for m in registry.methods() if m.needs is not None)
    assert registry.listing().startswith("bon-oracle | bon-value (= bon) | bon-orm |")
    assert registry.label("vm-mcts") == "VM-MCTS" and registry.label("gone") == "gone"  # a row of an older run


def test_unknown_names_are_refused_naming_the_known_ones():
    from searchrl.pipelines.search import resolve_method

    assert resolve_method("bon") == "bon-value" and resolve_method("dvts") == "dvts"
    with pytest.raises(InputError, match=r"^--method nonsense: unknown search method; known: bon-oracle \| "
                                         r"bon-value \| .* \| beam \| dvts \(bon = bon-value\)$"):
        resolve_method("nonsense")
    with pytest.raises(KeyError, match="unknown search method 'nonsense'; known: bon-oracle"):
        registry.get("nonsense")
    with pytest.raises(ValueError, match="methods = \\['vote', 'nonsense'\\]: each must be one of bon-oracle"):
        SearchConfig(methods=["vote", "nonsense"])
    assert SearchConfig(methods=["bon", "dvts"]).methods == ["bon", "dvts"]


def test_a_name_is_taken_once_and_declarations_are_checked():
    with pytest.raises(ValueError, match="'vote' is already registered"):
        registry.register(PoolMethod(name="vote", label="again", choose=lambda *a: 0))
    with pytest.raises(ValueError, match="'bon' is already registered"):
        registry.register(PoolMethod(name="bon-again", label="again", choose=lambda *a: 0, aliases=("bon",)))
    assert not registry.known("bon-again")
    with pytest.raises(ValueError, match="needs must be one of value | orm"):
        PoolMethod(name="x", label="x", needs="verifier", choose=lambda *a: 0)
    with pytest.raises(ValueError, match="score must be last | min"):
        PoolMethod(name="x", label="x", choose=lambda *a: 0, score="mean")
    with pytest.raises(ValueError, match="needs a search function and a settings section"):
        TreeMethod(name="x", label="x", search=lambda *a, **k: [])


def test_budget_rules():
    from searchrl.search.beam import blocks_for_budget, reps_for_budget

    def unused() -> float:
        raise AssertionError("a search that spends the budget itself does not read the pool")

    vm = VMMCTSConfig()
    assert registry.get("vm-mcts").budget_rule(vm, 400, unused) is vm
    beam = BeamConfig(num_blocks=4, width=2, reps=3)
    # 400 tokens of 60-token responses: 6 whole responses, a multiple of the width, one search
    six = blocks_for_budget(beam, 400, lambda: 60.0)
    assert (six.num_blocks, six.reps) == (6, 1)
    assert blocks_for_budget(beam, 50, lambda: 60.0).num_blocks == 2  # at least one beam
    assert reps_for_budget(beam, 400, lambda: 60.0).reps == 2 and reps_for_budget(beam, 10, lambda: 60.0).reps == 1
    assert reps_for_budget(beam, 400, lambda: 0.0).reps == 100  # an empty pool counts as 1-token responses
    assert registry.get("beam").budget_rule is blocks_for_budget and registry.get("dvts").budget_rule is reps_for_budget


# ---- a new method is one declaration: a toy pool method and a toy search, registered here
def _last_sample(task, problem, samples, scores):
    return len(samples) - 1


def _greedy(generator, scorer, task, problems, cfg, *, budget_tokens, indices):
    """One greedy response per problem, at most ``cfg.max_tokens`` long."""
    from searchrl.engine import SamplingParams
    from searchrl.search.common import (
        Candidate,
        SearchResult,
        TokenCounter,
        decode,
        generate_counted,
        problem_prompts,
    )

    assert scorer is None
    counter = TokenCounter.zeros(len(problems))
    prompts = problem_prompts(generator.tokenizer, task, problems)
    outs = generate_counted(generator, prompts, [SamplingParams(n=1, temperature=0.0, max_tokens=cfg.max_tokens)
                                                 for _ in problems], list(range(len(problems))), counter)
    return [SearchResult(index=i, candidates=[Candidate(list(o.outputs[0].token_ids),
                                                        decode(generator.tokenizer, o.outputs[0].token_ids), None)],
                         chosen=0, generated_tokens=counter.generated[p], value_tokens=0)
            for p, (i, o) in enumerate(zip(indices, outs))]


def _at_most_budget(cfg, budget, mean_response_tokens):
    return dataclasses.replace(cfg, max_tokens=min(cfg.max_tokens, budget))


TOYS = (PoolMethod(name="toy-last", label="last sample (toy)", choose=_last_sample),
        TreeMethod(name="toy-greedy", label="greedy (toy)", search=_greedy, section="beam",
                   budget_rule=_at_most_budget))


@pytest.fixture
def toys():
    for m in TOYS:
        registry.register(m)
    yield TOYS
    for m in TOYS:
        registry.unregister(m.name)
    assert registry.names() == list(BUILTIN)


def test_a_registered_method_runs_through_compare_search_and_search(toys, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["compare-search", "--preset", "smoke", "--run-dir", str(run), "--quiet",
                 "search.methods=[toy-last,toy-greedy]", "search.budgets=[40,100]", "search.shard_problems=2"]) == 0
    out = run / "compare-search"
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["method"], r["label"], r["budget_tokens"]) for r in rows] == [
        ("toy-last", "last sample (toy)", 40), ("toy-greedy", "greedy (toy)", 40),
        ("toy-last", "last sample (toy)", 100), ("toy-greedy", "greedy (toy)", 100)]
    assert all(r["n_problems"] == 3 and r["value_tokens"] == 0 and not r["oracle"] for r in rows)
    assert "last sample (toy)" in (out / "results.md").read_text() and not (run / "value").exists()
    # the pool method chose the last pool sample that fits each budget
    pool = defaultdict(dict)
    for f in out.glob("pool-*/*.jsonl"):
        for r in read_jsonl(f):
            pool[r["index"]][r["sample"]] = r
    for budget in (40, 100):
        (f,) = (out / "methods").glob(f"toy-last-{budget}-*.json")
        for rec in json.loads(f.read_text())["problems"]:
            samples = [pool[rec["index"]][s] for s in sorted(pool[rec["index"]])]
            lengths = [len(s["response_ids"]) for s in samples]
            k = rec["samples"]
            if k == 0:  # not even the first sample fits: it is cut at the budget, nothing to choose
                assert lengths[0] > budget and rec["generated_tokens"] == budget
                continue
            assert rec["generated_tokens"] == sum(lengths[:k]) <= budget
            assert k == len(samples) or sum(lengths[:k + 1]) > budget
            assert rec["correct"] == samples[k - 1]["correct"]
    # the search ran with its budget rule's settings, in shards like every search
    greedy = {r["budget_tokens"]: r for r in rows if r["method"] == "toy-greedy"}
    assert 0 < greedy[40]["generated_tokens"] <= 40 < greedy[100]["generated_tokens"] <= 100
    assert len(list((out / "methods").glob("toy-greedy-40-*/*.jsonl"))) == 2  # 3 problems, 2 a shard
    # and `searchrl search --method` knows it
    capsys.readouterr()
    assert main(["search", "--method", "toy-greedy", "--budget", "40", "--run-dir", str(run), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("greedy (toy) at 40 tokens per problem")
