"""The think stage: only the <think>/</think> embedding rows are trained."""
