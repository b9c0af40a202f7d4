"""The run's report: tables, the claims table, model cards, figures, ablation and replicates."""
