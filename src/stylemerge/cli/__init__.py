"""Developer commands: the GPU check, the cost model, the layout check."""
