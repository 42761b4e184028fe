"""`<data-dir>/serve.json` and the admin commands that read it: they use serve's
configuration file, and refuse when their storage backend is not serve's."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.gc import runtime
from services.gc.serve_file import write_serve_file
from shared import config


def test_the_commands_follow_serves_file_and_refuse_another_backend(tmp_path: Path) -> None:
    conf = tmp_path / "dockyard.yml"
    conf.write_text("gc: {retention: ['** keep_last=5']}\n")
    write_serve_file(tmp_path, {"redis": "redis://127.0.0.1:1/0"}, str(tmp_path / "s"),
                     str(conf), "s3")
    assert runtime.served_config(tmp_path) == str(conf.resolve())
    # serve ran on S3 (chosen by its environment, say); this shell's config says
    # filesystem: the command must not go on against an empty local root.
    cfg = config.load(None, environ={})
    with pytest.raises(config.ConfigError, match="runs with 's3'"):
        runtime.apply_data_dir(cfg, tmp_path)
    cfg["storage"]["backend"] = "s3"
    runtime.apply_data_dir(cfg, tmp_path)
    assert cfg["storage"]["root"] == str(tmp_path / "s")
    assert cfg["gc"]["redis_url"] == "redis://127.0.0.1:1/0"


def test_a_serve_file_without_a_config_names_none(tmp_path: Path) -> None:
    write_serve_file(tmp_path, {"redis": "redis://127.0.0.1:1/0"}, "")
    assert runtime.served_config(tmp_path) is None
    assert runtime.served_config(tmp_path / "missing") is None
