"""`rldelta probe activations`: how sparse the activations are as prompts get harder, and whether RL edits the
MLP neurons the task uses.

Prompts: the arith task's test split at every training difficulty, plus levels beyond the training range with more
digits per operand (`BEYOND_LEVELS`), `n_per_level` each, rendered with the model's chat template (generation
prompt added). Every non-padding prompt token counts, chat-template tokens included. Batches are padded on the
right, so each real token sees exactly the positions and context it has when its prompt runs alone.

Sites, per layer: "residual" is the output of each decoder block (captured by a forward hook on the block:
`output_hidden_states` would give the same for every block but the last, whose entry transformers replaces by the
final-normed state); "mlp" is the input of `mlp.down_proj`, the intermediate activation (act(gate)·up).

With `compare` (a tuned model folder), the same table is measured for it, and per MLP neuron the activation
frequency on the BASE model over the training-range levels is set beside the fraction of the neuron's weights the
update changed (bitwise in the base's stored dtype), with their correlation and a verdict.

Memory: one level's activations of all layers at a time (n_per_level prompts).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import torch

from rldelta import __version__
from rldelta.checkpoint import CheckpointError, open_checkpoint
from rldelta.columns import unit_schema
from rldelta.metrics.activations import (
    activation_frequency,
    hoyer,
    near_zero_frac,
    neuron_changed_frac,
    top_mass_share,
)
from rldelta.metrics.sparsity import changed_bitwise, narrower
from rldelta.probes import ProbeError
from rldelta.probes.activation_verdicts import (
    FLAT_SLOPE,
    SITES,
    VERDICT_SIGMAS,
    VERDICT_SPEARMAN,
    neuron_link,
    sparsity_verdict,
    summary_by_level,
)
from rldelta.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from rldelta.runtime.files import ACTIVATIONS_JSON, ACTIVATIONS_TABLE, NEURONS_TABLE
from rldelta.runtime.progress import progress_bar
from rldelta.train.tasks import TASKS, Arith, Example

PLOT_LEVELS = "sparsity_by_level.png"
PLOT_NEURONS = "neuron_freq_vs_changed.png"

# Beyond the training range: the hardest training level's shape (3 operands, + - *) with more digits per operand.
BEYOND_LEVELS: dict[int, tuple[int, int, str]] = {6: (3, 4, "+-*"), 7: (3, 5, "+-*")}
TOP_FRAC = 0.01  # top1_mass_share: the top 1% of units
# A unit counts as used on a token when |a| exceeds this fraction of the layer's RMS: ten times the near-zero
# threshold, so "used" means carrying a tenth of the layer's typical magnitude, not merely being nonzero (SiLU
# gates are never exactly zero, so at the near-zero threshold almost every neuron would be used on every token).
DEFAULT_FREQ_REL = 0.1

ACTIVATIONS_SCHEMA = unit_schema(
    [
        ("model", pa.string()),
        ("level", pa.int64()),
        ("beyond_training", pa.bool_()),
        ("layer", pa.int64()),
        ("site", pa.string()),
        ("near_zero_frac", pa.float64()),
        ("hoyer", pa.float64()),
        ("top1_mass_share", pa.float64()),
        ("tokens", pa.int64()),
    ]
)
NEURONS_SCHEMA = unit_schema(
    [
        ("layer", pa.int64()),
        ("neuron", pa.int64()),
        ("activation_freq", pa.float64()),
        ("changed_frac", pa.float64()),
        ("mean_abs_w", pa.float64()),
    ]
)


# ---- prompts ----------------------------------------------------------------------------------------------------


def extended_task(task: str = "arith") -> Arith:
    """The arith-style task `task` with the levels of `BEYOND_LEVELS` added; levels 1..5 are the task's own."""
    cls = TASKS.get(task)
    if cls is None or not issubclass(cls, Arith):
        arith_like = sorted(n for n, c in TASKS.items() if issubclass(c, Arith))
        raise ProbeError(f"probe activations needs an arith-style task ({', '.join(arith_like)}), not {task!r}")
    levels = {**cls.LEVELS, **BEYOND_LEVELS}
    # Same `name`: the split hash and the per-level RNG streams stay those of the task, so levels 1..5 are the
    # very test problems the task itself generates.
    return type(f"Extended{cls.__name__}", (cls,), {"LEVELS": levels, "difficulties": tuple(levels)})()


def training_levels(task: str = "arith") -> tuple[int, ...]:
    return tuple(TASKS[task].LEVELS) if task in TASKS and issubclass(TASKS[task], Arith) else ()


def ladder(task: str = "arith", n_per_level: int = 32, seed: int = 0) -> dict[int, list[Example]]:
    """The probe's prompts: level -> `n_per_level` test-split problems, training levels first."""
    t = extended_task(task)
    return {level: t.generate(n_per_level, seed=seed, split="test", difficulty=level) for level in t.difficulties}


def prompt_texts(tokenizer, examples: list[Example]) -> list[str]:
    """Each prompt rendered with the tokenizer's chat template, generation prompt added (tokenize with
    add_special_tokens=False: the template already holds them)."""
    return [tokenizer.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=False) for ex in examples]


# ---- capture ----------------------------------------------------------------------------------------------------


def _blocks(model) -> list:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ProbeError(f"{type(model).__name__}: no decoder `layers` to probe")
    for i, block in enumerate(layers):
        if not hasattr(getattr(block, "mlp", None), "down_proj"):
            raise ProbeError(f"{type(model).__name__}: layer {i} has no mlp.down_proj")
    return list(layers)


@contextmanager
def _capture(model) -> Iterator[tuple[list, list]]:
    """Hooks that store, per layer, the block output (residual) and the input of mlp.down_proj for one forward."""
    residual: list = []
    mlp: list = []
    handles = []

    def block_output_hook(idx):
        def hook(module, args, output):
            residual[idx] = output[0] if isinstance(output, tuple) else output

        return hook

    def down_proj_input_hook(idx):
        def hook(module, args):
            mlp[idx] = args[0]

        return hook

    blocks = _blocks(model)
    residual.extend([None] * len(blocks))
    mlp.extend([None] * len(blocks))
    try:
        for i, block in enumerate(blocks):
            handles.append(block.register_forward_hook(block_output_hook(i)))
            handles.append(block.mlp.down_proj.register_forward_pre_hook(down_proj_input_hook(i)))
        yield residual, mlp
    finally:
        for h in handles:
            h.remove()


def _batches(
    model, tokenizer, examples: list[Example], batch_size: int, advance: Callable[[str], None], label: str
) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """Per batch: per layer, the residual and mlp activations of its non-padding tokens, `[tokens, units]` fp32."""
    texts = prompt_texts(tokenizer, examples)
    tokenizer.padding_side = "right"
    device = next(model.parameters()).device
    with _capture(model) as (residual, mlp):
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.inference_mode():
                model(**enc, use_cache=False)
            keep = enc["attention_mask"].bool()
            yield ([r[keep].float().cpu() for r in residual], [m[keep].float().cpu() for m in mlp])
            advance(label)


# ---- measuring --------------------------------------------------------------------------------------------------


def _sparsity_rows(
    name: str,
    model,
    tokenizer,
    levels: dict[int, list[Example]],
    train: set[int],
    *,
    rel: float,
    batch_size: int,
    advance,
    stats: dict | None = None,
) -> list[dict]:
    """Rows of the activations table for one model. `stats`, when given, collects per layer the sum of squares and
    the entry count of the mlp activations over the training levels (the scale of the frequency pass)."""
    rows = []
    for level, examples in levels.items():
        per_layer: dict[str, list[list[torch.Tensor]]] = {}
        for res, mlp in _batches(model, tokenizer, examples, batch_size, advance, f"{name} level {level}"):
            for site, acts in (("residual", res), ("mlp", mlp)):
                chunks = per_layer.setdefault(site, [[] for _ in acts])
                for i, a in enumerate(acts):
                    chunks[i].append(a)
        for site in SITES:
            for layer, chunks in enumerate(per_layer[site]):
                h = torch.cat(chunks)
                rows.append(
                    {
                        "model": name,
                        "level": level,
                        "beyond_training": level not in train,
                        "layer": layer,
                        "site": site,
                        "near_zero_frac": near_zero_frac(h, rel),
                        "hoyer": hoyer(h),
                        "top1_mass_share": top_mass_share(h, TOP_FRAC),
                        "tokens": h.shape[0],
                    }
                )
                if stats is not None and site == "mlp" and level in train:
                    s = stats.setdefault(layer, [0.0, 0])
                    s[0] += float(h.double().square().sum())
                    s[1] += h.numel()
        del per_layer
    return rows


def _frequencies(
    model,
    tokenizer,
    levels: dict[int, list[Example]],
    train: set[int],
    stats: dict,
    *,
    freq_rel: float,
    batch_size: int,
    advance,
) -> dict[int, torch.Tensor]:
    """Per layer, each MLP neuron's activation frequency over all training-level tokens, against the RMS of the
    layer over those same tokens (from `stats`)."""
    scale = {layer: math.sqrt(ss / n) if n else float("nan") for layer, (ss, n) in stats.items()}
    counts: dict[int, torch.Tensor] = {}
    tokens = 0
    for level in sorted(train):
        for _, mlp in _batches(model, tokenizer, levels[level], batch_size, advance, f"frequency level {level}"):
            tokens += mlp[0].shape[0]
            for layer, a in enumerate(mlp):
                c = activation_frequency(a, freq_rel, scale=scale[layer]) * a.shape[0]
                counts[layer] = counts.get(layer, 0) + c.round()
    return {layer: c / tokens for layer, c in counts.items()}


def _mlp_names(model) -> list[dict[str, str | None]]:
    """Per layer, the checkpoint names of mlp.gate_proj (None if absent), up_proj and down_proj weights."""
    module_names = {id(m): n for n, m in model.named_modules()}
    out = []
    for i, block in enumerate(_blocks(model)):
        if not hasattr(block.mlp, "up_proj"):
            raise ProbeError(f"{type(model).__name__}: layer {i} has no mlp.up_proj")
        names = {}
        for proj in ("gate_proj", "up_proj", "down_proj"):
            mod = getattr(block.mlp, proj, None)
            names[proj] = None if mod is None else module_names[id(mod)] + ".weight"
        out.append(names)
    return out


def _neuron_mean_abs(weights: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """Each MLP neuron's mean |w| in the base: its rows of gate/up_proj and its column of down_proj."""
    total = weights["up_proj"].abs().sum(dim=1, dtype=torch.float64) + weights["down_proj"].abs().sum(
        dim=0, dtype=torch.float64
    )
    count = weights["up_proj"].shape[1] + weights["down_proj"].shape[0]
    if weights.get("gate_proj") is not None:
        total += weights["gate_proj"].abs().sum(dim=1, dtype=torch.float64)
        count += weights["gate_proj"].shape[1]
    return total / count


def _changed_fracs(  # noqa: C901
    model_dir: Path, compare: Path, names: list[dict[str, str | None]]
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, each MLP neuron's changed fraction (bitwise in the base's stored dtype) and its mean |w|."""
    try:
        base_ck, tuned_ck = open_checkpoint(model_dir), open_checkpoint(compare)
    except CheckpointError as e:
        raise ProbeError(str(e)) from None
    for layer in names:
        for n in layer.values():
            if n is None:
                continue
            for ck, where in ((base_ck, model_dir), (tuned_ck, compare)):
                if ck.aliases.get(n, n) not in ck:
                    raise ProbeError(f"{where}: MLP weight {n!r} is missing")
            b, t = base_ck.info(base_ck.aliases.get(n, n)), tuned_ck.info(tuned_ck.aliases.get(n, n))
            if b.shape != t.shape:
                raise ProbeError(f"tensor {n!r} has shape {b.shape} in {model_dir} but {t.shape} in {compare}")
    out = {}
    for i, layer in enumerate(names):
        masks, weights = {}, {}
        for proj, n in layer.items():
            if n is None:
                masks[proj] = weights[proj] = None
                continue
            b, t = base_ck.get(base_ck.aliases.get(n, n)), tuned_ck.get(tuned_ck.aliases.get(n, n))
            masks[proj] = changed_bitwise(b, t, narrower(b.dtype, t.dtype))  # as `rldelta diff` compares
            weights[proj] = b
        try:
            out[i] = (
                neuron_changed_frac(masks["gate_proj"], masks["up_proj"], masks["down_proj"]),
                _neuron_mean_abs(weights),
            )
        except ValueError as e:
            raise ProbeError(f"layer {i} MLP of {model_dir}: {e}") from None
    return out


# ---- summaries --------------------------------------------------------------------------------------------------


# ---- runner -----------------------------------------------------------------------------------------------------


def _model_dir(path: str | os.PathLike, role: str) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ProbeError(f"{p}: not a model folder (no config.json) — the {role} model")
    return p


def run_activations(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    compare: str | os.PathLike | None = None,
    task: str = "arith",
    n_per_level: int = 32,
    rel: float = 0.01,
    freq_rel: float = DEFAULT_FREQ_REL,
    batch_size: int = 16,
    seed: int = 0,
    device: str | None = "cpu",
    progress: bool | Callable[[int, int, str], None] = True,
    plot: bool = True,
    trained_levels: Sequence[int] | None = None,
) -> dict:
    """Measure activation sparsity per level, layer and site; with `compare`, also the neuron–update link.

    `trained_levels` are the levels RL trained on (a run with one --difficulty saw only that one); every other level
    counts as beyond the training range. Default: all of the task's own levels.
    Writes OUT/activations.parquet, OUT/activations.json, with `compare` OUT/neurons.parquet, and PNG plots.
    Returns the content of activations.json.
    """
    from rldelta.train.generation import load_for_eval

    if n_per_level < 1 or batch_size < 1:
        raise ProbeError(f"n_per_level and batch_size must be >= 1, got {n_per_level} and {batch_size}")
    if not (rel > 0 and freq_rel > 0):
        raise ProbeError(f"rel and freq_rel must be > 0, got {rel} and {freq_rel}")
    base_dir = _model_dir(model, "base")
    tuned_dir = _model_dir(compare, "compared") if compare is not None else None
    levels = ladder(task, n_per_level, seed)
    train = _trained(task, trained_levels)

    base, tokenizer = load_for_eval(base_dir, device=device)
    names = _mlp_names(base)
    changed = _changed_fracs(base_dir, tuned_dir, names) if tuned_dir is not None else None  # fail before the work

    per_model = sum(math.ceil(len(ex) / batch_size) for ex in levels.values())
    freq_pass = sum(math.ceil(len(levels[lv]) / batch_size) for lv in train)
    total = per_model + (per_model + freq_pass if tuned_dir is not None else 0)
    stats: dict = {}
    with progress_bar("activations", total, progress) as advance:
        kw = {"rel": rel, "batch_size": batch_size, "advance": advance}
        rows = _sparsity_rows(
            "base", base, tokenizer, levels, train, **kw, stats=stats if tuned_dir is not None else None
        )
        neurons: list[dict] = []
        if tuned_dir is not None:
            freq = _frequencies(
                base, tokenizer, levels, train, stats, freq_rel=freq_rel, batch_size=batch_size, advance=advance
            )
            del base
            tuned, tuned_tok = load_for_eval(tuned_dir, device=device)
            if len(_blocks(tuned)) != len(names):
                raise ProbeError(f"{tuned_dir}: {len(_blocks(tuned))} layers, but {base_dir} has {len(names)}")
            rows += _sparsity_rows("tuned", tuned, tuned_tok, levels, train, **kw)
            del tuned
            neurons = _neuron_rows(freq, changed, len(names))

    by_level = summary_by_level(rows)
    result = {
        "version": __version__,
        "model": str(model),
        "compare": None if compare is None else str(compare),
        "task": task,
        "settings": _settings(levels, train, rel, freq_rel, n_per_level, seed, batch_size, extended_task(task)),
        "sparsity": by_level,
        "sparsity_verdict": sparsity_verdict(by_level),
        "correlation": None,
        "verdict": None,
    }
    if neurons:
        result["correlation"], result["verdict"] = neuron_link(neurons, len(names))

    _write(Path(out), rows, neurons, result, plot)
    return result


def _write(out: Path, rows: list[dict], neurons: list[dict], result: dict, plot: bool) -> None:
    """activations.parquet, neurons.parquet (with a compared model), the plots, then activations.json."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(rows, out / ACTIVATIONS_TABLE, ACTIVATIONS_SCHEMA)
    if neurons:
        atomic_write_parquet(neurons, out / NEURONS_TABLE, NEURONS_SCHEMA)
    if plot:
        _plots(out, rows, neurons, result)
    atomic_write_json(out / ACTIVATIONS_JSON, result)


def _trained(task: str, trained_levels: Sequence[int] | None) -> set[int]:
    """The levels RL trained on: `trained_levels`, some of the task's own, or all of them."""
    train = set(training_levels(task))
    if trained_levels is not None:
        if not trained_levels or not set(trained_levels) <= train:
            raise ProbeError(f"trained_levels {list(trained_levels)} must be some of the task's levels {sorted(train)}")
        train = set(trained_levels)
    return train


def _neuron_rows(freq: list, changed: list, n_layers: int) -> list[dict]:
    """One row per MLP neuron: its activation frequency on the base, its changed fraction and its mean |w|."""
    neurons: list[dict] = []
    for layer in range(n_layers):
        f, (c, w) = freq[layer], changed[layer]
        if f.shape != c.shape:
            raise ProbeError(f"layer {layer}: {f.numel()} MLP activations but {c.numel()} neurons in weights")
        neurons += [
            {
                "layer": layer,
                "neuron": i,
                "activation_freq": float(a),
                "changed_frac": float(b),
                "mean_abs_w": float(m),
            }
            for i, (a, b, m) in enumerate(zip(f.tolist(), c.tolist(), w.tolist()))
        ]
    return neurons


def _settings(levels, train, rel, freq_rel, n_per_level, seed, batch_size, task) -> dict:
    """activations.json's settings: every choice the numbers depend on."""
    return {
        "rel": rel,
        "freq_rel": freq_rel,
        "top_frac": TOP_FRAC,
        "n_per_level": n_per_level,
        "seed": seed,
        "split": "test",
        "batch_size": batch_size,
        "levels": {str(lv): list(task.LEVELS[lv]) for lv in levels},
        "training_levels": sorted(train),
        "beyond_training_levels": sorted(set(levels) - train),
        "tokens": "every non-padding prompt token, chat template included",
        "sites": {"residual": "output of each decoder block", "mlp": "input of mlp.down_proj"},
        "activation_freq": "base model, training levels; |a| > freq_rel x RMS of the layer's mlp activations "
        "over those tokens",
        "changed_frac": "bitwise in the base's stored dtype; rows of gate/up_proj, columns of down_proj",
        "verdict_spearman": VERDICT_SPEARMAN,
        "verdict_sigmas": VERDICT_SIGMAS,
        "flat_slope": FLAT_SLOPE,
    }


def _plots(out: Path, rows: list[dict], neurons: list[dict], result: dict) -> None:
    import pandas as pd

    from rldelta.plots.activations import neuron_scatter_plot, sparsity_by_level_plot  # matplotlib: only when plotting

    atomic_write_bytes(out / PLOT_LEVELS, sparsity_by_level_plot(pd.DataFrame(rows)))
    if neurons:
        atomic_write_bytes(
            out / PLOT_NEURONS, neuron_scatter_plot(pd.DataFrame(neurons), result["correlation"]["overall"]["spearman"])
        )


__all__ = [
    "run_activations",
    "ProbeError",
    "ladder",
    "prompt_texts",
    "extended_task",
    "training_levels",
    "PLOT_LEVELS",
    "PLOT_NEURONS",
    "BEYOND_LEVELS",
]
