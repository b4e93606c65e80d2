"""A file-based model registry: versions with their evaluation reports, which one is promoted, and the history."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coldcast.core.data import DataError, atomic_dir, write_json

REGISTRY_FILE = "registry.json"
MODEL_DIR = "model"
EVALUATION_FILE = "evaluation.json"
VERDICT_FILE = "verdict.json"
_LOCK_FILE = ".lock"
_FORMAT = 1
Event = Literal["registered", "promoted", "rejected", "monitored"]


class RegistryError(DataError):
    """A registry that cannot be read or a request it cannot satisfy; the message names the file or version."""


class ModelVersion(BaseModel):
    """One registered model: where its files are, what it was judged on, and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str
    registered_at: str
    fingerprint: str = Field(description="SHA-256 of the model directory's files: the same model registers once.")
    spec_fingerprint: str | None = None
    source: str | None = Field(default=None, description="Where the model directory was copied from.")
    bento_tag: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="Headline figures, for listings.")
    labels: dict[str, str] = Field(default_factory=dict)
    has_evaluation: bool = False
    has_verdict: bool = False


class HistoryEvent(BaseModel):
    """Something that happened to a model name: a version registered or promoted, a candidate rejected, or a
    monitoring check of the promoted version (with its status)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: str
    event: Event
    version: str | None = None
    previous: str | None = Field(default=None, description="The version promoted before this event.")
    source: str | None = None
    reasons: list[str] = Field(default_factory=list)
    status: str | None = Field(default=None, description="A monitoring check's OK / WARN / ALERT.")
    window: str | None = Field(default=None, description="The serving window a monitoring check read.")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    promoted: str | None = None
    versions: list[ModelVersion] = Field(default_factory=list)
    history: list[HistoryEvent] = Field(default_factory=list)


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = _FORMAT
    models: dict[str, _Entry] = Field(default_factory=dict)


def model_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 over the relative paths and bytes of every file in a model directory."""
    root = Path(model_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    """Models under `root`: `<name>/<version>/{model/, evaluation.json, verdict.json}` and `registry.json`.

    Files of a version are written to a temporary folder and renamed into place; `registry.json` is replaced
    atomically under an exclusive lock, so concurrent pipeline runs never lose each other's updates and a crash
    leaves the previous state. The root must be on a POSIX file system (a local disk or a volume claim).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ---- reading
    def _read(self) -> _State:
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry root {self.root} exists but is not a folder")
        path = self.root / REGISTRY_FILE
        if not path.exists():
            return _State()
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RegistryError(f"{path} is not valid JSON ({err}); restore it or point to another registry") from None
        try:
            state = _State.model_validate(raw)
        except ValidationError as err:
            raise RegistryError(f"{path} is not a coldcast registry: {err.errors()[0]['msg']}") from None
        if state.format != _FORMAT:
            raise RegistryError(f"{path} has registry format {state.format}; this coldcast reads format {_FORMAT}")
        return state

    def names(self) -> list[str]:
        """Model names with at least one registered version or event."""
        return sorted(self._read().models)

    def versions(self, name: str) -> list[ModelVersion]:
        """Every registered version of `name`, oldest first."""
        entry = self._read().models.get(name)
        return list(entry.versions) if entry else []

    def get(self, name: str, version: str) -> ModelVersion:
        if not version:
            raise RegistryError(
                f"model {name!r} has no promoted version in {self.root}: run the training pipeline first"
            )
        for v in self.versions(name):
            if v.version == version:
                return v
        known = [v.version for v in self.versions(name)]
        raise RegistryError(f"model {name!r} has no version {version!r} in {self.root} (versions: {known})")

    def promoted(self, name: str) -> ModelVersion | None:
        """The promoted version of `name`, or None before the first promotion."""
        entry = self._read().models.get(name)
        if entry is None or entry.promoted is None:
            return None
        return self.get(name, entry.promoted)

    def history(self, name: str) -> list[HistoryEvent]:
        entry = self._read().models.get(name)
        return list(entry.history) if entry else []

    def path(self, name: str, version: str) -> Path:
        """The folder of one version (it holds model/, and evaluation.json and verdict.json where registered)."""
        return self.root / name / version

    def model_dir(self, name: str, version: str) -> Path:
        self.get(name, version)
        return self.path(name, version) / MODEL_DIR

    def evaluation(self, name: str, version: str) -> Path | None:
        """The evaluation report registered with a version (the gate's reference for regressions), if any."""
        v = self.get(name, version)
        return self.path(name, version) / EVALUATION_FILE if v.has_evaluation else None

    def verdict(self, name: str, version: str) -> Path | None:
        v = self.get(name, version)
        return self.path(name, version) / VERDICT_FILE if v.has_verdict else None

    # ---- writing
    @contextlib.contextmanager
    def _locked(self) -> Iterator[_State]:
        """Exclusive access for a read-modify-write of registry.json; the state yielded is saved on exit."""
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry root {self.root} exists but is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / _LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._read()
                yield state
                write_json(state.model_dump(mode="json"), self.root / REGISTRY_FILE)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def register(
        self,
        model_dir: str | Path,
        *,
        name: str,
        evaluation: str | Path | None = None,
        verdict: str | Path | None = None,
        bento_tag: str | None = None,
        metrics: Mapping[str, float] | None = None,
        labels: Mapping[str, str] | None = None,
        spec_fingerprint: str | None = None,
        promote: bool = False,
        reasons: list[str] | None = None,
    ) -> ModelVersion:
        """Copy a model directory (and its evaluation report and gate verdict) in as a new version.

        Registering a model whose files match an existing version returns that version rather than a copy, so a
        rerun of the same pipeline is idempotent; `promote` then promotes it if it is not promoted already.
        """
        source = Path(model_dir)
        if not source.is_dir():
            raise RegistryError(f"model directory not found: {source}")
        _check_name(name)
        for label, path in (("evaluation report", evaluation), ("gate verdict", verdict)):
            if path is not None and not Path(path).is_file():
                raise RegistryError(f"{label} not found: {path}")
        fingerprint = model_fingerprint(source)
        # Copy outside the lock (a model is tens of MB); the version number is assigned under it.
        staging = self.root / name / f".incoming-{fingerprint[:12]}-{datetime.now(UTC):%Y%m%d%H%M%S%f}"
        with atomic_dir(staging) as tmp:
            shutil.copytree(source, tmp / MODEL_DIR)
            if evaluation is not None:
                shutil.copy2(evaluation, tmp / EVALUATION_FILE)
            if verdict is not None:
                shutil.copy2(verdict, tmp / VERDICT_FILE)
        try:
            with self._locked() as state:
                entry = state.models.setdefault(name, _Entry())
                existing = next((v for v in entry.versions if v.fingerprint == fingerprint), None)
                if existing is None:
                    existing = ModelVersion(
                        name=name,
                        version=f"v{len(entry.versions) + 1}",
                        registered_at=_now(),
                        fingerprint=fingerprint,
                        spec_fingerprint=spec_fingerprint,
                        source=str(source),
                        bento_tag=bento_tag,
                        metrics=dict(metrics or {}),
                        labels=dict(labels or {}),
                        has_evaluation=evaluation is not None,
                        has_verdict=verdict is not None,
                    )
                    target = self.path(name, existing.version)
                    if target.exists():
                        # a crash between the rename and the state write left an orphan no state refers to
                        shutil.rmtree(target)
                    staging.rename(target)
                    entry.versions.append(existing)
                    entry.history.append(
                        HistoryEvent(at=_now(), event="registered", version=existing.version, source=str(source))
                    )
                if promote and entry.promoted != existing.version:
                    entry.history.append(
                        HistoryEvent(
                            at=_now(),
                            event="promoted",
                            version=existing.version,
                            previous=entry.promoted,
                            reasons=list(reasons or []),
                        )
                    )
                    entry.promoted = existing.version
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return existing

    def promote(self, name: str, version: str, *, reasons: list[str] | None = None) -> ModelVersion:
        """Make an already registered version the promoted one (a rollback is a promotion of an older version)."""
        with self._locked() as state:
            entry = state.models.get(name)
            found = next((v for v in entry.versions if v.version == version), None) if entry else None
            if entry is None or found is None:
                known = [v.version for v in entry.versions] if entry else []
                raise RegistryError(f"model {name!r} has no version {version!r} in {self.root} (versions: {known})")
            if entry.promoted != version:
                entry.history.append(
                    HistoryEvent(
                        at=_now(), event="promoted", version=version, previous=entry.promoted, reasons=reasons or []
                    )
                )
                entry.promoted = version
        return found

    def reject(self, name: str, *, source: str, reasons: list[str]) -> HistoryEvent:
        """Record a candidate the gate did not bless (nothing is copied: the history keeps where it was and why)."""
        _check_name(name)
        event = HistoryEvent(at=_now(), event="rejected", source=source, reasons=list(reasons))
        with self._locked() as state:
            entry = state.models.setdefault(name, _Entry())
            event = event.model_copy(update={"previous": entry.promoted})
            entry.history.append(event)
        return event

    def monitored(
        self, name: str, *, version: str, status: str, reasons: list[str], window: str, source: str
    ) -> HistoryEvent:
        """Record a monitoring check of `version` (its status, why, which window, where the report is)."""
        self.get(name, version)
        event = HistoryEvent(
            at=_now(),
            event="monitored",
            version=version,
            status=status,
            reasons=list(reasons),
            window=window,
            source=source,
        )
        with self._locked() as state:
            state.models.setdefault(name, _Entry()).history.append(event)
        return event

    def describe(self, name: str) -> dict[str, Any]:
        """A JSON-ready view of one model name: promoted version, versions and history."""
        entry = self._read().models.get(name) or _Entry()
        return entry.model_dump(mode="json")


def _check_name(name: str) -> None:
    # the name becomes a folder: keep it to one safe path component
    if not name or name in {".", ".."} or "/" in name or name.startswith("."):
        raise RegistryError(f"model name {name!r} cannot be a registry folder name")
