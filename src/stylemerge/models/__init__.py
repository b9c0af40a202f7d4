"""Models: the reference to one (hub id or directory, the checks), names, GGUF import,
availability of comparisons, and the tiny models the embedded default pretrains."""
