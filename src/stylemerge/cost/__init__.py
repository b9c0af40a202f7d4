"""The cost model of a config: GPU-hours per stage and item (FLOP-based: the method is in
:mod:`stylemerge.cost.stages`).

Modules: :mod:`~stylemerge.cost.sizes` (architectures, the known hub models of
``known_models.yaml``, each model's size), :mod:`~stylemerge.cost.data` (domains' documents and
tokens, lm-eval task sizes of ``harness_tasks.yaml``), :mod:`~stylemerge.cost.stages` (the passes
of every stage and their totals), :mod:`~stylemerge.cost.report` (tables and JSON) and
:mod:`~stylemerge.cost.cli` (``stylemerge-cost``).
"""
