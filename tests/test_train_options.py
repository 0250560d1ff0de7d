"""`rldelta train`'s options are TrainConfig's fields: every field an option, listed by --help, reachable from
--config FILE.toml and --set key=value too, with the command line winning over --set, and --set over the file."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from rldelta.cli import app
from rldelta.cli import train as cli_train
from rldelta.train.config import TrainConfig

FIELDS = {f.name for f in fields(TrainConfig)}


def _flags(name: str) -> tuple[str, ...]:
    return cli_train.FLAGS.get(name, (f"--{name.replace('_', '-')}",))


def test_the_option_set_is_the_dataclass() -> None:
    command = typer.main.get_command(app).commands["train"]
    options = {p.name for p in command.params} - {"config", "set_"}
    assert options == FIELDS


def test_help_lists_every_field() -> None:
    r = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert r.exit_code == 0, r.output
    missing = [name for name in sorted(FIELDS) if not all(flag in r.output for flag in _flags(name))]
    assert not missing, f"not in `rldelta train --help`: {missing}"
    assert "--config" in r.output and "--set" in r.output


@pytest.fixture
def captured(monkeypatch):
    """The TrainConfig `rldelta train` would train, without training."""
    seen: list[TrainConfig] = []

    def fake_train(config: TrainConfig) -> Path:
        seen.append(config)
        return Path(config.output)

    monkeypatch.setattr("rldelta.train.trainers.train", fake_train)
    return seen


def test_config_file_set_and_options_in_that_order(tmp_path, captured) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('lr = 3e-6\nsteps = 7\nlr_scheduler = "cosine"\nwarmup_steps = 2\n')
    args = ["train", "-o", str(tmp_path / "run"), "--model", "m", "--config", str(toml)]
    args += ["--set", "steps=9", "--set", "epsilon=0.3", "--steps", "11"]
    args += ["--extra", "gradient_accumulation_steps=2", "--no-offline-gold-fallback"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    (c,) = captured
    # the file's, except where --set or an option says otherwise; fields no option had before are reachable
    assert (c.lr, c.lr_scheduler, c.warmup_steps, c.epsilon) == (3e-6, "cosine", 2, 0.3)
    assert c.steps == 11 and c.offline_gold_fallback is False
    assert c.extra == {"gradient_accumulation_steps": 2}
    assert c.model == "m" and c.output == str(tmp_path / "run")


@pytest.mark.parametrize(
    ("extra_args", "message"),
    [
        (["--set", "no_such_field=1"], "unknown training setting(s): no_such_field"),
        (["--set", "lr"], "--set 'lr': expected KEY=VALUE"),
        (["--set", "lr=-1"], "--lr must be > 0"),
    ],
)
def test_bad_settings_end_as_one_line(tmp_path, captured, extra_args, message) -> None:
    r = CliRunner().invoke(app, ["train", "-o", str(tmp_path / "run"), "--model", "m", *extra_args])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert not captured


def test_a_bad_config_file_is_one_line(tmp_path, captured) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1\n")
    r = CliRunner().invoke(app, ["train", "-o", str(tmp_path / "run"), "--model", "m", "--config", str(bad)])
    assert r.exit_code == 2 and f"{bad}: not valid TOML" in r.output.replace("\n", "")
