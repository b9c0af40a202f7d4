"""stylemerge: the library behind the workflow (shards, tiny models, adapters, merges, evaluation).

Each module holds one stage's logic as plain functions over plain values; the Snakemake
scripts in ``workflow/scripts`` only translate ``snakemake.*`` into one call here.
"""

__version__ = "0.1.0"
