"""The merge stage: mergekit runs (Karcher mean and the other methods), entropy calibration,
and applying an adapter to its base."""
