"""searchrl.engine.kernels: the compiled decode-attention kernel against torch's SDPA."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from searchrl.engine import kernels

HAS_CC = shutil.which(os.environ.get("CC") or "cc") is not None


def test_kernel_builds_where_a_compiler_exists():
    # on this project's machines (and CI) there is a C compiler: the fast path must really be used
    if not HAS_CC:
        pytest.skip("no C compiler on PATH: the engine falls back to SDPA")
    assert kernels.available(), kernels.unavailable_reason()


def sdpa_reference(q, kc, vc, pos, scale):
    n, S = q.shape[0], kc.shape[2]
    span = int(pos.max()) + 1
    mask = (torch.arange(S)[None, :span] <= pos[:, None])[:, None, None, :]
    return F.scaled_dot_product_attention(q, kc[:n, :, :span], vc[:n, :, :span], attn_mask=mask, scale=scale)


@pytest.mark.parametrize("G,d", [(1, 32), (2, 32), (4, 16), (1, 64), (3, 24), (2, 128), (7, 128)])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_sdpa(G, d, threads):
    if not kernels.available():
        pytest.skip(kernels.unavailable_reason())
    g = torch.Generator().manual_seed(G * 1000 + d)
    rows, n, kv, S = 9, 7, 3, 70
    kc, vc = torch.randn(rows, kv, S, d, generator=g), torch.randn(rows, kv, S, d, generator=g)
    q = torch.randn(n, kv, G, d, generator=g) * 3  # peaked softmax too
    pos = torch.tensor([0, 1, 69, 5, 33, 64, 2])  # first key only, last slot of the cache, ...
    scale = d**-0.5
    got = kernels.decode_attention(q, kc, vc, pos, scale, threads=threads)
    ref = sdpa_reference(q, kc, vc, pos, scale)
    assert got.shape == (n, kv, G, d)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)  # fp32 rounding of 70-term sums
    # row 0 attends to its first key only: the output is exactly that value vector
    torch.testing.assert_close(got[0], vc[0, :, :1].expand(kv, G, d))
    # keys past a row's position never matter
    kc2, vc2 = kc.clone(), vc.clone()
    for r, p in enumerate(pos.tolist()):
        kc2[r, :, p + 1 :] = 1e4
        vc2[r, :, p + 1 :] = float("nan")
    assert torch.equal(kernels.decode_attention(q, kc2, vc2, pos, scale, threads=threads), got)


def test_large_scores_do_not_overflow():
    if not kernels.available():
        pytest.skip(kernels.unavailable_reason())
    kc = torch.zeros(1, 1, 4, 8)
    vc = torch.arange(32, dtype=torch.float32).view(1, 1, 4, 8)
    kc[0, 0, 2] = 100.0
    q = torch.full((1, 1, 1, 8), 100.0)  # score 80,000 for key 2, 0 for the others
    out = kernels.decode_attention(q, kc, vc, torch.tensor([3]), 1.0)
    torch.testing.assert_close(out[0, 0, 0], vc[0, 0, 2])


def test_bad_inputs_are_rejected():
    if not kernels.available():
        pytest.skip(kernels.unavailable_reason())
    kc = torch.zeros(2, 1, 4, 8)
    q = torch.zeros(2, 1, 1, 8)
    with pytest.raises(ValueError, match="positions"):
        kernels.decode_attention(q, kc, kc, torch.tensor([0, 4]), 1.0)
    with pytest.raises(ValueError, match="float32"):
        kernels.decode_attention(q.double(), kc.double(), kc.double(), torch.tensor([0, 1]), 1.0)
    with pytest.raises(ValueError, match="shape"):
        kernels.decode_attention(torch.zeros(3, 1, 1, 8), kc, kc, torch.tensor([0, 1, 2]), 1.0)
    with pytest.raises(ValueError, match="integer CPU"):
        kernels.decode_attention(q, kc, kc, torch.tensor([0.0, 1.0]), 1.0)


def test_nan_propagates_like_sdpa():
    if not kernels.available():
        pytest.skip(kernels.unavailable_reason())
    kc, vc = torch.randn(2, 1, 5, 8), torch.randn(2, 1, 5, 8)
    kc[0, 0, 1, 3] = float("nan")
    out = kernels.decode_attention(torch.randn(2, 1, 1, 8), kc, vc, torch.tensor([4, 4]), 0.3)
    assert out[0].isnan().all() and not out[1].isnan().any()


def test_damaged_cached_build_is_rebuilt(tmp_path):
    """A truncated library in the cache (full disk, killed copy) is rebuilt by the next process."""
    if not HAS_CC:
        pytest.skip("no C compiler on PATH")
    import subprocess
    import sys

    env = {**os.environ, "SEARCHRL_CACHE": str(tmp_path)}
    probe = [sys.executable, "-c", "from searchrl.engine import kernels; "
             "assert kernels.available(), kernels.unavailable_reason()"]
    subprocess.run(probe, env=env, check=True, timeout=300)
    (so,) = (tmp_path / "kernels").iterdir()
    assert so.stat().st_mode & 0o777 == 0o755  # loadable by other users of a shared cache
    so.write_bytes(so.read_bytes()[:100])
    subprocess.run(probe, env=env, check=True, timeout=300)  # loads the damaged file, fails, rebuilds
    assert so.stat().st_size > 100


def test_build_is_cached_and_atomic(tmp_path, monkeypatch):
    if not HAS_CC:
        pytest.skip("no C compiler on PATH")
    monkeypatch.setenv("SEARCHRL_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_loaded", False)
    monkeypatch.setattr(kernels, "_lib", None)
    assert kernels.available()
    built = list((tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no temporary file left behind
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(kernels, "_loaded", False)
    assert kernels.available()
    assert built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_failed_build_falls_back_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCHRL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(kernels, "_loaded", False)
    monkeypatch.setattr(kernels, "_lib", None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert not kernels.available()
    assert "no-such-compiler" in kernels.unavailable_reason()
    assert not (tmp_path / "kernels").exists() or not any((tmp_path / "kernels").iterdir())


def test_sampler_falls_back_to_sdpa_without_the_kernel(monkeypatch):
    """With the kernel unavailable the engine still runs (SDPA) and decodes the same tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from searchrl.engine import Sampler, SamplingParams
    from searchrl.tasks.countdown import build_countdown_tokenizer

    tok = build_countdown_tokenizer(3)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                                         initializer_range=0.3, eos_token_id=tok.eos_token_id)).eval()
    prompts = ["12:[3, 4, 5]", "Current State: 7", "1+2=3"]
    params = SamplingParams(n=3, temperature=1.0, max_tokens=40, seed=1)
    first = Sampler(model, tok, max_batch_size=4).generate(prompts, params)
    monkeypatch.setattr(kernels, "_loaded", True)
    monkeypatch.setattr(kernels, "_lib", None)
    monkeypatch.setattr(kernels, "_reason", "disabled for this test")
    fallback = Sampler(model, tok, max_batch_size=4)
    again = fallback.generate(prompts, params)
    assert fallback._static.attention == "sdpa"
    assert [[c.token_ids for c in o.outputs] for o in again] == [[c.token_ids for c in o.outputs] for o in first]
    with pytest.raises(ValueError, match="unavailable"):
        Sampler(model, tok, attention="kernel").generate(prompts[:1], SamplingParams(max_tokens=2))


# ----------------------------------------------------------------- the fused decode-step kernels


def _need_kernel():
    if not kernels.available():
        pytest.skip(kernels.unavailable_reason())


@pytest.mark.parametrize("resid", [False, True])
def test_rms_norm_matches_llama(resid):
    _need_kernel()
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    g = torch.Generator().manual_seed(1)
    x, r = torch.randn(5, 48, generator=g) * 3, torch.randn(5, 48, generator=g)
    norm = LlamaRMSNorm(48, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(48, generator=g))
    ref_x = x + r if resid else x.clone()
    ref = norm(ref_x).detach()
    got = kernels.rms_norm(x, norm.weight.detach(), 1e-5, r if resid else None)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    assert torch.equal(x, ref_x)  # the residual was added in place


def test_silu_mul_matches_torch():
    _need_kernel()
    g = torch.Generator().manual_seed(2)
    for n, m in ((3, 40), (64, 512)):  # below and above the size that runs on several threads
        gu = torch.randn(n, 2 * m, generator=g) * 6
        gu[0, :4] = torch.tensor([-200.0, 200.0, 0.0, -90.0])  # exp's clamps
        for threads in (1, 2):
            got = kernels.silu_mul(gu, threads)
            ref = F.silu(gu[:, :m]) * gu[:, m:]
            torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("nh,nkv,d", [(4, 4, 32), (8, 2, 16), (6, 3, 64)])
@pytest.mark.parametrize("threads", [1, 2])
def test_rope_attention_matches_the_torch_step(nh, nkv, d, threads):
    """Rotary (HF's rotate_half), the K/V write at each row's position, and attention over 0..pos."""
    _need_kernel()
    g = torch.Generator().manual_seed(nh * 100 + d)
    rows, n, S = 6, 5, 40
    pos = torch.tensor([0, 7, 39, 12, 3])
    freqs = torch.arange(S).float()[:, None] * (10000.0 ** (-torch.arange(0, d, 2).float() / d))[None]
    emb = torch.cat((freqs, freqs), -1)
    cos, sin = emb.cos().contiguous(), emb.sin().contiguous()
    qkv = torch.randn(n, (nh + 2 * nkv) * d, generator=g)
    kc, vc = torch.randn(rows, nkv, S, d, generator=g), torch.randn(rows, nkv, S, d, generator=g)
    # the reference: the torch step of StaticLlama.decode (rotate_half RoPE, index writes, SDPA)
    heads = qkv.view(n, nh + 2 * nkv, d)
    c, s = cos[pos][:, None], sin[pos][:, None]
    half = d // 2
    qk = heads[:, : nh + nkv]
    qk = qk * c + torch.cat((-qk[..., half:], qk[..., :half]), -1) * s
    q, k, v = qk[:, :nh], qk[:, nh:], heads[:, nh + nkv :]
    kr, vr = kc.clone(), vc.clone()
    for i, p in enumerate(pos.tolist()):
        kr[i, :, p], vr[i, :, p] = k[i], v[i]
    ref = sdpa_reference(q.reshape(n, nkv, nh // nkv, d), kr, vr, pos, d**-0.5).reshape(n, nh * d)
    got = kernels.rope_attention(qkv, cos, sin, kc, vc, pos, nh, d**-0.5, threads)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(kc, kr, atol=1e-6, rtol=1e-6)  # the rotated key, at each row's position
    assert torch.equal(vc, vr)  # values are written as projected
    assert torch.equal(kc[n:], kr[n:])  # rows past n untouched


def test_fused_decode_step_matches_the_torch_step():
    """StaticLlama.decode on the kernels against its own torch (SDPA) step, from the same cache."""
    _need_kernel()
    from transformers import LlamaConfig, LlamaForCausalLM

    from searchrl.engine.llama import StaticLlama

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    out = {}
    for mode in ("kernel", "sdpa"):
        eng = StaticLlama(model, rows=4, attention=mode)
        eng.load_weights()
        eng.ensure_cache(32)
        torch.manual_seed(1)
        for c in (*eng.k_cache, *eng.v_cache):
            c.copy_(torch.randn_like(c))
        pos = torch.tensor([3, 0, 17])
        logits = eng.decode(torch.tensor([5, 7, 9]), pos, 3, 18)
        out[mode] = (logits, eng.k_all.clone(), eng.v_all.clone())
    torch.testing.assert_close(out["kernel"][0], out["sdpa"][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["kernel"][1], out["sdpa"][1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["kernel"][2], out["sdpa"][2], atol=1e-6, rtol=1e-5)
