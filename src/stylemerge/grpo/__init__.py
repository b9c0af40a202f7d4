"""The GRPO stage: the LoRA adapter trained with trl's GRPOTrainer, its rewards, MARA, and
what this code needs from trl (its GRPOConfig fields and defaults)."""
