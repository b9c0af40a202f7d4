# Translation only: snakemake.* -> stylemerge.data.shards.write_shard_index
from stylemerge.core.joblog import to_file
from stylemerge.data.shards import write_shard_index

with to_file(snakemake.log[0]):
    write_shard_index(snakemake.input, snakemake.output[0])
