# Translation only: snakemake.* -> stylemerge.shards.write_shard_index
from stylemerge.joblog import to_file
from stylemerge.shards import write_shard_index

with to_file(snakemake.log[0]):
    write_shard_index(snakemake.input, snakemake.output[0])
