"""Jars resolved from Maven Central through a small pom, cached per name under the user's
cache directory so that only the first run downloads anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from agg_config.paths import cache_dir


class MavenError(RuntimeError):
    pass


def resolve(pom: Path, cache_name: str, defines: dict[str, str] | None = None,
            must_have_prefix: str = "") -> Path:  # fmt: skip
    """Directory with every runtime jar of ``pom`` (``mvn dependency:copy-dependencies``)."""
    target = cache_dir() / cache_name / "lib"
    if (target / ".complete").is_file():
        return target
    if shutil.which("mvn") is None:
        raise MavenError(
            f"Maven (mvn) is needed once to fetch the jars of {cache_name}; install it"
        )
    staging = target.parent / f"lib.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    print(f"[maven] resolving {cache_name} from Maven Central (first run only) ...",
          file=sys.stderr, flush=True)  # fmt: skip
    args = ["mvn", "-B", "-q", "-f", str(pom)]
    args += [f"-D{k}={v}" for k, v in (defines or {}).items()]
    args += [
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise MavenError(
            f"mvn failed to resolve {cache_name}:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
        )
    jars = list(staging.glob("*.jar"))
    if must_have_prefix and not any(j.name.startswith(must_have_prefix) for j in jars):
        shutil.rmtree(staging, ignore_errors=True)
        raise MavenError(f"mvn finished but no {must_have_prefix}* jar for {cache_name}")
    (staging / ".complete").write_text(f"{len(jars)} jars\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"[maven] cached {len(jars)} jars in {target}", file=sys.stderr, flush=True)
    return target
