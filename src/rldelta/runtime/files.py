"""The names of the files and folders rldelta writes that more than one module reads: one home, so a reader and its
writer cannot drift apart. Kept free of imports so that any floor (the mask reader below the diff engine, the
probes reading a training run without the training stack) can name a file without importing its writer."""

from __future__ import annotations

# `rldelta diff`'s output folder
TENSORS_FILE = "tensors.parquet"
SUMMARY_FILE = "summary.json"
MASK_FILE = "mask.safetensors"  # also the name a mask takes inside any directory (`save_mask`)

# a training run's folder (run.json is read and written by train/runfiles.py)
CHECKPOINTS_DIR = "checkpoints"
TRAINER_DIR = "trainer"
RUN_JSON = "run.json"
METRICS_FILE = "metrics.parquet"
COMPLETIONS_FILE = "completions.parquet"

# a study's folder
REPORT_FILE = "report.html"
