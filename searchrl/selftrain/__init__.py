"""Self-training methods on one skeleton (:mod:`.loop`): ReST / Guided-ReST (:mod:`.rest`), ReST-GRPO with
its GRPO and ReST-DPO baselines (:mod:`.rest_grpo`), ReST-MCTS* (:mod:`.rest_mcts`). The commands that run
them are in :mod:`searchrl.pipelines`."""

from .loop import Context, Iteration, Loop, MethodBase, read_records, run_loop
from .rest import SelfTrainConfig, generate_guided, generation_stats, run_selftrain, selftrain_loop

__all__ = ["Context", "Iteration", "Loop", "MethodBase", "read_records", "run_loop", "SelfTrainConfig",
           "generate_guided", "generation_stats", "run_selftrain", "selftrain_loop"]
