"""Ingest a pipeline's input: the synthetic world, the KuaiRand log or a snapshot of an existing dataset."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from coldcast.core.data import MANIFEST, SPEC_FILE, DataError, Dataset, atomic_dir, write_json
from coldcast.core.spec import Spec, SpecError, load_spec

Source = Literal["synthetic", "kuairand", "path"]
SOURCES: tuple[str, ...] = ("synthetic", "kuairand", "path")
# The preset a source uses when none is named: KuaiRand's features and outcomes are not the podcast world's.
DEFAULT_PRESETS: dict[str, str] = {"kuairand": "kuairand"}


@dataclass(frozen=True)
class IngestResult:
    """What an ingest wrote: which source, from where, how many rows, under which spec."""

    source: str
    path: str | None
    rows: int
    spec_fingerprint: str


def _check_source(source: str, path: str | Path | None) -> None:
    if source not in SOURCES:
        raise SpecError(f"unknown data source {source!r}; sources are {list(SOURCES)}")
    if source != "synthetic" and not path:
        raise DataError(f"data source {source!r} needs a path (--data-path)")


def resolve_spec(
    source: str, path: str | Path | None = None, preset: str | None = None, overrides: Sequence[str] = ()
) -> Spec:
    """The spec a run uses: the shipped default (for a path: the dataset's own spec), a preset, then overrides.

    Without a preset, KuaiRand uses the `kuairand` preset (its features and outcomes are not the podcast world's).
    """
    _check_source(source, path)
    base = Dataset.open(path).root / SPEC_FILE if source == "path" else None
    return load_spec(preset=preset or DEFAULT_PRESETS.get(source), overrides=list(overrides), base=base)


def ingest(
    source: str,
    out: str | Path,
    *,
    path: str | Path | None = None,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
) -> IngestResult:
    """Write a run's input dataset to `out`: generate the world, import KuaiRand from `path`, or snapshot `path`."""
    spec = resolve_spec(source, path, preset, overrides)
    if source == "synthetic":
        from coldcast.core.world import generate

        rows = generate(spec, out, overwrite=overwrite).rows
    elif source == "kuairand":
        from coldcast.core.kuairand import import_kuairand

        rows = import_kuairand(path, out, spec, overwrite=overwrite).rows_written
    else:
        snapshot_dataset(path, out, spec, overwrite=overwrite)  # type: ignore[arg-type]
        rows = int(Dataset.open(out).manifest["rows"])
    return IngestResult(source=source, path=str(path) if path else None, rows=rows, spec_fingerprint=spec.fingerprint())


def _link_or_copy(src: str, dst: str) -> None:
    # Shards are never modified in place (every write is temp + rename), so a hard link is as good as a copy.
    try:
        os.link(src, dst)
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(src, dst)


def snapshot_dataset(src: str | Path, out: str | Path, spec: Spec | None = None, *, overwrite: bool = False) -> Path:
    """Write a copy of the dataset at `src` to `out` (hard links where possible) that carries `spec`.

    `spec` (default: the dataset's own) replaces spec.yaml and the manifest's fingerprint; the rows are not
    changed, so a spec whose features or outcomes do not match them is caught by validation downstream.
    """
    dataset = Dataset.open(src)
    spec = spec or dataset.spec()
    if Path(out).resolve() == dataset.root.resolve():
        raise DataError(f"cannot snapshot {dataset.root} onto itself")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for item in dataset.root.iterdir():
            if item.name in (MANIFEST, SPEC_FILE) or item.name.startswith("."):
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name, copy_function=_link_or_copy)
            else:
                _link_or_copy(str(item), str(tmp / item.name))
        (tmp / SPEC_FILE).write_text(spec.to_yaml())
        manifest = dataset.manifest
        original = manifest.get("spec_fingerprint")
        manifest["spec_fingerprint"] = spec.fingerprint()
        manifest["snapshot_of"] = {"path": str(dataset.root.resolve()), "spec_fingerprint": original}
        write_json(manifest, tmp / MANIFEST)
    return Path(out)


def folder_version(path: str | Path) -> str:
    """A short hash of the names, sizes and modification times of every file under `path`.

    Pipelines pass it as a parameter so that a cached ingest step is reused only while its input is unchanged
    (kfp keys its cache on parameters, never on the contents of a path).
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"input folder not found: {root}")
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        stat = f.stat()
        digest.update(f"{f.relative_to(root) if f != root else f.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def overrides_from_file(path: str | Path) -> list[str]:
    """A (partial) spec file as `key.path=value` overrides, so that it can travel as a pipeline parameter.

    Merging the result over a spec equals merging the file (values are JSON, which YAML reads back as-is).
    """
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"{path}: cannot read the spec file: {err}") from None
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec must be a mapping at the top level, got {type(raw).__name__}")
    out: list[str] = []

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif prefix:
            out.append(f"{prefix}={json.dumps(node, default=str)}")

    walk("", raw)
    return out
