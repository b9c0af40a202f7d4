"""Sampling from a model: prompt windows and batched generation (shared by GRPO and
diversity), and vLLM's engine."""
