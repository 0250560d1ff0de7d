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

# `rldelta explain`'s output folder
EXPLAIN_JSON = "explain.json"
EXPLAIN_TABLE = "explain.parquet"

# `rldelta overlap`'s
OVERLAP_TABLE = "overlap.parquet"
OVERLAP_JSON = "overlap.json"
OVERLAP_PNG = "overlap.png"
EXPERT_OVERLAP_TABLE = "overlap_experts.parquet"

# `rldelta surgery`'s
SURGERY_JSON = "surgery.json"

# the probes' (`rldelta probe ...`)
LOGPROBS_JSON = "logprobs.json"
LOGPROBS_TABLE = "logprobs.parquet"
PHASES_TABLE = "phases.parquet"
ADVANTAGES_TABLE = "advantages.parquet"
FORMATS_JSON = "formats.json"
FORMATS_TABLE = "formats.parquet"
ACTIVATIONS_JSON = "activations.json"
ACTIVATIONS_TABLE = "activations.parquet"
NEURONS_TABLE = "neurons.parquet"

# the step recorder's, in a training run's folder: STEPS_FILE beside run.json, the rest in STEPS_DIR
STEPS_FILE = "steps.parquet"
STEPS_DIR = "steps"
STEPS_BASE_FILE = "base.safetensors"  # the bf16 copy at the run's start
FIRST_CHANGED_FILE = "first_changed.safetensors"
STEPS_SUMMARY_FILE = "summary.json"
