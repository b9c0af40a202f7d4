"""The cost model of a config: GPU-hours per stage and item (FLOP-based: the method is in
:mod:`stylemerge.resources.stages`) and the memory each job requests (the rules' ``mem_mb``: the
method is in :mod:`stylemerge.resources.memory`).

Modules: :mod:`~stylemerge.resources.sizes` (architectures, the known hub models of
``known_models.yaml``, each model's size), :mod:`~stylemerge.resources.data` (domains' documents and
tokens, lm-eval task sizes of ``harness_tasks.yaml``), :mod:`~stylemerge.resources.stages` (the
passes
of every stage and their totals), :mod:`~stylemerge.resources.memory` (the terms of a job's memory),
:mod:`~stylemerge.resources.jobs` (every job's request, as the rules and ``make_tables`` use it),
:mod:`~stylemerge.resources.report` (tables and JSON) and :mod:`~stylemerge.cli.cost`
(``stylemerge-cost``).
"""
