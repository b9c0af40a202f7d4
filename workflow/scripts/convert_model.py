# Translation only: snakemake.* -> stylemerge.models.gguf.import_model
from stylemerge.core.job import use_threads
from stylemerge.core.joblog import to_file
from stylemerge.models.gguf import import_model, source_from_config

with to_file(snakemake.log[0]):
    use_threads(snakemake.threads)
    import_model(
        source_from_config(snakemake.params.gguf),
        out_dir=snakemake.output[0],
        work_dir=snakemake.params.downloads,
        dtype=snakemake.params.gguf["dtype"],
    )
