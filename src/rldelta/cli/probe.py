"""`rldelta probe ...`: the three mechanism probes."""

from __future__ import annotations

from pathlib import Path

import typer

from rldelta.cli.app import app, console

probe_app = typer.Typer(no_args_is_help=True, help="Mechanism probes: log-probs, formats, activation sparsity.")
app.add_typer(probe_app, name="probe")


def _print_verdicts(summary: dict, out: Path) -> None:
    for key, value in summary.items():
        if key.startswith("verdict") and isinstance(value, str):
            console.print(
                f"[bold]{key.removeprefix('verdict_').replace('_', ' ') or 'verdict'}:[/] {value}",
                highlight=False,
                soft_wrap=True,
            )
    console.print(f"wrote {out}")


@probe_app.command("logprobs")
def probe_logprobs(
    run: Path = typer.Argument(..., help="A training run directory (rldelta train -o RUN)."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Output directory (default RUN/probes/logprobs)."),
    positive: Path | None = typer.Option(None, "--positive", help="RUN's twin trained with --advantages positive."),
    negative: Path | None = typer.Option(None, "--negative", help="RUN's twin trained with --advantages negative."),
    prompts: int = typer.Option(16, help="Held-out prompts in the probe set (when it is built)."),
    samples: int = typer.Option(8, help="Base-model completions sampled per probe prompt."),
    eval_prompts: int = typer.Option(32, help="Test prompts for accuracy and pass@k of the split runs."),
    seed: int = typer.Option(0, help="Seed of the probe set and of the sampled evaluation."),
) -> None:
    """Suppression vs amplification: log p(correct) and log p(wrong) at every saved step, phases, pass@k."""
    from rldelta.probes.logprobs import OUT_DIR, run_logprobs

    res = run_logprobs(
        run,
        out,
        positive=positive,
        negative=negative,
        n_prompts=prompts,
        k=samples,
        eval_prompts=eval_prompts,
        seed=seed,
        progress=True,
    )
    _print_verdicts(res, out or run / OUT_DIR)


@probe_app.command("activations")
def probe_activations(
    model: Path = typer.Argument(..., help="Model folder (the base)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
    compare: Path | None = typer.Option(None, "--compare", help="The RL-tuned model: link neurons to its update."),
    task: str = typer.Option("arith", help="An arith-style task (arith, digits): its levels, then longer operands."),
    n_per_level: int = typer.Option(32, help="Test prompts per difficulty level."),
    rel: float = typer.Option(0.01, help="Near-zero: |h| < rel x the layer's RMS."),
    freq_rel: float = typer.Option(0.1, help="A neuron is active on a token when |a| > freq_rel x the layer's RMS."),
    seed: int = typer.Option(0, help="Seed of the prompts."),
) -> None:
    """Hidden-state sparsity vs difficulty, and which MLP neurons RL edited (with --compare)."""
    from rldelta.probes.activations import run_activations

    res = run_activations(
        model,
        out,
        compare=compare,
        task=task,
        n_per_level=n_per_level,
        rel=rel,
        freq_rel=freq_rel,
        seed=seed,
        progress=True,
    )
    _print_verdicts({"verdict_sparsity": res["sparsity_verdict"], "verdict_neurons": res["verdict"]}, out)


@probe_app.command("formats")
def probe_formats(
    run: Path = typer.Argument(..., help="A training run directory of an online algorithm (it logs completions)."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Output directory (default RUN/probes/formats)."),
    threshold: float = typer.Option(0.9, help="A format dominates once its share stays at or above this."),
) -> None:
    """Format selection: the share of each output format at every RL step, which wins, and when."""
    from rldelta.probes.formats import OUT_DIR, run_formats

    res = run_formats(run, out, threshold=threshold)
    _print_verdicts(res, out or run / OUT_DIR)
