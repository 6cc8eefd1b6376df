"""Test-time search with a policy and a value model (see :mod:`searchrl.search.common` for what they share).

One file per method: :mod:`.bon` (best-of-N, votes), :mod:`.vm_mcts` (ReST-RL), :mod:`.mcts_star`
(ReST-MCTS*), :mod:`.beam` (VGS block beam search and DVTS). Each declares the methods it gives
``searchrl search`` / ``compare-search`` (name, label, scorer, settings, budget rule) for
:mod:`.registry`, which every command, check and report reads.
"""
