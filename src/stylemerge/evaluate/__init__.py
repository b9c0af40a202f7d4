"""Evaluation: lm-evaluation-harness runs, the packaged tasks' data, and text diversity."""
