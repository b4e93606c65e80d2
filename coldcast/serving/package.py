"""Build a bento (the deployable unit: service code, the stored model, pinned requirements) without Docker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import coldcast
from coldcast.serving.server import SERVICE
from coldcast.serving.store import ServingError, store_home, stored_model

# What the service imports at run time (TensorFlow without Keras or TFRS: the SavedModel needs neither). The
# bento pins these and everything they depend on to the versions installed here, the project's pinned stack.
SERVING_DISTRIBUTIONS = ("bentoml", "tensorflow", "numpy", "pandas", "pyarrow", "pydantic", "PyYAML", "protobuf")
# The package's own source travels inside the bento (src/coldcast), so the bento does not install coldcast.
INCLUDE = ["coldcast/**/*.py", "coldcast/presets/*.yaml", "coldcast/py.typed"]
ENVS = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "BENTOML_DO_NOT_TRACK": "true"}
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def pinned_requirements(roots: Iterable[str] = SERVING_DISTRIBUTIONS) -> list[str]:
    """`name==version` for `roots` and their whole dependency closure, as installed in this environment.

    Extras are not followed and environment markers are evaluated here (the bento's image is Linux with this
    Python minor version, like the environment the tests ran in).
    """
    versions: dict[str, tuple[str, str]] = {}
    stack = list(roots)
    while stack:
        name = canonicalize_name(stack.pop())
        if name in versions:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ServingError(f"{name} is required for serving but not installed in this environment") from None
        versions[name] = (dist.metadata["Name"], dist.version)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            stack.append(req.name)
    return [f"{shown}=={version}" for _, (shown, version) in sorted(versions.items())]


def build_bento(
    model_tag: str,
    *,
    name: str = "coldcast",
    version: str | None = None,
    labels: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> str:
    """Build a bento serving the stored model `model_tag`; returns the bento tag "name:version".

    Runs `bentoml build` (no Docker needed) with a generated bentofile: the coldcast package source, the model
    (found through the service's BentoModel), exactly pinned requirements with `lock_packages: false` (BentoML's
    own locking would re-resolve them, and picks protobuf 7), the model tag as a bento argument. On a machine with
    Docker, `bentoml containerize <tag>` turns the bento into an image.
    """
    stored = stored_model(model_tag)
    tag = str(stored.tag)
    if not re.fullmatch(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?", name):
        raise ServingError(f"bento name {name!r}: use lowercase letters, digits, '.', '_' and '-'")
    context = Path(coldcast.__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="coldcast-bento-") as tmp:
        bentofile = {
            "service": SERVICE,
            "name": name,
            "description": f"coldcast: per-objective scores and candidate ranking with model {tag}",
            "labels": {"project": "coldcast", "model": tag, **(labels or {})},
            "include": INCLUDE,
            "exclude": ["**/__pycache__", "**/*.pyc"],
            # inline: BentoML only reads a requirements file from inside the build context (the source tree)
            "python": {"packages": pinned_requirements(), "lock_packages": False},
            "docker": {"python_version": PYTHON_VERSION, "distro": "debian"},
            "envs": [{"name": k, "value": v} for k, v in ENVS.items()],
            "args": {"model": tag},
        }
        path = Path(tmp) / "bentofile.yaml"
        path.write_text(yaml.safe_dump(bentofile, sort_keys=False))
        command = [sys.executable, "-m", "bentoml", "build", "-f", str(path), str(context), "--output", "tag"]
        if version is not None:
            command += ["--version", version]
        env = {**os.environ, "BENTOML_HOME": store_home(), "BENTOML_DO_NOT_TRACK": "true", **ENVS}
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ServingError(f"bentoml build did not finish within {timeout:.0f} s") from None
    found = re.search(r"__tag__:(\S+)", done.stdout)
    if done.returncode != 0 or found is None:
        output = (done.stdout + done.stderr)[-4000:]
        raise ServingError(f"bentoml build failed (exit {done.returncode}):\n{output}")
    return found.group(1)
