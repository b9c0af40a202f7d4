"""The cost model of a config: GPU-hours per stage and item (FLOP-based: the method is in
:mod:`stylemerge.cost.stages`) and the memory each job requests (the rules' ``mem_mb``: the
method is in :mod:`stylemerge.cost.memory`).

Modules: :mod:`~stylemerge.cost.sizes` (architectures, the known hub models of
``known_models.yaml``, each model's size), :mod:`~stylemerge.cost.data` (domains' documents and
tokens, lm-eval task sizes of ``harness_tasks.yaml``), :mod:`~stylemerge.cost.stages` (the passes
of every stage and their totals), :mod:`~stylemerge.cost.memory` (the terms of a job's memory),
:mod:`~stylemerge.cost.jobs` (every job's request, as the rules and ``make_tables`` use it),
:mod:`~stylemerge.cost.report` (tables and JSON) and :mod:`~stylemerge.cost.cli`
(``stylemerge-cost``).
"""
