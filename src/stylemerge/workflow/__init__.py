"""What the Snakemake workflow calls: config validation, the hub revision lock, and a
Snakemake job translated into the library's settings."""
