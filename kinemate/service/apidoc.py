"""An API reference page that works offline: the service's own OpenAPI description rendered
as one static HTML page (no script, no CDN), served at ``/reference``.

FastAPI's ``/docs`` (Swagger UI) fetches its script and style from a CDN, so it is blank on a
machine without internet; this page shows the same routes, parameters, request fields and
responses from ``/openapi.json``.
"""

from __future__ import annotations

from html import escape
from typing import Any

REFERENCE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                 "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ccc}
.op{border:1px solid #ddd;border-radius:6px;margin:1em 0;padding:.6em 1em}
.method{display:inline-block;min-width:4.5em;font-weight:bold;text-transform:uppercase}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
table{border-collapse:collapse;width:100%;margin:.4em 0} td,th{border:1px solid #e2e2e2;
padding:.25em .5em;text-align:left;vertical-align:top} th{background:#fafafa}
.muted{color:#666}
"""


def _resolve(spec: dict, schema: dict | None) -> dict:
    """Follow ``$ref`` (and a single-entry ``allOf``) to the schema it names."""
    schema = schema or {}
    for _ in range(10):
        if "$ref" in schema:
            node: Any = spec
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node.get(part, {}) if isinstance(node, dict) else {}
            schema = node
        elif len(schema.get("allOf", [])) == 1:
            schema = schema["allOf"][0]
        else:
            break
    return schema


def _type(spec: dict, schema: dict | None) -> str:
    """A short type name: ``integer``, ``string (binary)``, ``array of string``, ``A | null``."""
    schema = _resolve(spec, schema)
    if "anyOf" in schema or "oneOf" in schema:
        return " | ".join(_type(spec, s) for s in schema.get("anyOf") or schema.get("oneOf"))
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    kind = schema.get("type") or schema.get("title") or "object"
    if kind == "array":
        return f"array of {_type(spec, schema.get('items'))}"
    if schema.get("format"):
        return f"{kind} ({schema['format']})"
    return str(kind)


def _constraints(schema: dict) -> str:
    parts = []
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("exclusiveMinimum", ">"),
                       ("exclusiveMaximum", "<"), ("maxLength", "max length"),
                       ("pattern", "pattern")):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if "default" in schema:
        parts.append(f"default {schema['default']!r}")
    return ", ".join(parts)


def _rows(spec: dict, fields: list[tuple[str, str, bool, dict, str]]) -> str:
    """Table of (name, where, required, schema, description)."""
    if not fields:
        return ""
    out = ["<table><tr><th>name</th><th>in</th><th>type</th><th>required</th>"
           "<th>description</th></tr>"]
    for name, where, required, schema, text in fields:
        resolved = _resolve(spec, schema)
        extra = _constraints(resolved)
        desc = escape(text or resolved.get("description", ""))
        if extra:
            desc += f"<br><span class=muted>{escape(extra)}</span>"
        out.append(f"<tr><td><code>{escape(name)}</code></td><td>{escape(where)}</td>"
                   f"<td>{escape(_type(spec, schema))}</td><td>{'yes' if required else ''}</td>"
                   f"<td>{desc}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _operation(spec: dict, path: str, method: str, op: dict) -> str:
    title = op.get("summary") or op.get("operationId", "")
    html = [f'<div class="op" id="{escape(method + path)}"><span class="method">{escape(method)}'
            f'</span> <code>{escape(path)}</code> — {escape(title)}']
    if op.get("description"):
        html.append(f"<p>{escape(op['description'])}</p>")
    fields = [(p.get("name", ""), p.get("in", ""), bool(p.get("required")), p.get("schema", {}),
               p.get("description", "")) for p in op.get("parameters", [])]
    for content_type, media in (op.get("requestBody") or {}).get("content", {}).items():
        body = _resolve(spec, media.get("schema"))
        required = set(body.get("required", []))
        props = body.get("properties")
        if props:
            fields += [(name, content_type, name in required, schema, "")
                       for name, schema in props.items()]
        else:
            fields.append(("(body)", content_type, True, media.get("schema", {}), ""))
    html.append(_rows(spec, fields))
    responses = op.get("responses", {})
    if responses:
        items = "".join(f"<li><code>{escape(str(code))}</code> {escape(r.get('description', ''))}"
                        f"{' — ' + escape(', '.join(r['content'])) if r.get('content') else ''}</li>"
                        for code, r in responses.items())
        html.append(f"<p>Responses:</p><ul>{items}</ul>")
    html.append("</div>")
    return "".join(html)


def render_reference(spec: dict) -> str:
    """The whole page for an OpenAPI document (a dict, as ``app.openapi()`` returns)."""
    info = spec.get("info", {})
    groups: dict[str, list[str]] = {}
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch", "head", "options"):
                tag = (op.get("tags") or ["other"])[0]
                groups.setdefault(tag, []).append(_operation(spec, path, method, op))
    sections = "".join(f"<h2>{escape(tag)}</h2>{''.join(ops)}" for tag, ops in groups.items())
    auth = "".join(f"<li><code>{escape(name)}</code>: {escape(s.get('description') or s.get('type', ''))}</li>"
                   for name, s in spec.get("components", {}).get("securitySchemes", {}).items())
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(info.get('title', 'API'))} API reference</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{escape(info.get('title', 'API'))} API <span class=muted>{escape(str(info.get('version', '')))}</span></h1>"
        f"<p>{escape(info.get('description', ''))}</p>"
        "<p class=muted>This page is the service's <a href=\"/openapi.json\">OpenAPI "
        "description</a>, rendered without scripts and loading nothing from other sites "
        "(<code>/docs</code> and <code>/redoc</code> lead here).</p>"
        f"{'<ul>' + auth + '</ul>' if auth else ''}{sections}</body></html>")
