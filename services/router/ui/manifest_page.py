"""A manifest's page: what it is, what it holds, and what refers to it.

An image shows its config (OS, architecture, creation date, entrypoint,
environment, labels) read from the config blob, and its layers; an index
shows each platform's manifest; both show their annotations and their
referrers (signatures, SBOMs, attestations) grouped by artifact type, each a
link to its own page. Every read is a request to the public API.
"""

from __future__ import annotations

from typing import Any

import falcon

from services.router.ui import templates as t
from services.router.ui.api import MANIFEST_ACCEPT, Api
from services.router.ui.pages import Page
from services.router.ui.templates import h

INDEX_TYPES = frozenset({"application/vnd.oci.image.index.v1+json",
                         "application/vnd.docker.distribution.manifest.list.v2+json"})
# What people call the artifact types a registry commonly holds as referrers.
KINDS = {
    "application/vnd.dev.cosign.artifact.sig.v1+json": "Signature (cosign)",
    "application/vnd.cncf.notary.signature": "Signature (Notary)",
    "application/vnd.dev.sigstore.bundle.v0.3+json": "Signature (Sigstore bundle)",
    "application/spdx+json": "SBOM (SPDX)",
    "application/vnd.cyclonedx+json": "SBOM (CycloneDX)",
    "application/vnd.in-toto+json": "Attestation (in-toto)",
}


def kind(artifact_type: str) -> str:
    if artifact_type in KINDS:
        return KINDS[artifact_type]
    lowered = artifact_type.lower()
    for word, label in (("sig", "Signature"), ("sbom", "SBOM"), ("spdx", "SBOM"),
                        ("cyclonedx", "SBOM"), ("in-toto", "Attestation"),
                        ("attest", "Attestation")):
        if word in lowered:
            return label
    return "Artifact"


def _platform(p: Any) -> str:
    if not isinstance(p, dict):
        return "—"
    parts = [p.get("os"), p.get("architecture"), p.get("variant")]
    return "/".join(str(x) for x in parts if x) or "—"


def _text_list(values: Any) -> str:
    if not values:
        return "—"
    if isinstance(values, list):
        return "<code>" + h(" ".join(str(v) for v in values)) + "</code>"
    return f"<code>{h(values)}</code>"


def _pairs_table(caption: str, pairs: dict[str, Any], empty: str) -> str:
    rows = [f'<tr><th scope="row"><code>{h(k)}</code></th><td>{h(v)}</td></tr>'
            for k, v in sorted(pairs.items())] if isinstance(pairs, dict) else []
    return t.table(caption, ['<th scope="col">Key</th>', '<th scope="col">Value</th>'], rows,
                   empty=empty)


class ManifestPage(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str,
               reference: str) -> None:
        api = self.api(req)
        crumbs = [("Repositories", "/ui/"), (name, t.repo_url(name))]
        answer = api.get(f"/v2/{name}/manifests/{reference}", accept=MANIFEST_ACCEPT)
        doc = answer.json() if answer.status == 200 else None
        if not isinstance(doc, dict):
            body = f"<h1>{h(reference)}</h1>" + (
                self.failure(answer, f"manifest {reference}") if answer.status != 200
                else t.notice("The manifest is not JSON.", "error"))
            self.send(resp, t.layout(reference, body, page="manifest", host=api.host,
                                     repo=name, crumbs=crumbs), self.status_of(answer))
            return
        digest = answer.headers.get("docker-content-digest", reference)
        media_type = answer.headers.get("content-type", doc.get("mediaType", ""))
        is_tag = ":" not in reference
        delete_text = (f"the manifest {digest} of {name}" +
                       (f", which tag {reference} points to," if is_tag else "") +
                       " and every tag that points to it")
        facts = [("Digest", f"<code>{h(digest)}</code> {t.copy_button(digest, 'Copy digest')}"),
                 ("Media type", f"<code>{h(media_type)}</code>"),
                 ("Manifest size", t.size(len(answer.body)))]
        if doc.get("artifactType"):
            facts.append(("Artifact type", f"<code>{h(doc['artifactType'])}</code>"))
        subject = doc.get("subject")
        if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
            facts.append(("Refers to", f'<a href="{h(t.manifest_url(name, subject["digest"]))}">'
                                       f'<code>{h(subject["digest"])}</code></a>'))
        body = [f"<h1>{h(name)}{'' if is_tag else '@'}"
                f"{':' + h(reference) if is_tag else h(t.short_digest(digest))}</h1>",
                t.key_values(facts),
                '<section aria-labelledby="pull-title"><h2 id="pull-title">Pull</h2>',
                t.code_with_copy(f"docker pull {api.host}/{name}@{digest}",
                                 "Copy docker command"),
                t.code_with_copy(f"podman pull {api.host}/{name}@{digest}",
                                 "Copy podman command"), "</section>"]
        if media_type in INDEX_TYPES or "manifests" in doc:
            body.append(self._platforms(name, doc))
        else:
            body.append(self._config(api, name, doc))
            body.append(self._layers(doc))
        body.append('<section aria-labelledby="ann-title"><h2 id="ann-title">Annotations</h2>'
                    + _pairs_table("Annotations", doc.get("annotations") or {},
                                   "No annotations.") + "</section>")
        body.append(self._referrers(api, name, digest))
        body.append(f'<section class="actions"><button type="button" class="danger delete" '
                    f'hidden data-kind="manifest" data-reference="{h(digest)}" '
                    f'data-describe="{h(delete_text)}">Delete manifest</button></section>')
        title = f"{name}:{reference}" if is_tag else f"{name}@{t.short_digest(digest)}"
        self.send(resp, t.layout(title, "\n".join(body), page="manifest", host=api.host,
                                 repo=name, crumbs=crumbs))

    @staticmethod
    def _config(api: Api, name: str, doc: dict[str, Any]) -> str:
        config_desc = doc.get("config") if isinstance(doc.get("config"), dict) else {}
        config_digest = config_desc.get("digest")
        head = '<section aria-labelledby="config-title"><h2 id="config-title">Config</h2>'
        if not isinstance(config_digest, str):
            return head + t.notice("This manifest has no config.") + "</section>"
        blob = api.get(f"/v2/{name}/blobs/{config_digest}", accept="*/*")
        config = blob.json() if blob.status == 200 and not blob.truncated else None
        if not isinstance(config, dict):
            what = (f"Its config ({config_desc.get('mediaType', 'unknown type')}) is not an "
                    "image configuration.")
            return head + t.notice(what) + "</section>"
        run = config.get("config") if isinstance(config.get("config"), dict) else {}
        platform = "/".join(str(config[k]) for k in ("os", "architecture", "variant")
                            if config.get(k))
        facts = t.key_values([
            ("OS / architecture", h(platform or "—")),
            ("Created", t.age(config["created"]) if isinstance(config.get("created"), str)
             else "—"),
            ("Entrypoint", _text_list(run.get("Entrypoint"))),
            ("Command", _text_list(run.get("Cmd"))),
            ("Working directory", _text_list(run.get("WorkingDir"))),
            ("User", _text_list(run.get("User"))),
        ])
        env = run.get("Env") if isinstance(run.get("Env"), list) else []
        env_rows = [f"<li><code>{h(e)}</code></li>" for e in env]
        env_html = f'<ul class="env">{"".join(env_rows)}</ul>' if env_rows else \
            '<p class="empty">No environment.</p>'
        return (head + facts + '<h3>Environment</h3>' + env_html + "<h3>Labels</h3>" +
                _pairs_table("Labels", run.get("Labels") or {}, "No labels.") + "</section>")

    @staticmethod
    def _layers(doc: dict[str, Any]) -> str:
        layers = [x for x in doc.get("layers") or [] if isinstance(x, dict)]
        total = sum(x.get("size", 0) for x in layers if isinstance(x.get("size"), int))
        rows = [f'<tr><td class="num">{i}</td><td><code title="{h(x.get("digest"))}">'
                f'{h(t.short_digest(str(x.get("digest", ""))))}</code></td>'
                f'<td><code>{h(x.get("mediaType", ""))}</code></td>'
                f'<td class="num">{t.size(x.get("size"))}'
                "</td></tr>" for i, x in enumerate(layers, 1)]
        headers = ['<th scope="col" class="num">#</th>', '<th scope="col">Digest</th>',
                   '<th scope="col">Media type</th>', '<th scope="col" class="num">Size</th>']
        return ('<section aria-labelledby="layers-title"><h2 id="layers-title">Layers</h2>'
                f'<p>{len(layers)} layer{"s" if len(layers) != 1 else ""}, {t.size(total)} '
                'in all.</p>' + t.table("Layers", headers, rows, table_id="layers",
                                        empty="No layers.") + "</section>")

    @staticmethod
    def _platforms(name: str, doc: dict[str, Any]) -> str:
        children = [x for x in doc.get("manifests") or [] if isinstance(x, dict)]
        rows = [f'<tr><th scope="row">{h(_platform(x.get("platform")))}</th>'
                f'<td><a href="{h(t.manifest_url(name, str(x.get("digest", ""))))}"><code>'
                f'{h(t.short_digest(str(x.get("digest", ""))))}</code></a></td>'
                f'<td><code>{h(x.get("mediaType", ""))}</code></td>'
                f'<td class="num">{t.size(x.get("size"))}'
                "</td></tr>" for x in children]
        headers = ['<th scope="col">Platform</th>', '<th scope="col">Manifest</th>',
                   '<th scope="col">Media type</th>', '<th scope="col" class="num">Size</th>']
        return ('<section aria-labelledby="platforms-title"><h2 id="platforms-title">'
                "Platforms</h2>" + t.table("Platforms", headers, rows, table_id="platforms",
                                           empty="No manifests.") + "</section>")

    @staticmethod
    def _referrers(api: Api, name: str, digest: str) -> str:
        head = ('<section aria-labelledby="referrers-title" id="referrers">'
                '<h2 id="referrers-title">Referrers</h2>')
        answer = api.get(f"/v2/{name}/referrers/{digest}")
        data = answer.json() if answer.status == 200 else None
        found = [x for x in (data or {}).get("manifests", []) if isinstance(x, dict)]
        if not found:
            return head + '<p class="empty">No signatures, SBOMs or attestations.</p></section>'
        groups: dict[str, list[dict[str, Any]]] = {}
        for x in found:
            groups.setdefault(str(x.get("artifactType") or "unknown"), []).append(x)
        parts = [head]
        for artifact_type, items in sorted(groups.items()):
            parts.append(f'<h3>{h(kind(artifact_type))} <code>{h(artifact_type)}</code></h3><ul>')
            for x in items:
                ref = str(x.get("digest", ""))
                notes = ", ".join(f"{k}={v}" for k, v in sorted(
                    (x.get("annotations") or {}).items())) if isinstance(
                    x.get("annotations"), dict) else ""
                parts.append(f'<li><a href="{h(t.manifest_url(name, ref))}"><code>{h(ref)}'
                             f'</code></a> {t.size(x.get("size"))}'
                             f'{f" <small>{h(notes)}</small>" if notes else ""}</li>')
            parts.append("</ul>")
        return "".join(parts) + "</section>"
