"""``--version``: version, Python, platform and the git revision when known."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from exporter import __version__


def git_revision() -> str | None:
    """``IMAGESEC_GIT_REVISION`` (set by the image build), else the checkout's HEAD, else None."""
    revision = os.environ.get("IMAGESEC_GIT_REVISION", "").strip()
    if revision:
        return revision
    source = Path(__file__).resolve().parent.parent
    if not (source / ".git").exists():
        return None
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def version_text() -> str:
    """The lines ``--version`` prints."""
    return "\n".join(
        [
            f"imagesec-exporter, version {__version__} (revision: {git_revision() or 'unknown'})",
            f"  python:   {platform.python_implementation()} {platform.python_version()}",
            f"  platform: {platform.system().lower()}/{platform.machine()} ({platform.platform()})",
        ]
    )
