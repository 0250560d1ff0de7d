"""The `rldelta` command line: parse, call one library function, print. No computation lives here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from rldelta.errors import RldeltaError
from rldelta.train.config import TrainConfig, help_of  # light (no torch): the train options' help is read off it

app = typer.Typer(add_completion=False, no_args_is_help=True)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Measure and explain what RL fine-tuning changes in a language model's weights."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and leave with a non-zero code (never a traceback for bad input)."""
    # escape: a message may hold brackets ("rldelta[ray]", a tensor's shape) that rich would read as markup
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # one line at any width
    raise typer.Exit(code)


# ---- diff (issue 3) -------------------------------------------------------------------------------------------


@app.command()
def diff(
    base: Path = typer.Argument(..., help="Base checkpoint: dir, .safetensors file, sharded dir or hub cache folder."),
    tuned: Path = typer.Argument(..., help="Fine-tuned checkpoint, in any of the same layouts."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
    atol: float = typer.Option(1e-5, help="Tolerance for changed_atol: |tuned - base| > atol, in fp32."),
    compare_dtype: str = typer.Option("base", help="Dtype the bitwise comparison is made in: base, bf16, fp16, fp32."),
    rank: bool = typer.Option(True, "--rank/--no-rank", help="Compute the SVD-based rank columns."),
    save_mask: bool = typer.Option(False, "--save-mask", help="Also write OUT/mask.safetensors."),
    workers: int = typer.Option(1, help="Tensors computed in parallel (processes, or Ray tasks)."),
    backend: str = typer.Option("local", "--backend", help="Where tensors are computed: local (processes) or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Address of an existing Ray cluster."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUT."),
    strict: bool = typer.Option(False, "--strict", help="Missing or reshaped tensors are an error."),
) -> None:
    """How sparse and how high-rank the update from BASE to TUNED is, tensor by tensor."""
    from rldelta.diff import run_diff
    from rldelta.report.terminal import diff_table

    try:
        summary = run_diff(
            base,
            tuned,
            out,
            atol=atol,
            compare_dtype=compare_dtype,
            rank=rank,
            save_mask=save_mask,
            workers=workers,
            backend=backend,
            ray_address=ray_address,
            resume=resume,
            strict=strict,
            progress=True,
        )
    except RldeltaError as e:
        fail(str(e))
    Console().print(diff_table(summary))
    console.print(f"wrote {out}")


@app.command()
def demo(out: Path = typer.Option(Path("demo-out"), "-o", "--out", help="Output directory.")) -> None:
    """Build a small Llama-shaped pair with a planted update, diff it, and check the diff found what was planted."""
    import pandas as pd

    from rldelta.demo import LOW_RANK_TENSOR, build_demo_pair
    from rldelta.diff import run_diff
    from rldelta.diff_files import TENSORS_FILE
    from rldelta.report.terminal import diff_table

    base, tuned, planted = build_demo_pair(out / "pair")
    summary = run_diff(base, tuned, out / "diff", save_mask=True, progress=True)
    Console().print(diff_table(summary))
    row = pd.read_parquet(out / "diff" / TENSORS_FILE).set_index("name").loc[LOW_RANK_TENSOR]
    Console().print(
        f"{LOW_RANK_TENSOR}: a rank-2 update stored in bf16 -> numerical rank {int(row['rank'])}/"
        f"{int(row['max_rank'])}, effective rank {row['effective_rank']:.1f} (rounding noise fills the spectrum)"
    )
    found = summary["totals"]["changed"]
    want = sum(planted.values())
    verdict = "[green]matches[/]" if found == want else "[red]DIFFERS from[/]"
    Console().print(f"changed entries found: {found:,} — {verdict} the {want:,} planted. Results: {out / 'diff'}")
    if found != want:
        raise typer.Exit(1)


# ---- masks, overlap, explain (issue 4) -----------------------------------------------------------------------

mask_app = typer.Typer(no_args_is_help=True, help="Build, combine and inspect changed-masks (mask.safetensors).")
app.add_typer(mask_app, name="mask")


def _mask_done(counts, out: Path) -> None:
    console.print(
        f"wrote {out}: {counts.total_count:,} of {counts.total_numel:,} entries "
        f"({100 * counts.total_density:.3f}%) in {len(counts.count)} tensors",
        highlight=False,
    )


def _save_built(build, out: Path) -> None:
    """Run a mask builder and stream its result to OUT, turning bad input into a one-line error."""
    from rldelta.masks import save_mask

    try:
        counts = save_mask(build(), out)
    except RldeltaError as e:
        fail(str(e))
    _mask_done(counts, out)


@mask_app.command("from-diff")
def mask_from_diff_cmd(
    diff_dir: Path = typer.Argument(..., help="Output directory of `rldelta diff --save-mask`."),
    out: Path = typer.Option(..., "-o", "--out", help="Mask file (.safetensors) or directory."),
) -> None:
    """Copy the changed-mask of a diff into its own file."""
    from rldelta.masks import mask_from_diff

    _save_built(lambda: mask_from_diff(diff_dir), out)


@mask_app.command("threshold")
def mask_threshold_cmd(
    ckpt: Path = typer.Argument(..., help="Base checkpoint (or the only one, for a threshold on |W|)."),
    tuned: Optional[Path] = typer.Argument(None, help="Tuned checkpoint: threshold |tuned - base| instead of |W|."),
    threshold: float = typer.Option(1e-5, "--threshold", "-t", help="Entries with |Δ| (or |W|) above this."),
    below: bool = typer.Option(False, "--below", help="For |W|: entries below the threshold instead."),
    out: Path = typer.Option(..., "-o", "--out", help="Mask file (.safetensors) or directory."),
) -> None:
    """Mask of |Δ| > threshold (two checkpoints) or of |W| > threshold (one checkpoint)."""
    from rldelta.checkpoint import open_checkpoint
    from rldelta.masks import threshold_delta_mask, threshold_weight_mask

    if tuned is not None and below:
        fail("--below applies to a threshold on |W| (one checkpoint), not on |Δ|")
    _save_built(
        lambda: (
            threshold_delta_mask(open_checkpoint(ckpt), open_checkpoint(tuned), threshold)
            if tuned is not None
            else threshold_weight_mask(open_checkpoint(ckpt), threshold, below=below)
        ),
        out,
    )


@mask_app.command("topk")
def mask_topk_cmd(
    base: Path = typer.Argument(..., help="Base checkpoint."),
    tuned: Path = typer.Argument(..., help="Tuned checkpoint."),
    frac: float = typer.Option(..., "--frac", help="Fraction of each tensor's entries to keep, largest |Δ| first."),
    out: Path = typer.Option(..., "-o", "--out", help="Mask file (.safetensors) or directory."),
) -> None:
    """Per tensor, the FRAC of entries with the largest |tuned - base|."""
    from rldelta.checkpoint import open_checkpoint
    from rldelta.masks import topk_delta_mask

    _save_built(lambda: topk_delta_mask(open_checkpoint(base), open_checkpoint(tuned), frac), out)


@mask_app.command("random")
def mask_random_cmd(
    like: Path = typer.Argument(..., help="Mask or diff dir whose names, shapes and per-tensor counts to copy."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same mask."),
    density: Optional[float] = typer.Option(None, help="One density for every tensor instead of LIKE's counts."),
    out: Path = typer.Option(..., "-o", "--out", help="Mask file (.safetensors) or directory."),
) -> None:
    """Random mask with exactly LIKE's number of entries per tensor (seeded, reproducible)."""
    from rldelta.masks import load_mask, random_mask

    _save_built(lambda: random_mask(load_mask(like), seed, density=density), out)


@mask_app.command("combine")
def mask_combine_cmd(
    a: Path = typer.Argument(..., help="Mask A (file or diff dir)."),
    b: Path = typer.Argument(..., help="Mask B (file or diff dir)."),
    op: str = typer.Option(..., "--op", help="and (A∩B), or (A∪B), minus (A∖B)."),
    out: Path = typer.Option(..., "-o", "--out", help="Mask file (.safetensors) or directory."),
) -> None:
    """Intersection, union or difference of two masks."""
    from rldelta.masks import difference, intersection, load_mask, union

    ops = {"and": intersection, "or": union, "minus": difference}
    if op not in ops:
        fail(f"--op must be one of and, or, minus; not {op!r}")
    _save_built(lambda: ops[op](load_mask(a), load_mask(b)), out)


@mask_app.command("info")
def mask_info_cmd(mask: Path = typer.Argument(..., help="Mask file or diff dir.")) -> None:
    """Density per tensor and in total."""
    from rldelta.masks import load_mask, mask_counts
    from rldelta.report.terminal import mask_table

    try:
        counts = mask_counts(load_mask(mask))
    except RldeltaError as e:
        fail(str(e))
    Console().print(mask_table(counts, str(mask)))


@app.command()
def overlap(
    inputs: list[Path] = typer.Argument(..., help="Two or more masks or diff dirs (with mask.safetensors)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
) -> None:
    """One-sided overlap |A∩B|/|A|, Jaccard and the random expectation for every ordered pair."""
    from rldelta.overlap import run_overlap
    from rldelta.report.terminal import overlap_table

    try:
        result = run_overlap(inputs, out, progress=True)
    except RldeltaError as e:
        fail(str(e))
    Console().print(overlap_table(result))
    console.print(f"wrote {out}")


@app.command()
def explain(
    diff_dir: Path = typer.Argument(..., help="Output directory of `rldelta diff --save-mask`."),
    base: Path = typer.Option(..., "--base", help="The base checkpoint that diff was made from."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
    tuned_master: Optional[Path] = typer.Option(None, "--tuned-master", help="fp32 master weights of the run."),
    other: Optional[Path] = typer.Option(None, "--other", help="A second run's diff dir: magnitude-matched overlap."),
    rank_null: bool = typer.Option(True, "--rank-null/--no-rank-null", help="Random-sparse rank null (SVDs)."),
    rank_samples: int = typer.Option(3, help="Random matrices per tensor for the rank null."),
    seed: int = typer.Option(0, help="Seed of the rank null."),
) -> None:
    """Null models: rounding (|w|-dependent ULP), magnitude-matched overlap, random-sparse rank."""
    from rldelta.explain import run_explain
    from rldelta.report.terminal import explain_table

    try:
        res = run_explain(
            diff_dir,
            base,
            out,
            tuned_master=tuned_master,
            other=other,
            rank_null=rank_null,
            rank_samples=rank_samples,
            seed=seed,
            progress=True,
        )
    except RldeltaError as e:
        fail(str(e))
    Console().print(explain_table(res))
    console.print(f"wrote {out}")


# ---- models, train, eval (issue 5) ---------------------------------------------------------------------------

models_app = typer.Typer(no_args_is_help=True, help="Build the tiny test model or prepare a real one.")
app.add_typer(models_app, name="models")


@models_app.command("tiny")
def models_tiny(
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder."),
    seed: int = typer.Option(0, help="Seed of the random initialisation."),
) -> None:
    """A random-initialised tiny Llama with a locally built tokenizer, for tests and quick runs."""
    from rldelta.train.models import build_tiny

    try:
        path = build_tiny(out, seed=seed)
    except RldeltaError as e:
        fail(str(e))
    console.print(f"wrote {path}")


@models_app.command("prepare")
def models_prepare(
    name: str = typer.Argument(..., help="Model to prepare: smollm2-135m, or a path to any .gguf file."),
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder (reused if already prepared)."),
) -> None:
    """A real pretrained model (or any GGUF file), dequantized to a plain bf16 safetensors folder with tokenizer and
    chat template: the folder training starts from and `rldelta diff` reads."""
    from rldelta.train.models import prepare

    try:
        path = prepare(name, out)
    except RldeltaError as e:
        fail(str(e))
    console.print(f"ready: {path}")


@models_app.command("pretrain-mixture")
def models_pretrain_mixture(
    out: Path = typer.Option(..., "-o", "--out", help="Output model folder."),
    size: str = typer.Option("5m", help="Model size: 5m (~4.8M parameters), 30m (~28M) or test (tiny)."),
    proportions: str = typer.Option("code=0.5,plain=0.3,boxed=0.2", help="Share of each format in the corpus."),
    noise: str = typer.Option("code=0.2,plain=0,boxed=0", help="Share of wrong answers within each format."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (default: the size's, ~15 min on 2 cores)."),
    batch_size: int = typer.Option(32, help="Documents per step; the corpus is steps x batch_size documents."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (default: the size's)."),
    max_minutes: Optional[float] = typer.Option(
        None, help="Safety stop: fail, writing nothing, if training is not done in this many minutes (default: none)."
    ),
    difficulties: str = typer.Option("1,2", help="Arith levels of the corpus problems."),
    seed: int = typer.Option(0, help="Seed of the corpus and the initialisation."),
    threads: int = typer.Option(1, help="torch threads (1 is fastest on a busy 2-core machine)."),
) -> None:
    """Pretrain a small Llama from scratch on arithmetic solved in three formats (code, plain, boxed)."""
    from rldelta.train.corpus import parse_spec
    from rldelta.train.mixture import pretrain_mixture

    try:
        levels = [int(x) for x in difficulties.split(",") if x.strip()]
    except ValueError:
        fail(f"--difficulties must be comma-separated integers, not {difficulties!r}")
    try:
        path = pretrain_mixture(
            out,
            size=size,
            proportions=parse_spec(proportions),
            noise=parse_spec(noise),
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            max_minutes=max_minutes,
            difficulties=levels,
            seed=seed,
            threads=threads,
            progress=True,
        )
    except RldeltaError as e:
        fail(str(e))
    console.print(f"wrote {path}")


@app.command("eval")
def eval_(
    model: Path = typer.Argument(..., help="Model folder."),
    task: str = typer.Option(..., "--task", help="Task: arith or countdown."),
    n: int = typer.Option(200, "--n", help="Number of test problems."),
    seed: int = typer.Option(0, help="Seed of the test problems."),
    difficulty: Optional[int] = typer.Option(None, help="Only this difficulty level (default: all, mixed)."),
    batch_size: int = typer.Option(16, help="Prompts per generation batch."),
    max_new_tokens: int = typer.Option(64, help="Generation length limit."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the result as JSON here."),
) -> None:
    """Greedy accuracy and format rate of MODEL on a task's test split, overall and per difficulty."""
    from rldelta.report.terminal import eval_table
    from rldelta.train.evaluate import evaluate

    try:
        result = evaluate(
            model,
            task,
            n,
            seed=seed,
            difficulty=difficulty,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            out=out,
        )
    except RldeltaError as e:
        fail(str(e))
    Console().print(eval_table(result, str(model)))
    if out is not None:
        console.print(f"wrote {out}")


@app.command("train")
def train_(
    out: Path = typer.Option(..., "-o", "--out", help=help_of(TrainConfig, "output")),
    model: Optional[Path] = typer.Option(
        None, "--model", help=help_of(TrainConfig, "model") + " Required unless --resume."
    ),
    task: Optional[str] = typer.Option(None, "--task", help=help_of(TrainConfig, "task")),
    algo: Optional[str] = typer.Option(None, "--algo", help=help_of(TrainConfig, "algo")),
    seed: Optional[int] = typer.Option(None, "--seed", help=help_of(TrainConfig, "seed")),
    data_seed: Optional[int] = typer.Option(None, "--data-seed", help=help_of(TrainConfig, "data_seed")),
    steps: Optional[int] = typer.Option(None, "--steps", help=help_of(TrainConfig, "steps")),
    lr: Optional[float] = typer.Option(None, "--lr", help=help_of(TrainConfig, "lr")),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help=help_of(TrainConfig, "weight_decay")),
    prompts_per_step: Optional[int] = typer.Option(
        None, "--prompts-per-step", help=help_of(TrainConfig, "prompts_per_step")
    ),
    num_generations: Optional[int] = typer.Option(
        None, "--num-generations", help=help_of(TrainConfig, "num_generations")
    ),
    max_completion_length: Optional[int] = typer.Option(
        None, "--max-completion-length", help=help_of(TrainConfig, "max_completion_length")
    ),
    temperature: Optional[float] = typer.Option(None, "--temperature", help=help_of(TrainConfig, "temperature")),
    beta: Optional[float] = typer.Option(None, "--beta", help=help_of(TrainConfig, "beta")),
    precision: Optional[str] = typer.Option(None, "--precision", help=help_of(TrainConfig, "precision")),
    save_steps: Optional[str] = typer.Option(None, "--save-steps", help=help_of(TrainConfig, "save_steps")),
    mask: Optional[Path] = typer.Option(None, "--mask", help=help_of(TrainConfig, "mask")),
    advantages: Optional[str] = typer.Option(None, "--advantages", help=help_of(TrainConfig, "advantages")),
    rewards: Optional[str] = typer.Option(None, "--rewards", help=help_of(TrainConfig, "rewards")),
    difficulty: Optional[int] = typer.Option(None, "--difficulty", help=help_of(TrainConfig, "difficulty")),
    resume: bool = typer.Option(False, "--resume", help=help_of(TrainConfig, "resume")),
) -> None:
    """Train MODEL on a task with a TRL algorithm; checkpoints under OUT/checkpoints/step-N/ for `rldelta diff`."""
    from rldelta.train.config import make_config
    from rldelta.train.trainers import train

    try:
        config = make_config(
            str(out),
            resume=resume,
            model=str(model) if model else None,
            task=task,
            algo=algo,
            seed=seed,
            data_seed=data_seed,
            steps=steps,
            lr=lr,
            weight_decay=weight_decay,
            prompts_per_step=prompts_per_step,
            num_generations=num_generations,
            max_completion_length=max_completion_length,
            beta=beta,
            temperature=temperature,
            precision=precision,
            save_steps=save_steps,
            mask=str(mask) if mask else None,
            advantages=advantages,
            rewards=rewards,
            difficulty=difficulty,
        )
        run_dir = train(config)
    except RldeltaError as e:
        fail(str(e))
    except KeyboardInterrupt:
        console.print(f"interrupted; complete checkpoints are kept in {out}/checkpoints (continue with --resume)")
        raise typer.Exit(130) from None
    console.print(f"done: {run_dir}/checkpoints")


# ---- surgery, study (issue 6) --------------------------------------------------------------------------------

surgery_app = typer.Typer(
    no_args_is_help=True, help="Graft a masked part of the update onto BASE, or cut it out of TUNED."
)
app.add_typer(surgery_app, name="surgery")


def _surgery(kind: str, base: Path, tuned: Path, mask: Path, out: Path, control: Optional[str], seed: int) -> None:
    from rldelta.surgery import run_surgery

    try:
        res = run_surgery(kind, base, tuned, mask, out, control=control, seed=seed, progress=True)
    except RldeltaError as e:
        fail(str(e))
    t = res["totals"]
    which = f"random control (seed {seed}) of {mask}" if control else str(mask)
    console.print(
        f"[bold]{kind}[/]: {t['masked']:,} of {t['numel']:,} entries ({100 * (t['masked_frac'] or 0):.3f}%) "
        f"masked by {which}; {t['from_tuned']:,} from TUNED, {t['from_base']:,} from BASE; wrote {out}",
        highlight=False,
        soft_wrap=True,
    )
    if res["absent_from_mask"]:
        side = "BASE" if kind == "patch" else "TUNED"
        console.print(
            f"[yellow]{len(res['absent_from_mask'])} tensor(s) not in the mask, taken whole from {side}, "
            f"e.g. {res['absent_from_mask'][0]}[/]",
            highlight=False,
            soft_wrap=True,
        )


_SURGERY_MASK = typer.Option(..., "--mask", "-m", help="Mask file or diff dir (with mask.safetensors).")
_SURGERY_OUT = typer.Option(..., "-o", "--out", help="Output model folder.")
_SURGERY_CONTROL = typer.Option(None, "--control", help="random: a seeded random mask with the same per-tensor counts.")
_SURGERY_SEED = typer.Option(0, "--seed", help="Seed of --control random.")


@surgery_app.command("patch")
def surgery_patch(
    base: Path = typer.Argument(..., help="Base checkpoint."),
    tuned: Path = typer.Argument(..., help="Tuned checkpoint."),
    mask: Path = _SURGERY_MASK,
    out: Path = _SURGERY_OUT,
    control: Optional[str] = _SURGERY_CONTROL,
    seed: int = _SURGERY_SEED,
) -> None:
    """BASE plus TUNED's update on the masked entries only: is the subnetwork sufficient?"""
    _surgery("patch", base, tuned, mask, out, control, seed)


@surgery_app.command("revert")
def surgery_revert(
    base: Path = typer.Argument(..., help="Base checkpoint."),
    tuned: Path = typer.Argument(..., help="Tuned checkpoint."),
    mask: Path = _SURGERY_MASK,
    out: Path = _SURGERY_OUT,
    control: Optional[str] = _SURGERY_CONTROL,
    seed: int = _SURGERY_SEED,
) -> None:
    """TUNED with the masked entries reset to BASE: is the subnetwork necessary?"""
    _surgery("revert", base, tuned, mask, out, control, seed)


# ---- probes (issue 7) ------------------------------------------------------------------------------------------

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
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output directory (default RUN/probes/logprobs)."),
    positive: Optional[Path] = typer.Option(None, "--positive", help="RUN's twin trained with --advantages positive."),
    negative: Optional[Path] = typer.Option(None, "--negative", help="RUN's twin trained with --advantages negative."),
    prompts: int = typer.Option(16, help="Held-out prompts in the probe set (when it is built)."),
    samples: int = typer.Option(8, help="Base-model completions sampled per probe prompt."),
    eval_prompts: int = typer.Option(32, help="Test prompts for accuracy and pass@k of the split runs."),
    seed: int = typer.Option(0, help="Seed of the probe set and of the sampled evaluation."),
) -> None:
    """Suppression vs amplification: log p(correct) and log p(wrong) at every saved step, phases, pass@k."""
    from rldelta.probes.logprobs import OUT_DIR, run_logprobs

    try:
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
    except RldeltaError as e:
        fail(str(e))
    _print_verdicts(res, out or run / OUT_DIR)


@probe_app.command("activations")
def probe_activations(
    model: Path = typer.Argument(..., help="Model folder (the base)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="The RL-tuned model: link neurons to its update."),
    task: str = typer.Option("arith", help="An arith-style task (arith, digits): its levels, then longer operands."),
    n_per_level: int = typer.Option(32, help="Test prompts per difficulty level."),
    rel: float = typer.Option(0.01, help="Near-zero: |h| < rel x the layer's RMS."),
    freq_rel: float = typer.Option(0.1, help="A neuron is active on a token when |a| > freq_rel x the layer's RMS."),
    seed: int = typer.Option(0, help="Seed of the prompts."),
) -> None:
    """Hidden-state sparsity vs difficulty, and which MLP neurons RL edited (with --compare)."""
    from rldelta.probes.activations import run_activations

    try:
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
    except RldeltaError as e:
        fail(str(e))
    _print_verdicts({"verdict_sparsity": res["sparsity_verdict"], "verdict_neurons": res["verdict"]}, out)


@probe_app.command("formats")
def probe_formats(
    run: Path = typer.Argument(..., help="A training run directory of an online algorithm (it logs completions)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output directory (default RUN/probes/formats)."),
    threshold: float = typer.Option(0.9, help="A format dominates once its share stays at or above this."),
) -> None:
    """Format selection: the share of each output format at every RL step, which wins, and when."""
    from rldelta.probes.formats import OUT_DIR, run_formats

    try:
        res = run_formats(run, out, threshold=threshold)
    except RldeltaError as e:
        fail(str(e))
    _print_verdicts(res, out or run / OUT_DIR)


@app.command()
def study(
    config: Optional[Path] = typer.Argument(None, help="Study TOML (see the documented presets/example.toml)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Built-in study: tiny (<1 min), demo (SmolLM2), full."),
    out: Path = typer.Option(..., "-o", "--out", help="Study folder (re-run it to resume; finished work is reused)."),
    backend: str = typer.Option("local", "--backend", help="Where training runs go: local (process pool) or ray."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Address of an existing Ray cluster."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Training runs at once (default: CPUs, at most 4)."),
) -> None:
    """Train the RL grid, diff, overlap, explain, surgery, subnetwork retraining; write OUT/report.html."""
    from rldelta.study import preset_path, run_study

    if (config is None) == (preset is None):
        fail("give either CONFIG.toml or --preset tiny|demo|full")
    try:
        res = run_study(
            config if config is not None else preset_path(preset),
            out,
            backend=backend,
            workers=workers,
            ray_address=ray_address,
            progress=True,
        )
    except RldeltaError as e:
        fail(str(e))
    except KeyboardInterrupt:
        console.print(f"interrupted; run the same command again to finish the study in {out}")
        raise typer.Exit(130) from None
    for c in res["claims"]:
        console.print(f"[bold]{c['claim']}[/]: {c['verdict']}", highlight=False)
    console.print(f"report: {res['report']}", highlight=False, soft_wrap=True)


# ---- probes (issue 7) ----------------------------------------------------------------------------------------


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
