"""`dockyard gc`, `dockyard usage`, `dockyard fsck` and `dockyard repo delete`.

Each runs against a live deployment: `--data-dir D` for the one that
`dockyard serve --data-dir D` runs, or `--config FILE` (and the environment)
for a scaled-out one whose storage root this machine mounts.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from services.gc.report import Report, Terminal, human_bytes
from shared import config as config_mod

# `services.gc.runtime` (redis, the collector) is imported inside each command:
# every `dockyard` invocation, `serve`'s children included, loads this module.


def deployment_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--data-dir", type=click.Path(file_okay=False, exists=True),
                     help="The --data-dir of a running `dockyard serve`.")(f)
    return click.option("--config", "config_path", type=click.Path(dir_okay=False),
                        envvar="DOCKYARD_CONFIG", help="YAML configuration file.")(f)


def load(config_path: str | None, data_dir: str | None) -> dict[str, Any]:
    from services.gc import runtime

    try:
        if config_path is None and data_dir is not None:
            # The file `serve` runs with: its retention, webhooks and mirrors apply.
            config_path = runtime.served_config(Path(data_dir).resolve())
        cfg = config_mod.load(config_path)
        if data_dir is not None:
            runtime.apply_data_dir(cfg, Path(data_dir).resolve())
        runtime.redis_url(cfg)
        runtime.settings(cfg)
    except config_mod.ConfigError as e:
        raise click.ClickException(f"configuration error: {e}") from None
    return cfg


def print_summary(report: Report) -> None:
    verb = "would delete" if report.dry_run else "deleted"
    counts = report.summary()["counts"]
    assert isinstance(counts, dict)
    parts = [f"{counts['blob']} blobs", f"{counts['manifest']} manifests",
             f"{counts['tag']} tags", f"{counts['layer-link']} layer links",
             f"{counts['upload']} upload sessions"]
    click.echo(f"{verb} {', '.join(parts)}; {human_bytes(report.bytes)} "
               f"({report.bytes} bytes) {'to reclaim' if report.dry_run else 'reclaimed'} "
               f"in {report.finished - report.started:.1f}s")
    if report.spared:
        click.echo(f"kept {report.spared} candidates that writers touched during the run")


@click.command(name="gc")
@deployment_options
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--grace", type=int, help="Override gc.grace, in seconds.")
@click.option("--untagged-max-age", type=int,
              help="Override gc.untagged_max_age, in seconds (-1: keep untagged).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for a collection already running on this root.")
@click.option("--nice", type=click.IntRange(0, 19), default=0, show_default=True,
              help="Lower this process's CPU priority, so that serving comes first.")
def gc_command(config_path: str | None, data_dir: str | None, dry_run: bool,
               grace: int | None, untagged_max_age: int | None, as_json: bool,
               wait: bool, nice: int) -> None:
    """Collect garbage once: unreferenced blobs, manifests, links and uploads."""
    from services.gc import runtime

    if nice:
        os.nice(nice)
    cfg = load(config_path, data_dir)
    overrides: dict[str, Any] = {}
    if grace is not None:
        overrides["grace"] = float(max(grace, 0))
    if untagged_max_age is not None:
        overrides["untagged_max_age"] = None if untagged_max_age < 0 else float(untagged_max_age)
    collector = runtime.collector(cfg, progress=None if as_json else Terminal(),
                                  overrides=overrides)
    report = collector.run(dry_run=dry_run, wait=wait)
    if report is None:
        raise click.ClickException("another collection is running on this storage root")
    if not dry_run:
        runtime.record(collector, report, cfg)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=1))
        return
    if dry_run:
        for item in report.items:
            where = f"{item.repository} " if item.repository else ""
            click.echo(f"{item.kind}\t{where}{item.name}\t{item.bytes}")
    print_summary(report)
    sys.stdout.flush()


def registry_url(config_path: str | None, data_dir: str | None, url: str | None) -> str:
    """The router's URL: given, from `serve`'s file under --data-dir, or router.listen."""
    from services.gc import runtime

    if url:
        return url.rstrip("/")
    if data_dir is not None:
        try:
            served = json.loads((Path(data_dir) / runtime.SERVE_FILE).read_text())
        except (OSError, ValueError):
            raise click.ClickException(f"{data_dir}: no {runtime.SERVE_FILE}; is "
                                       "`dockyard serve` running there?") from None
        return str(served["router"]).rstrip("/")
    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as e:
        raise click.ClickException(f"configuration error: {e}") from None
    return f"http://{cfg['router']['listen']}"


@click.group(name="repo")
def repo_group() -> None:
    """Repository administration."""


@repo_group.command(name="delete")
@click.argument("name")
@deployment_options
@click.option("--url", help="The registry's URL (default: from --data-dir or router.listen).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--user", help="With access control on: a user who may delete NAME; the "
              "password comes from DOCKYARD_PASSWORD, or is asked for.")
def repo_delete(name: str, config_path: str | None, data_dir: str | None, url: str | None,
                yes: bool, user: str | None) -> None:
    """Delete repository NAME: every tag and manifest. `dockyard gc` then reclaims
    its layers (after gc.grace)."""
    import base64
    import os
    import urllib.error
    import urllib.parse
    import urllib.request

    base = registry_url(config_path, data_dir, url)
    if not yes:
        click.confirm(f"Delete every tag and manifest of {name} at {base}?", abort=True)
    request = urllib.request.Request(
        f"{base}/api/v1/repositories/{urllib.parse.quote(name, safe='/')}", method="DELETE")
    if user:
        # The router takes Basic credentials in either auth mode (docs/access-control.md).
        password = os.environ.get("DOCKYARD_PASSWORD")
        if password is None:
            password = click.prompt(f"Password for {user}", hide_input=True)
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {pair}")
    try:
        with urllib.request.urlopen(request, timeout=300) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        hint = "; access control is on: pass --user" if e.code == 401 and not user else ""
        raise click.ClickException(
            f"{e.code}: {e.read().decode(errors='replace')[:500]}{hint}") from None
    except urllib.error.URLError as e:
        raise click.ClickException(f"{base}: {e.reason}") from None
    click.echo(f"deleted {answer['manifests_deleted']} manifests of {name}; "
               "`dockyard gc` reclaims their layers")


@click.command(name="usage")
@deployment_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--cached", is_flag=True,
              help="Print what the last collection or usage run left, without reading "
                   "every blob again.")
def usage_command(config_path: str | None, data_dir: str | None, as_json: bool,
                  cached: bool) -> None:
    """Space used per repository, and physical against logical bytes."""
    from services.gc import runtime, usage

    cfg = load(config_path, data_dir)
    collector = runtime.collector(cfg, progress=None if as_json or cached else Terminal())
    if cached:
        answer = usage.load(collector.layout.gc_file(runtime.USAGE_FILE))
        if answer is None:
            raise click.ClickException("no usage computed yet: run `dockyard usage` or a "
                                       "collection first")
    else:
        answer = runtime.fresh_usage(collector, cfg)
        collector.progress.done()
    click.echo(json.dumps(answer, indent=1) if as_json else usage.table(answer))


@click.command(name="fsck")
@deployment_options
@click.option("--repair", is_flag=True, help="Fix what can be fixed without guessing.")
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON lines.")
def fsck_command(config_path: str | None, data_dir: str | None, repair: bool,
                 as_json: bool) -> None:
    """Verify every blob against its digest, and the index against storage.

    Exits 0 when the registry is healthy (after --repair: when every finding was
    repaired), 1 otherwise."""
    from dataclasses import asdict

    from services.gc import runtime
    from services.gc.fsck import Fsck

    cfg = load(config_path, data_dir)
    collector = runtime.collector(cfg, progress=None if as_json else Terminal())
    findings = Fsck(collector).run(repair=repair)
    for f in findings:
        if as_json:
            click.echo(json.dumps(asdict(f)))
        else:
            state = " (repaired)" if f.repaired else ""
            where = f.repository or "-"
            click.echo(f"{f.kind}\t{where}\t{f.digest}\t{f.detail}{state}")
    left = [f for f in findings if not f.repaired]
    if not as_json:
        click.echo(f"{len(findings)} findings, {len(findings) - len(left)} repaired; "
                   f"{'healthy' if not left else 'NOT healthy'}")
    sys.exit(1 if left else 0)
