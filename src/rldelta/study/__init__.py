"""`rldelta study`: the whole question in one command — train a grid of RL runs, measure, test the explanations.

    STUDY/study.json                       the resolved config
    STUDY/models/<name>/                   the base model (built or prepared once)
    STUDY/runs/<label>-<hash>/             one `rldelta train` run per grid cell; the hash is of its full TrainConfig
    STUDY/diffs/<run>/step-N[-fp32]/       `rldelta diff --save-mask` of every saved checkpoint against the base
    STUDY/evals/<model>-<hash>.json        greedy accuracy (`rldelta eval`) of base, finals, surgeries, retrain
    STUDY/overlap/                         `rldelta overlap` of all final changed-masks
    STUDY/explain/<run>/                   `rldelta explain` (null models), with the fp32 master and the other seed
    STUDY/surgery/<name>/                  `rldelta surgery` outputs (model folder removed once evaluated)
    STUDY/compare/retrain.json             subnetwork-only retraining vs the full run (overlap, cosine of the Δs)
    STUDY/tables/*.{parquet,csv}           every number the report shows
    STUDY/report.html                      the report (report/html.py)

Every stage writes its files atomically and is skipped when they exist, so a re-run, or a study that was killed,
redoes nothing already complete. A training run counts as complete when its run.json says `completed` and the
checkpoint of its last step exists; an interrupted one is resumed from its last Trainer checkpoint.

The package, bottom to top: config (StudyConfig, the one schema, and loading; schema checks types against it),
folders (run identity and folders), log, runs (scheduling the training runs), stages and probes (the cached
measuring stages), claims (verdict rules), headline (the headline numbers with their intervals, the claims table),
why (the "Why sparse, yet full-rank?" table), tables and probe_tables (every number of the report), run (run_study, the plan).
The cause analysis's runs (SFT on own vs foreign-style samples, RL with KL) live in STUDY/runs/cause-*.
"""

from __future__ import annotations

from rldelta.study.config import (
    BUILTIN_MODELS,
    PRESETS,
    PRESETS_DIR,
    PROBES,
    StudyConfig,
    StudyError,
    config_from_dict,
    load_config,
    preset_path,
)
from rldelta.study.folders import Run, run_complete
from rldelta.study.run import run_study
from rldelta.study.tables import build_tables, export_tables

__all__ = [
    "BUILTIN_MODELS",
    "PRESETS",
    "PRESETS_DIR",
    "PROBES",
    "Run",
    "StudyConfig",
    "StudyError",
    "build_tables",
    "config_from_dict",
    "export_tables",
    "load_config",
    "preset_path",
    "run_complete",
    "run_study",
]
