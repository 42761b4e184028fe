"""HTML building blocks for the UI's pages.

The one rule: every value that came from the registry (names, tags, labels,
annotations, descriptions, media types, environment) goes through `h()`,
which escapes it for both element text and quoted attribute values. Markup
is only ever literal text in this package. Pages carry no inline script or
style (the Content-Security-Policy in `static.py` forbids both); the script
finds what it needs in ``data-`` attributes.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import quote, urlencode

from services.router.ui.static import asset_url

_SPECIAL = re.compile(r"[&<>\"']")


def h(value: object) -> str:
    text = "" if value is None else str(value)
    # Most values (tags, digests, times) have nothing to escape; finding that
    # out is cheaper than escaping, and a page escapes a thousand of them.
    return html.escape(text, quote=True) if _SPECIAL.search(text) else text


def repo_url(name: str) -> str:
    return "/ui/r/" + quote(name, safe="/")


def manifest_url(name: str, reference: str) -> str:
    return f"{repo_url(name)}/-/manifests/{quote(reference, safe=':')}"


def query_url(path: str, **params: object) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def size(n: object) -> str:
    """Bytes in SI units, as `docker images` prints them; the exact count in a title."""
    if not isinstance(n, int) or isinstance(n, bool):
        return "—"
    value, unit = float(n), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    text = f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
    return f'<span title="{n:,} bytes">{text}</span>'


def age(iso: str | None, now: float | None = None) -> str:
    """A `<time>`: "5 minutes ago", with the exact UTC time as its title."""
    if not iso:
        return "—"
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return h(iso)
    seconds = max(0, int((now or time.time()) - then))
    for span, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"),
                       (3600, "hour"), (60, "minute")):
        if seconds >= span:
            count = seconds // span
            text = f"{count} {unit}{'s' if count > 1 else ''} ago"
            break
    else:
        text = "just now"
    return f'<time datetime="{h(iso)}" title="{h(iso)}">{text}</time>'


def short_digest(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}" if hexpart else digest


def copy_button(text: str, label: str) -> str:
    """A button the script turns into one-click copy; hidden without the script."""
    return (f'<button type="button" class="copy" data-copy="{h(text)}" hidden>'
            f'{h(label)}</button>')


def code_with_copy(text: str, label: str) -> str:
    return f'<div class="command"><code>{h(text)}</code>{copy_button(text, label)}</div>'


def table(caption: str, headers: Iterable[str], rows: Iterable[str], *,
          table_id: str = "", empty: str = "None.") -> str:
    body = "".join(rows)
    if not body:
        return f"<p class=\"empty\">{h(empty)}</p>"
    head = "".join(headers)
    ident = f' id="{table_id}"' if table_id else ""
    return (f'<div class="scroll"><table{ident}><caption>{h(caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def key_values(pairs: Iterable[tuple[str, str]]) -> str:
    """A definition list; values are HTML already (escaped by the caller)."""
    items = "".join(f"<dt>{h(k)}</dt><dd>{v}</dd>" for k, v in pairs)
    return f'<dl class="facts">{items}</dl>'


def notice(text: str, kind: str = "info") -> str:
    return f'<p class="notice {kind}" role="status">{h(text)}</p>'


def auth_required(challenge: str) -> str:
    """What a page shows when the API answered 401: the script signs in and reloads."""
    return (f'<section class="notice warn" id="auth-required" data-challenge="{h(challenge)}">'
            "<h2>Sign in required</h2><p>This registry needs you to sign in to see this "
            "page.</p><noscript><p>Signing in needs JavaScript; API clients may use "
            "<code>docker login</code>.</p></noscript></section>")


def layout(title: str, body: str, *, page: str, host: str, repo: str = "",
           crumbs: list[tuple[str, str]] | None = None) -> bytes:
    trail = "".join(f'<li><a href="{h(url)}">{h(text)}</a></li>'
                    for text, url in (crumbs or []))
    nav = (f'<nav aria-label="Breadcrumb" class="crumbs"><ol>{trail}'
           f'<li aria-current="page">{h(title)}</li></ol></nav>') if crumbs else ""
    # Shown to everyone; the page itself tells who may not see it.
    current = ' aria-current="page"' if page == "usage" else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{h(title)} · dockyard</title>
<link rel="stylesheet" href="{asset_url('style.css')}">
<link rel="icon" href="{asset_url('favicon.svg')}" type="image/svg+xml">
<script type="module" src="{asset_url('app.js')}"></script>
</head>
<body data-page="{h(page)}" data-host="{h(host)}" data-repo="{h(repo)}">
<a class="skip" href="#main">Skip to content</a>
<header class="top">
<a class="brand" href="/ui/">dockyard</a>
<nav aria-label="Registry" class="site"><a href="/ui/usage" id="nav-usage"{current}>Usage</a></nav>
<div id="session" class="session" aria-live="polite"></div>
</header>
<main id="main">
{nav}
<p id="status" class="status" role="status" aria-live="polite"></p>
{body}
</main>
<dialog id="confirm" aria-labelledby="confirm-title">
<form method="dialog">
<h2 id="confirm-title">Delete?</h2>
<p id="confirm-text"></p>
<div class="buttons"><button value="cancel" autofocus>Cancel</button>
<button value="delete" class="danger" id="confirm-delete">Delete</button></div>
</form>
</dialog>
<dialog id="login" aria-labelledby="login-title">
<form method="dialog" id="login-form">
<h2 id="login-title">Sign in</h2>
<p id="login-error" class="error" role="alert"></p>
<label for="login-user">Username</label>
<input id="login-user" name="username" autocomplete="username" required>
<label for="login-password">Password</label>
<input id="login-password" name="password" type="password" autocomplete="current-password"
 required>
<div class="buttons"><button value="cancel" formnovalidate>Cancel</button>
<button value="login" class="primary">Sign in</button></div>
</form>
</dialog>
</body>
</html>
""".encode()
