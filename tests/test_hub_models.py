"""Models by Hugging Face Hub name (``org/name[@revision]``), offline, from a Hub cache these tests lay out
exactly as huggingface_hub does (``models--org--name/{blobs, refs/main, snapshots/<commit>/...}``, the snapshot's
files links into ``blobs``), under a temporary ``HF_HOME`` with ``HF_HUB_OFFLINE=1``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from searchrl.config import load_config
from searchrl.data import InputError
from searchrl.models import check_model_dir, load_policy, resolve_model_path
from searchrl.models.hub import HubError, hub_snapshot_identity, parse_hub_name, resolve_hub
from searchrl.models.policy import dir_tokenizer
from searchrl.models.value import ValueModel, is_value_dir
from searchrl.pipelines.run import Run
from searchrl.tasks.countdown import build_countdown_tokenizer

COMMIT = hashlib.sha1(b"acme/tiny v1").hexdigest()
COMMIT_2 = hashlib.sha1(b"acme/tiny v2").hexdigest()


def lay_out(cache: Path, repo: str, src: Path, commit: str, branch: str | None = "main") -> Path:
    """``src``'s files as huggingface_hub caches revision ``commit`` of ``repo`` (``branch`` pointing at it)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "blobs").mkdir(exist_ok=True)
    for f in sorted(src.iterdir()):
        data = f.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    if branch:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / branch).write_text(commit)  # huggingface_hub writes the hash without a newline
    return snap


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """An HF_HOME whose cache holds acme/tiny (a micro policy; main -> COMMIT_2, COMMIT kept) and
    acme/tiny-value (a scalar value model on it)."""
    tmp = tmp_path_factory.mktemp("hub")
    tok = build_countdown_tokenizer()
    models = {}
    for name, seed in (("v1", 0), ("v2", 1)):
        policy, _ = load_policy("micro", tok, max_seq_len=64, seed=seed)
        policy.save_pretrained(tmp / name)
        tok.save_pretrained(tmp / name)
        models[name] = policy
    # the value model scores the shipped Countdown policy's samples: its vocabulary
    base_tok = dir_tokenizer(resolve_model_path("builtin:sos-tiny-base"))
    backbone, _ = load_policy("micro", base_tok, max_seq_len=512, seed=2)
    ValueModel.from_policy(backbone, seed=3).save_pretrained(tmp / "value")
    base_tok.save_pretrained(tmp / "value")
    cache = tmp / "hf" / "hub"
    lay_out(cache, "acme/tiny", tmp / "v1", COMMIT, branch=None)
    lay_out(cache, "acme/tiny", tmp / "v2", COMMIT_2)
    lay_out(cache, "acme/tiny-value", tmp / "value", COMMIT)
    return {"home": tmp / "hf", "cache": cache, "models": models, "tok": tok, "tmp": tmp}


@pytest.fixture(autouse=True)
def offline(hub, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(hub["home"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def logits(model, ids=(1, 5, 9, 12)):
    with torch.no_grad():
        return model(torch.tensor([list(ids)])).logits


def test_hub_names_are_told_from_paths_and_presets(tmp_path, monkeypatch):
    assert parse_hub_name("acme/tiny") == ("acme/tiny", None)
    assert parse_hub_name(f"acme/tiny@{COMMIT}") == ("acme/tiny", COMMIT)
    assert parse_hub_name("Qwen/Qwen2.5-0.5B-Instruct@v1.0") == ("Qwen/Qwen2.5-0.5B-Instruct", "v1.0")
    for not_hub in ("tiny-1m", "runs/demo/sft/final", "/abs/dir", "./a/b", "~/a", "builtin:sos-tiny-base",
                    "acme/tiny@", "ac--me/x", "acme/x.git", "acme/a b"):
        assert parse_hub_name(not_hub) is None, not_hub
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme" / "tiny").mkdir(parents=True)
    assert parse_hub_name("acme/tiny") is None  # a local path of that name wins
    assert resolve_model_path("acme/tiny") == Path("acme/tiny")


def test_a_cached_model_loads_by_name_and_by_revision(hub):
    snap = resolve_model_path("acme/tiny")
    assert snap == hub["cache"] / "models--acme--tiny" / "snapshots" / COMMIT_2  # refs/main
    assert resolve_model_path(f"acme/tiny@{COMMIT}").name == COMMIT
    assert resolve_hub("acme/tiny").identity == f"acme/tiny@{COMMIT_2}"
    assert hub_snapshot_identity(snap) == f"acme/tiny@{COMMIT_2}"
    model, tok = load_policy("acme/tiny")
    assert torch.equal(logits(model), logits(hub["models"]["v2"]))
    assert tok.get_vocab() == hub["tok"].get_vocab()
    old, _ = load_policy(f"acme/tiny@{COMMIT}")
    assert torch.equal(logits(old), logits(hub["models"]["v1"]))
    assert not torch.equal(logits(old), logits(model))
    check_model_dir("acme/tiny")  # a policy
    with pytest.raises(InputError, match="not a value model"):
        check_model_dir("acme/tiny", kind="value")
    assert is_value_dir("acme/tiny-value") and not is_value_dir("acme/tiny") and not is_value_dir("acme/absent")


def test_offline_and_not_cached_is_one_line_naming_the_fetch_command(hub):
    with pytest.raises(HubError) as e:
        resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("Qwen/Qwen2.5-0.5B-Instruct: ")
    assert f"HF_HUB_CACHE={hub['cache']}" in msg and "HF_HUB_OFFLINE=1" in msg
    assert msg.endswith("fetch it with: hf download Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(HubError, match=r"hf download acme/tiny --revision v9$"):
        resolve_model_path("acme/tiny@v9")  # a branch the cache has no ref of
    with pytest.raises(HubError, match=f"--revision {'0' * 40}$"):
        resolve_model_path(f"acme/tiny@{'0' * 40}")


def test_hf_hub_cache_overrides_hf_home(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(HubError, match="elsewhere"):
        resolve_model_path("acme/tiny")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "nothing-here"))
    assert resolve_model_path("acme/tiny").name == COMMIT_2


def run_of(tmp_path, *overrides):
    cfg = load_config([], [f"run_dir={tmp_path / 'run'}", "task.n_train=4", "task.n_valid=2", "task.n_test=2",
                           *overrides])
    return Run(cfg, progress=False)


def test_a_run_checks_keys_and_loads_hub_models_by_revision(hub, tmp_path):
    run = run_of(tmp_path, "model.name=acme/tiny", "search.value=acme/tiny-value")
    assert run.check_model("acme/tiny").name == COMMIT_2
    assert run.model_identity("acme/tiny") == f"acme/tiny@{COMMIT_2}"
    assert run.model_identity(resolve_model_path("acme/tiny")) == f"acme/tiny@{COMMIT_2}"  # by its snapshot, too
    assert run.model_identity(f"acme/tiny@{COMMIT}") == f"acme/tiny@{COMMIT}"
    assert run.model_key("acme/tiny").startswith(f"acme/tiny@{COMMIT_2}:float32:")
    assert run.sft_stage().depends["model"]["name"] == f"acme/tiny@{COMMIT_2}"
    model, _ = run.load()
    assert torch.equal(logits(model), logits(hub["models"]["v2"]))
    run.open(models=[run.cfg.model.name], value_models={"search.value": "acme/tiny-value"})
    value = run.load_value("acme/tiny-value")
    assert isinstance(value, ValueModel) and 0.0 <= value.score([[1, 5]], [[9, 12]])[0] <= 1.0
    assert run.scorer_identity("acme/tiny-value") == f"acme/tiny-value@{COMMIT}"  # a value model: no verifier settings
    with pytest.raises(InputError, match="search.value: .*acme/tiny.*not a value model"):
        run.open(value_models={"search.value": "acme/tiny"})


def test_a_run_refuses_an_uncached_model_name_naming_the_setting(hub, tmp_path):
    run = run_of(tmp_path, "model.name=acme/absent")
    with pytest.raises(HubError) as e:
        run.open(models=[run.cfg.model.name])
    assert str(e.value).startswith("model.name=acme/absent: ") and str(e.value).endswith("hf download acme/absent")
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing recorded
    with pytest.raises(InputError, match="^search.prm: acme/absent-prm: .*hf download acme/absent-prm$"):
        run_of(tmp_path, "model.name=acme/tiny").open(value_models={"search.prm": "acme/absent-prm"})
    with pytest.raises(HubError, match="^base_model=acme/absent-base: .*hf download acme/absent-base$"):
        run_of(tmp_path, "base_model=acme/absent-base").open(samples=True)
    with pytest.raises(HubError, match="^--model acme/absent@v2: .*hf download acme/absent --revision v2$"):
        run_of(tmp_path).open(samples=True, policy="acme/absent@v2")


def test_a_search_scores_with_a_value_model_given_by_hub_name(hub, tmp_path):
    """``search.value=org/name`` through the Searcher (its check, the scorer's key and loading), on the
    shipped Countdown policy."""
    from searchrl.cli import main

    run = tmp_path / "run"
    smoke = str(Path(__file__).parent.parent / "searchrl" / "presets" / "search-smoke.yaml")
    args = ["search", "--config", smoke, "--method", "bon-value", "--budget", "200", "--run-dir", str(run),
            "--quiet", "search.n_problems=2", "search.pool_samples=2", "search.value=acme/tiny-value"]
    assert main(args) == 0
    res = [json.loads(p.read_text()) for p in (run / "search" / "methods").glob("bon-value-200-*.json")]
    assert len(res) == 1 and res[0]["row"]["n_problems"] == 2 and res[0]["row"]["value_tokens"] > 0
    assert main([*args[:-1], "search.value=acme/absent-value"]) == 2
