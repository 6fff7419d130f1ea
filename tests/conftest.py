"""Parallel runs (pytest-xdist): every worker but the first gets a test world of its own, so
tests that stop, restart or compact servers never disturb another worker's tests."""

from __future__ import annotations

import os

from tests.env import versions


def pytest_configure() -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    if worker != "gw0" and not os.environ.get("KEB_WORLD_OWN"):
        os.environ["KEB_WORLD_DIR"] = f"{versions.run_root()}-{worker}"
        os.environ["KEB_WORLD_OWN"] = "1"  # started (and stopped) by this worker's session
