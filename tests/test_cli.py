"""The command line: generate prints its summary, and errors name the problem with exit code 2."""

from typer.testing import CliRunner

from coldcast.cli import app
from coldcast.core.data import Dataset
from tests.worlds import TINY

runner = CliRunner()


def test_generate_writes_a_world_and_prints_a_summary(tmp_path):
    sets = [a for o in TINY for a in ("--set", o)]
    result = runner.invoke(app, ["generate", "--out", str(tmp_path / "w"), *sets, "--seed", "3"])
    assert result.exit_code == 0, result.output
    for heading in (
        "Impressions by source and surface",
        "Positive rate per label and source",
        "Popularity tiers",
        "New shows launched",
    ):
        assert heading in result.output
    ds = Dataset.open(tmp_path / "w")
    assert ds.spec().world.seed == 3
    assert ds.manifest["rows"] == 8000


def test_generate_refuses_to_overwrite(tmp_path):
    (tmp_path / "w").mkdir()
    result = runner.invoke(app, ["generate", "--out", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert "already exists" in result.output


def test_a_misspelt_key_exits_2_naming_it(tmp_path):
    result = runner.invoke(app, ["generate", "--out", str(tmp_path / "w"), "--set", "world.sede=3"])
    assert result.exit_code == 2
    assert "world.sede" in result.output
    assert not (tmp_path / "w").exists()


def test_spec_command_prints_the_resolved_spec():
    result = runner.invoke(app, ["spec", "--set", "world.users=321"])
    assert result.exit_code == 0
    assert "users: 321" in result.output


def test_every_option_has_help():
    for command in ("generate", "spec"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "--help" in result.output
