"""The vLLM backend: our settings translated into vLLM's, its outputs into ours (everywhere, with stand-ins);
the RL loop's weight sync on a stand-in with vLLM's call surface (a ``vllm`` module put in ``sys.modules`` by
the ``fake_vllm`` fixture: ``LLM.generate``, the engine's ``model.load_weights``, ``reset_prefix_cache``),
where the engine must hold the policy's weights after every update and never reload its checkpoint; and the
same prompts through our sampler and vLLM where vLLM imports."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace as NS

import pytest

from searchrl.engine.types import SamplingParams
from searchrl.engine.vllm_backend import from_vllm_output, vllm_sampling_kwargs


def test_sampling_params_translate_to_vllms():
    kw = vllm_sampling_kwargs(SamplingParams(n=4, temperature=0.7, top_p=0.9, max_tokens=64, stop="\n", seed=3,
                                             stop_token_ids=[7], prompt_logprobs=True))
    assert kw == {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "seed": 3, "stop": ["\n"],
                  "include_stop_str_in_output": False, "ignore_eos": False, "logprobs": 0, "stop_token_ids": [7],
                  "prompt_logprobs": 0}
    greedy = vllm_sampling_kwargs(SamplingParams(temperature=0.0))
    assert greedy["temperature"] == 0.0 and "stop" not in greedy and "prompt_logprobs" not in greedy


def test_vllm_outputs_become_ours():
    lp = lambda x: NS(logprob=x)  # noqa: E731
    out = NS(prompt="Q", prompt_token_ids=[1, 2], prompt_logprobs=[None, {2: lp(-0.5), 9: lp(-1.0)}],
             outputs=[NS(index=0, text="ab", token_ids=[5, 6], cumulative_logprob=-0.3,
                         logprobs=[{5: lp(-0.1), 8: lp(-2.0)}, {6: lp(-0.2)}], finish_reason="length"),
                      NS(index=1, text="c", token_ids=[7], cumulative_logprob=None, logprobs=[{7: lp(-0.4)}],
                         finish_reason="stop")])
    r = from_vllm_output(out, 3)
    assert r.request_id == 3 and r.prompt_token_ids == [1, 2] and r.prompt_logprobs == [None, -0.5]
    a, b = r.outputs
    assert a.logprobs == [-0.1, -0.2] and a.finish_reason == "length" and a.cumulative_logprob == -0.3
    assert b.logprobs == [-0.4] and b.finish_reason == "stop" and b.cumulative_logprob == pytest.approx(-0.4)


def test_the_backend_is_one_setting():
    from searchrl.config import EngineConfig
    from searchrl.engine.factory import make_generator

    with pytest.raises(ValueError, match="saved HF directory"):
        make_generator(EngineConfig(backend="vllm"), NS(name_or_path=""), None)
    with pytest.raises(ValueError, match="searchrl \\| hf \\| vllm"):
        EngineConfig(backend="nope")
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        EngineConfig(gpu_memory_utilization=0.0)


VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(not VLLM, reason="vllm is not installed here (pip install 'searchrl[vllm]' on a GPU machine)")
def test_same_prompts_through_our_sampler_and_vllm(tmp_path):  # pragma: no cover - needs vLLM
    from searchrl.engine.sampler import Sampler
    from searchrl.engine.vllm_backend import VLLMGenerator
    from searchrl.models.policy import load_policy
    from searchrl.tasks.countdown.tokenizer import build_countdown_tokenizer

    tok = build_countdown_tokenizer()
    model = load_policy("micro", tokenizer=tok)[0]
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    prompts = [tok("Current State: 24:[1, 2, 3, 4], Operations: []\n", add_special_tokens=False)["input_ids"]] * 2
    params = SamplingParams(temperature=0.0, max_tokens=16, stop=["\n"])
    ours = Sampler(model, tok).generate(prompts, params)
    theirs = VLLMGenerator(tmp_path, tok, dtype="float32").generate(prompts, params)
    assert [o.outputs[0].token_ids for o in ours] == [o.outputs[0].token_ids for o in theirs]
    for a, b in zip(ours, theirs):
        assert a.outputs[0].logprobs == pytest.approx(b.outputs[0].logprobs, abs=1e-3)


# ----------------------------------------------------------------------------- weights in place (the RL loop)


class _SamplingParams:
    """vllm.SamplingParams: keeps its keyword arguments."""

    def __init__(self, **kw):
        self.kw = kw


class _EngineModel:
    """The model inside vLLM's engine: ``load_weights`` takes ``(name, tensor)`` pairs under the HF checkpoint's
    names (an unknown name is vLLM's KeyError) and copies them into its own weights; every call is recorded."""

    def __init__(self, hf_model, loads: list):
        self.hf_model, self.loads = hf_model, loads

    def load_weights(self, weights):
        import torch

        own = dict(self.hf_model.named_parameters())
        got = {}
        with torch.no_grad():
            for name, tensor in weights:
                if name not in own:
                    raise KeyError(name)
                assert own[name].shape == tensor.shape, name
                own[name].copy_(tensor)
                got[name] = tensor.detach().clone()
        self.loads.append(got)
        return set(got)


class _LLM:
    """vllm.LLM's call surface, over its own copy of the checkpoint (sampled with our sampler): ``generate`` with
    SamplingParams -> RequestOutput-shaped objects, ``llm_engine.model_executor.driver_worker.model_runner.model``,
    ``reset_prefix_cache``, ``get_tokenizer``. ``made`` lists the checkpoints every engine was started from,
    ``engines`` the engines."""

    made: list = []
    engines: list = []

    def __init__(self, model, **kw):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from searchrl.engine.sampler import Sampler

        _LLM.made.append(str(model))
        _LLM.engines.append(self)
        self.kw, self.loads, self.resets = kw, [], 0
        self.hf = AutoModelForCausalLM.from_pretrained(model).eval()
        self.tok = AutoTokenizer.from_pretrained(model)
        self.sampler = Sampler(self.hf, self.tok, max_batch_size=kw.get("max_num_seqs", 64))
        runner = NS(model=_EngineModel(self.hf, self.loads))
        self.llm_engine = NS(model_executor=NS(driver_worker=NS(model_runner=runner)))

    def get_tokenizer(self):
        return self.tok

    def reset_prefix_cache(self):
        self.resets += 1
        self.sampler.update_weights()

    def generate(self, inputs, params, use_tqdm=False):
        prompts = [i["prompt_token_ids"] if isinstance(i, dict) else i for i in inputs]
        ours = [SamplingParams(**{k: v for k, v in p.kw.items() if k != "logprobs"}) for p in params]
        lp = lambda x: NS(logprob=x)  # noqa: E731
        return [NS(prompt=o.prompt, prompt_token_ids=o.prompt_token_ids,
                   prompt_logprobs=None if o.prompt_logprobs is None else
                   [None] + [{t: lp(x)} for t, x in zip(o.prompt_token_ids[1:], o.prompt_logprobs[1:])],
                   outputs=[NS(index=c.index, text=c.text, token_ids=c.token_ids,
                               cumulative_logprob=c.cumulative_logprob, logprobs=[{t: lp(x)} for t, x in zip(c.token_ids, c.logprobs)],
                               finish_reason=c.finish_reason) for c in o.outputs])
                for o in self.sampler.generate(prompts, ours)]


@pytest.fixture
def fake_vllm(monkeypatch):
    """A ``vllm`` module with vLLM's call surface (``_LLM``), for this test only."""
    import importlib.machinery
    import sys
    import types

    mod = types.ModuleType("vllm")
    mod.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    mod.LLM, mod.SamplingParams = _LLM, _SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    _LLM.made, _LLM.engines = [], []
    return mod


@pytest.fixture(scope="module")
def digit_task(tmp_path_factory):
    from searchrl.tasks import Score
    from searchrl.tasks.countdown import CountdownConfig, CountdownTask

    class FirstDigit(CountdownTask):
        def score(self, problems, responses):
            return [Score(reward=float(r[:1].isdigit()), correct=r[:1].isdigit()) for r in responses]

    t = FirstDigit(CountdownConfig(n_train=4, n_selftrain=12, n_valid=2, n_valid_unseen=2, n_test=2, max_target=30,
                                   workers=1), tmp_path_factory.mktemp("cd"))
    t.prepare(progress=False)
    return t


def _expected(policy, lora: bool) -> dict:
    """The policy's weights under its checkpoint's names (LoRA: merged into a copy, the policy left as it is)."""
    import copy

    if lora:
        from searchrl.train.adapters import merge_lora

        policy = copy.deepcopy(policy)
        merge_lora(policy)
    return {k: v.detach().clone() for k, v in policy.named_parameters()}


@pytest.mark.parametrize("algo", ["grpo", "ppo", "grpo-lora"])
def test_rl_updates_push_the_live_policy_into_the_running_engine(fake_vllm, digit_task, tmp_path, algo):
    import copy
    import os

    import torch

    from searchrl.config import EngineConfig
    from searchrl.engine.factory import make_generator
    from searchrl.models import load_policy
    from searchrl.models.value import ValueModel
    from searchrl.train.config import RLConfig
    from searchrl.train.rl import train_rl

    if algo.endswith("lora"):
        pytest.importorskip("peft")
    ckpt = tmp_path / "ckpt"
    model, tok = load_policy("micro", digit_task.tokenizer(), max_seq_len=256, seed=0)
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    policy, tok = load_policy(ckpt)
    initial = _expected(policy, False)
    kw = dict(output_dir=str(tmp_path / "run"), iterations=3, prompts_per_step=4, max_tokens=4, minibatch_size=4,
              lr=5e-2, critic_lr=1e-2, save_every=0, batch_size=8)
    if algo.startswith("grpo"):
        kw.update(adv_estimator="grpo", samples_per_prompt=2, prompts_per_step=2, loss_agg="seq-mean-action-mean",
                  dual_clip=None)
    if algo.endswith("lora"):
        kw.update(lora_rank=2, lora_targets="q_proj,v_proj")
    cfg = RLConfig(**kw)
    critic = ValueModel.from_policy(copy.deepcopy(policy)) if cfg.uses_critic else None
    engines, seen = [], []

    def gen(m):
        g = make_generator(EngineConfig(backend="vllm"), m, tok, cfg.batch_size)
        engines.append(g)
        return g

    def after(it, logs):  # after each iteration's update: what the engine holds is the policy's weights now
        llm = engines[0].llm
        want = _expected(policy, algo.endswith("lora"))
        held = dict(llm.hf.named_parameters())
        assert set(want) == set(held) == set(llm.loads[-1])
        assert all(torch.equal(held[k], want[k]) for k in want), it
        assert all(torch.equal(llm.loads[-1][k], want[k]) for k in want), it
        seen.append((it, len(llm.loads), llm.resets))

    train_rl(policy, tok, digit_task, digit_task.problems("selftrain"), cfg, critic=critic, make_generator=gen,
             callback=after, progress=False)
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # the engine in this process, where its model is
    # one engine, started once from the checkpoint and never reloaded; one weight push (and prefix-cache reset) at
    # the start and one after every update
    assert len(engines) == 1 and _LLM.made == [str(ckpt)]
    assert seen == [(1, 2, 2), (2, 3, 3), (3, 4, 4)]
    llm = engines[0].llm
    changed = [k for k in initial if not torch.equal(llm.hf.state_dict()[k], initial[k])]
    assert changed  # the engine samples from trained weights, not the checkpoint's
    if algo.endswith("lora"):  # only the adapted layers' merged weights (and no adapter tensors) moved
        assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
        assert not any("lora_" in k or "base_layer" in k for k in llm.loads[-1])


def test_a_generator_over_a_module_samples_its_weights_and_a_path_still_reloads(fake_vllm, tmp_path):
    import torch

    from searchrl.engine.vllm_backend import VLLMGenerator, hf_weights
    from searchrl.models import load_policy
    from searchrl.tasks.countdown.tokenizer import build_countdown_tokenizer

    model, tok = load_policy("micro", build_countdown_tokenizer(), max_seq_len=64)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with torch.no_grad():  # the module differs from its checkpoint (a resumed run): the engine samples the module
        for p in model.parameters():
            p.add_(0.5)
    g = VLLMGenerator(tmp_path, tok, source=model)
    assert all(torch.equal(a, b) for a, b in zip(g.llm.hf.parameters(), model.parameters()))
    prompt = tok("Current State: 24:[1, 2], Operations: []\n", add_special_tokens=False)["input_ids"]
    ours = _greedy(model, tok, prompt)
    theirs = g.generate([prompt], SamplingParams(temperature=0.0, max_tokens=6))[0].outputs[0]
    assert theirs.token_ids == ours.token_ids and theirs.logprobs == pytest.approx(ours.logprobs, abs=1e-5)
    # names are the checkpoint's: a wrapper's prefix is taken off
    wrapped = torch.nn.parallel.DistributedDataParallel.__new__(torch.nn.parallel.DistributedDataParallel)
    torch.nn.Module.__init__(wrapped)
    wrapped.module = model
    assert [n for n, _ in hf_weights(wrapped)] == [n for n, _ in hf_weights(model)]
    # a path: a new engine on that checkpoint, which it samples from then on
    g.update_weights(str(tmp_path))
    g.update_weights()
    assert _LLM.made == [str(tmp_path)] * 3 and g.source is None
    assert not all(torch.equal(a, b) for a, b in zip(g.llm.hf.parameters(), model.parameters()))


def _greedy(model, tok, prompt):
    from searchrl.engine.sampler import Sampler

    return Sampler(model, tok).generate([prompt], SamplingParams(temperature=0.0, max_tokens=6))[0].outputs[0]


def test_the_gpu_weight_sync_check_runs_on_a_stand_in(fake_vllm, tmp_path, capsys):
    """benchmarks/vllm_check.py (run by benchmarks/gpu_check.sh against a real engine): its CPU parts, and its
    verdicts, on the stand-in (whose engines are exact): the pushed weights change the outputs and equal a fresh
    engine's on the changed checkpoint, plain and with LoRA adapters merged."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "vllm_check.py"
    spec = importlib.util.spec_from_file_location("vllm_check", path)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert check.main(["--out", str(tmp_path), "--in-process", "--dtype", "float32"]) == 0
    res = json.loads((tmp_path / "vllm_check.json").read_text())
    p, lora = res["checks"]["perturbed"], res["checks"]["lora"]
    assert p["changed"] and p["vs_fresh_engine"] == 0.0 and p["vs_our_sampler"] < 1e-4
    assert lora["changed"] and lora["vs_fresh_engine"] == 0.0
    # three engines were started (the running one, and a fresh one per checked checkpoint), never the start reloaded
    assert _LLM.made == [str(tmp_path / d) for d in ("start", "perturbed", "lora-merged")]
    # the verdicts can fail: outputs that differ are told apart
    a = res["outputs"]["pushed"]
    assert check.max_diff(a, res["outputs"]["start"], same_tokens=False) == p["change_from_start"] > 0.1
    assert check.max_diff(a, {**a, "tokens": [t[::-1] for t in a["tokens"]]}) == float("inf")


def test_the_grpo_command_on_vllm_keeps_one_engine_in_sync(fake_vllm, tmp_path):
    """``searchrl grpo engine.backend=vllm``: one engine, started from the base checkpoint, holding the trained
    policy's weights at the end (those of the final checkpoint the command wrote)."""
    import torch
    from safetensors.torch import load_file

    from searchrl.cli import main
    from searchrl.models import resolve_model_path

    assert main(["grpo", "--run-dir", str(tmp_path / "run"), "--quiet", "engine.backend=vllm",
                 "base_model=builtin:sos-tiny-base", "task.n_train=4", "task.n_selftrain=4", "task.n_valid=2",
                 "task.n_valid_unseen=2", "task.n_test=2", "task.workers=1", "model.max_seq_len=512",
                 "grpo.iterations=2", "grpo.prompts_per_step=2", "grpo.samples_per_prompt=2", "grpo.minibatch_size=4",
                 "grpo.max_tokens=16", "grpo.lr=1e-2", "grpo.entropy_coef=0.1",  # a gradient whatever the rewards
                 "engine.gpu_memory_utilization=0.3"]) == 0
    (llm,) = _LLM.engines
    assert llm.kw["gpu_memory_utilization"] == 0.3 and llm.kw["enable_prefix_caching"]
    assert _LLM.made == [str(resolve_model_path("builtin:sos-tiny-base"))]
    assert len(llm.loads) == 1 + 2 and llm.resets == 3  # at the start, then after each of the two updates
    final = load_file(tmp_path / "run" / "grpo" / "final" / "model.safetensors")
    held = llm.hf.state_dict()
    assert all(torch.equal(held[k], v) for k, v in final.items())
    start = load_file(resolve_model_path("builtin:sos-tiny-base") / "model.safetensors")
    assert any(not torch.equal(start[k], v) for k, v in final.items())


def test_gpu_check_script_is_valid_bash():
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert "benchmarks/vllm_check.py" in script.read_text()
