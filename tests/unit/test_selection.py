from __future__ import annotations

import pytest

from bridge.kube.resources import Resource
from bridge.watch.selection import Selection, parse_builtin

THING = Resource("stable.example.com", "v1", "things", "Thing", True)
SECRET = Resource("", "v1", "secrets", "Secret", True)


def test_all_crds_by_default_and_exclude_globs() -> None:
    assert Selection().decide(THING, False) == (True, "watch.crds: all")
    watched, reason = Selection(exclude=("*.example.com/things",)).decide(THING, False)
    assert not watched and "*.example.com/things" in reason
    assert not Selection(exclude=("stable.example.com/Thing",)).decide(THING, False)[0]


def test_include_narrows() -> None:
    sel = Selection(include=("other.io/*",))
    assert sel.decide(THING, False) == (False, "not matched by watch.include")


def test_secrets_are_never_watched_unless_named_exactly() -> None:
    assert not Selection(builtins=("v1/secrets",)).decide(SECRET, True)[0]
    assert not Selection(include=("core/*",)).decide(SECRET, True)[0]
    assert Selection(include=("core/secrets",)).decide(SECRET, True)[0]


def test_parse_builtin() -> None:
    assert parse_builtin("apps/v1/deployments") == ("apps", "v1", "deployments")
    assert parse_builtin("v1/configmaps") == ("", "v1", "configmaps")
    assert parse_builtin("core/v1/configmaps") == ("", "v1", "configmaps")
    with pytest.raises(ValueError):
        parse_builtin("deployments")
