"""Throughput of searchrl.engine.Sampler vs transformers' generate() on this machine.

By default both decode with the Countdown policy the demo samples from (the
shipped ``searchrl/presets/sos-tiny-base``, a 1.05M-parameter Llama trained on
Stream-of-Search traces) the same 256 Countdown prompts (numbers 1..29, targets
10..30, the demo's chat template), in batches of ``--batch``:

* ``model.generate()`` on left-padded batches of ``--batch`` prompts, and
* ``Sampler.generate()`` with ``max_batch_size=--batch``.

Workloads (tokens/s of each, and the ratio ours / transformers):

* **eos** (the headline ``ratio``): greedy decoding until EOS or ``--max-tokens``
  (768, the demo's eval and self-training budget). Both produce the same
  sequences (checked token for token, reported as ``greedy_agreement``), so the
  work asked for is identical; throughput counts the generated tokens up to and
  including EOS. ``generate()`` keeps computing a batch until its longest row is
  done; the sampler refills finished rows (continuous batching).
* **fixed** (``ratio_fixed``): greedy with EOS ignored, exactly ``--new-tokens``
  tokens for every prompt: identical work on every row and every step, so this
  compares the cost of one decode step only.
* **sampled** (``ratio_sampled``, with ``--sampled``): temperature 1.0, top-p 1,
  until EOS or ``--max-tokens``: what evaluation and ReST generation do. The two
  draw different samples (different random streams) from the same distribution;
  tokens/s counts each one's own tokens.
* **tree** (``--workloads tree``, or ``tree,eos`` to also run eos): how tree
  search calls a generator. ``--tree-prompts`` (64) Countdown prompts are extended
  one line at a time for ``--tree-lines`` (10) rounds: greedy, ``stop="\n"``
  (kept in the output), at most ``--line-tokens`` (64) tokens a line, and every
  round sends prompt + all lines so far as new prompts. Wall time of the 10
  rounds (a) with the prefix cache, (b) the same sampler with
  ``prefix_cache=False`` (reported: ``ratio_tree_vs_nocache`` = b / a, and whether
  both produced identical lines), (c) transformers' ``generate()`` doing the same
  rounds on left-padded batches of ``--batch``, each row stopped at its first
  newline by a per-row ``StoppingCriteria`` (the row's text is then cut after the
  newline, or before EOS) (``ratio_tree_vs_hf`` = c / a; ``tree_agreement_hf``: the
  fraction of prompts whose 10 lines match ours). Each of the three is timed
  ``--repeats`` (5) times, interleaved, each run from a fresh sampler, and the
  fastest run counts: a run takes seconds, so one busy moment of a shared
  machine would otherwise decide the ratio.

It also times large fp32 matmuls to estimate the machine's attainable FLOP/s and
reports the fraction our sampler reaches on the fixed workload, counting
``2 * params`` FLOPs per generated token (params excluding the input embedding
table; prompt tokens and attention are not counted, so this understates the
work; for a 1M-parameter model most of a decode step is reading the KV cache).

``--profile`` adds where the time of an eos-workload ``Sampler.generate()`` call goes, at each batch
size of ``--profile-batches`` (64,128,256): per batch size a fresh sampler (warmed up as above)
runs the eos workload once plain (``unprofiled_s``, ``tok_s``) and once profiled. The profile wraps
engine functions with ``perf_counter`` timers from this script only (monkeypatched for that run,
restored after; the library is unchanged): each wrapped call charges its own time minus that of
the wrapped calls inside it to a bucket, so the buckets add up to ``total_s`` (the profiled wall
time; ``identical``: whether it generated the same tokens as the plain run). JSON:
``"profile": {"64": {...}, ...}`` with

* ``steps``, ``rows_per_step`` (mean live rows of a decode step), ``ms_per_step`` (``total_s`` / steps);
* ``model_s``: ``StaticLlama.decode`` but its attention: embedding, RMSNorms, projections, RoPE,
  MLP, lm_head, the K/V writes of the new token, and the dispatch of all those ops;
  ``model_matmul_s`` is the part of it inside ``F.linear`` (the matmuls alone);
* ``attention_s``: decode attention over the KV cache (the compiled kernel, or SDPA; the fused
  kernel path's call also applies the rotary embedding and writes the new K/V, a few percent of it);
* ``python_s``: the scheduler's own code (``ContinuousBatch.step/refill/pack/start/harvest/run``):
  per-step bookkeeping and the per-row loop over the sequences, but not the calls below;
* ``sampling_s``: ``RowState.choose`` (log-softmax, argmax / inverse-CDF draw, ``tolist``);
* ``stop_detok_s``: ``Seq.push`` (EOS / ``max_tokens`` / stop-string checks, incremental
  detokenisation when stop strings are watched) and ``Seq.output`` (the final detokenisation);
* ``prefill_s`` (prompts), ``kv_copy_s`` (K/V copied between rows and the prefill, cache growth),
  ``prefix_cache_s`` (prefix-cache lookups and inserts), ``other_s`` (``generate`` itself:
  encoding, sequence objects, outputs);
* the roofline: ``matmul_flops_per_token`` (2 x in x out of every matmul of a decode step: q/k/v,
  o, gate/up, down of each layer, and lm_head), ``matmul_gflops_at_shapes`` (the machine's FLOP/s
  on exactly those matmuls, ``F.linear`` of ``[batch, in]`` by ``[out, in]``, best of 5 x 50),
  ``achieved_gflops`` (matmul FLOPs per token x generated tokens / ``unprofiled_s``), and
  ``matmul_efficiency`` (the same FLOPs over ``model_matmul_s``: how close the matmuls themselves
  run to their microbenchmark). ``"roofline_fraction": {"64": ...}`` is achieved / attainable.

The wrappers cost about a microsecond a call (one per row per step for ``Seq.push``), counted in
the caller's bucket; compare ``total_s`` with ``unprofiled_s``.

``--random-model`` instead builds a random Llama (``--hidden/--layers/...``,
4.4M parameters by default) with a character tokenizer and random prompts:
there the eos workload is skipped (a random model rarely emits EOS).

``--device cuda --dtype bfloat16`` puts the model (both sides use the same one) on a GPU
in that precision; the matmul peak is then timed there in that dtype. A Llama-3.2-1B-shaped
random model (0.97B parameters with the character vocabulary):

    python benchmarks/sampler.py --random-model --device cuda --dtype bfloat16 --hidden 2048 \
        --layers 16 --heads 32 --kv-heads 8 --intermediate 8192 --workloads fixed --prompts 512 --batch 128

The last line of output is one JSON object.

    python benchmarks/sampler.py                       # ~3 min on 2 cores, 1 thread
    python benchmarks/sampler.py --threads 0           # torch's default thread count
    python benchmarks/sampler.py --sampled             # adds the sampling workload
    python benchmarks/sampler.py --workloads tree,eos  # line-by-line extension (prefix cache), and eos
    python benchmarks/sampler.py --random-model --prompts 64 --new-tokens 32
    python benchmarks/sampler.py --profile --workloads eos --skip-hf   # where a decode step's time goes
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for c in "0123456789+-*/=(),.: \n" + "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_llama(vocab: int, args):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def countdown_prompts(tok, n: int, seed: int) -> list[str]:
    """``n`` solvable 3-number Countdown problems on seen targets, as the demo prompts them."""
    from searchrl.models.tokenizer import prompt_for
    from searchrl.tasks.countdown import prompt_text
    from searchrl.tasks.countdown.dataset import generate_problem, split_targets

    seen, _ = split_targets(10, 30, 0)
    rng = random.Random(seed)
    return [prompt_for(tok, prompt_text(generate_problem(rng, seen, 3, 30))) for _ in range(n)]


def matmul_flops(n: int = 2048, reps: int = 4, device: str = "cpu", dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


class StepProfiler:
    """Where a ``Sampler.generate()`` call's wall time goes, by wrapping engine functions with timers.

    Only this benchmark patches them (and restores them after): the library's code path is the same
    one, with a ``perf_counter`` pair around each wrapped call. Each wrapped call charges its
    *exclusive* time (its own, minus that of wrapped calls inside it) to a bucket, so the buckets add
    up to the wall time of the call. ``bucket=None``: the caller's bucket.
    """

    def __init__(self):
        self.acc: dict[str, float] = {}
        self.stack: list[list] = []  # [bucket, time of wrapped children]
        self.patches: list[tuple] = []
        self.steps = self.rows = 0

    def wrap(self, owner, name: str, bucket, count=None):
        orig = getattr(owner, name)
        prof, clock = self, time.perf_counter

        def timed(*a, **kw):
            stack = prof.stack
            b = bucket(stack[-1][0] if stack else "other") if callable(bucket) else bucket
            if b is None:
                b = stack[-1][0] if stack else "other"
            if count is not None:
                count(*a, **kw)
            frame = [b, 0.0]
            stack.append(frame)
            t = clock()
            try:
                return orig(*a, **kw)
            finally:
                dt = clock() - t
                stack.pop()
                prof.acc[b] = prof.acc.get(b, 0.0) + dt - frame[1]
                if stack:
                    stack[-1][1] += dt

        setattr(owner, name, timed)
        self.patches.append((owner, name, orig))

    def restore(self):
        for owner, name, orig in reversed(self.patches):
            setattr(owner, name, orig)
        self.patches.clear()

    def install(self):
        import torch.nn.functional as F

        from searchrl.engine import batch, kernels, sampler, sequence
        from searchrl.engine.llama import StaticLlama

        def count_step(eng, tokens, pos, n, span):
            self.steps += 1
            self.rows += n

        self.wrap(sampler.Sampler, "generate", "other")  # encode, Seq objects, engine/weights check, outputs
        for name in ("run", "refill", "harvest", "pack", "step", "start"):
            self.wrap(batch.ContinuousBatch, name, "python")  # scheduler bookkeeping, per step and per row
        self.wrap(StaticLlama, "decode", "model", count=count_step)  # projections, MLP, norms, RoPE, lm_head
        self.wrap(kernels, "decode_attention", "attention")
        self.wrap(kernels, "rope_attention", "attention")  # the fused path: rotary + K/V write + attention
        # SDPA: attention inside a decode step; inside a prefill it stays prefill
        self.wrap(F, "scaled_dot_product_attention", lambda parent: "attention" if parent == "model" else None)
        self.wrap(F, "linear", lambda parent: "matmul" if parent == "model" else None)  # the decode step's matmuls
        self.wrap(StaticLlama, "prefill", "prefill")
        for name in ("write_prefill", "copy_rows", "swap_rows", "write_tokens", "read_tokens", "ensure_cache"):
            self.wrap(StaticLlama, name, "kv_copy")
        for name in ("_plan", "_cache_prefill"):
            self.wrap(batch, name, "prefix_cache")
        self.wrap(sequence.RowState, "choose", "sampling")
        self.wrap(sequence.Seq, "push", "stop_detok")  # EOS / max_tokens / stop-string checks, incremental detok
        self.wrap(sequence.Seq, "output", "stop_detok")  # final detokenisation (no stop strings)


def linear_time(rows: int, n_in: int, n_out: int, device, dtype, reps: int = 50) -> float:
    """Best seconds of one ``F.linear([rows, n_in], [n_out, n_in])``, the decode step's matmul shape."""
    import torch.nn.functional as F

    x = torch.randn(rows, n_in, device=device, dtype=dtype)
    w = torch.randn(n_out, n_in, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    F.linear(x, w)
    sync()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            F.linear(x, w)
        sync()
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def decode_matmuls(eng) -> list[tuple[int, int]]:
    """(in, out) of every matmul of one decode step of one row: each layer's projections, and lm_head."""
    shapes = []
    for L in eng.layers:
        for w in [*L.wqkv, L.wo, *L.wgu, L.wd]:
            shapes.append((w.shape[1], w.shape[0]))
    shapes.append((eng.lm_head.shape[1], eng.lm_head.shape[0]))
    return shapes


def profile(args, model, tok, prompts, sync, dtype, eos_settings: dict) -> tuple[dict, dict]:
    """The ``--profile`` fields: per batch size, where an eos-workload ``generate()`` call's time goes."""
    from searchrl.engine import Sampler, SamplingParams

    prof_out, roof = {}, {}
    for B in [int(b) for b in args.profile_batches.split(",") if b]:
        runs = []
        for profiled in (False, True):  # each from a fresh sampler, warmed up as the eos workload's is
            s = Sampler(model, tok, max_batch_size=B, prefix_cache=not args.no_prefix_cache)
            s.generate(prompts[:8], SamplingParams(temperature=0.0, max_tokens=8))
            prof = StepProfiler()
            if profiled:
                prof.install()
            try:
                sync()
                t = time.perf_counter()
                out = s.generate(prompts, SamplingParams(**eos_settings))
                sync()
                dt = time.perf_counter() - t
            finally:
                prof.restore()
            assert s.last_backend == "static", s.last_backend
            runs.append((dt, [r.outputs[0].token_ids for r in out], prof))
        (plain_s, plain_ids, _), (prof_s, prof_ids, prof) = runs
        n_tok = sum(map(len, plain_ids))
        eng = s._static
        shapes = decode_matmuls(eng)
        flops_tok = sum(2 * i * o for i, o in shapes)
        times = {sh: linear_time(B, *sh, device=args.device, dtype=dtype) for sh in set(shapes)}
        attainable = flops_tok * B / sum(times[sh] for sh in shapes)  # FLOP/s of one full step's matmuls
        achieved = flops_tok * n_tok / plain_s
        acc = dict(prof.acc)
        acc["model"] = acc.get("model", 0.0) + acc.get("matmul", 0.0)  # model_s includes its matmuls
        buckets = ("model", "attention", "python", "sampling", "stop_detok", "prefill", "kv_copy", "prefix_cache",
                   "other")
        unknown = set(acc) - set(buckets) - {"matmul"}
        assert not unknown, unknown
        p = {"steps": prof.steps, "rows_per_step": prof.rows / max(prof.steps, 1),
             "ms_per_step": 1e3 * prof_s / max(prof.steps, 1), "total_s": prof_s, "unprofiled_s": plain_s,
             "tok_s": n_tok / plain_s, "identical": plain_ids == prof_ids}
        p.update({f"{b}_s": acc.get(b, 0.0) for b in buckets})
        matmul_s = acc.get("matmul", 0.0)
        p.update(model_matmul_s=matmul_s, matmul_flops_per_token=flops_tok,
                 matmul_gflops_at_shapes=attainable / 1e9, achieved_gflops=achieved / 1e9,
                 matmul_efficiency=flops_tok * prof.rows / max(matmul_s, 1e-12) / attainable)
        prof_out[str(B)] = p
        roof[str(B)] = achieved / attainable
        shares = ", ".join(f"{b} {p[b + '_s'] / prof_s:.0%}" for b in buckets if p[b + "_s"] / prof_s >= 0.005)
        print(f"profile | batch {B:4d}: {prof_s:6.2f} s profiled ({plain_s:6.2f} s plain), {prof.steps} steps, "
              f"{p['ms_per_step']:.2f} ms/step, {p['rows_per_step']:.0f} rows/step | {shares} "
              f"(matmuls {matmul_s / prof_s:.0%} of it) "
              f"| matmuls at [{B}, in]: {attainable / 1e9:.1f} GFLOP/s, achieved {achieved / 1e9:.2f} "
              f"({roof[str(B)]:.1%})")
    return prof_out, roof


def reference_run(args) -> dict:
    """The eos workload through the sampler of ``args.ref``: that commit's own benchmark, run from a
    temporary git worktree in a subprocess with this run's prompts, batch, threads and budget."""
    import subprocess
    import tempfile

    repo = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", args.ref], capture_output=True, text=True,
                            check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "ref"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), commit],
                       capture_output=True, check=True)
        try:
            cmd = [sys.executable, "benchmarks/sampler.py", "--workloads", "eos", "--skip-hf", "--model", args.model,
                   "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens), "--batch", str(args.batch),
                   "--threads", str(args.threads), "--seed", str(args.seed), "--device", args.device,
                   "--dtype", args.dtype]
            env = {**os.environ, "PYTHONPATH": str(tree)}
            proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"--ref {args.ref}: its benchmark failed:\n{proc.stderr[-2000:]}")
            line = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], capture_output=True)
    return {"commit": commit, "tok_s": line["ours_tok_s_eos"]}


def _round(v, nested: bool = False):
    """Top-level floats to 4 decimals; inside the profile's dicts to 4 significant digits."""
    if isinstance(v, dict):
        return {k: _round(x, True) for k, x in v.items()}
    if isinstance(v, float):
        return float(f"{v:.4g}") if nested else round(v, 4)
    return v


def until_eos(row: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(row):
        if t in eos:
            return row[: i + 1]
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:sos-tiny-base",
                    help="HF model directory, or builtin:NAME for a checkpoint shipped with searchrl "
                         "(default: the demo's Countdown policy)")
    ap.add_argument("--random-model", action="store_true", help="a random tiny Llama and random prompts instead")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=768, help="token budget of the eos/sampled workloads")
    ap.add_argument("--new-tokens", type=int, default=128, help="tokens per prompt of the fixed workload")
    ap.add_argument("--batch", type=int, default=64, help="batch size of both generate() and the sampler's rows")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both (0: torch's default). Default 1: on a shared 2-core box, "
                         "2 OpenMP threads stall whenever another process holds a core")
    ap.add_argument("--workloads", "--workload", default="eos,fixed",
                    help="comma-separated subset of eos,fixed,sampled,tree")
    ap.add_argument("--tree-prompts", type=int, default=64, help="prompts of the tree workload")
    ap.add_argument("--tree-lines", type=int, default=10, help="lines each tree-workload prompt is extended by")
    ap.add_argument("--line-tokens", type=int, default=64, help="token budget of one line (tree workload)")
    ap.add_argument("--repeats", type=int, default=5, help="tree workload: best of this many runs of each side")
    ap.add_argument("--sampled", action="store_true", help="also run the sampled workload")
    ap.add_argument("--skip-hf", action="store_true", help="only time our sampler")
    ap.add_argument("--no-prefix-cache", action="store_true",
                    help="eos/fixed/sampled workloads: our sampler with prefix_cache=False (the tree workload "
                         "always times both)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (the model of both sides goes there)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="the model's precision (both sides)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ref", default=None, metavar="COMMIT",
                    help="also time the eos workload with the sampler of COMMIT (a git worktree, its own "
                         "benchmarks/sampler.py in a subprocess, same prompts and settings), right after ours: "
                         "ref_tok_s_eos and speedup_vs_ref")
    ap.add_argument("--profile", action="store_true",
                    help="also profile where an eos-workload generate() call's time goes, at --profile-batches")
    ap.add_argument("--profile-batches", default="64,128,256",
                    help="comma-separated batch sizes (max_batch_size) of --profile")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from searchrl.engine import Sampler, SamplingParams, kernels
    from searchrl.models import resolve_model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    order = ["eos", "fixed", "sampled", "tree"]
    workloads = [w for w in args.workloads.split(",") if w]
    if args.sampled and "sampled" not in workloads:
        workloads.append("sampled")
    unknown = set(workloads) - set(order)
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}")
    workloads = sorted(set(workloads), key=order.index)
    rng = random.Random(args.seed)
    if args.random_model:
        tok = char_tokenizer()
        model = tiny_llama(len(tok), args)
        alphabet = "0123456789+-*= "
        prompts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(16, 48))) for _ in range(args.prompts)]
        workloads = [w for w in workloads if w != "eos"]
        if not workloads:
            ap.error("--random-model has no eos workload; use --workloads fixed and/or sampled")
        name = "random tiny Llama"
    else:
        path = resolve_model_path(args.model)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        prompts = countdown_prompts(tok, args.prompts, args.seed)
        name = args.model
    dtype = getattr(torch, args.dtype)
    model.to(device=args.device, dtype=dtype).eval()
    on_cuda = torch.device(args.device).type == "cuda"
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # both sides in the dtype asked for, not TF32
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    eos = {tok.eos_token_id}
    n_params = sum(p.numel() for p in model.parameters())
    if model.get_input_embeddings().weight is not model.get_output_embeddings().weight:
        n_params -= model.get_input_embeddings().weight.numel()
    B = args.batch
    attention = "compiled kernel" if kernels.available() else f"torch SDPA ({kernels.unavailable_reason()})"
    print(f"model: {name} ({type(model).__name__}, {n_params / 1e6:.2f}M params excl. input embedding, "
          f"vocab {len(tok)}, {args.device}, {args.dtype}); {len(prompts)} prompts, batch {B}, "
          f"torch threads {torch.get_num_threads()}, "
          f"decode attention: {attention}; load avg {os.getloadavg()[0]:.2f}")

    sampler = Sampler(model, tok, max_batch_size=B, prefix_cache=not args.no_prefix_cache)
    tok.padding_side = "left"

    def settings(workload: str) -> dict:
        """SamplingParams kwargs of a workload (the same for every prompt)."""
        if workload == "fixed":
            return {"temperature": 0.0, "max_tokens": args.new_tokens, "ignore_eos": True}
        # seed None: each request's sample draws from its own stream, derived from its index
        return {"temperature": 0.0 if workload == "eos" else 1.0, "top_p": 1.0, "max_tokens": args.max_tokens}

    def run_ours(workload: str):
        sync()
        t = time.perf_counter()
        out = sampler.generate(prompts, SamplingParams(**settings(workload)))
        sync()
        dt = time.perf_counter() - t
        assert sampler.last_backend == "static", sampler.last_backend
        return dt, [r.outputs[0].token_ids for r in out]

    def run_hf(workload: str):
        """Batches of B in order; each runs until all its rows hit EOS, or to max_new_tokens."""
        max_new = settings(workload)["max_tokens"]
        gen_kw = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        if workload == "sampled":
            gen_kw = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0)
        model.generation_config.eos_token_id = None if workload == "fixed" else tok.eos_token_id
        torch.manual_seed(args.seed)
        sync()
        out, t = [], time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(prompts), B):
                enc = tok(prompts[i : i + B], return_tensors="pt", padding=True, add_special_tokens=False).to(args.device)
                gen = model.generate(**enc, max_new_tokens=max_new, pad_token_id=tok.pad_token_id, **gen_kw)
                rows = gen[:, enc["input_ids"].shape[1] :].tolist()
                out += [row if workload == "fixed" else until_eos(row, eos) for row in rows]
        sync()
        return time.perf_counter() - t, out

    # warm-up both (first calls allocate, load kernels)
    sampler.generate(prompts[:8], SamplingParams(temperature=0.0, max_tokens=8))
    with torch.inference_mode():
        enc = tok(prompts[:2], return_tensors="pt", padding=True, add_special_tokens=False).to(args.device)
        model.generate(**enc, do_sample=False, max_new_tokens=4, pad_token_id=tok.pad_token_id)

    def run_tree(make_sampler) -> tuple[float, list[list[str]]]:
        """The tree workload through one sampler: seconds, and each prompt's lines."""
        tree_prompts = prompts[: args.tree_prompts]
        s = make_sampler()
        warm = prompts[args.tree_prompts : args.tree_prompts + 8] or [p[::-1] for p in prompts[:8]]
        s.generate(warm, SamplingParams(temperature=0.0, max_tokens=8))  # warm-up, on other prompts
        sp = SamplingParams(temperature=0.0, max_tokens=args.line_tokens, stop=["\n"], include_stop_str_in_output=True)
        lines = [[] for _ in tree_prompts]
        t = time.perf_counter()
        for _ in range(args.tree_lines):
            outs = s.generate([p + "".join(ls) for p, ls in zip(tree_prompts, lines)], sp)
            for ls, o in zip(lines, outs):
                ls.append(o.outputs[0].text)
        dt = time.perf_counter() - t
        assert s.last_backend == "static", s.last_backend
        res.setdefault("tree_stats", {})[f"prefix_cache={s.prefix_cache}"] = dict(s.stats)
        return dt, lines

    def run_tree_hf() -> tuple[float, list[list[str]]]:
        """The same rounds with generate(): a row stops at its first newline token (StoppingCriteria)."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        newline = torch.tensor([i for i in range(len(tok)) if "\n" in tok.decode([i])], device=args.device)

        class AtNewline(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):  # per row: did it just emit a newline?
                return torch.isin(input_ids[:, -1], newline)

        model.generation_config.eos_token_id = tok.eos_token_id
        tree_prompts = prompts[: args.tree_prompts]
        lines = [[] for _ in tree_prompts]
        t = time.perf_counter()
        with torch.inference_mode():
            for _ in range(args.tree_lines):
                cur = [p + "".join(ls) for p, ls in zip(tree_prompts, lines)]
                for i in range(0, len(cur), B):
                    enc = tok(cur[i : i + B], return_tensors="pt", padding=True, add_special_tokens=False).to(
                        args.device)
                    gen = model.generate(**enc, max_new_tokens=args.line_tokens, do_sample=False, temperature=None,
                                         top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
                                         stopping_criteria=StoppingCriteriaList([AtNewline()]))
                    for j, row in enumerate(gen[:, enc["input_ids"].shape[1] :].tolist()):
                        text = tok.decode(until_eos(row, eos), skip_special_tokens=True)
                        lines[i + j].append(text[: text.index("\n") + 1] if "\n" in text else text)
        return time.perf_counter() - t, lines

    res = {}
    for w in workloads:
        if w == "tree":
            sides = {"cache": lambda: run_tree(lambda: Sampler(model, tok, max_batch_size=B)),
                     "nocache": lambda: run_tree(lambda: Sampler(model, tok, max_batch_size=B, prefix_cache=False))}
            if not args.skip_hf:
                sides["hf"] = run_tree_hf
            runs = {k: [] for k in sides}
            for _ in range(max(1, args.repeats)):  # interleaved, so a busy spell hits all sides alike
                for k, run in sides.items():
                    runs[k].append(run())
            for k, rs in runs.items():  # repeats agree on CPU; a GPU's bf16 kernels need not be deterministic
                res[f"tree_repeats_identical_{k}"] = all(r[1] == rs[0][1] for r in rs)
            (cached_s, cached), (plain_s, plain) = [(min(r[0] for r in runs[k]), runs[k][0][1])
                                                    for k in ("cache", "nocache")]
            n_tok = sum(len(tok("".join(ls), add_special_tokens=False)["input_ids"]) for ls in cached)
            res.update(tree_s_cache=cached_s, tree_s_nocache=plain_s, ratio_tree_vs_nocache=plain_s / cached_s,
                       tree_identical_lines=cached == plain, ours_tok_s_tree=n_tok / cached_s)
            print(f"tree    | ours, prefix cache: {cached_s:7.2f} s | prefix_cache=False: {plain_s:7.2f} s "
                  f"| ratio {plain_s / cached_s:.2f}x | identical lines: {cached == plain} | {res['tree_stats']}")
            if args.skip_hf:
                continue
            hf_s, hf_lines = min(r[0] for r in runs["hf"]), runs["hf"][0][1]
            res.update(tree_s_hf=hf_s, ratio_tree_vs_hf=hf_s / cached_s, ratio_tree=hf_s / cached_s,
                       hf_tok_s_tree=n_tok / hf_s,
                       tree_agreement_hf=sum(a == b for a, b in zip(cached, hf_lines)) / len(cached))
            print(f"tree    | transformers generate(): {hf_s:7.2f} s | ratio {hf_s / cached_s:.2f}x "
                  f"| identical lines {res['tree_agreement_hf']:.1%}")
            continue
        ours_s, ours_ids = run_ours(w)
        n_ours = sum(map(len, ours_ids))
        res[f"ours_tok_s_{w}"] = n_ours / ours_s
        print(f"{w:7s} | ours: {ours_s:7.2f} s, {n_ours:7,d} tokens, {res[f'ours_tok_s_{w}']:8,.0f} tok/s")
        if args.skip_hf:
            continue
        hf_s, hf_ids = run_hf(w)
        n_hf = sum(map(len, hf_ids))
        res[f"hf_tok_s_{w}"] = n_hf / hf_s
        res[f"ratio_{w}"] = res[f"ours_tok_s_{w}"] / res[f"hf_tok_s_{w}"]
        line = (f"{w:7s} | transformers generate(): {hf_s:7.2f} s, {n_hf:7,d} tokens, "
                f"{res[f'hf_tok_s_{w}']:8,.0f} tok/s | ratio {res[f'ratio_{w}']:.2f}x")
        if w != "sampled":
            res[f"greedy_agreement_{w}"] = sum(a == b for a, b in zip(ours_ids, hf_ids)) / len(prompts)
            line += f" | identical sequences {res[f'greedy_agreement_{w}']:.1%}"
        print(line)

    if args.ref and "eos" in workloads:
        ref = reference_run(args)
        res.update(ref_commit=ref["commit"], ref_tok_s_eos=ref["tok_s"], speedup_vs_ref=res["ours_tok_s_eos"] / ref["tok_s"])
        print(f"eos     | {args.ref} ({ref['commit'][:10]}): {ref['tok_s']:8,.0f} tok/s | ours / it "
              f"{res['speedup_vs_ref']:.2f}x")

    if args.profile:
        res["profile"], res["roofline_fraction"] = profile(args, model, tok, prompts, sync, dtype, settings("eos"))

    flops = matmul_flops(4096 if on_cuda else 2048, device=args.device, dtype=dtype)
    out = {k: _round(v) for k, v in res.items()}
    main_w = workloads[0]  # the headline: eos unless it was not run
    head = {"workload": main_w, "ours_tok_s": out.get(f"ours_tok_s_{main_w}"),
            "hf_tok_s": out.get(f"hf_tok_s_{main_w}"), "ratio": out.get(f"ratio_{main_w}")}
    if "fixed" in workloads:
        mfu = 2 * n_params * res["ours_tok_s_fixed"] / flops
        head["mfu"] = round(mfu, 4)
        print(f"{args.dtype} matmul: {flops / 1e9:.1f} GFLOP/s; our sampler (fixed) reaches {mfu:.1%} of it")
    out = {**head, "matmul_flops": round(flops), **out}
    out.update(prefix_cache=not args.no_prefix_cache)
    out.update(model=name, params=n_params, prompts=len(prompts), max_tokens=args.max_tokens,
               new_tokens=args.new_tokens, batch=B, threads=torch.get_num_threads(), device=args.device,
               dtype=args.dtype,
               attention="kernel" if kernels.available() else "sdpa", load_avg=round(os.getloadavg()[0], 2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
