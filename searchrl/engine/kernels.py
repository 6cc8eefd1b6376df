"""Compiled CPU kernels for the decode step, with pure-torch fallbacks.

Why: sampling Countdown traces from the tiny policy is bound by the decode step, and a profile
(``benchmarks/sampler.py --profile``) splits it into attention over the KV cache, the matmuls,
and some thirty small torch ops per layer whose dispatch costs more than their arithmetic.

Attention (``decode_attention``, and inside ``rope_attention``): two reasons the generic kernel
is slow here:

* one query token per row makes attention a batch of ``rows x kv_heads`` tiny
  GEMVs, where a generic kernel pays more in per-block overhead than in reading
  the cache (several times the time of just reading K and V once);
* rows of a continuous batch sit at different positions, and a batched call must
  cover the longest row for all of them (the rest is masked, but still read).

``decode_attn.c`` walks each (row, kv head) over exactly its own ``pos + 1`` keys,
reads K and V once for all query heads of the group, and is called through
``ctypes``. Built with ``-fopenmp``, it runs its (row, head) pairs on
``torch.get_num_threads()`` threads of the OpenMP runtime torch itself loaded
(the same ``libgomp.so.1``), so the two never compete for cores. Should a
second OpenMP runtime get loaded instead (a torch build with a renamed one), the
kernel runs single-threaded rather than fight torch's pool for the cores. It reads the
cache at close to the machine's memory bandwidth, which is then what bounds it.

The small ops (``StaticLlama``'s kernel path): ``rms_norm`` (LlamaRMSNorm, with the residual add
of the block before it), ``rope_attention`` (rotary embedding of q and k, the new K/V written into
the cache, attention: one call instead of about ten ops) and ``silu_mul`` (the MLP's SiLU gate).
A decode step is then per layer four matmuls (torch's) and three of these calls.

It is compiled on first use with the system C compiler (``$CC`` or ``cc``;
``-O3 -march=native -fopenmp``) into ``$SEARCHRL_CACHE`` (default
``~/.cache/searchrl``)/kernels, under a name hashed from the source, the flags
and the CPU (``-march=native`` code is never loaded on another CPU), and written
atomically (a concurrent or interrupted build never leaves a half-written
library that a later run would load). No compiler, a failed build, a non-CPU
device or a dtype other than float32 means the engine keeps
``torch.nn.functional.scaled_dot_product_attention``.
``SEARCHRL_KERNELS=0`` turns the kernel off.

The kernels compute the same float32 arithmetic as the torch ops they replace; attention
results differ from SDPA only by rounding (a few 1e-7 on unit-scale inputs; against a
float64 reference its error is of the same order as SDPA's), so greedy decoding
still matches transformers token for token except at exact argmax ties.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

__all__ = ["available", "decode_attention", "rms_norm", "rope_attention", "silu_mul", "threads", "unavailable_reason"]

_SOURCE = Path(__file__).with_name("decode_attn.c")
# -fno-trapping-math / -fno-math-errno change no result: they let the compiler vectorise the clamps
# of the exp loops (without them a float compare "may trap" and blocks if-conversion)
_FLAGS = ["-O3", "-fPIC", "-shared", "-fno-trapping-math", "-fno-math-errno"]
# tried in order. -fopenmp: parallel over (row, head) on the OpenMP runtime torch already
# loaded (libgomp.so.1); a compiler without OpenMP still gets a single-threaded SIMD build,
# and one that does not know -march=native a portable one
# (-mprefer-vector-width=256, x86 only: some -march=native targets default to 128-bit vectors)
_VARIANTS = (["-march=native", "-mprefer-vector-width=256", "-fopenmp"], ["-march=native", "-fopenmp"], ["-march=native", "-fopenmp-simd"], ["-march=native"], [])

_lock = threading.Lock()
_lib = None
_one_thread = False  # set when the kernel's OpenMP runtime is not torch's (two thread pools would fight)
_reason: str | None = None
_loaded = False


def cache_dir() -> Path:
    root = os.environ.get("SEARCHRL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "searchrl")
    return Path(root) / "kernels"


def _cpu_signature() -> str:
    # -march=native code must not be reused on a CPU without the same instructions
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()}|{platform.processor()}|{flags.strip()}"


def _compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.splitlines()[0] if out else ""


def _build(cc: str, path: Path) -> None:
    """Compile into ``path`` atomically, with the first flag variant the compiler accepts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob("*.tmp.so"):  # left by builds that were killed an hour+ ago
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp.so")
    os.close(fd)
    errors = []
    try:
        for extra in _VARIANTS:
            proc = subprocess.run([cc, *_FLAGS, *extra, "-o", tmp, str(_SOURCE), "-lm"], capture_output=True,
                                  text=True, timeout=120)
            if proc.returncode == 0:
                os.chmod(tmp, 0o755)  # mkstemp's 0600 would keep other users of a shared cache out
                os.replace(tmp, path)  # atomic: readers see no library or the whole one
                return
            errors.append(f"{' '.join(extra) or 'plain'}: {proc.stderr.strip()[:300]}")
        raise RuntimeError(f"{cc} failed: " + " | ".join(errors))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load():
    global _lib, _reason, _loaded
    with _lock:
        if _loaded:
            return _lib
        _loaded = True
        if os.environ.get("SEARCHRL_KERNELS", "1") == "0":
            _reason = "disabled by SEARCHRL_KERNELS=0"
            return None
        try:
            if platform.system() != "Linux" and platform.system() != "Darwin":
                raise RuntimeError(f"no kernel build for {platform.system()}")
            cc = os.environ.get("CC") or "cc"
            if shutil.which(cc) is None:
                raise RuntimeError(f"no C compiler ({cc!r} not on PATH)")
            src = _SOURCE.read_bytes()
            key = hashlib.sha256(b"\0".join([src, repr((_FLAGS, _VARIANTS)).encode(), cc.encode(),
                                             _compiler_version(cc).encode(),
                                             _cpu_signature().encode()])).hexdigest()[:16]
            path = cache_dir() / f"decode_attn-{key}.so"
            if not path.exists():
                _build(cc, path)
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:  # a damaged cached build (or one this machine cannot load): build again, once
                _build(cc, path)
                lib = ctypes.CDLL(str(path))
            global _one_thread
            _one_thread = len(_openmp_runtimes()) > 1
            fn = lib.decode_attn
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 5 + [ctypes.c_float, ctypes.c_int]
            P, I64, F32, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
            lib.rms_norm.restype = None
            lib.rms_norm.argtypes = [P, P, P, P, I64, I64, F32]
            lib.silu_mul.restype = None
            lib.silu_mul.argtypes = [P, P, I64, I64, INT]
            lib.rope_attn.restype = INT
            lib.rope_attn.argtypes = [P] * 7 + [I64] * 5 + [F32, INT]
            _lib = lib
        except Exception as e:  # any failure: fall back to SDPA, say why once
            _reason = f"{type(e).__name__}: {e}"
            warnings.warn(f"searchrl: compiled decode attention unavailable, using torch SDPA ({_reason})",
                          RuntimeWarning, stacklevel=3)
        return _lib


def _openmp_runtimes() -> set[str]:
    """Distinct OpenMP runtime files mapped into this process (Linux; empty elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/lib" in line}
    except OSError:
        return set()
    return {os.path.realpath(p) for p in paths if os.path.basename(p).startswith(("libgomp", "libiomp", "libomp"))}


def available() -> bool:
    """Whether the compiled kernel can be used (builds it on the first call)."""
    return _load() is not None


def unavailable_reason() -> str | None:
    _load()
    return _reason


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor,
                     scale: float, threads: int | None = None, pos_list: list[int] | None = None) -> torch.Tensor:
    """Attention of one new token per row over that row's cache prefix.

    ``q``: ``[n, kv_heads, G, head_dim]`` (the ``G`` query heads sharing each KV
    head); ``k_cache``/``v_cache``: the whole ``[rows >= n, kv_heads, S, head_dim]``
    cache; ``pos``: ``[n]`` int64, row ``i`` attends to positions ``0..pos[i]``.
    Returns ``[n, kv_heads, G, head_dim]``. CPU float32 only (see :func:`available`).
    ``pos_list`` (``pos.tolist()``, if the caller has it; trusted to equal it) saves a
    conversion per call.
    """
    lib = _load()
    if lib is None:
        raise RuntimeError(f"compiled decode attention unavailable: {_reason}")
    n, kv, G, d = q.shape
    rows, kv2, S, d2 = k_cache.shape
    if (kv2, d2) != (kv, d) or v_cache.shape != k_cache.shape or rows < n or pos.shape != (n,):
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, cache {tuple(k_cache.shape)}, pos {tuple(pos.shape)}")
    q = q.contiguous()
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous float32 CPU tensor, got {t.dtype} on {t.device}")
    if pos.device.type != "cpu" or pos.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"pos must be an integer CPU tensor, got {pos.dtype} on {pos.device}")
    if not 1 <= d <= 1024:
        raise ValueError(f"head_dim {d} outside the kernel's 1..1024")
    pos = pos.to(torch.int64).contiguous()
    if pos_list is None:
        pos_list = pos.tolist()
    if n and (min(pos_list) < 0 or max(pos_list) >= S):
        raise ValueError(f"positions must lie in [0, {S}), got {min(pos_list)}..{max(pos_list)}")
    out = torch.empty_like(q)
    threads = 1 if _one_thread else int(threads or torch.get_num_threads())
    if lib.decode_attn(q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), pos.data_ptr(), out.data_ptr(), n, kv,
                       G, S, d, scale, threads):
        raise MemoryError(f"decode attention: could not allocate {S} floats of scratch per thread")
    return out


# ---------------------------------------------------------------------------------------------
# The decode step's other small ops, fused (StaticLlama's kernel path). These skip the checks of
# decode_attention: every tensor must be a contiguous float32 CPU tensor of the stated shape (the
# caller, StaticLlama.decode, allocates them so); tests/test_kernels.py checks each against torch.


def threads() -> int:
    """Threads the kernels run on: torch's, or 1 where a second OpenMP runtime is loaded."""
    _load()
    return 1 if _one_thread else torch.get_num_threads()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, resid: torch.Tensor | None = None,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """``weight * x / sqrt(mean(x**2) + eps)`` over the last dim of ``x`` ``[n, h]`` (LlamaRMSNorm).

    With ``resid``, ``x += resid`` first, in place (the residual add of the block before).
    """
    n, h = x.shape
    out = torch.empty_like(x) if out is None else out
    _lib.rms_norm(x.data_ptr(), None if resid is None else resid.data_ptr(), weight.data_ptr(), out.data_ptr(),
                  n, h, eps)
    return out


def silu_mul(gu: torch.Tensor, nthreads: int | None = None) -> torch.Tensor:
    """``silu(gate) * up`` for ``gu = [gate | up]`` ``[n, 2m]``: ``[n, m]``."""
    n, m2 = gu.shape
    out = gu.new_empty(n, m2 // 2)
    _lib.silu_mul(gu.data_ptr(), out.data_ptr(), n, m2 // 2, nthreads or threads())
    return out


def rope_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                   v_cache: torch.Tensor, pos: torch.Tensor, n_heads: int, scale: float,
                   nthreads: int | None = None) -> torch.Tensor:
    """Rotary embedding, cache write and attention of one decode step (after the q/k/v projection).

    ``qkv``: ``[n, (n_heads + 2 kv_heads) * head_dim]``, q and k rotated in place with ``cos``/``sin``
    (``[positions, head_dim]``) at ``pos[i]``; k and v written into row ``i`` of ``k_cache``/
    ``v_cache`` (``[rows >= n, kv_heads, S, head_dim]``) at ``pos[i]``; returns attention over
    positions ``0..pos[i]``, ``[n, n_heads * head_dim]`` (query head ``h`` on KV head
    ``h // (n_heads / kv_heads)``). ``pos`` is int64.
    """
    n = qkv.shape[0]
    _, kv, S, d = k_cache.shape
    out = qkv.new_empty(n, n_heads * d)
    if _lib.rope_attn(qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(),
                      pos.data_ptr(), out.data_ptr(), n, n_heads, kv, d, S, scale, nthreads or threads()):
        raise MemoryError(f"decode attention: could not allocate {S} floats of scratch per thread")
    return out
