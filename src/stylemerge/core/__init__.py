"""Shared by every stage: files, a job's settings, precision, progress lines, trackers, provenance,
checkpoints and the Trainer loop that pretraining and the proxies share."""
