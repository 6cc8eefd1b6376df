"""Pipelines: the commands' bodies and multi-stage runs (the demo), above config and below the CLI.

:class:`~searchrl.pipelines.run.Run` holds what they share (task, data, models,
generators, stages); :mod:`.commands` the single-stage commands; :mod:`.demo` the
SoS / ReST / Guided-ReST comparison.
"""
