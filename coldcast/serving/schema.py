"""Strict request and response models generated from a model's spec, and the feature arrays a request becomes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StrictStr,
    Tag,
    create_model,
    model_validator,
)

from coldcast.core.predlog import IMPRESSION_ID, SOURCE
from coldcast.core.spec import CategoricalFeature, Feature, IdFeature, MultiFeature, NumericFeature, Spec

Arrays = dict[str, np.ndarray]

# JSON numbers only (no strings, no booleans); NaN and infinities are refused, not scored. The model reads
# float32 and int64, so numbers beyond those ranges are refused too (they would overflow into inf or an error).
FLOAT32_MAX = float(np.finfo(np.float32).max)
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
Int64 = Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]
Cost = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=FLOAT32_MAX)]
# Optional identifiers that travel with a row into the prediction log; bounded so a log row stays small.
Identifier = Annotated[StrictStr, Field(min_length=1, max_length=256)]
REQUEST_ID_MAX = 128


def request_id(header: str | None) -> str:
    """The caller's X-Request-ID when it is usable, else a fresh one."""
    if header and len(header) <= REQUEST_ID_MAX and header.isprintable():
        return header
    return uuid.uuid4().hex


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def feature_type(feature: Feature) -> Any:
    """The JSON type a feature accepts: strings or integers as the feature is declared, finite numbers, lists."""
    d = feature.definition
    if isinstance(d, NumericFeature):
        return FiniteFloat
    if isinstance(d, MultiFeature):
        return list[StrictStr]
    if isinstance(d, CategoricalFeature) and d.dtype == "int64":
        return Int64
    assert isinstance(d, IdFeature | CategoricalFeature)
    return StrictStr


def _describe(feature: Feature) -> str:
    d = feature.definition
    text = d.description or feature.name
    if isinstance(d, CategoricalFeature):
        shown = f"{list(d.values)[:8]}{'...' if len(d.values) > 8 else ''}"
        return f"{text} (known values {shown}; others score as unknown)"
    if isinstance(d, NumericFeature):
        return f"{text} (a finite number, nominally in [{d.min:g}, {d.max:g}])"
    if isinstance(d, IdFeature):
        return f"{text} (any id; unseen ids are hashed like known ones)"
    return text


@dataclass(frozen=True)
class Objective:
    """A resolved ranking objective: score = sum of weight x probability, divided by cost when `per_cost`."""

    name: str
    weights: dict[str, float]
    per_cost: bool = False
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights, "per_cost": self.per_cost}

    def score(self, predictions: dict[str, np.ndarray], cost: np.ndarray | None) -> np.ndarray:
        total = sum(w * predictions[t].astype(np.float64) for t, w in self.weights.items())
        if self.per_cost:
            assert cost is not None
            total = total / cost
        return np.asarray(total, dtype=np.float64)


@dataclass
class Objectives:
    """Every objective a served model offers: each task by its name, plus the spec's named ones it can compute."""

    available: dict[str, Objective] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # name -> why
    default: str | None = None

    @classmethod
    def from_spec(cls, spec: Spec, tasks: Sequence[str]) -> Objectives:
        out = cls()
        for t in tasks:
            out.available[t] = Objective(t, {t: 1.0}, description=spec.tasks[t].description if t in spec.tasks else "")
        for name, o in spec.serving.objectives.items():
            missing = [t for t in o.weights if t not in tasks]
            if missing:
                out.unavailable[name] = f"it weighs task(s) {missing}, which this model has no head for"
            else:
                out.available[name] = Objective(name, dict(o.weights), o.per_cost, o.description)
        default = spec.serving.default_objective
        if default is not None and default not in out.available:
            why = out.unavailable.get(default, f"it is not one of {sorted(out.available)}")
            raise ValueError(f"serving.default_objective {default!r} cannot be served: {why}")
        out.default = default
        return out

    def get(self, name: str) -> Objective:
        if name in self.available:
            return self.available[name]
        if name in self.unavailable:
            raise ValueError(f"objective {name!r} is unavailable: {self.unavailable[name]}")
        raise ValueError(f"unknown objective {name!r}; objectives are {sorted(self.available)} or inline weights")


class RequestSchemas:
    """The request and response models of one served model, generated from its spec and its tasks.

    `base` is the root class of the top-level models (BentoML's IODescriptor in the service; plain pydantic
    elsewhere). Features the model reads are required; other declared features are optional and only logged.
    """

    def __init__(self, spec: Spec, tasks: Sequence[str], model_features: Sequence[str], base: type = BaseModel):
        self.spec = spec
        self.tasks = list(tasks)
        self.model_features = [spec.feature(n) for n in model_features]
        used = set(model_features)
        self.extra_features = [f for f in spec.feature_list if f.name not in used]
        self.features = self.model_features + self.extra_features
        self.objectives = Objectives.from_spec(spec, self.tasks)
        cfg = spec.serving
        self.max_rows = cfg.max_request_rows
        self.request_groups = list(cfg.request_groups)

        def fields(features: Sequence[Feature]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for f in features:
                kind = feature_type(f)
                if f.name in used:
                    out[f.name] = (kind, Field(description=_describe(f)))
                else:
                    out[f.name] = (kind | None, Field(default=None, description=_describe(f) + " (logged only)"))
            return out

        sources = tuple(spec.source_names)
        Source = Literal[sources] if sources else StrictStr  # type: ignore[valid-type]
        ids: dict[str, Any] = {
            IMPRESSION_ID: (Identifier | None, Field(default=None, description="Joins delayed labels in the log.")),
        }
        self.Row = create_model(
            "Row",
            __base__=_Strict,
            __doc__="One impression to score: every feature the model reads, plus optional log identifiers.",
            **fields(self.features),
            **ids,
            **{SOURCE: (Source | None, Field(default=None, description="The channel (for monitoring slices)."))},
        )
        self.TaskScores = create_model(
            "TaskScores",
            __base__=_Strict,
            __doc__="One probability per task head.",
            **{t: (float, ...) for t in self.tasks},
        )
        # top-level requests refuse unknown keys too (a misspelt `candidates` must not pass as empty)
        strict_base = type(f"Strict{base.__name__}", (base,), {"model_config": ConfigDict(extra="forbid")})
        self.ScoreRequest = create_model(
            "ScoreRequest",
            __base__=strict_base,
            __doc__="A batch of impressions.",
            rows=(list[self.Row], Field(min_length=1, max_length=self.max_rows)),  # type: ignore[name-defined]
        )
        self.ScoreResponse = create_model(
            "ScoreResponse",
            __base__=base,
            request_id=(str, ...),
            model_version=(str, ...),
            tasks=(list[str], ...),
            predictions=(list[self.TaskScores], ...),  # type: ignore[name-defined]
        )

        # ---- /rank
        groups = {g: [f for f in self.features if f.group == g] for g in self.request_groups}
        group_models = {
            g: create_model(
                g.capitalize() + "Features",
                __base__=_Strict,
                __doc__=f"The {g} features, sent once for all candidates.",
                **fields(feats),
            )
            for g, feats in groups.items()
        }
        per_candidate = [f for f in self.features if f.group not in self.request_groups]
        # precomputed name lookups: comparing Feature models in the request path costs more than the scoring
        self._candidate_model = [f for f in per_candidate if f.name in used]
        self._request_group_features = {g: [f for f in feats if f.name in used] for g, feats in groups.items()}
        self.Candidate = create_model(
            "Candidate",
            __base__=_Strict,
            __doc__="One show / creative to rank.",
            **fields(per_candidate),
            candidate_id=(Identifier | None, Field(default=None, description="Echoed back in the ranking.")),
            cost=(Cost | None, Field(default=None, description="Price of the impression (per-cost objectives).")),
            **ids,
        )
        task_names = tuple(self.tasks)
        Task = Literal[task_names]  # type: ignore[valid-type]
        Weight = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]

        class InlineObjective(_Strict):
            """Weights over task heads; per_cost divides by each candidate's cost."""

            weights: dict[Task, Weight] = Field(min_length=1)  # type: ignore[valid-type]
            per_cost: bool = False

            @model_validator(mode="after")
            def _positive(self) -> InlineObjective:
                if not any(w > 0 for w in self.weights.values()):
                    raise ValueError("objective.weights: at least one weight must be > 0")
                return self

        self.InlineObjective = InlineObjective
        objectives = self.objectives

        def known(name: str) -> str:
            objectives.get(name)  # raises ValueError with the reason
            return name

        # a string names an objective, an object weighs tasks inline; the discriminator keeps errors to one branch
        # (None is a tagged choice too, rather than an Optional around the union, which BentoML's wrapper breaks)
        ObjectiveField = Annotated[
            Annotated[StrictStr, AfterValidator(known), Tag("name")]
            | Annotated[InlineObjective, Tag("inline")]
            | Annotated[None, Tag("default")],
            Discriminator(lambda v: "default" if v is None else "name" if isinstance(v, str) else "inline"),
            Field(
                default=None,
                description=f"A task or a named objective {sorted(objectives.available)}, or inline weights "
                "(default: serving.default_objective).",
            ),
        ]
        schemas = self

        def check(request: Any) -> Any:
            objective = schemas.objective(request)
            if objective.per_cost:
                for i, c in enumerate(request.candidates):
                    if c.cost is None or not c.cost > 0:
                        raise ValueError(
                            f"candidates.{i}.cost: objective {objective.name!r} ranks by outcomes per unit cost, "
                            f"so every candidate needs a cost > 0 (got {c.cost})"
                        )
            return request

        self.RankRequest = create_model(
            "RankRequest",
            __base__=strict_base,
            __validators__={"_check": model_validator(mode="after")(check)},
            **{g: (m, ...) for g, m in group_models.items()},
            candidates=(list[self.Candidate], Field(min_length=1, max_length=self.max_rows)),  # type: ignore[name-defined]
            objective=(ObjectiveField, None),
            top_k=(StrictInt | None, Field(default=None, ge=1, description="Return only the best k.")),
            source=(Source | None, Field(default=None, description="The channel of the placement.")),
        )
        self.Ranked = create_model(
            "Ranked",
            __base__=_Strict,
            rank=(int, ...),
            index=(int, Field(description="Position of the candidate in the request.")),
            candidate_id=(str | None, None),
            score=(float, Field(description="The objective's value.")),
            predictions=(self.TaskScores, ...),
        )
        self.ObjectiveOut = create_model(
            "ObjectiveOut", __base__=_Strict, name=(str, ...), weights=(dict[str, float], ...), per_cost=(bool, ...)
        )
        self.RankResponse = create_model(
            "RankResponse",
            __base__=base,
            request_id=(str, ...),
            model_version=(str, ...),
            objective=(self.ObjectiveOut, ...),
            ranking=(list[self.Ranked], ...),  # type: ignore[name-defined]
        )

    # ---- objectives
    def objective(self, request: Any) -> Objective:
        """The request's objective: named, inline, or the spec's default."""
        value = request.objective
        if value is None:
            if self.objectives.default is None:
                raise ValueError("objective: required (this service has no serving.default_objective)")
            return self.objectives.get(self.objectives.default)
        if isinstance(value, str):
            return self.objectives.get(value)
        return Objective("inline", {str(t): float(w) for t, w in value.weights.items()}, bool(value.per_cost))

    # ---- arrays
    def score_arrays(self, rows: Sequence[Any]) -> Arrays:
        """The model inputs of validated /score rows (the logged-only features are logged from the body)."""
        return _columns(rows, self.model_features)

    def rank_arrays(self, request: Any) -> Arrays:
        """The model inputs of a validated /rank request: the request groups' features (user, context), sent
        once, broadcast to every candidate."""
        n = len(request.candidates)
        model_in = _columns(request.candidates, self._candidate_model)
        for g, features in self._request_group_features.items():
            values = getattr(request, g)
            for f in features:
                model_in[f.name] = _broadcast(f, getattr(values, f.name), n)
        return model_in

    def warmup_arrays(self, n: int = 1) -> Arrays:
        """n synthetic rows of valid values, to trace the model before the first request."""
        row: dict[str, Any] = {}
        for f in self.model_features:
            d = f.definition
            if isinstance(d, NumericFeature):
                row[f.name] = float(d.min)
            elif isinstance(d, MultiFeature):
                row[f.name] = list(d.values or [])[:1]
            elif isinstance(d, CategoricalFeature):
                row[f.name] = d.values[0]
            else:
                row[f.name] = "warmup"
        return {f.name: _broadcast(f, row[f.name], n) for f in self.model_features}


def _columns(rows: Sequence[Any], features: Sequence[Feature]) -> Arrays:
    if not features:
        return {}
    # one C-level pass over the rows, then transpose: far cheaper than a getattr loop per feature
    get = attrgetter(*(f.name for f in features))
    table = list(map(get, rows)) if len(features) > 1 else [(v,) for v in map(get, rows)]
    out: Arrays = {}
    for f, values in zip(features, zip(*table, strict=True), strict=True):
        out[f.name] = _array(f, list(values))
    return out


def _array(f: Feature, values: list[Any]) -> np.ndarray:
    d = f.definition
    if isinstance(d, MultiFeature):
        width = d.max_length
        pad = [""] * width
        out = np.empty((len(values), width), dtype=object)
        out[:] = [(v + pad)[:width] if v else pad for v in values]
        return out
    if isinstance(d, NumericFeature):
        return np.array(values, dtype=np.float32)
    if isinstance(d, CategoricalFeature) and d.dtype == "int64":
        return np.array(values, dtype=np.int64)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _broadcast(f: Feature, value: Any, n: int) -> np.ndarray:
    d = f.definition
    if isinstance(d, MultiFeature):
        row = _array(f, [value])
        return np.repeat(row, n, axis=0)
    if isinstance(d, NumericFeature):
        return np.full(n, value, dtype=np.float32)
    if isinstance(d, CategoricalFeature) and d.dtype == "int64":
        return np.full(n, value, dtype=np.int64)
    return np.full(n, value, dtype=object)
