"""JSON schemas for kubeconform, made from the cluster's own OpenAPI v3 (no schema registry is reachable here).

One file per kind, ``GROUP_KIND_VERSION.json`` (kind lower-case; GROUP is ``v1`` for the core group), each the whole group-version's
components with a ``$ref`` to its kind. Strict as kubeconform's published ``-strict`` schemas are: an object
schema with properties admits no others. IntOrString and Quantity accept what YAML gives them (numbers too).
"""

from __future__ import annotations

import json
import pathlib

LOCATION = "{{ .Group }}_{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"  # kubeconform -schema-location


_NUMBERS_TOO = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "number"}]}


def _fix(schema):
    """One schema: its sub-schemas fixed, IntOrString and Quantity widened, objects with properties closed."""
    if not isinstance(schema, dict):
        return schema
    if schema.get("format") in ("int-or-string", "quantity") or schema.get("x-kubernetes-int-or-string") is True:
        return dict(_NUMBERS_TOO)
    if str(schema.get("$ref", "")).endswith((".IntOrString", ".Quantity")):
        return dict(_NUMBERS_TOO)
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _fix(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _fix(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_fix(v) for v in out[key]]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def write(cluster, out: pathlib.Path, paths: list[str]) -> int:
    """Schemas of every kind under ``paths`` (e.g. "api/v1", "apis/apps/v1") into ``out``; returns how many."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for path in paths:
        doc = json.loads(cluster.kubectl("get", "--raw", f"/openapi/v3/{path}").stdout)
        schemas = {name: _fix(v) for name, v in doc["components"]["schemas"].items()}
        for name, s in schemas.items():
            for gvk in s.get("x-kubernetes-group-version-kind") or []:
                if f"{gvk['group']}/{gvk['version']}".lstrip("/") != path.split("/", 1)[1] and path != "api/v1":
                    continue
                if path == "api/v1" and gvk["group"]:
                    continue
                # kubeconform's .Group is what precedes the "/" of apiVersion: "v1" itself for the core group.
                target = out / f"{gvk['group'] or gvk['version']}_{gvk['kind'].lower()}_{gvk['version']}.json"
                body = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
                target.write_text(json.dumps(body))
                n += 1
    return n
