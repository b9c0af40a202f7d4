"""The proxy stage: a small model fitted to one domain's style (the GRPO reward's judge)."""
