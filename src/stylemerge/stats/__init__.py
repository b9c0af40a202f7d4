"""Statistics of the tables: bootstrap and jackknife intervals, per-document paired changes."""
