"""Every shipped recipe loads, and builds its run (task, data and a model) with a tiny local model in
place of the real one: the real-model recipes cannot run here, but nothing in them is left unchecked
that does not need the GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("searchrl/recipes/*/*.yaml"),
                                                     *ROOT.glob("searchrl/presets/*.yaml")])


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
    # the real datasets in their own Hub layouts (test_datasets.py's fixtures)
    from test_datasets import (CC, CC_SCHEMA, GSM8K, GSM8K_SCHEMA, MBPP, MBPP_SCHEMA, write_jsonl,
                               write_parquet)

    for split in ("train", "test"):
        write_parquet(d / "math-gsm8k" / f"{split}-00000-of-00001.parquet", GSM8K, GSM8K_SCHEMA)
        write_parquet(d / "code-mbpp" / f"{split}-00000-of-00001.parquet", MBPP, MBPP_SCHEMA)
        write_parquet(d / "code-codecontests" / "data" / f"{split}-00000-of-00001.parquet", CC, CC_SCHEMA)
    write_jsonl(d / "math-math" / "test.jsonl", [{"problem": "1+2?", "solution": "1 + 2 = \\boxed{3}",
                                                  "answer": "3"}])
    return d


def is_hub_name(name) -> bool:
    return isinstance(name, str) and name.count("/") == 1 and not name.startswith((".", "/", "builtin:"))


def test_every_recipe_is_tested():
    assert len(RECIPES) >= 10 and any("qwen" in r for r in RECIPES) and any("llama-3-8b" in r for r in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_builds_its_run_with_a_tiny_model(recipe, tiny, tmp_path):
    import yaml

    from searchrl.config import load_config
    from searchrl.pipelines.run import Run

    raw = yaml.safe_load((ROOT / recipe).read_text())
    over = [f"run_dir={tmp_path / 'run'}"]
    name = (raw.get("model") or {}).get("name")
    real = name == "???" or is_hub_name(name)  # the real model's place: the tiny one stands in
    if real:
        over.append(f"model.name={tiny / 'model'}")
    task = raw.get("task") or {}
    if task.get("path") == "???":
        layout = tiny / f"{task['name']}-{task.get('source')}"
        over.append(f"task.path={layout if layout.exists() else tiny / task['name']}")
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


def test_searchrl_recipes_lists_every_shipped_recipe_on_one_line_each(capsys):
    from searchrl.cli import main

    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shipped = sorted(f"{p.parent.name}/{p.stem}" for p in ROOT.glob("searchrl/recipes/*/*.yaml"))
    assert [line.split()[0] for line in lines] == shipped
    assert all(len(line) < 160 and len(line.split(maxsplit=1)) == 2 for line in lines)


def test_a_shipped_recipe_is_found_by_its_name_from_any_directory(tmp_path, monkeypatch):
    from searchrl.config import ConfigError, load_config, recipe_path

    monkeypatch.chdir(tmp_path)
    for name in ("countdown/sos-tiny", "countdown/sos-tiny.yaml", "recipes/countdown/sos-tiny.yaml"):
        assert recipe_path(name) == ROOT / "searchrl" / "recipes" / "countdown" / "sos-tiny.yaml"
    assert load_config("countdown/sos-tiny").task.name == "countdown"
    (tmp_path / "mine.yaml").write_text("seed: 7\n")
    assert load_config("mine.yaml").seed == 7  # a file that exists wins
    with pytest.raises(ConfigError, match="no-such/recipe: no such recipe file.*searchrl recipes"):
        load_config("no-such/recipe")
    with pytest.raises(ConfigError, match="no such recipe"):
        recipe_path("../pyproject")


def test_a_wheel_carries_the_recipes(tmp_path):
    """Recipes are package data: a wheel built from the sources has every one of them."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "searchrl", src / "searchrl",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"searchrl/recipes/{p.parent.name}/{p.name}" for p in ROOT.glob("searchrl/recipes/*/*.yaml")}
    assert shipped and shipped <= names
