"""The write fence between router processes (services/router/write_fence.py): two
instances on one file stand for two processes."""

from __future__ import annotations

from pathlib import Path

from services.router.write_fence import SLOT_BYTES, SLOTS, WriteFence


class Seen:
    def __init__(self) -> None:
        self.scopes: list[str] = []
        self.forgot = 0

    def invalidate(self, scope: str) -> None:
        self.scopes.append(scope)

    def forget_all(self) -> None:
        self.forgot += 1


def test_scopes_written_by_one_are_applied_by_the_other_once(tmp_path: Path) -> None:
    writer, reader = WriteFence(tmp_path / "f"), WriteFence(tmp_path / "f")
    seen = Seen()
    reader.catch_up(seen.invalidate, seen.forget_all)
    assert seen.scopes == []
    writer.announce(["repo:a/b", "catalog"])
    writer.announce(["repo:é/ü"])
    reader.catch_up(seen.invalidate, seen.forget_all)
    assert seen.scopes == ["repo:a/b", "catalog", "repo:é/ü"]
    reader.catch_up(seen.invalidate, seen.forget_all)
    assert seen.scopes == ["repo:a/b", "catalog", "repo:é/ü"] and seen.forgot == 0


def test_a_reader_too_far_behind_forgets_everything(tmp_path: Path) -> None:
    writer, reader = WriteFence(tmp_path / "f"), WriteFence(tmp_path / "f")
    for n in range(SLOTS + 1):
        writer.announce([f"repo:r{n}"])
    seen = Seen()
    reader.catch_up(seen.invalidate, seen.forget_all)
    assert seen.forgot == 1 and seen.scopes == []
    writer.announce(["repo:next"])
    reader.catch_up(seen.invalidate, seen.forget_all)
    assert seen.scopes == ["repo:next"]


def test_a_scope_too_long_for_a_slot_forgets_everything(tmp_path: Path) -> None:
    writer, reader = WriteFence(tmp_path / "f"), WriteFence(tmp_path / "f")
    writer.announce(["repo:" + "x" * SLOT_BYTES])
    seen = Seen()
    reader.catch_up(seen.invalidate, seen.forget_all)
    assert seen.forgot == 1


def test_a_new_process_starts_from_the_current_record(tmp_path: Path) -> None:
    WriteFence(tmp_path / "f").announce(["repo:old"])
    seen = Seen()
    WriteFence(tmp_path / "f").catch_up(seen.invalidate, seen.forget_all)
    assert seen.scopes == [] and seen.forgot == 0
