"""The base of the platform's result records (reports, verdicts, metrics): frozen, strict, JSON-ready."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    """A frozen result record that refuses unknown fields and dumps to a JSON-ready dict."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
