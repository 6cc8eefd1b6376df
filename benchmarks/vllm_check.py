"""The RL loop's vLLM weight sync, checked against a real engine (a GPU with ``pip install 'searchrl[vllm]'``).

``engine.backend=vllm`` in ``ppo`` / ``grpo`` keeps one engine running and pushes the policy's new weights
into it after every update (:meth:`searchrl.engine.vllm_backend.VLLMGenerator.update_weights`). This script
checks that on vLLM itself, with a Llama of two heads of 64 dimensions (a head size every vLLM attention
backend supports) and the Countdown vocabulary, saved to ``--out``:

1. the engine started from the checkpoint generates (greedy tokens, their logprobs, and the prompt
   logprobs of a fixed continuation);
2. the model's weights are perturbed (seeded Gaussian noise of ``--scale`` times each tensor's std) and
   pushed with ``update_weights(model)``: the outputs must change (the largest logprob difference over
   ``--min-change``), and must equal those of a fresh engine started on the perturbed checkpoint (same
   greedy tokens, logprobs within ``--tol``), and those of our sampler on the perturbed model (logprobs
   within ``--tol``; tokens may part at near-ties, so the comparison is on the fresh engine's tokens);
3. the same with LoRA adapters (peft, as the trainers inject them, with non-zero B) on the perturbed model:
   pushed merged, equal to a fresh engine on the merged checkpoint.

A fresh engine runs in a subprocess of this script (``--fresh``), so that each process holds one engine.
``--in-process`` runs them here instead (for a stand-in vLLM, as ``tests/test_vllm_backend.py`` does). Writes
``<out>/vllm_check.json`` and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

PROMPTS = ["Current State: 24:[1, 2, 3, 4], Operations: []\n", "Current State: 10:[5, 2], Operations: []\n",
           "Current State: 17:[9, 8, 3], Operations: []\n"]
CONTINUATION = "Exploring Operation: 1+2=3, Resulting Numbers: [3, 3, 4]\n"


def tiny_model(seed: int = 0):
    """A random Llama (2 layers, 2 heads of 64) over the Countdown vocabulary, and its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from searchrl.tasks.countdown.tokenizer import build_countdown_tokenizer

    tok = build_countdown_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval(), tok


def save(model, tok, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def perturb(model, scale: float, seed: int) -> None:
    """Seeded Gaussian noise of ``scale`` times each weight tensor's std, in place."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            std = float(p.float().std()) if p.numel() > 1 else 1.0
            p.add_((torch.randn(p.shape, generator=g) * scale * (std or 1.0)).to(p.dtype))


def add_lora(model, seed: int) -> None:
    """peft LoRA adapters on q_proj and v_proj as the trainers inject them, with a non-zero B (seeded)."""
    import torch

    from searchrl.train.adapters import add_lora as inject

    inject(model, argparse.Namespace(lora_rank=4, lora_alpha=8.0, lora_dropout=0.0, lora_targets="q_proj,v_proj",
                                     lora_target_names=lambda: ["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def outputs(gen, tok, max_tokens: int = 8) -> dict:
    """Greedy tokens and logprobs for :data:`PROMPTS`, and the logprobs of :data:`CONTINUATION` after each."""
    from searchrl.engine.types import SamplingParams

    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    outs = gen.generate(ids, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    scores = gen.score_continuations(ids, [CONTINUATION] * len(ids))
    return {"tokens": [o.outputs[0].token_ids for o in outs], "logprobs": [o.outputs[0].logprobs for o in outs],
            "continuation": [s.logprobs for s in scores]}


def max_diff(a: dict, b: dict, same_tokens: bool = True) -> float:
    """The largest logprob difference between two :func:`outputs` (generated logprobs where the tokens agree,
    and every continuation logprob); ``inf`` where ``same_tokens`` is asked and the tokens differ."""
    worst = 0.0
    for ta, tb, la, lb in zip(a["tokens"], b["tokens"], a["logprobs"], b["logprobs"]):
        if same_tokens and ta != tb:
            return math.inf
        worst = max([worst] + [abs(x - y) for x, y, s, t in zip(la, lb, ta, tb) if s == t])
    for la, lb in zip(a["continuation"], b["continuation"]):
        worst = max([worst] + [abs(x - y) for x, y in zip(la, lb)])
    return worst


def vllm_generator(path: Path, tok, dtype: str, source=None):
    from searchrl.engine.vllm_backend import VLLMGenerator

    return VLLMGenerator(path, tok, source=source, dtype=dtype, gpu_memory_utilization=0.3, max_model_len=256,
                         max_num_seqs=8, seed=0)


def fresh_outputs(path: Path, tok, dtype: str, in_process: bool) -> dict:
    """:func:`outputs` of a fresh engine on the checkpoint in ``path`` (a subprocess unless ``in_process``)."""
    if in_process:
        return outputs(vllm_generator(path, tok, dtype), tok)
    out = path / "fresh.json"
    subprocess.run([sys.executable, __file__, "--fresh", str(path), "--dtype", dtype], check=True)
    return json.loads(out.read_text())


def ours(model, tok) -> dict:
    from searchrl.engine.sampler import Sampler

    return outputs(Sampler(model, tok), tok)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/vllm-check")
    ap.add_argument("--dtype", default="bfloat16", help="the engines' dtype (vLLM's; our sampler runs the model's)")
    ap.add_argument("--scale", type=float, default=0.5, help="perturbation, in each tensor's std")
    ap.add_argument("--tol", type=float, default=0.05, help="largest logprob difference between equal weights")
    ap.add_argument("--ours-tol", type=float, default=0.15,
                    help="largest logprob difference from our fp32 sampler (the engine runs in --dtype)")
    ap.add_argument("--min-change", type=float, default=0.1, help="smallest logprob change the perturbation makes")
    ap.add_argument("--in-process", action="store_true", help="fresh engines in this process (a stand-in vLLM)")
    ap.add_argument("--fresh", help=argparse.SUPPRESS)  # subprocess: a fresh engine's outputs into <dir>/fresh.json
    args = ap.parse_args(argv)
    if args.fresh:
        from transformers import AutoTokenizer

        path = Path(args.fresh)
        tok = AutoTokenizer.from_pretrained(path)
        (path / "fresh.json").write_text(json.dumps(outputs(vllm_generator(path, tok, args.dtype), tok)))
        return 0

    out = Path(args.out)
    model, tok = tiny_model()
    start = save(model, tok, out / "start")
    gen = vllm_generator(start, tok, args.dtype)
    before = outputs(gen, tok)
    checks: dict[str, dict] = {}

    # 2: perturbed weights pushed into the running engine
    perturb(model, args.scale, seed=1)
    gen.update_weights(model)
    pushed = outputs(gen, tok)
    fresh = fresh_outputs(save(model, tok, out / "perturbed"), tok, args.dtype, args.in_process)
    reference = ours(model, tok)
    change = max_diff(before, pushed, same_tokens=False)
    checks["perturbed"] = {
        "change_from_start": change, "changed": change > args.min_change,
        "vs_fresh_engine": max_diff(pushed, fresh), "equals_fresh_engine": max_diff(pushed, fresh) <= args.tol,
        "vs_our_sampler": max_diff(pushed, {**reference, "tokens": pushed["tokens"]}, same_tokens=False),
    }
    checks["perturbed"]["equals_our_sampler"] = checks["perturbed"]["vs_our_sampler"] <= args.ours_tol

    # 3: LoRA adapters, pushed merged
    import copy

    from searchrl.train.adapters import merge_lora

    add_lora(model, seed=2)
    gen.update_weights(model)
    pushed_lora = outputs(gen, tok)
    merged = copy.deepcopy(model)
    merge_lora(merged)
    fresh_lora = fresh_outputs(save(merged, tok, out / "lora-merged"), tok, args.dtype, args.in_process)
    diff = max_diff(pushed_lora, fresh_lora)
    checks["lora"] = {"change_from_perturbed": max_diff(pushed, pushed_lora, same_tokens=False),
                      "vs_fresh_engine": diff, "equals_fresh_engine": diff <= args.tol}
    checks["lora"]["changed"] = checks["lora"]["change_from_perturbed"] > args.min_change

    ok = all(v for c in checks.values() for k, v in c.items() if isinstance(v, bool))
    try:
        import vllm

        version = getattr(vllm, "__version__", "?")
    except ImportError:  # pragma: no cover
        version = None
    result = {"ok": ok, "vllm": version, "dtype": args.dtype, "tol": args.tol, "checks": checks,
              "outputs": {"start": before, "pushed": pushed, "fresh": fresh, "pushed_lora": pushed_lora,
                          "fresh_lora": fresh_lora}}
    (out / "vllm_check.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({"ok": ok, "vllm": version, "checks": checks}, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
