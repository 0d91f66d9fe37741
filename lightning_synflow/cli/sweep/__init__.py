"""``lightning-synflow sweep``: test accuracy against compression over methods, compressions and seeds.

Each grid point is an ordinary ``fit`` of one YAML config followed by ``test`` (:mod:`.run`), with the
point's pruning written into the parsed config (:mod:`.config`). Results are appended to ``results.csv`` after
every run, so an interrupted sweep resumes where it stopped (:mod:`.results`); ``accuracy.png`` and a summary
table come at the end (:mod:`.summary`). :mod:`.grid` holds the grid and the output folder's layout,
:mod:`.command` the command line, :mod:`.wandb_sweep` the ``--wandb-sweep`` file.

Example::

    lightning-synflow sweep --config configs/digits_synflow.yaml --methods synflow,snip --compressions 10,100 --seeds 3
"""

from lightning_synflow.cli.sweep.command import sweep_main

__all__ = ["sweep_main"]
