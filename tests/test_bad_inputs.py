"""Bad input, command by command: each is refused with exit status 2 and one line that names the key
(or option, file, directory) and what is allowed, with no traceback, before anything is written.

Every case runs twice: into a new run directory (which must not appear) and into an existing one
(a finished ``export-verl``; every file, its config record included, must stay byte for byte and
time for time as it was). Nothing here trains or samples: each refusal comes before any model
is loaded, which is the point.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from searchrl.cli import main

BASE = "builtin:sos-tiny-base"  # a shipped policy checkpoint: no training needed
DATA = ["task.n_train=12", "task.n_selftrain=6", "task.n_valid=3", "task.n_valid_unseen=3", "task.n_test=4",
        "task.max_target=30", "task.workers=1"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A prepared data directory, a value model directory and an existing run directory."""
    from searchrl.models import load_policy, resolve_model_path
    from searchrl.models.value import ValueModel

    root = tmp_path_factory.mktemp("bad")
    data = root / "data"
    assert main(["data", "--out", str(data), "--quiet", *DATA]) == 0
    model, tok = load_policy(resolve_model_path(BASE))
    value = root / "value"
    ValueModel.from_policy(model, "scalar", 0.0, seed=0).save_pretrained(value)
    tok.save_pretrained(value)
    existing = root / "existing"
    assert main(["export-verl", "--run-dir", str(existing), "--quiet", "--split", "test_seen", "--out",
                 str(existing / "test.parquet"), f"data_dir={data}", "model.name=micro"]) == 0
    afile = root / "afile"
    afile.write_text("not a directory\n")
    return {"data": data, "value": value, "existing": existing, "root": root, "afile": afile}


def _S(cmd, *args):  # a sampling command with the shipped policy on the prepared data
    return lambda e: [cmd, "--model", BASE, f"data_dir={e['data']}", *args]


def _V(cmd, *args):  # the same with the value model
    return lambda e: [cmd, "--model", BASE, f"data_dir={e['data']}", *[a.format(**e) for a in args]]


# (id, argv builder, fragment of the message). The fragment is what a user needs: the key and the rule.
CASES = [
    # eval: counts, ks, turns, sampling
    ("eval-n_problems-negative", _S("eval", "eval.n_problems=-1"), "eval.n_problems = -1: must be >= 0 (0 = all)"),
    ("eval-n_samples-negative", _S("eval", "eval.n_samples=-3"), "eval.n_samples = -3: must be >= 0"),
    ("eval-ks-zero", _S("eval", "eval.ks=[0,1]"), "eval.ks = [0, 1]: each k must be within 1..n_samples (32)"),
    ("eval-ks-above-n", _S("eval", "eval.n_samples=4", "eval.ks=[1,8]"), "eval.ks = [1, 8]: each k must be within 1..n_samples (4)"),
    ("eval-shard-zero", _S("eval", "eval.shard_problems=0"), "eval.shard_problems = 0: must be >= 1"),
    ("eval-turns-zero", _S("eval", "eval.turns=0"), "eval.turns = 0: must be >= 1"),
    ("eval-turns-no-feedback", _S("eval", "eval.turns=4"), "eval.turns = 4: task 'countdown' gives no feedback"),
    ("eval-max_tokens-zero", _S("eval", "eval.max_tokens=0"), "eval.max_tokens = 0: must be >= 1"),
    ("eval-batch-zero", _S("eval", "eval.batch_size=0"), "eval.batch_size = 0: must be >= 1"),
    ("eval-top_p-zero", _S("eval", "eval.top_p=0"), "eval.top_p = 0.0: must be in (0, 1]"),
    ("eval-temperature-negative", _S("eval", "eval.temperature=-1"), "eval.temperature = -1.0: must be >= 0"),
    ("eval-no-splits", _S("eval", "eval.splits=[]"), "eval.splits = []: must name at least one split"),
    ("eval-value-model-as-policy", _V("eval", "--model", "{value}"), "a value model (scalar head), not a policy"),
    ("eval-missing-model", _S("eval", "--model", "/no/such/model"), "/no/such/model: no such model directory"),
    ("eval-preset-as-policy", _S("eval", "--model", "micro"), "micro: a preset is an untrained model"),
    ("eval-missing-data-dir", lambda e: ["eval", "--model", BASE, "data_dir=/no/such/data"],
     "data_dir = '/no/such/data': no prepared countdown data there"),
    ("eval-vllm-missing", _S("eval", "engine.backend=vllm"), "engine.backend = 'vllm': vLLM is not installed"),
    ("eval-unknown-backend", _S("eval", "engine.backend=nonsense"), "backend must be one of searchrl | hf | vllm"),
    ("eval-bad-dtype", _S("eval", "model.dtype=float64"), "dtype must be float32 | bfloat16 | float16"),
    ("eval-unknown-task", _S("eval", "task.name=nonsense"), "task.name: unknown task 'nonsense'"),
    ("eval-typo", _S("eval", "eval.n_problem=3"), "eval.n_problem: no such setting (did you mean eval.n_problems?)"),
    ("eval-not-key-value", _S("eval", "n_problems"), "overrides look like key=value"),
    ("eval-bad-type", _S("eval", "eval.n_problems=many"), "eval.n_problems:"),
    ("eval-missing-recipe", _S("eval", "--config", "/no/such/recipe.yaml"), "/no/such/recipe.yaml: no such recipe file"),
    # generate
    ("generate-n-negative", _S("generate", "--n", "-2"), "--n -2: must be >= 1"),
    ("generate-n-zero", _S("generate", "--n", "0"), "--n 0: must be >= 1"),
    ("generate-temperature-negative", _S("generate", "--temperature", "-1"), "--temperature -1.0: must be >= 0"),
    # self-training
    ("selftrain-n_problems-negative", _S("selftrain", "selftrain.n_problems=-1"), "selftrain.n_problems = -1: must be >= 0"),
    ("selftrain-shard-zero", _S("selftrain", "selftrain.shard_problems=0"), "selftrain.shard_problems = 0: must be >= 1"),
    ("selftrain-turns-no-feedback", _S("selftrain", "selftrain.turns=4"), "selftrain.turns = 4: task 'countdown' gives no feedback"),
    ("selftrain-iterations-zero", _S("selftrain", "selftrain.iterations=0"), "selftrain.iterations = 0: must be >= 1"),
    ("selftrain-guidance-negative", _S("selftrain", "selftrain.guidance_rounds=-1"), "selftrain.guidance_rounds = -1: must be >= 0"),
    ("selftrain-value-model", _V("selftrain", "--model", "{value}"), "not a policy"),
    # ReST-GRPO
    ("rest-grpo-n_problems-negative", _S("rest-grpo", "rest_grpo.n_problems=-3"), "rest_grpo.n_problems = -3: must be >= 0"),
    ("rest-grpo-one-sample", _S("rest-grpo", "rest_grpo.samples=1"), "rest_grpo.samples = 1: must be >= 2"),
    ("rest-grpo-unknown-method", _S("rest-grpo", "rest_grpo.method=ppo"), "rest_grpo.method = 'ppo': must be one of rest-grpo | grpo | rest-dpo"),
    ("rest-grpo-alpha-zero", _S("rest-grpo", "rest_grpo.alpha=0"), "rest_grpo.alpha = 0.0: must be in (0, 1]"),
    ("rest-grpo-shard-zero", _S("rest-grpo", "rest_grpo.shard_problems=0"), "rest_grpo.shard_problems = 0: must be >= 1"),
    # ReST-MCTS*
    ("rest-mcts-n_problems-negative", _S("rest-mcts", "rest_mcts.n_problems=-1"), "rest_mcts.n_problems = -1: must be >= 0"),
    ("rest-mcts-iterations-negative", _S("rest-mcts", "rest_mcts.iterations=-1"), "rest_mcts.iterations = -1: must be >= 0"),
    ("rest-mcts-nothing-to-do", _V("rest-mcts", "rest_mcts.iterations=0", "rest_mcts.value_init={value}"),
     "rest_mcts.iterations = 0: must be >= 1 with rest_mcts.value_init set"),
    ("rest-mcts-policy-as-value", _S("rest-mcts", f"rest_mcts.value_init={BASE}"), "not a value model"),
    # RL
    ("ppo-iterations-zero", _S("ppo", "ppo.iterations=0"), "ppo.iterations = 0: must be >= 1"),
    ("ppo-n_problems-negative", _S("ppo", "ppo.n_problems=-1"), "ppo.n_problems = -1: must be >= 0"),
    ("ppo-value-model-as-policy", _V("ppo", "--model", "{value}"), "a value model (scalar head), not a policy"),
    ("grpo-one-sample", _S("grpo", "grpo.samples_per_prompt=1"), "grpo needs samples_per_prompt >= 2"),
    ("grpo-temperature-zero", _S("grpo", "grpo.temperature=0"), "RL samples at temperature > 0"),
    # search
    ("search-negative-budget", _S("search", "--method", "vote", "--budget", "-5"), "--budget -5: must be >= 1"),
    ("search-zero-budget", _S("search", "--method", "bon-oracle", "--budget", "0"), "--budget 0: must be >= 1"),
    ("search-missing-value-model", _S("search", "--method", "bon-value", "--budget", "100", "search.value=/no/such"),
     "/no/such: no such model directory"),
    ("search-policy-as-value", _S("search", "--method", "bon-value", "--budget", "100", f"search.value={BASE}"),
     "not a value model"),
    ("compare-search-unknown-method", _S("compare-search", "search.methods=[nonsense]"), "search.methods = ['nonsense']: each must be one of"),
    ("compare-search-zero-budget", _S("compare-search", "search.budgets=[0,100]"), "search.budgets = [0, 100]: must be positive"),
    ("compare-search-vm_mcts-n-zero", _S("compare-search", "search.vm_mcts.n=0"), "search.vm_mcts.n = 0: must be >= 1"),
    ("compare-search-beam-blocks", _S("compare-search", "search.beam.num_blocks=3"), "search.beam: num_blocks (3) must be divisible by width (2)"),
    ("compare-search-n_problems-negative", _S("compare-search", "search.n_problems=-1"), "search.n_problems = -1: must be >= 0"),
    # value models
    ("value-data-mcts-star-without-value", _S("value-data", "--source", "mcts-star"), "needs --value"),
    ("value-data-policy-as-value", _S("value-data", "--source", "mcts-star", "--value", BASE), "not a value model"),
    ("value-data-samples-zero", _S("value-data", "--source", "orm", "value_data.samples=0"), "value_data.samples = 0: must be >= 1"),
    ("train-value-missing-data", _S("train-value", "--kind", "scalar", "--data", "/no/such/data"), "/no/such/data: no such value-data file or directory"),
    ("train-value-value-model-as-start", _V("train-value", "--kind", "scalar", "--data", "{data}", "--model", "{value}"),
     "not a policy"),
    # sft, export, data
    ("sft-max_steps-zero", lambda e: ["sft", f"data_dir={e['data']}", "sft.max_steps=0"], "sft.max_steps = 0: must be >= 1"),
    ("sft-negative-lr", lambda e: ["sft", f"data_dir={e['data']}", "sft.lr=-1"], "sft.lr = -1.0: must be >= 0"),
    ("sft-value-model-as-model", lambda e: ["sft", f"data_dir={e['data']}", f"model.name={e['value']}"], "not a policy"),
    ("export-verl-negative-n", lambda e: ["export-verl", "--split", "test_seen", "--out", str(e["root"] / "x.parquet"),
                                          "--n", "-1", f"data_dir={e['data']}"], "--n -1: must be >= 0"),
    ("demo-ks-zero", lambda e: ["demo", "--preset", "smoke", "eval.ks=[0]"], "eval.ks = [0]: each k must be within"),
    ("demo-unknown-ppo-row", lambda e: ["demo", "--preset", "smoke", "demo.ppo_rows=[grpo]"],
     "demo.ppo_rows = ['grpo']: each must be one of sos | rest | guided-rest | guided-rest-token"),
]


def _snapshot(path: Path) -> dict:
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(path.rglob("*")) if p.is_file()} | {"<dirs>": sorted(str(p) for p in path.rglob("*"))}


def _refused(argv: list[str], capsys) -> str:
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, f"exit status {rc}: {err}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, env, tmp_path, capsys):
    _, argv_of, fragment = case
    argv = [*argv_of(env), "--quiet"]
    fresh = tmp_path / "fresh"
    assert fragment in _refused([*argv, "--run-dir", str(fresh)], capsys)
    assert not fresh.exists()
    before = _snapshot(env["existing"])
    assert fragment in _refused([*argv, "--run-dir", str(env["existing"])], capsys)
    assert _snapshot(env["existing"]) == before


def test_workers_without_ray_is_one_line(env, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    line = _refused(["eval", "--model", BASE, f"data_dir={env['data']}", "engine.workers=2", "--quiet",
                     "--run-dir", str(tmp_path / "r")], capsys)
    assert "engine.workers = 2: Ray is not installed" in line and not (tmp_path / "r").exists()


@pytest.mark.parametrize("where", ["file", "under-file", "not-writable"])
def test_run_dir_that_cannot_be_one_is_one_line(where, env, capsys):
    run_dir = {"file": env["afile"], "under-file": env["afile"] / "run", "not-writable": Path("/proc/searchrl-run")}[where]
    before = env["afile"].read_bytes()
    line = _refused(["eval", "--model", BASE, f"data_dir={env['data']}", "--quiet", "--run-dir", str(run_dir)], capsys)
    expected = {"file": "is a file, not a directory", "under-file": f"is under {env['afile']}, which is a file",
                "not-writable": "is not writable"}[where]
    assert expected in line and env["afile"].read_bytes() == before


def test_argparse_errors_exit_2_without_traceback(env, capsys):
    for argv in (["ppo", "--modle", BASE], ["train-value", "--kind", "bogus", "--data", "x"], ["search", "--budget", "x"],
                 ["search", "--method", "nonsense", "--budget", "100"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "Traceback" not in err
        assert "error:" in err.strip().splitlines()[-1]  # argparse: its usage lines, then the error
        if "nonsense" in argv:  # the search registry's names are the choices
            assert "invalid choice: 'nonsense'" in err and "vm-mcts" in err


def test_key_value_overrides_may_stand_between_options(env, tmp_path):
    from searchrl.cli import parse_args

    args = parse_args(["ppo", "--run-dir", "R", "a.b=1", "--model", "M", "ppo.iterations=1", "--name", "x", "c=2"])
    assert args.overrides == ["a.b=1", "ppo.iterations=1", "c=2"] and args.model == "M" and args.name == "x"
    # and the command runs with them: an export with a setting after the options
    out = tmp_path / "r"
    assert main(["export-verl", "--run-dir", str(out), "--split", "test_seen", f"data_dir={env['data']}", "--out",
                 str(out / "t.parquet"), "model.name=micro", "--quiet", "--n", "2", "seed=3"]) == 0
    assert "seed: 3" in (out / "config.yaml").read_text()
