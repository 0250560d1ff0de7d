"""The names of the files `rldelta diff` writes into its output folder (besides the mask, whose name `masks` owns).

They live apart from the diff engine so that the mask reader, which sits below it, can recognise a diff folder
without importing it.
"""

from __future__ import annotations

TENSORS_FILE = "tensors.parquet"
SUMMARY_FILE = "summary.json"
