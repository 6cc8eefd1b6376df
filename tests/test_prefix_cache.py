"""searchrl.engine prefix cache, prompt logprobs, continuation scoring and the Generator protocol.

The cache must be invisible in the outputs: every test runs the same calls on a
sampler with ``prefix_cache=False`` (or on the HF forward) and compares token
for token, logprobs within 1e-4. The models are tiny random Llama/Qwen2 with
large initial weights (peaked, varied distributions) and a character tokenizer,
as in ``test_engine.py``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from searchrl.engine import ContinuationScore, Generator, Sampler, SamplingParams
from searchrl.engine.prefix_cache import PrefixCache
from conftest import TEST_DEVICE
from test_engine import char_tokenizer, tiny  # tests/ is on sys.path (pytest prepend import mode)

PROMPTS = ["12+3", "12+3=15\n", "12+3=15\n7*8", "7*8=", "99-4 = 95\n3+", "12+3", "0\n1\n2\n", "8/2=4\n6*7=42\n1+1="]


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def llama(tok):
    return tiny("llama", len(tok), tie_word_embeddings=False)  # GQA: 4 heads, 2 KV heads


@pytest.fixture(scope="module")
def qwen(tok):
    return tiny("qwen2", len(tok))  # q/k/v biases, GQA


def greedy(**kw):
    return SamplingParams(temperature=0.0, **kw)


def seeded(**kw):
    return SamplingParams(**{"temperature": 1.0, "top_p": 0.9, "seed": 3, **kw})


def assert_same(got, ref):
    """Same prompts, tokens, texts and finish reasons; logprobs within 1e-4."""
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.prompt_token_ids == r.prompt_token_ids
        assert len(g.outputs) == len(r.outputs)
        for a, b in zip(g.outputs, r.outputs):
            assert (a.token_ids, a.text, a.finish_reason) == (b.token_ids, b.text, b.finish_reason)
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        if r.prompt_logprobs is None:
            assert g.prompt_logprobs is None
        else:
            assert g.prompt_logprobs[0] is None and r.prompt_logprobs[0] is None
            assert g.prompt_logprobs[1:] == pytest.approx(r.prompt_logprobs[1:], abs=1e-4)


def hf_logprobs(model, ids: list[int]) -> list[float]:
    """Reference: logprob of tokens 1.. of ``ids`` by a plain forward."""
    with torch.inference_mode():
        logp = model(torch.tensor([ids], device=model.device)).logits[0].float().log_softmax(-1)
    return [logp[i - 1, t].item() for i, t in enumerate(ids) if i > 0]


# ----------------------------------------------------------------------------- the cache itself
def test_radix_tree_matches_splits_and_evicts():
    c = PrefixCache(max_tokens=12, n_layers=1, n_kv=1, head_dim=2, dtype=torch.float32, device="cpu")

    def put(tokens):  # stores each token's id as its K/V, so reads can be checked
        slots, m = c.insert(tokens)
        new = torch.tensor(tokens[m : len(slots)], dtype=torch.float32)[:, None, None, None].expand(-1, 1, 1, 2)
        c.write(slots[m:], new, -new)
        return slots

    def read(tokens):
        m, slots = c.match(tokens)
        return m, c.k[torch.tensor(slots, dtype=torch.long)][:, 0, 0, 0].long().tolist()

    put([1, 2, 3, 4])
    put([1, 2, 5])  # splits the first run after [1, 2]
    assert read([1, 2, 3, 4, 9]) == (4, [1, 2, 3, 4])
    assert read([1, 2, 5, 6]) == (3, [1, 2, 5])
    assert read([1, 2, 7]) == (2, [1, 2])
    assert read([2]) == (0, [])
    assert c.size == 5
    put([7, 8, 9, 10, 11, 12])  # 11 tokens: still fits
    read([1, 2, 5])  # [1, 2, 3, 4] is now the least recently used leaf
    put([20, 21, 22])  # does not fit: evicts the LRU leaf [3, 4] (and more, to make room ahead)
    assert read([20, 21, 22]) == (3, [20, 21, 22])
    assert read([1, 2, 3, 4])[0] < 4
    assert c.size <= 12 and c.evicted >= 2
    # a sequence longer than the whole budget is cached as far as it fits
    slots = put(list(range(100, 120)))
    assert 0 < len(slots) <= 12 and read(list(range(100, 120)))[0] == len(slots)


def test_logprob_slots_and_bytes_per_token():
    c = PrefixCache(max_tokens=8, n_layers=2, n_kv=3, head_dim=4, dtype=torch.float32, device="cpu")
    slots, _ = c.insert([5, 6, 7])
    c.write(slots, torch.zeros(3, 2, 3, 4), torch.zeros(3, 2, 3, 4))
    assert torch.isnan(c.logprobs(slots)).all()  # unknown until set
    c.set_logprobs(slots[1:], [-0.5, -1.5])
    assert c.logprobs(slots)[1:].tolist() == [-0.5, -1.5]
    assert PrefixCache.bytes_per_token(2, 3, 4, torch.float32) == 2 * 2 * 3 * 4 * 4 + 4
    assert PrefixCache.bytes_per_token(2, 3, 4, torch.bfloat16) == 2 * 2 * 3 * 4 * 2 + 4


# ----------------------------------------------------------------------------- generation
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_shared_prefixes_and_repeats_match_uncached(tok, llama, qwen, arch):
    model = llama if arch == "llama" else qwen
    cached = Sampler(model, tok, max_batch_size=3)
    plain = Sampler(model, tok, max_batch_size=3, prefix_cache=False)
    for params in (greedy(max_tokens=10), seeded(max_tokens=10, n=2), greedy(max_tokens=6)):
        assert_same(cached.generate(PROMPTS, params), plain.generate(PROMPTS, params))
    assert cached.stats["cached_tokens"] > 0
    assert cached.stats["prefill_tokens"] < plain.stats["prefill_tokens"]
    assert plain.stats["cached_tokens"] == 0


@pytest.mark.parametrize("mode", ["greedy", "seeded-n3"])
def test_line_by_line_extension(tok, llama, mode):
    """Tree-search use: each round sends prompt + completion so far; the cached part is not prefilled."""
    base = greedy(max_tokens=8) if mode == "greedy" else seeded(max_tokens=8, n=3)
    params = dataclasses.replace(base, stop=["\n"], include_stop_str_in_output=True)
    cached = Sampler(llama, tok, max_batch_size=4)  # fewer rows than samples: refills, packing
    plain = Sampler(llama, tok, max_batch_size=4, prefix_cache=False)
    # token ids: a random model also samples special tokens, which the text leaves out
    paths = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS[:6]]
    newline = tok("\n", add_special_tokens=False)["input_ids"][0]
    done = []
    for rnd in range(4):
        before = dict(cached.stats)
        got = cached.generate(paths, params)
        assert_same(got, plain.generate(paths, params))
        if rnd:  # every prompt = a previous prompt + one of its completions: only its last token is computed
            assert cached.stats["prefill_tokens"] - before["prefill_tokens"] == len(paths) * base.n
        picked = [o.outputs[rnd % len(o.outputs)].token_ids for o in got]
        done += [p + t for p, t in zip(paths, picked) if t[-1] == 2]
        paths = [p + t for p, t in zip(paths, picked) if t[-1] != 2]  # a path that reached EOS is finished
        assert paths
    assert sum(p.count(newline) for p in paths + done) >= 6  # stop strings did fire
    # the same with text prompts (prompt + text): still identical
    texts = list(PROMPTS[:6])
    for rnd in range(3):
        got = cached.generate(texts, params)
        assert_same(got, plain.generate(texts, params))
        texts = [p + o.outputs[-1].text for p, o in zip(texts, got)]


def test_token_id_prompts_and_partial_overlap(tok, llama):
    """A prompt that extends a cached one by several tokens prefills only those (queries over the cached K/V)."""
    cached = Sampler(llama, tok, max_batch_size=2)
    plain = Sampler(llama, tok, max_batch_size=2, prefix_cache=False)
    first = cached.generate(["8/2=4\n6*7=4"], greedy(max_tokens=5, stop=["\n"]))[0]  # (stop: completion cached)
    assert first.outputs[0].token_ids[-1] != 2
    ids = first.prompt_token_ids + first.outputs[0].token_ids + tok("+1+2", add_special_tokens=False)["input_ids"]
    before = cached.stats["prefill_tokens"]
    params = greedy(max_tokens=7)
    assert_same(cached.generate([ids, ids[:7]], params), plain.generate([ids, ids[:7]], params))
    # the new tail and the completion's last token (never fed back); a cached prompt prefix: its last token
    assert cached.stats["prefill_tokens"] - before == (4 + 1) + 1


def test_small_budget_evicts_but_stays_correct(tok, llama):
    cached = Sampler(llama, tok, max_batch_size=3, prefix_cache_tokens=24)
    plain = Sampler(llama, tok, max_batch_size=3, prefix_cache=False)
    for _ in range(2):
        assert_same(cached.generate(PROMPTS, greedy(max_tokens=9)), plain.generate(PROMPTS, greedy(max_tokens=9)))
    assert cached._cache.size <= 24 and cached._cache.evicted > 0


def test_weight_changes_drop_the_cache(tok):
    model = tiny("llama", len(tok))
    s = Sampler(model, tok, max_batch_size=3)
    s.generate(PROMPTS, greedy(max_tokens=8))
    s.generate(PROMPTS, greedy(max_tokens=8))
    with torch.no_grad():  # an optimizer-like in-place step
        for p in model.model.layers[1].self_attn.parameters():
            p.mul_(-2.0)
    after = s.generate(PROMPTS, greedy(max_tokens=8))
    fresh = Sampler(model, tok, max_batch_size=3, prefix_cache=False)
    assert_same(after, fresh.generate(PROMPTS, greedy(max_tokens=8)))
    # update_weights(new model): a different model object, cache dropped
    other = tiny("llama", len(tok), num_attention_heads=4, num_key_value_heads=4)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05)
    s.update_weights(other)
    assert s._cache is None
    assert_same(s.generate(PROMPTS, greedy(max_tokens=8)),
                Sampler(other, tok, max_batch_size=3, prefix_cache=False).generate(PROMPTS, greedy(max_tokens=8)))
    # update_weights(): weights replaced behind the sampler's back, without a version bump
    s.generate(PROMPTS, greedy(max_tokens=8))
    with torch.no_grad():
        w = other.model.layers[0].mlp.down_proj.weight
        w.data = w.data * 3  # new storage: a signature change, but call update_weights() as a trainer would
    s.update_weights()
    assert_same(s.generate(PROMPTS, greedy(max_tokens=8)),
                Sampler(other, tok, max_batch_size=3, prefix_cache=False).generate(PROMPTS, greedy(max_tokens=8)))


# ----------------------------------------------------------------------------- logprobs of given tokens
@pytest.mark.parametrize("backend", ["static", "hf"])
def test_prompt_logprobs_match_forward_with_and_without_cache_hits(tok, llama, backend):
    s = Sampler(llama, tok, max_batch_size=3, backend="auto" if backend == "static" else "hf")
    # completions are cached for requests with stop strings, unless they end with EOS
    with_plp = greedy(max_tokens=6, prompt_logprobs=True, stop=["\n"], ignore_eos=True)
    outs = s.generate(PROMPTS, with_plp)
    assert s.last_backend == backend
    for o in outs:
        assert o.prompt_logprobs[0] is None and len(o.prompt_logprobs) == len(o.prompt_token_ids)
        assert o.prompt_logprobs[1:] == pytest.approx(hf_logprobs(llama, o.prompt_token_ids), abs=1e-4)
    # prompt + completion: served from the cache (completion logprobs stored while decoding)
    ext = [o.prompt_token_ids + o.outputs[0].token_ids for o in outs]  # ids: text would drop special tokens
    before = s.stats["prefill_tokens"]
    for o in s.generate(ext, dataclasses.replace(with_plp, prompt_logprobs=0)):  # 0 also switches it on
        assert o.prompt_logprobs[1:] == pytest.approx(hf_logprobs(llama, o.prompt_token_ids), abs=1e-4)
    if backend == "static":  # the last token's logprob needs the output at the token before it: 2 computed
        assert s.stats["prefill_tokens"] - before <= 2 * len(ext)
    # cached without logprobs: recomputed where unknown
    fresh = Sampler(llama, tok, max_batch_size=3)
    fresh.generate(PROMPTS, greedy(max_tokens=6))
    for o in fresh.generate(ext, with_plp):
        assert o.prompt_logprobs[1:] == pytest.approx(hf_logprobs(llama, o.prompt_token_ids), abs=1e-4)
    assert fresh.generate(PROMPTS[:1], greedy(max_tokens=2))[0].prompt_logprobs is None
    with pytest.raises(ValueError):
        SamplingParams(prompt_logprobs=-1)


@pytest.mark.parametrize("backend", ["static", "hf"])
def test_score_continuations_matches_forward(tok, qwen, backend):
    s = Sampler(qwen, tok, max_batch_size=3, backend="auto" if backend == "static" else "hf")
    prefix = "8/2=4\n6*7="
    conts = ["42\n", "41\n", "42\n1+1=2", "", "0"]
    scores = s.score_continuations([prefix] * len(conts), conts)
    assert s.last_backend == backend
    p_ids = tok(prefix, add_special_tokens=False)["input_ids"]
    for c, sc in zip(conts, scores):
        assert isinstance(sc, ContinuationScore) and sc.prompt_token_ids == p_ids
        assert sc.token_ids == tok(c, add_special_tokens=False)["input_ids"]
        ref = hf_logprobs(qwen, p_ids + sc.token_ids)[len(p_ids) - 1 :]
        assert sc.logprobs == pytest.approx(ref, abs=1e-4)
        assert sc.sum_logprob == pytest.approx(sum(ref), abs=1e-4)
    assert scores[3].token_ids == [] and scores[3].sum_logprob == 0.0
    # token ids in, and a repeat: served from the cache without any computation
    before = dict(s.stats)
    again = s.score_continuations([p_ids], [scores[2].token_ids])[0]
    # static: served from the cache (the same numbers); hf: recomputed in another batch, which on a GPU
    # rounds differently (9e-6 apart on an H200)
    exact = backend == "static" or TEST_DEVICE == "cpu"
    assert again.logprobs == pytest.approx(scores[2].logprobs, abs=1e-6 if exact else 1e-4)
    if backend == "static":
        assert s.stats["prefill_tokens"] == before["prefill_tokens"]
        assert s.stats["cached_tokens"] > before["cached_tokens"]


def test_score_reproduces_sampled_logprobs(tok, llama):
    s = Sampler(llama, tok, max_batch_size=4)
    outs = s.generate(PROMPTS[:4], seeded(max_tokens=10, n=2))
    prompts = [o.prompt for o in outs for _ in o.outputs]
    conts = [c.token_ids for o in outs for c in o.outputs]
    for sc, c in zip(s.score_continuations(prompts, conts), [c for o in outs for c in o.outputs]):
        assert sc.logprobs == pytest.approx(c.logprobs, abs=1e-4)
    # a fresh sampler (nothing cached) agrees too; and so does a string continuation in context
    fresh = Sampler(llama, tok, max_batch_size=4)
    c = outs[1].outputs[0]
    assert fresh.score_continuations([outs[1].prompt], [c.token_ids])[0].logprobs == pytest.approx(c.logprobs, abs=1e-4)
    text = tok.decode(c.token_ids, skip_special_tokens=True)
    if 2 not in c.token_ids:  # no EOS in the middle: the text re-tokenises to the same ids
        assert fresh.score_continuations([outs[1].prompt], [text])[0].token_ids == c.token_ids


def test_which_completions_are_cached(tok, llama):
    """Pieces of text (stop strings) are cached for continuation; whole texts and EOS-ended ones are not."""
    s = Sampler(llama, tok, max_batch_size=4, prefix_cache_tokens=10_000)
    outs = {}
    for name, params in [("stop", greedy(max_tokens=6, stop=["\n"], ignore_eos=True)), ("whole", greedy(max_tokens=6)),
                         ("eos", greedy(max_tokens=6, stop=["\n"], stop_token_ids=list(range(4, 23))))]:
        before = s._cache.size if s._cache is not None else 0
        outs[name] = s.generate(["5 5 5 5"], params)[0]
        outs[name + "_new"] = s._cache.size - before
    assert outs["stop_new"] == 7 + len(outs["stop"].outputs[0].token_ids) - 1  # prompt + completion but the last
    assert outs["whole_new"] == 0 and outs["eos_new"] == 0  # (the prompt was cached already)
    assert len(outs["eos"].outputs[0].token_ids) == 1  # stopped by its first token, a stop token id


def test_generator_protocol(tok, llama):
    s = Sampler(llama, tok)
    assert isinstance(s, Generator)
    s.generate(PROMPTS[:2], greedy(max_tokens=3))
    assert s._cache is not None and s._cache.size > 0
    s.update_weights()
    assert s._cache is None
    assert not isinstance(object(), Generator)
