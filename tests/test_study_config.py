"""The study config is checked whole, by type and range, before anything runs or is written; each problem is one
line naming the file, the key and the value. presets/example.toml documents every key, so it cannot drift."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from typing import get_type_hints

import pytest

from rldelta.study import PRESETS, PRESETS_DIR, StudyConfig, StudyError, config_from_dict, load_config, run_study
from rldelta.study.config import STUDY_OWNED, config_fields
from rldelta.study.formats_config import FormatsConfig
from rldelta.study.schema import conforms
from rldelta.train.config import TrainConfig

EXAMPLE = PRESETS_DIR / "example.toml"

# (TOML text, the key the message must name, the value as it must show, what it must say is expected)
BAD = [
    ('retrain = "no"\n', "retrain", "'no'", "true or false"),
    ("retrain = 1\n", "retrain", "1", "true or false"),
    ('atol = "x"\n', "atol", "'x'", "a number"),
    ("atol = -1.0\n", "atol", "-1.0", ">= 0"),
    ("eval_n = 1.5\n", "eval_n", "1.5", "an integer"),
    ("eval_n = 0\n", "eval_n", "0", ">= 1"),
    ("model = 5\n", "model", "5", "a string"),
    ("save_steps = 10\n", "save_steps", "10", "a string"),
    ('[train]\ntemperature = "hot"\n', "train.temperature", "'hot'", "a number"),
    ("[train]\nresume = 1\n", "train.resume", "resume", "set by the study"),
    ('steps = "2"\n', "steps", "'2'", "an integer"),
    ("steps = true\n", "steps", "True", "an integer"),
    ("seeds = [0, 1.5]\n", "seeds", "[0, 1.5]", "a list of integers"),
    ('probes = ["logprobs", 3]\n', "probes", "3", "a list of strings"),
    ("train = 5\n", "train", "5", "a table"),
    ("difficulty = 9\n", "difficulty", "9", "one of"),
    ('[formats]\nsteps = "a"\n', "formats.steps", "'a'", "an integer"),
    ("[formats]\nnoise = { code = true }\n", "formats.noise", "True", "a table of numbers"),
    ('[formats.train]\nlr = "fast"\n', "formats.train.lr", "'fast'", "a number"),
    ("[formats.train]\nseed = 1\n", "formats.train.seed", "seed", "set by the study"),
    # [formats] values that used to fail only after the grid had trained (a KeyError, or a message naming no file)
    ('[formats]\nsizes = ["1b"]\n', "formats.sizes", "'1b'", "choose from test, 1m, 5m, 30m"),
    ("[formats]\nbatch_size = 0\n", "formats.batch_size", "0", ">= 1"),
    ("[formats]\ndifficulty = 99\n", "formats.difficulty", "99", "one of"),
    ("[formats]\ndifficulties = [1, 9]\n", "formats.difficulties", "[1, 9]", "some of"),
    ("[formats]\nproportions = { code = -0.2, plain = 0.6, boxed = 0.6 }\n", "formats.proportions", "-0.2", "[0, 1]"),
    ("[formats]\nproportions = { code = 0.5 }\n", "formats.proportions", "0.5", "sum to 1"),
    ("[formats]\nnoise = { code = 2.0 }\n", "formats.noise", "2.0", "[0, 1]"),
    ("[formats]\nmax_minutes = 0\n", "formats.max_minutes", "0", "> 0"),
    ("[formats]\neval_prompts = 0\n", "formats.eval_prompts", "0", ">= 1"),
    ("[train]\nlr = nan\n", "lr", "nan", "finite"),
]


@pytest.mark.parametrize(("text", "key", "value", "expected"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_value_fails_at_once_naming_file_key_and_value(tmp_path, text, key, value, expected):
    f = tmp_path / "demo.toml"
    f.write_text(text)
    out = tmp_path / "out"
    with pytest.raises(StudyError) as e:
        run_study(f, out, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{f}: ") and "\n" not in msg
    assert re.search(rf"\b{re.escape(key)}\b", msg) and value in msg and expected in msg, msg
    assert not out.exists()  # nothing ran, nothing was written


def test_cli_bad_value_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from rldelta.cli import app

    f = tmp_path / "demo.toml"
    f.write_text('retrain = "no"\n')
    r = CliRunner().invoke(app, ["study", str(f), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "retrain must be true or false, got 'no'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_values_are_checked_not_converted():
    """A number may be written as an integer and stays one: what the user wrote is what the run hashes."""
    cfg = config_from_dict({"atol": 0, "train": {"lr": 1}}, source="x")
    assert cfg.atol == 0 and type(cfg.atol) is int and type(cfg.train["lr"]) is int
    assert config_from_dict({"difficulty": None}, source="x").difficulty is None


@pytest.mark.parametrize("name", [*PRESETS, "example"])
def test_presets_validate_and_round_trip(name):
    cfg = load_config(PRESETS_DIR / f"{name}.toml")
    assert config_from_dict(cfg.to_dict(), source=name).to_dict() == cfg.to_dict()


def _section(text: str, header: str | None) -> str:
    """The lines of one TOML table of `text` (None: the top level, before the first table)."""
    parts = re.split(r"^\[([\w.]+)\]\s*(?:#.*)?$", text, flags=re.M)
    if header is None:
        return parts[0]
    return next(body for name, body in zip(parts[1::2], parts[2::2]) if name == header)


def _documents(section: str, key: str) -> bool:
    """`key = ...` in the section, possibly commented out."""
    return re.search(rf"^#?\s*{key}\s*=", section, flags=re.M) is not None


def test_example_keys_are_fields_of_the_right_type():
    data = tomllib.loads(EXAMPLE.read_text())
    for cls, table, skip in (
        (StudyConfig, data, set()),
        (TrainConfig, data["train"], STUDY_OWNED),
        (FormatsConfig, data["formats"], set()),
    ):
        types = get_type_hints(cls)
        for key, value in table.items():
            assert key in types and key not in skip and key != "source", f"{cls.__name__} has no key {key}"
            assert conforms(value, types[key]), f"{key} = {value!r} is not {types[key]}"
    load_config(EXAMPLE)


def test_every_field_has_help_and_is_in_the_example():
    text = EXAMPLE.read_text()
    top, formats = _section(text, None), _section(text, "formats")
    for f in config_fields():
        assert f.metadata["help"].strip(), f.name
        table = f"[{f.name}]" in text
        assert table or _documents(top, f.name), f"example.toml does not document {f.name}"
    for f in fields(FormatsConfig):
        assert f.metadata["help"].strip(), f.name
        assert f"[formats.{f.name}]" in text or _documents(formats, f.name), f"example.toml lacks formats.{f.name}"
