"""The FasterMiVOS benchmark (``python benchmark.py`` or ``python -m benchmark``).

* :mod:`benchmark.workload`: the clips, interactions and comparisons;
* :mod:`benchmark.modes`: precision modes, decided with :mod:`util.precision`;
* :mod:`benchmark.original_path`: the original's propagation compute path (mode ``orig``);
* :mod:`benchmark.weights`: checkpoints (formula weights or a seeded init), loaded with :mod:`model.factory`;
* :mod:`benchmark.runner`: one mode per worker process; :mod:`benchmark.report`: schema, baseline, tables;
* :mod:`benchmark.cli`: arguments and orchestration.
"""
