"""PPO (operation-level, with a critic) or GRPO of a micro model, for tests/test_multiprocess.py: run alone
(1 process) or under ``torchrun --nproc_per_node 2``. Every process samples the same batch (seeds are per
prompt) and takes every other micro-batch, so the final weights must agree with the single process's.

    python ddp_rl.py DATA_DIR OUT ppo|grpo [fsdp]

``fsdp``: the model (the actor and its critic) sharded over the processes, sampling from a whole copy.
"""

import copy
import sys

import torch


def main(data_dir: str, out: str, method: str, *flags: str) -> int:
    from searchrl.models.policy import load_policy
    from searchrl.models.value import ValueModel
    from searchrl.tasks.base import Score
    from searchrl.tasks.countdown import CountdownConfig, CountdownTask
    from searchrl.train.config import RLConfig
    from searchrl.train.rl import train_rl

    class FirstDigit(CountdownTask):
        def score(self, problems, responses):
            return [Score(reward=float(r[:1].isdigit()), correct=r[:1].isdigit()) for r in responses]

    torch.set_num_threads(1)
    task = FirstDigit(CountdownConfig(n_train=12, n_selftrain=40, n_valid=3, n_valid_unseen=2, n_test=3,
                                      max_target=30, workers=1), data_dir)
    model, tok = load_policy("micro", task.tokenizer(), max_seq_len=512, seed=0)
    kw = dict(output_dir=out, iterations=3, prompts_per_step=8, max_tokens=4, minibatch_size=8, lr=1e-3,
              critic_lr=1e-3, ppo_epochs=2, save_every=0, tokens_per_batch=40, seed=0)
    if method == "grpo":
        kw.update(adv_estimator="grpo", samples_per_prompt=4, prompts_per_step=4, loss_agg="seq-mean-action-mean",
                  dual_clip=None)
    cfg = RLConfig(**kw, fsdp="fsdp" in flags)
    critic = ValueModel.from_policy(copy.deepcopy(model)) if cfg.uses_critic else None
    train_rl(model, tok, task, task.problems("selftrain"), cfg, critic=critic, progress=False)
    if cfg.fsdp:  # plain again
        assert all(type(p) is torch.nn.Parameter for p in model.parameters())
        assert critic is None or all(type(p) is torch.nn.Parameter for p in critic.parameters())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
