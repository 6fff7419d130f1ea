"""The container's install steps, replayed without a Docker engine: hadolint on the
Dockerfile, then the same wheel build and offline install into a clean venv."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.prefix) / "bin" / "hadolint")
    done = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_install_steps_work_in_a_clean_venv(tmp_path: Path) -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001$", text, re.M), "the image must not run as root"
    assert "ARG BASE=python:3.11" in text and " AS build" in text  # multi-stage, pinned base
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir",
                    str(wheels), str(ROOT)], check=True, timeout=600)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-index",
                    "--find-links", str(wheels), "kube-event-bridge==0.1.0"], check=True,
                   timeout=600)
    version = subprocess.run([str(venv / "bin" / "kube-event-bridge"), "--version"],
                             capture_output=True, text=True, check=True, timeout=60)
    assert version.stdout.strip() == "kube-event-bridge 0.1.0"
    # no test-only or build-only packages in the runtime install
    listed = subprocess.run([str(venv / "bin" / "pip"), "list"], capture_output=True,
                            text=True, check=True).stdout.lower()
    assert "pytest" not in listed and "testcontainers" not in listed
