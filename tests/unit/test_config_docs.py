"""docs/configuration.md's key table is what `dockyard config reference` prints."""

from __future__ import annotations

from click.testing import CliRunner

from services.cli import main
from shared import config, config_docs


def test_the_documented_table_is_the_generated_one() -> None:
    text = config_docs.DOC.read_text()
    assert config_docs.with_table(text) == text, (
        "docs/configuration.md is out of date with shared/config.py: run scripts/config-docs")


def test_the_cli_prints_the_same_table_and_every_key() -> None:
    result = CliRunner().invoke(main, ["config", "reference", "--markdown"])
    assert result.exit_code == 0, result.output
    assert result.output == config.reference_markdown()
    plain = CliRunner().invoke(main, ["config", "reference"]).output.splitlines()
    rows = result.output.splitlines()[2:]
    assert len(rows) == len(plain) == len(config.reference())
    for (path, env, _, _), row in zip(config.reference(), rows, strict=True):
        assert row.startswith(f"| `{path}` | `{env}` |")
