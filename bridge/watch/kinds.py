"""Turning discovery answers into ``Resource``s: CRD objects and built-in kind specs; what
the engine decided about each resource (``KindStatus``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bridge.errors import ApiError
from bridge.kube.resources import Resource, preferred_version
from bridge.kube.transport import Transport
from bridge.watch.selection import parse_builtin

CRD_RESOURCE = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                        "CustomResourceDefinition", False)


@dataclass
class KindStatus:
    """What the engine decided about one resource, for `kinds` and logs."""

    resource: Resource
    watched: bool
    reason: str
    builtin: bool = False


def crd_group_resource(crd: dict[str, Any]) -> str:
    """``plural.group``: a CRD's name by API rule (a synthetic deletion found by a re-list
    carries only metadata), else from its spec."""
    name = (crd.get("metadata") or {}).get("name")
    if name:
        return str(name)
    spec = crd.get("spec") or {}
    return f"{(spec.get('names') or {}).get('plural', '')}.{spec.get('group', '')}"


def crd_resource(crd: dict[str, Any], versions: dict[str, str]) -> Resource | None:
    """The resource to watch for an Established CRD (None while it is not servable), at the
    configured version if it is served, else the preferred served version."""
    if (crd.get("metadata") or {}).get("deletionTimestamp"):
        return None
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    established = any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (crd.get("status") or {}).get("conditions") or ()
    )
    served = [v["name"] for v in spec.get("versions") or () if v.get("served")]
    if not established or not served:
        return None
    configured = versions.get(crd_group_resource(crd))
    version = configured if configured and configured in served else preferred_version(served)
    return Resource(spec.get("group", ""), version, names.get("plural", ""),
                    names.get("kind", ""), spec.get("scope") == "Namespaced")


async def resolve_builtin(transport: Transport, spec: str) -> Resource:
    """``apps/v1/deployments`` -> its Resource, from the API server's discovery document.
    Raises ``ValueError`` for a malformed spec, ``LookupError`` when not served (404) or not
    permitted (403); other errors (``ApiError``, ``TransportError``) are transient."""
    group, version, plural = parse_builtin(spec)
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    try:
        found = orjson.loads(await transport.request("GET", base))
    except ApiError as exc:
        if not (exc.not_found or exc.forbidden):
            raise
        raise LookupError(f"{spec}: {base} is not served ({exc.status} {exc.reason})") from exc
    for entry in found.get("resources", []):
        if entry.get("name") == plural:
            return Resource(group, version, plural, entry["kind"], bool(entry.get("namespaced")))
    raise LookupError(f"{spec}: {base} serves no resource {plural!r}")
