"""The StepRecorder's cost: GRPO step time on SmolLM2-135M-Instruct with and without it, and its memory.

Runs of the same config (same seed, same data, so the same work per step), the recorder off and on, alternating
(`--repeats` pairs), so a change in the machine's load hits both; each step's wall time comes from metrics.parquet
(the first step of a run is left out: one-off warm-up). Beside them, the recorder's own per-step work timed alone
on the same model (`record()` over all 135M parameters, 1.25% of the entries moved per step, as in the demo),
which is what the ratio should approach on a quiet machine. Memory: the recorder's snapshot and bit arrays, as it
reports them.

    python benchmarks/bench_steps.py --model demo-out/models/smollm2-135m --steps 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


def _step_times(run: Path) -> list[float]:
    import pandas as pd

    return pd.read_parquet(run / "metrics.parquet")["seconds"].tolist()[1:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a prepared SmolLM2 folder (rldelta models prepare)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2, help="off/on pairs of runs, alternating")
    args = p.parse_args()

    import torch

    from rldelta.train.config import TrainConfig
    from rldelta.train.step_recorder import StepRecorder
    from rldelta.train.trainers import load_policy, train

    settings = dict(
        task="arith",
        difficulty=1,
        steps=args.steps,
        save_steps=str(args.steps),
        prompts_per_step=2,
        num_generations=4,
        max_completion_length=16,
        lr=1e-5,
        rewards="correctness",
        progress=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        times: dict[bool, list[float]] = {False: [], True: []}
        for k in range(args.repeats):  # off and on alternate, so a change in the machine's load hits both
            for on in (False, True):
                out = Path(tmp) / f"rec-{on}-{k}"
                train(TrainConfig(model=str(args.model), output=str(out), record_steps=on, **settings))
                times[on] += _step_times(out)

        # the recorder's own work per step, alone: record() over the fp32 policy's parameters
        model, _ = load_policy(str(args.model), "fp32")
        rec = StepRecorder(Path(tmp) / "alone", model)
        rec.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=10), None)
        alone = []
        gen = torch.Generator().manual_seed(0)
        for step in range(1, 6):
            with torch.no_grad():  # like a real step of the demo: ~1.25% of the bf16 entries move
                for prm in model.parameters():
                    hit = torch.rand(prm.shape, generator=gen) < 0.0125
                    prm.add_(hit * prm.abs().clamp_min(1e-3) * 0.02)
            t0 = time.perf_counter()
            rec.record(step)
            alone.append(time.perf_counter() - t0)
        rec.close()
        memory = rec.memory_bytes()
        params = sum(prm.numel() for prm in model.parameters())

    off, on = statistics.median(times[False]), statistics.median(times[True])
    rec_s = statistics.median(alone)
    print(f"threads: {torch.get_num_threads()}; steps timed: {len(times[False])} per setting, {args.repeats} runs each")
    print(f"step time, recorder off      : median {off:6.2f} s  (min {min(times[False]):.2f})")
    print(f"step time, recorder on       : median {on:6.2f} s  (min {min(times[True]):.2f})")
    print(f"  ratio on / off (medians)   : {on / off:6.3f}   (target <= 1.05)")
    print(f"record() alone, per step     : median {rec_s:6.3f} s over {params / 1e6:.0f}M parameters")
    print(f"  (step + record()) / step   : {(off + rec_s) / off:6.3f}")
    print(f"recorder memory              : {memory / 2**20:.0f} MiB ({memory / params:.3f} bytes per parameter)")


if __name__ == "__main__":
    main()
