"""Where the project's files live: the repository root, schemas, and local state.

The root is found from ``AGG_HOME`` if set, else from this file's place in the checkout
(the package is installed editable from the repository).
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    env = os.environ.get("AGG_HOME")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def schemas_dir() -> Path:
    return Path(os.environ.get("AGG_SCHEMAS_DIR", repo_root() / "schemas"))


def state_dir() -> Path:
    """Runtime state of the local stack (data, logs, pids, connection settings)."""
    return Path(os.environ.get("AGG_STATE_DIR", repo_root() / "var"))


def stack_env_file() -> Path:
    """Connection settings written by ``aggregator dev up``; read by every service and test."""
    return state_dir() / "stack.env"


def cache_dir() -> Path:
    """Downloads reused across checkouts and runs (the Kafka jars)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("AGG_CACHE_DIR", Path(base) / "casino-aggregator"))
