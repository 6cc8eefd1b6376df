"""The vLLM backend: our settings translated into vLLM's, its outputs into ours (everywhere, with stand-ins),
and the same prompts through our sampler and vLLM where vLLM imports."""

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
