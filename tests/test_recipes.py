"""Every shipped recipe loads, and builds its run (task, data and a model) with a tiny local model in
place of the real one: the real-model recipes cannot run here, but nothing in them is left unchecked
that does not need the GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("recipes/**/*.yaml"), *ROOT.glob("searchrl/presets/*.yaml")])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A micro model directory (a pretrained-style model: its own tokenizer) and tiny data for path sources."""
    from searchrl.models.policy import load_policy
    from searchrl.tasks.code.tokenizer import build_code_tokenizer

    d = tmp_path_factory.mktemp("tiny")
    model, tok = load_policy("micro", tokenizer=build_code_tokenizer(), max_seq_len=256)
    model.save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    code = d / "code"
    code.mkdir()
    for split in ("train", "test"):
        (code / f"{split}.jsonl").write_text(json.dumps({"statement": "Print the sum of 1 and 2.", "tests": [
            {"input": "", "output": "3"}]}) + "\n")
    math = d / "math"
    math.mkdir()
    for split in ("train", "selftrain", "test"):
        (math / f"{split}.jsonl").write_text(json.dumps({"content": "1+2?", "answer": "3",
                                                         "solution": "1 + 2 = 3\nThe answer is \\boxed{3}."}) + "\n")
    return d


def test_every_recipe_is_tested():
    assert len(RECIPES) >= 10 and any("qwen" in r for r in RECIPES) and any("llama-3-8b" in r for r in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_builds_its_run_with_a_tiny_model(recipe, tiny, tmp_path):
    import yaml

    from searchrl.config import load_config
    from searchrl.pipelines.run import Run

    raw = yaml.safe_load((ROOT / recipe).read_text())
    over = [f"run_dir={tmp_path / 'run'}"]
    real = (raw.get("model") or {}).get("name") == "???"
    if real:
        over.append(f"model.name={tiny / 'model'}")
    if (raw.get("task") or {}).get("path") == "???":
        over.append(f"task.path={tiny / raw['task']['name']}")
    cfg = load_config([ROOT / recipe], over)
    assert cfg.sft.grad_accum >= 1 and cfg.rest_sft.tokens_per_batch >= 1
    if not real:
        return  # tiny recipes build their model from scratch in their own tests
    run = Run(cfg, progress=False)
    if getattr(cfg.task, "path", ""):  # data from files: prepared from the tiny ones (generated sets stay unmade)
        run.ensure_data()
        assert run.task.problems(cfg.eval.splits[0])
    model, tok = run.load()
    assert model.config.vocab_size >= len(tok) and tok.chat_template


def test_the_shipped_accelerate_configs_are_ones_accelerate_reads():
    from accelerate.commands.config.config_args import load_config_from_file

    root = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
    configs = sorted(root.glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = load_config_from_file(str(path))
        assert str(cfg.distributed_type) == "DistributedType.MULTI_GPU" and cfg.mixed_precision == "bf16", path
