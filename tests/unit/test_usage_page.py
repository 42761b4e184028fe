"""The usage page's rows: a repository of the pull-through cache is marked as a
cache, with its upstream escaped; an ordinary one is not."""

from __future__ import annotations

from services.router.ui.usage_page import UsagePage


def test_a_cached_repository_is_marked_with_its_upstream() -> None:
    figures = {"tags": 1, "manifests": 1, "tagged_bytes": 10, "exclusive_bytes": 10}
    cached = UsagePage._row("up/library/alpine",
                            {**figures, "cached_from": 'https://r.example/"><script>'})
    assert '<span class="chip" title="cached from https://r.example/&quot;&gt;&lt;script&gt;">' \
        'cached</span>' in cached
    assert "<script>" not in cached
    assert "cached" not in UsagePage._row("team/app", figures)
