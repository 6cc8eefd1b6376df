"""searchrl.engine: the continuously batched, static-cache sampler.

Tiny random models are built here; greedy decoding is checked token for token
against transformers' own ``generate``. They are built on ``TEST_DEVICE`` (``cpu``, or
``SEARCHRL_TEST_DEVICE=cuda`` to check the engine on a GPU, where transformers' reference
runs on the same device).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import TEST_DEVICE
from searchrl.engine import CompletionOutput, RequestOutput, Sampler, SamplingParams

PROMPTS = ["1", "12+3", "7*8=", "99-4 = 95\n3+", "((2+3)*4)", "5 5 5 5 5 5 5 5", "0\n1\n2\n", "8/2=4\n6*7=42\n1+1="]


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for c in "0123456789+-*/=() \n":
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny(arch: str, vocab: int, **kw):
    import transformers

    cfg_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[arch]
    model_cls = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM}[arch]
    torch.manual_seed(0)
    kw = {"num_attention_heads": 4, "num_key_value_heads": 2, **kw}
    cfg = cfg_cls(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                  max_position_embeddings=256, initializer_range=0.3, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                  **kw)
    return model_cls(cfg).to(TEST_DEVICE).eval()


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def llama(tok):
    return tiny("llama", len(tok), tie_word_embeddings=False)


def hf_greedy(model, prompt_ids: list[int], max_new: int) -> list[int]:
    """transformers' greedy continuation, stopping after EOS (EOS included)."""
    ids = torch.tensor([prompt_ids], device=model.device)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new,
                             pad_token_id=0, eos_token_id=2)[0, len(prompt_ids):].tolist()
    return out[: out.index(2) + 1] if 2 in out else out


def greedy(**kw):
    return SamplingParams(temperature=0.0, **kw)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "llama-tied", "llama3-rope", "llama-unfused", "llama-sdpa",
                                  "hf-fallback"])
def test_greedy_matches_transformers(tok, llama, arch, monkeypatch):
    if arch == "llama-unfused":  # separate q/k/v and gate/up matmuls, as for big models
        from searchrl.engine.llama import StaticLlama

        monkeypatch.setattr(StaticLlama, "FUSE_MAX_PARAMS", 0)
    if arch == "qwen2":
        model = tiny("qwen2", len(tok))  # q/k/v biases
    elif arch == "llama3-rope":  # Llama 3.x rope scaling, GQA with 4 query heads per KV head
        model = tiny("llama", len(tok), num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                     rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 64})
    elif arch == "llama-tied":
        model = tiny("llama", len(tok), tie_word_embeddings=True, rope_parameters={"rope_type": "default",
                                                                                    "rope_theta": 500.0})
    else:
        model = llama
    # 3 rows for 8 prompts of different lengths: rows sit at different positions and get refilled
    sampler = Sampler(model, tok, max_batch_size=3, backend="hf" if arch == "hf-fallback" else "auto",
                      attention="sdpa" if arch == "llama-sdpa" else "auto")
    outs = sampler.generate(PROMPTS, greedy(max_tokens=24))
    assert sampler.last_backend == ("hf" if arch == "hf-fallback" else "static")
    for prompt, out in zip(PROMPTS, outs):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        assert out.prompt_token_ids == ids and out.prompt == prompt
        ref = hf_greedy(model, ids, 24)
        got = out.outputs[0]
        assert got.token_ids == ref, prompt
        assert got.finish_reason == ("stop" if ref[-1] == 2 else "length")
    assert len({tuple(o.outputs[0].token_ids) for o in outs}) > 3  # the model is not degenerate


def test_bf16_engine_tracks_float32(tok, llama):
    """``dtype=bfloat16`` (what ``model.dtype=bfloat16`` gives a real model): the static engine computes in
    bf16 from the same weights; the first sampled token's logprob stays within bf16 rounding of fp32's
    (measured on this model: at most 0.054 from fp32, 0.03 from transformers' forward in bf16)."""
    f32 = Sampler(llama, tok, max_batch_size=3).generate(PROMPTS, greedy(max_tokens=6))
    s = Sampler(llama, tok, max_batch_size=3, dtype=torch.bfloat16)
    b16 = s.generate(PROMPTS, greedy(max_tokens=6))
    assert s.last_backend == "static" and s._static.dtype == torch.bfloat16
    agree = [a.outputs[0].token_ids[0] == b.outputs[0].token_ids[0] for a, b in zip(f32, b16)]
    assert sum(agree) >= len(PROMPTS) - 1
    for ok, a, b in zip(agree, f32, b16):
        if ok:
            assert b.outputs[0].logprobs[0] == pytest.approx(a.outputs[0].logprobs[0], abs=0.1)
    assert any(a.outputs[0].logprobs != b.outputs[0].logprobs for a, b in zip(f32, b16))  # it did compute in bf16


def test_unsupported_architecture_falls_back(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                                       initializer_range=0.3, bos_token_id=1, eos_token_id=2)).eval()
    sampler = Sampler(model, tok, max_batch_size=3)
    outs = sampler.generate(PROMPTS, greedy(max_tokens=12))
    assert sampler.last_backend == "hf"
    for out in outs:
        assert out.outputs[0].token_ids == hf_greedy(model, out.prompt_token_ids, 12)
    with pytest.raises(ValueError):
        Sampler(model, tok, backend="static").generate(PROMPTS[:1], greedy())


def test_greedy_long_run_with_eos_refills(tok, llama, monkeypatch):
    """Many requests with different max_tokens through 8 rows: refills at almost every step."""
    from searchrl.engine.batch import ContinuousBatch

    monkeypatch.setattr(ContinuousBatch, "PREFILL_TOKENS", 24)  # several prefill chunks
    prompts = [PROMPTS[i % len(PROMPTS)] + str(i) for i in range(20)]
    params = [greedy(max_tokens=3 + (i * 7) % 19) for i in range(20)]
    outs = Sampler(llama, tok, max_batch_size=8).generate(prompts, params)
    for p, sp, out in zip(prompts, params, outs):
        ref = hf_greedy(llama, tok(p, add_special_tokens=False)["input_ids"], sp.max_tokens)
        assert out.outputs[0].token_ids == ref


def sampled(**kw):
    return SamplingParams(**{"temperature": 1.0, "top_p": 0.95, "max_tokens": 20, "ignore_eos": True, **kw})


def tokens(outs):
    return [[c.token_ids for c in o.outputs] for o in outs]


def test_seeds_reproduce_and_differ(tok, llama):
    s = Sampler(llama, tok, max_batch_size=4)
    a = s.generate(PROMPTS[:5], sampled(seed=1, n=2))
    b = s.generate(PROMPTS[:5], sampled(seed=1, n=2))
    c = s.generate(PROMPTS[:5], sampled(seed=2, n=2))
    assert tokens(a) == tokens(b)
    assert tokens(a) != tokens(c)
    # seed=None: a fixed default per request index, so also reproducible
    assert tokens(s.generate(PROMPTS[:3], sampled())) == tokens(s.generate(PROMPTS[:3], sampled()))
    # greedy ignores the seed
    assert tokens(s.generate(PROMPTS[:3], greedy(seed=1))) == tokens(s.generate(PROMPTS[:3], greedy(seed=9)))


def test_sample_independent_of_batch_companions(tok, llama):
    target = PROMPTS[3]
    alone = Sampler(llama, tok, max_batch_size=1).generate([target], sampled(seed=7, n=3))
    others = [PROMPTS[i] for i in (0, 5, 7, 1)]
    mixed_prompts = others[:2] + [target] + others[2:]
    mixed_params = [sampled(seed=i, temperature=0.7 + 0.2 * i, top_p=0.8) for i in range(2)] + [
        sampled(seed=7, n=3)] + [greedy(max_tokens=5), sampled(seed=3, max_tokens=9)]
    mixed = Sampler(llama, tok, max_batch_size=3).generate(mixed_prompts, mixed_params)
    assert tokens(alone)[0] == tokens(mixed)[2]
    assert len({tuple(t) for t in tokens(alone)[0]}) > 1  # the 3 samples differ from each other


def test_tiny_top_p_is_greedy(tok, llama):
    s = Sampler(llama, tok, max_batch_size=3)
    g = s.generate(PROMPTS, greedy(max_tokens=16, ignore_eos=True))
    t = s.generate(PROMPTS, sampled(max_tokens=16, top_p=1e-6, temperature=1.3, seed=5))
    assert tokens(g) == tokens(t)


def test_stop_strings(tok, llama):
    s = Sampler(llama, tok, max_batch_size=4)
    base = sampled(n=4, max_tokens=40, temperature=1.5, top_p=1.0, seed=11)
    full = s.generate(PROMPTS, base)
    cut = s.generate(PROMPTS, dataclasses.replace(base, stop=["\n"]))
    keep = s.generate(PROMPTS, dataclasses.replace(base, stop=["\n"], include_stop_str_in_output=True))
    hits = 0
    for f_req, c_req, k_req in zip(full, cut, keep):
        for f, c, k in zip(f_req.outputs, c_req.outputs, k_req.outputs):
            assert f.text == tok.decode(f.token_ids, skip_special_tokens=True)
            if "\n" not in f.text:
                assert (c.token_ids, c.text, c.finish_reason) == (f.token_ids, f.text, "length")
                continue
            hits += 1
            i = f.text.index("\n")
            assert c.text == f.text[:i] and c.finish_reason == "stop"
            assert k.text == f.text[: i + 1] and k.finish_reason == "stop"
            # the tokens up to (and including) the one that produced the stop string
            assert c.token_ids == f.token_ids[: len(c.token_ids)]
            assert "\n" in tok.decode(c.token_ids) and "\n" not in tok.decode(c.token_ids[:-1])
            assert len(c.logprobs) == len(c.token_ids)
    assert hits >= 3
    # a multi-character stop string, taken from the generated text itself
    f = full[0].outputs[0]
    stop = f.text[5:7]
    c = s.generate([PROMPTS[0]], dataclasses.replace(base, stop=[stop, "never"]))[0].outputs[0]
    assert c.text == f.text[: f.text.index(stop)] and c.finish_reason == "stop"


def test_length_and_eos(tok, llama):
    s = Sampler(llama, tok, max_batch_size=2)
    outs = s.generate(PROMPTS, sampled(max_tokens=7, seed=3))
    assert all(len(o.outputs[0].token_ids) == 7 and o.outputs[0].finish_reason == "length" for o in outs)
    # make a frequent token the EOS: outputs end at its first occurrence, without it in the text
    first = outs[0].outputs[0].token_ids
    eos = first[2]
    s.eos_token_ids = {eos}
    o = s.generate(PROMPTS[:1], sampled(max_tokens=7, seed=3, ignore_eos=False))[0].outputs[0]
    assert o.token_ids == first[: first.index(eos) + 1] and o.finish_reason == "stop"
    assert o.text == tok.decode(first[: first.index(eos)], skip_special_tokens=True)
    # stop_token_ids behave like EOS
    s.eos_token_ids = {2}
    o2 = s.generate(PROMPTS[:1], sampled(max_tokens=7, seed=3, stop_token_ids=[eos]))[0].outputs[0]
    assert o2.token_ids == o.token_ids and o2.finish_reason == "stop"


def test_max_seq_len_caps_generation(tok, llama):
    s = Sampler(llama, tok, max_batch_size=2, max_seq_len=10)
    o = s.generate(["12345"], greedy(max_tokens=50, ignore_eos=True))[0].outputs[0]
    assert len(o.token_ids) == 10 - 5 + 1 and o.finish_reason == "length"  # 5 fed back + the last one sampled
    unlimited = Sampler(llama, tok, max_batch_size=2).generate(["12345"], greedy(max_tokens=6, ignore_eos=True))
    assert o.token_ids == unlimited[0].outputs[0].token_ids
    with pytest.raises(ValueError):
        s.generate(["0123456789"], greedy())


def test_continuation_from_prefix_and_token_prompts(tok, llama):
    s = Sampler(llama, tok, max_batch_size=2)
    prefix = "8/2=4\n6*7=4"  # ends mid-line
    ids = tok(prefix, add_special_tokens=False)["input_ids"]
    a = s.generate([prefix], greedy(max_tokens=12, stop=["\n"]))[0]
    b = s.generate([ids], greedy(max_tokens=12, stop=["\n"]))[0]
    assert a.outputs[0].token_ids == b.outputs[0].token_ids
    assert b.prompt == prefix and b.prompt_token_ids == ids
    full = hf_greedy(llama, ids, 12)
    text = tok.decode(ids + full, skip_special_tokens=True)[len(prefix):]
    assert a.outputs[0].text == text.split("\n")[0]
    # continuing from prefix + generated text reproduces the rest of the greedy path
    step = s.generate([prefix + a.outputs[0].text[:2]], greedy(max_tokens=4))[0].outputs[0]
    assert step.token_ids == hf_greedy(llama, ids + a.outputs[0].token_ids[:2], 4)


def test_n_samples_and_logprobs(tok, llama):
    s = Sampler(llama, tok, max_batch_size=3)
    outs = s.generate(PROMPTS[:3], sampled(n=5, max_tokens=10, seed=4))  # n > rows: prefill reused later
    for req in outs:
        assert isinstance(req, RequestOutput) and len(req.outputs) == 5
        assert [c.index for c in req.outputs] == list(range(5))
        assert len({tuple(c.token_ids) for c in req.outputs}) > 1
        for c in req.outputs:
            assert isinstance(c, CompletionOutput)
            assert len(c.logprobs) == len(c.token_ids) == 10
            assert c.cumulative_logprob == pytest.approx(sum(c.logprobs), abs=1e-5)
            assert all(lp <= 0 for lp in c.logprobs)
    # logprobs are the model's (temperature 1) log-softmax of each sampled token
    c = outs[1].outputs[2]
    ids = torch.tensor([outs[1].prompt_token_ids + c.token_ids], device=llama.device)
    with torch.inference_mode():
        logp = torch.log_softmax(llama(ids).logits[0].float(), -1)
    P = len(outs[1].prompt_token_ids)
    ref = [logp[P - 1 + i, t].item() for i, t in enumerate(c.token_ids)]
    assert c.logprobs == pytest.approx(ref, abs=1e-4)


def test_sampling_params_validation():
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError):
        SamplingParams(n=0)
    assert SamplingParams(stop="\n").stop == ["\n"]


def test_weight_updates_are_picked_up(tok):
    model = tiny("llama", len(tok))
    s = Sampler(model, tok, max_batch_size=4)
    before = s.generate(PROMPTS, greedy(max_tokens=10))
    with torch.no_grad():  # an in-place update, like an optimizer step
        for p in model.model.layers[0].mlp.parameters():
            p.mul_(-3.0)
    after = s.generate(PROMPTS, greedy(max_tokens=10))
    assert tokens(before) != tokens(after)
    for out in after:
        assert out.outputs[0].token_ids == hf_greedy(model, out.prompt_token_ids, 10)


def test_byte_level_bpe_text_and_multibyte_stop():
    """Incremental detokenisation with a byte-level BPE: text equals the full decode, stops cut there."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["héllo wörld → 12+3=15\n", "naïve café ☕ 7*8=56\n"] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    s = Sampler(tiny("llama", len(tok)), tok, max_batch_size=4)
    base = SamplingParams(n=8, temperature=1.0, max_tokens=30, seed=1, ignore_eos=True)
    prompts = ["héllo wö", "café ☕ 7*"]  # continuations from mid-word prefixes
    full = s.generate(prompts, base)
    cut = s.generate(prompts, dataclasses.replace(base, stop=["\n", "é"]))
    hits = 0
    for f, c in zip(full, cut):
        p = f.prompt_token_ids
        for a, b in zip(f.outputs, c.outputs):
            ref = tok.decode(p + a.token_ids, skip_special_tokens=True)[len(tok.decode(p, skip_special_tokens=True)):]
            assert a.text == ref
            idx = [i for i in (ref.find("\n"), ref.find("é")) if i >= 0]
            if idx:
                hits += 1
                assert b.text == ref[: min(idx)] and b.finish_reason == "stop"
    assert hits >= 3
