"""The compute an RL run spent, from its folder: every sampled completion (RUN/completions.parquet) tokenized with
the base model's tokenizer and counted by metrics.compute.rl_compute, for the steering comparison's "share of RL's
compute".

A completion's token count is its text's tokens plus the end-of-sequence token, or the length cap when the text
reached it (the text keeps no trace of how generation stopped). Wall time is the run's start to finish in run.json.
"""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path

from rldelta.metrics.compute import Compute, rl_compute
from rldelta.probes import ProbeError, read_run
from rldelta.runtime.files import COMPLETIONS_FILE

COUNTED_FAMILIES = ("grpo", "rloo", "ppo", "prime")  # one policy sample per completion row, a group per prompt
SIDE_MODEL_FAMILIES = ("ppo", "prime")  # a second model of the base's size trains next to the policy


def _wall_seconds(record: dict) -> float | None:
    try:
        fmt = "%Y-%m-%dT%H:%M:%S%z"
        return (datetime.strptime(record["finished"], fmt) - datetime.strptime(record["started"], fmt)).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def run_compute(run_dir: str | os.PathLike) -> Compute:
    """The forward/backward tokens and FLOPs of an online RL run of the GRPO family, RLOO, PPO or PRIME."""
    import pandas as pd
    from transformers import AutoTokenizer

    from rldelta.checkpoint import open_checkpoint
    from rldelta.train.algorithms import ALGORITHMS

    run_dir = Path(run_dir)
    record = read_run(run_dir)
    config = record["config"]
    algo = ALGORITHMS.get(config.get("algo", ""))
    if algo is None or algo.family not in COUNTED_FAMILIES:
        raise ProbeError(
            f"{run_dir}: compute is counted for {', '.join(COUNTED_FAMILIES)} runs, not {config.get('algo')!r}"
        )
    table = run_dir / COMPLETIONS_FILE
    if not table.is_file():
        raise ProbeError(f"{table}: missing (the run's sampled completions are what is counted)")
    df = pd.read_parquet(table, columns=["prompt", "completion"])
    model = config["model"]
    try:
        tok = AutoTokenizer.from_pretrained(model)
        ckpt = open_checkpoint(model)
    except Exception as e:  # transformers and the readers raise several types for a missing or damaged folder
        raise ProbeError(f"{model}: cannot read the base model ({str(e).splitlines()[0]})") from None
    params = sum(math.prod(ckpt.info(n).shape) for n in ckpt.names())
    cap = int(config.get("max_completion_length", 0)) or None

    def n_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False).input_ids)

    prompt_len = {
        p: n_tokens(
            tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        )
        for p in set(df["prompt"])
    }
    completion_len = []
    for text in df["completion"]:
        n = n_tokens(str(text))
        completion_len.append(n if cap is not None and n >= cap else n + 1)
    beta = config.get("beta")
    beta = algo.beta if beta is None else beta
    iterations = config.get("ppo_epochs") or config.get("extra", {}).get("num_iterations")
    iterations = int(iterations or algo.trl_args.get("num_iterations", 1))
    compute = rl_compute(
        params,
        [prompt_len[p] for p in df["prompt"]],
        completion_len,
        beta=beta or 0.0,
        iterations=iterations,
        critic_params=params if algo.family in SIDE_MODEL_FAMILIES else 0,
    )
    wall = _wall_seconds(record)
    return compute if wall is None else compute.timed(wall)
