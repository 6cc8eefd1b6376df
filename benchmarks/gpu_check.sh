#!/usr/bin/env bash
# The GPU checks, in one run on a CUDA machine (what the README's "Scaling up" section reports as
# run on a GPU). From the repository root, with searchrl importable (installed, or PYTHONPATH=.):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# 1. the CUDA paths of the test suite: the engine tests build their models on the GPU
#    (SEARCHRL_TEST_DEVICE=cuda: our sampler against transformers' generate on the same device, token
#    for token, prefix cache, bf16), and the trainer, value, search and self-training tests run as
#    they are, where accelerate puts training on the GPU and mixed_precision=auto means bf16;
# 2. `searchrl demo --preset smoke` end to end on the GPU (model.device=auto);
# 3. benchmarks/sampler.py on a Llama-3.2-1B-shaped random model in bf16: our sampler vs transformers'
#    generate (fixed-length greedy decoding; line-by-line tree extension with the prefix cache);
# 4. benchmarks/sft.py on a 1B-parameter Llama in bf16: training tokens/s and MFU;
# 5. vLLM, where it imports (pip install 'searchrl[vllm]': vllm>=0.22,<0.32): tests/test_vllm_backend.py with the
#    real engine (our sampler and vLLM on the same prompts, besides the stand-in tests), then
#    benchmarks/vllm_check.py: the RL loop's weight sync on a running engine (perturbed weights and LoRA
#    adapters pushed in place must change the outputs and equal a fresh engine on the changed checkpoint).
#
# Each step has its own time limit and writes its log to OUT_DIR (default runs/gpu-check); a failed
# step does not stop the next. Test files that need the sandbox, torchrun on CPU, Ray or TRL are left
# out: they do not touch the GPU paths.
set -u
OUT_DIR=${1:-runs/gpu-check}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 8" || echo "")

{
  nvidia-smi -L
  $PY -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'accelerate', accelerate.__version__, torch.cuda.get_device_name(0))"
} 2>&1 | tee "$OUT_DIR/env.log"

# 2 runs beside 1 (the demo's tiny models hardly load the GPU; 1's workers take 8 of the cores)
( timeout 150 $PY -m searchrl.cli demo --preset smoke --quiet run_dir="$OUT_DIR/demo-smoke" \
    > "$OUT_DIR/demo.log" 2>&1; echo "demo exit $?" >> "$OUT_DIR/demo.log" ) &
DEMO=$!

SEARCHRL_TEST_DEVICE=cuda timeout 260 $PY -m pytest -q -p no:cacheprovider $XDIST -rfE \
  tests/test_engine.py tests/test_prefix_cache.py tests/test_models.py tests/test_rollout.py tests/test_sft.py \
  tests/test_train_core.py tests/test_value.py tests/test_rl.py tests/test_dpo.py tests/test_lora_and_memory.py \
  tests/test_beam.py tests/test_vm_mcts.py tests/test_mcts_star.py tests/test_bon.py tests/test_search_pipeline.py \
  tests/test_selftrain.py tests/test_rest_mcts.py 2>&1 | tee "$OUT_DIR/pytest.log" | tail -40
echo "pytest exit ${PIPESTATUS[0]}" | tee -a "$OUT_DIR/pytest.log"
wait $DEMO
tail -25 "$OUT_DIR/demo.log"

timeout 150 $PY benchmarks/sampler.py --random-model --device cuda --dtype bfloat16 --hidden 2048 --layers 16 \
  --heads 32 --kv-heads 8 --intermediate 8192 --workloads fixed,tree --prompts 512 --batch 128 --new-tokens 128 \
  --tree-prompts 128 --tree-lines 6 --line-tokens 48 --repeats 2 --threads 0 2>&1 | tee "$OUT_DIR/sampler.log"
echo "sampler exit ${PIPESTATUS[0]}" | tee -a "$OUT_DIR/sampler.log"

timeout 100 $PY benchmarks/sft.py --steps 40 --hidden 2048 --layers 18 --vocab 32000 --tokens-per-batch 16384 --examples 6000 \
  --log-every 10 2>&1 | tee "$OUT_DIR/sft.log"
echo "sft exit ${PIPESTATUS[0]}" | tee -a "$OUT_DIR/sft.log"

if $PY -c "import vllm" 2>/dev/null; then
  timeout 300 $PY -m pytest -q -p no:cacheprovider -rfEs tests/test_vllm_backend.py 2>&1 | tee "$OUT_DIR/vllm-pytest.log" | tail -20
  echo "vllm pytest exit ${PIPESTATUS[0]}" | tee -a "$OUT_DIR/vllm-pytest.log"
  timeout 400 $PY benchmarks/vllm_check.py --out "$OUT_DIR/vllm-check" 2>&1 | tee "$OUT_DIR/vllm-check.log" | tail -40
  echo "vllm check exit ${PIPESTATUS[0]}" | tee -a "$OUT_DIR/vllm-check.log"
else
  echo "vllm is not installed: the vLLM contract and weight-sync checks did not run (pip install 'searchrl[vllm]')" \
    | tee "$OUT_DIR/vllm-check.log"
fi
