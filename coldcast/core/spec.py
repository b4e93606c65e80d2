"""The one typed spec: feature groups, sources, outcomes, tasks, label map, loss mask, world, model and thresholds."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

GROUPS: tuple[str, ...] = ("user", "content", "context", "creative")

# Columns every impression table carries besides features, outcomes and true_* probabilities. They are never
# features: the spec rejects a feature that reuses one of these names.
META_COLUMNS: tuple[str, ...] = (
    "impression_id",
    "timestamp",
    "date",
    "source",
    "cost",
    "show_launch_date",
    "popularity_tier",
    "less_streamed",
)
TRUE_PREFIX = "true_"
# Metrics that gates and reports may name.
METRICS: tuple[str, ...] = ("average_precision", "auc", "log_loss", "ece")


class SpecError(ValueError):
    """A spec that cannot be used; the message names the offending key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------------------------------- features
class _FeatureBase(_Frozen):
    description: str = ""
    embedding_dim: int | None = Field(default=None, gt=0, description="Overrides model.embedding_dim.")


class IdFeature(_FeatureBase):
    """An identifier embedded through hash buckets (unseen ids land in some bucket, never an error)."""

    kind: Literal["id"]
    hash_buckets: int = Field(gt=1)


class CategoricalFeature(_FeatureBase):
    """A value from a known set; anything else maps to the out-of-vocabulary bucket."""

    kind: Literal["categorical"]
    values: list[str] | list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CategoricalFeature:
        if len(set(self.values)) != len(self.values):
            raise ValueError("values must be unique")
        return self

    @property
    def dtype(self) -> str:
        return "int64" if isinstance(self.values[0], int) else "string"


class NumericFeature(_FeatureBase):
    """A number in a known range; `log` means the model sees log1p(x) before normalisation."""

    kind: Literal["numeric"]
    min: float
    max: float
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> NumericFeature:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        if self.log and self.min < 0:
            raise ValueError("a log feature needs min >= 0")
        return self


class MultiFeature(_FeatureBase):
    """A list of values (listened genres, recent shows): known values or hash buckets, pooled by the model."""

    kind: Literal["multi"]
    values: list[str] | None = None
    hash_buckets: int | None = Field(default=None, gt=1)
    max_length: int = Field(default=10, gt=0)

    @model_validator(mode="after")
    def _vocab(self) -> MultiFeature:
        if (self.values is None) == (self.hash_buckets is None):
            raise ValueError("a multi feature needs exactly one of 'values' or 'hash_buckets'")
        return self


FeatureDef = Annotated[IdFeature | CategoricalFeature | NumericFeature | MultiFeature, Field(discriminator="kind")]


class Feature(_Frozen):
    """A declared feature with its group, as the rest of the code sees it."""

    name: str
    group: str
    definition: FeatureDef

    @property
    def kind(self) -> str:
        return self.definition.kind


# --------------------------------------------------------------------------------------------------- sources
class Outcome(_Frozen):
    """A raw outcome recorded per impression (stream, click, ...)."""

    description: str = ""


class Source(_Frozen):
    """A channel through which shows are impressed, the outcomes it observes and its allowed feature values."""

    description: str = ""
    observes: list[str] = Field(min_length=1)
    values: dict[str, list[str] | list[int]] = Field(
        default_factory=dict,
        description="Per categorical feature, the values this source can take (surfaces, formats, slots).",
    )


class Task(_Frozen):
    """One objective with its own tower: which outcome labels it per source, and which sources train it."""

    description: str = ""
    labels: dict[str, str | None] = Field(
        description="Label-mapping row: source -> outcome column, or null where the source does not label it."
    )
    mask: dict[str, float] = Field(description="Directional loss-mask row: source -> weight in [0, 1].")
    weight: float = Field(default=1.0, ge=0)
    home_source: str | None = Field(
        default=None, description="The source whose business objective this is (for per-source evaluation)."
    )


# --------------------------------------------------------------------------------------------------- world
class OutcomeModel(_Frozen):
    """How the synthetic world draws one outcome: base rates per source and the weight of each latent factor."""

    given: str | None = Field(default=None, description="Only possible when this other outcome happened.")
    rate: dict[str, float] = Field(description="Target mean probability per source (conditional if `given`).")
    affinity: float = 1.0
    quality: float = 0.5
    user_propensity: float = 0.5
    context: float = 1.0


class DriftScenario(_Frozen):
    """A change that starts on a known day, for monitoring demos and tests."""

    kind: Literal["none", "new_show_surge", "video_shift", "taste_shift"] = "none"
    start_day: int = Field(default=42, ge=0)
    strength: float = Field(default=1.0, ge=0)


class WorldConfig(_Frozen):
    """Knobs of the synthetic podcast world. Nothing here is tuned for any model."""

    seed: int = 7
    users: int = Field(default=50_000, gt=0)
    shows: int = Field(default=5_000, gt=0)
    impressions: int = Field(default=1_000_000, gt=0)
    days: int = Field(default=56, gt=0)
    start_date: date = date(2026, 1, 5)
    ads_share: float = Field(default=0.3, ge=0, le=1, description="Share of impressions from the ad channel.")
    channel_similarity: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="Correlation between how users respond to a show as a promotion and as an ad (0: unrelated).",
    )
    new_show_share: float = Field(default=0.1, ge=0, le=1, description="Share of shows launched inside the window.")
    campaigns: int = Field(default=800, gt=0)
    publishers: int = Field(default=1_200, gt=0)
    latent_dim: int = Field(default=16, gt=0)
    popularity_sigma: float = Field(default=1.8, gt=0, description="Log-normal spread of show popularity.")
    organic_daily_streams: float = Field(
        default=150.0, gt=0, description="Mean organic streams per show and day across the whole platform."
    )
    effect_scale: float = Field(default=0.3, ge=0, description="Spread of per-value effects of categorical features.")
    outcomes: dict[str, OutcomeModel]
    drift: DriftScenario = DriftScenario()


# --------------------------------------------------------------------------------------------------- the rest
class Popularity(_Frozen):
    """Popularity tiers by trailing streams, computed from each impression's past only."""

    window_days: int = Field(default=30, gt=0)
    tier_edges: list[float] = Field(description="Descending lower bounds of tiers 0..n-2; the last tier is below all.")
    high_tiers: list[int] = Field(default_factory=lambda: [0, 1, 2])
    low_tiers: list[int] = Field(default_factory=lambda: [3, 4, 5])
    less_streamed_below: float = Field(default=5_000, gt=0)

    @model_validator(mode="after")
    def _descending(self) -> Popularity:
        if any(a <= b for a, b in zip(self.tier_edges, self.tier_edges[1:], strict=False)):
            raise ValueError("tier_edges must be strictly descending")
        return self

    @property
    def tiers(self) -> int:
        return len(self.tier_edges) + 1


class Split(_Frozen):
    """Temporal split: the last days are test, the days before them validation, the rest training."""

    validation_days: int = Field(default=7, gt=0)
    test_days: int = Field(default=7, gt=0)


class ModelConfig(_Frozen):
    """Architecture of the multi-task model."""

    encoder: Literal["shared_bottom", "mmoe", "ple"] = "shared_bottom"
    embedding_dim: int = Field(default=16, gt=0)
    shared_layers: list[int] = Field(default_factory=lambda: [256, 128])
    tower_layers: list[int] = Field(default_factory=lambda: [64])
    experts: int = Field(default=4, gt=0)
    expert_layers: list[int] = Field(default_factory=lambda: [128])
    batch_norm: bool = True
    dropout: float = Field(default=0.0, ge=0, lt=1)
    exclude_groups: list[str] = Field(default_factory=list, description="Feature groups the model ignores.")


class TrainingConfig(_Frozen):
    """Optimisation and input pipeline."""

    batch_size: int = Field(default=1024, gt=0)
    epochs: int = Field(default=3, gt=0)
    learning_rate: float = Field(default=1e-3, gt=0)
    sampling: Literal["balanced", "natural"] = "balanced"
    source_ratio: dict[str, float] = Field(default_factory=dict, description="Balanced sampling ratio per source.")
    loss_weighting: Literal["fixed", "uncertainty"] = "fixed"
    early_stopping_patience: int = Field(default=2, ge=0)
    selection_tasks: list[str] = Field(
        default_factory=list,
        description="Tasks whose validation AP picks the checkpoint (default: all tasks).",
    )
    shuffle_buffer: int = Field(default=100_000, gt=0)
    seed: int = 1
    sources: list[str] = Field(default_factory=list, description="Sources to train on (default: all).")


class SliceDef(_Frozen):
    """An evaluation slice: rows grouped by the values of a column."""

    column: str
    description: str = ""


class EvaluationConfig(_Frozen):
    """Which slices every evaluation reports, and how intervals are computed."""

    slices: dict[str, SliceDef] = Field(default_factory=dict)
    bootstrap: int = Field(default=200, ge=0)
    calibration_bins: int = Field(default=10, gt=1)
    calibration_strategy: Literal["quantile", "uniform"] = Field(
        default="quantile",
        description="Calibration bins of equal row counts (rare outcomes) or equal width in probability.",
    )


class GateConfig(_Frozen):
    """Promotion gate: absolute floors per task and metric, and the largest regression vs the promoted model."""

    floors: dict[str, dict[str, float]] = Field(default_factory=dict, description="task -> metric -> floor.")
    max_regression: dict[str, float] = Field(
        default_factory=dict, description="metric -> largest relative drop vs the promoted model."
    )
    min_positives: int = Field(default=50, ge=0, description="A slice with fewer positives is too noisy to judge.")
    slice_regressions: Literal["significant", "point"] = Field(
        default="significant",
        description="significant: a slice blocks only when its drop also clears the candidate's 95% interval.",
    )


class TaskDriftLevels(_Frozen):
    """WARN / ALERT levels for one task that replace the drift section's defaults (noisier tasks need wider ones)."""

    prediction_warn: float | None = Field(default=None, gt=0)
    prediction_alert: float | None = Field(default=None, gt=0)
    calibration_warn: float | None = Field(default=None, gt=0)
    calibration_alert: float | None = Field(default=None, gt=0)
    quality_warn: float | None = Field(default=None, gt=0, lt=1)
    quality_alert: float | None = Field(default=None, gt=0, lt=1)


class DriftThresholds(_Frozen):
    """Monitoring (coldcast.monitoring): the windows compared, how features are tested, and WARN / ALERT levels.

    Drift scores are PSI-like distances (0: same distribution). A column "drifts" when its score reaches its
    threshold and ALERTs by itself at major_factor times it; a feature group WARNs / ALERTs when the share of its
    columns that drift reaches warn_share / alert_share, in the whole window or in any segment. Prediction drift
    and the label-based checks (calibration, ROC-AUC) have their own levels, per task where `tasks` says so.
    `thresholds` keys are a monitored column (`show_age_days`, `topics.top`), a `within` column
    (`format|campaign_id`) or `segment/column` (`source=ad/show_id`) for one segment. The class defaults are PSI's
    conventional levels; the shipped default.yaml carries levels measured on no-drift windows of the synthetic world.
    """

    window_days: int = Field(default=1, gt=0, description="Days of serving logs one check compares.")
    label_window_days: int = Field(
        default=7,
        gt=0,
        description="Label-based checks use the labelled rows of this many days up to the window's end: labels "
        "arrive late, and a week spans every weekday as the reference does.",
    )
    reference_split: Literal["train", "validation"] = Field(
        default="validation",
        description="Which days of the model's dataset the reference is sampled from: validation days are held "
        "out from fitting, so the model's scores and quality there are out-of-sample.",
    )
    reference_rows: int = Field(
        default=20_000, gt=0, description="Rows sampled (seeded) for the reference of feature and prediction drift."
    )
    label_reference_rows: int = Field(
        default=150_000,
        gt=0,
        description="Rows sampled for the reference of the label-based checks (the feature reference is a subsample "
        "of them): rare outcomes (follows, ad streams) need far more rows than feature drift for enough positives.",
    )
    current_rows: int = Field(default=50_000, gt=0, description="A larger window is sampled down to this.")
    seed: int = 0
    top_k: int = Field(
        default=20,
        gt=0,
        description="Id and multi-valued features are tested as membership of their k most frequent reference "
        "values (everything else is 'other'); multi-valued ones also by list length.",
    )
    exclude: dict[str, str] = Field(
        default_factory=dict, description="Features not tested for drift, each with the reason."
    )
    segments: list[str] = Field(
        default_factory=lambda: ["source"],
        description="Columns whose values each get a drift report of their own (e.g. source, surface).",
    )
    min_segment_rows: int = Field(
        default=2000, gt=0, description="Segments with fewer rows (in the window or the reference) are not reported."
    )
    within: dict[str, str] = Field(
        default_factory=dict,
        description="Monitored column -> key feature: the column is also tested within the key's values (the "
        "reference resampled to the window's mix of keys both have), so a change of mix across keys that happens by "
        "design (campaign flights) does not count, a change within them does. Reported as `column|key`.",
    )
    label_segments: list[str] = Field(
        default_factory=list,
        description="Categorical features whose values each get a calibration check of their own: a change of "
        "P(outcome | features) (tastes moving) shows in some segments long before it moves the whole population.",
    )
    calibration_min_z: float = Field(
        default=3.0,
        gt=0,
        description="A calibration shift counts only when it is this many standard errors from 0 (Poisson errors of "
        "the positives counted now and in the reference), so small segments need larger shifts.",
    )
    min_segment_positives: int = Field(
        default=30, ge=1, description="A label segment is judged with this many positives in both windows."
    )
    method: Literal["psi", "jensenshannon", "hellinger"] = Field(
        default="psi", description="Evidently's drift method for every column (PSI: 0.1 moderate, 0.25 major)."
    )
    threshold: float = Field(default=0.1, gt=0, description="Score at which a column drifts.")
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="Per column (or segment/column) thresholds that replace `threshold`."
    )
    warn_share: float = Field(default=0.2, ge=0, le=1)
    alert_share: float = Field(default=0.4, ge=0, le=1)
    major_factor: float = Field(
        default=2.5,
        ge=1,
        description="A column whose score reaches this many times its threshold ALERTs by itself (PSI's 0.25 "
        "'major' over 0.1 'moderate').",
    )
    prediction_warn: float = Field(default=0.1, gt=0, description="Score of a task's predictions that WARNs.")
    prediction_alert: float = Field(default=0.25, gt=0, description="Score of a task's predictions that ALERTs.")
    min_positives: int = Field(
        default=100, ge=1, description="Label-based checks need this many positives in both windows."
    )
    calibration_warn: float = Field(
        default=0.2,
        gt=0,
        description="|log| of (observed / predicted rate now) / (the same in the reference) that WARNs.",
    )
    calibration_alert: float = Field(default=0.3, gt=0, description="... and that ALERTs.")
    quality_warn: float = Field(
        default=0.05, gt=0, lt=1, description="Drop of a task's ROC-AUC below the reference's that WARNs."
    )
    quality_alert: float = Field(default=0.08, gt=0, lt=1, description="... and that ALERTs.")
    tasks: dict[str, TaskDriftLevels] = Field(
        default_factory=dict, description="Per task levels that replace the defaults above (unknown tasks are ignored)."
    )

    def levels(self, task: str, check: Literal["prediction", "calibration", "quality"]) -> tuple[float, float]:
        """The (WARN, ALERT) levels of one task's prediction, calibration or quality check."""
        own = self.tasks.get(task, TaskDriftLevels())
        warn, alert = getattr(own, f"{check}_warn"), getattr(own, f"{check}_alert")
        return (
            getattr(self, f"{check}_warn") if warn is None else warn,
            getattr(self, f"{check}_alert") if alert is None else alert,
        )

    @model_validator(mode="after")
    def _ordered(self) -> DriftThresholds:
        pairs = [("warn_share", "alert_share"), ("prediction_warn", "prediction_alert")]
        pairs += [("calibration_warn", "calibration_alert"), ("quality_warn", "quality_alert")]
        for low, high in pairs:
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) must not exceed {high} ({getattr(self, high)})")
        for task in self.tasks:
            for check in ("prediction", "calibration", "quality"):
                warn, alert = self.levels(task, check)  # type: ignore[arg-type]
                if warn > alert:
                    raise ValueError(f"tasks.{task}: {check} warn level ({warn}) must not exceed its alert ({alert})")
        return self


class RateBounds(_Frozen):
    """Bounds on the share of positive labels of one outcome, per source."""

    min: float = Field(default=0.0, ge=0, le=1)
    max: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> RateBounds:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class ValidationConfig(_Frozen):
    """Data validation: what happens to bad rows, and the bounds whole tables must meet."""

    policy: Literal["fail", "quarantine"] = Field(
        default="quarantine",
        description="fail: any failed check stops the run; quarantine: bad rows go to their own artifact.",
    )
    min_rows: int = Field(default=1, ge=0, description="Fewest valid rows a dataset may have.")
    min_positive_rate: float = Field(default=0.0, ge=0, le=1)
    max_positive_rate: float = Field(default=1.0, ge=0, le=1)
    positive_rates: dict[str, RateBounds] = Field(
        default_factory=dict, description="Per outcome, bounds that replace min/max_positive_rate."
    )
    allow_truth_columns: bool = Field(
        default=True, description="Synthetic worlds carry true_* probabilities; production data never may."
    )

    @model_validator(mode="after")
    def _ordered(self) -> ValidationConfig:
        if self.min_positive_rate > self.max_positive_rate:
            raise ValueError(
                f"min_positive_rate ({self.min_positive_rate}) must not exceed max_positive_rate "
                f"({self.max_positive_rate})"
            )
        return self

    def rate_bounds(self, outcome: str) -> RateBounds:
        """The positive-rate bounds of `outcome`: its own entry, or the defaults."""
        return self.positive_rates.get(outcome, RateBounds(min=self.min_positive_rate, max=self.max_positive_rate))


class KuaiRandConfig(_Frozen):
    """How coldcast.core.kuairand maps the KuaiRand logs onto the platform's sources, outcomes and time."""

    logs: list[str] = Field(
        default_factory=lambda: ["log_standard_*.csv", "log_random_*.csv"],
        min_length=1,
        description="Glob patterns of the impression logs in the source folder, else its data/ (every match is read).",
    )
    users: str = Field(default="user_features_*.csv", description="Static user features (optional file).")
    videos: str = Field(default="video_features_basic_*.csv", description="Static video features (optional file).")
    statistics: str = Field(
        default="video_features_statistic_*.csv",
        description="Whole-period video aggregates: recorded in the manifest, never features (they see the future).",
    )
    labels: dict[str, str] = Field(
        default_factory=lambda: {"stream": "long_view", "click": "is_click", "like": "is_like", "follow": "is_follow"},
        description="Platform outcome -> KuaiRand label column.",
    )
    source_by: Literal["video_type", "tab"] = "video_type"
    video_type_sources: dict[str, str] = Field(
        default_factory=lambda: {"AD": "ad", "NORMAL": "promotion", "UNKNOWN": "promotion"},
        description="With source_by=video_type: video_type value -> source.",
    )
    tab_sources: dict[str, list[int]] = Field(
        default_factory=lambda: {"promotion": [1], "ad": [0, *range(2, 15)]},
        description="With source_by=tab: source -> the tab values (app surfaces) it covers.",
    )
    timezone: str = Field(default="Asia/Shanghai", description="The app's local clock, for hour and weekday.")
    launch_date: Literal["first_seen", "upload_dt"] = Field(
        default="first_seen",
        description="show_launch_date: a video's first impression in the imported logs, or its upload_dt.",
    )
    history_outcome: str = Field(
        default="stream",
        description="The outcome whose earlier positives count as plays: popularity, trailing counts, recent_*.",
    )
    chunk_rows: int = Field(default=500_000, gt=0, description="CSV rows read at a time.")

    @model_validator(mode="after")
    def _disjoint_tabs(self) -> KuaiRandConfig:
        seen: dict[int, str] = {}
        for source, tabs in self.tab_sources.items():
            for tab in tabs:
                if tab in seen:
                    raise ValueError(f"tab_sources: tab {tab} is mapped to both {seen[tab]!r} and {source!r}")
                seen[tab] = source
        return self


class ObjectiveDef(_Frozen):
    """A ranking objective: a weighted sum of task probabilities, optionally per unit of candidate cost."""

    description: str = ""
    weights: dict[str, float] = Field(min_length=1, description="task -> weight (>= 0, at least one > 0).")
    per_cost: bool = Field(
        default=False,
        description="Divide by each candidate's cost: expected outcomes per unit spend (for a stream task, "
        "ranking by it minimises eCPS, the cost per stream).",
    )

    @model_validator(mode="after")
    def _weights(self) -> ObjectiveDef:
        bad = {t: w for t, w in self.weights.items() if not (w >= 0 and w != float("inf"))}
        if bad:
            raise ValueError(f"weights must be finite and >= 0, got {bad}")
        if not any(w > 0 for w in self.weights.values()):
            raise ValueError("at least one weight must be > 0")
        return self


class ServingBatching(_Frozen):
    """Adaptive batching of model calls across concurrent requests (coldcast.serving.batching)."""

    max_rows: int = Field(default=2048, gt=0, description="Most rows in one model call, across requests.")
    max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="How long an idle model waits for more requests before it runs. Batches form anyway while "
        "the model is busy, so 0 adds no latency at low load.",
    )
    model_thread: bool = Field(
        default=False,
        description="Run model calls on a dedicated thread, so the event loop parses requests meanwhile (true), "
        "or on the event loop itself (false). A worker has about one core, so the thread bought no parallelism, "
        "only GIL handoffs: on the event loop a call of the same size took less than half the time and /rank "
        "served 12-19% more candidates/s (BENCHMARKS.md).",
    )


class ServingLog(_Frozen):
    """Prediction logging (coldcast.core.predlog): a file per flush, written off the request path."""

    max_rows: int = Field(default=5000, gt=0, description="Flush when this many rows are buffered.")
    max_seconds: float = Field(default=5.0, gt=0, description="Flush rows at most this old.")
    max_buffer_rows: int = Field(
        default=200_000,
        gt=0,
        description="Rows held while the writer falls behind; beyond it rows are counted as dropped.",
    )


class ServingConfig(_Frozen):
    """The BentoML service (coldcast.serving): request limits, ranking objectives, batching and logging."""

    max_request_rows: int = Field(default=1000, gt=0, description="Most /score rows or /rank candidates a request.")
    request_groups: list[Literal["user", "content", "context", "creative"]] = Field(
        default_factory=lambda: ["user", "context"],
        description="/rank: feature groups sent once per request; the other groups come with each candidate.",
    )
    objectives: dict[str, ObjectiveDef] = Field(
        default_factory=dict,
        description="Named /rank objectives. Every task is also an objective by its own name. An objective "
        "naming a task the served model lacks is listed as unavailable in /metadata.",
    )
    default_objective: str | None = Field(default=None, description="/rank objective when a request names none.")
    timeout_s: float = Field(default=30.0, gt=0, description="Longest a request may take before BentoML aborts it.")
    workers: int = Field(
        default=2,
        ge=1,
        description="Worker processes, each with the model loaded and its own event loop. Sized for the 2-core "
        "reference host, where 2 workers scored 1.3-1.6x the candidates/s of 1: one event loop cannot keep two "
        "cores busy. Give each worker about a core; each holds TensorFlow and the model (about 700 MB).",
    )
    model_threads: int = Field(
        default=0,
        ge=0,
        description="TensorFlow threads per worker for one model call (0: the machine's cores shared among the "
        "workers, at least 1).",
    )
    access_log: bool = Field(
        default=True,
        description="BentoML's one line per request (its own default). Turning it off made no difference "
        "beyond noise at 250 requests/s (BENCHMARKS.md); the prediction log and /metrics record requests too.",
    )
    metrics: bool = Field(default=True, description="BentoML's Prometheus metrics at /metrics.")
    max_requests_per_connection: int = Field(
        default=100,
        ge=0,
        description="Close a keep-alive connection after this many requests (0: never), as nginx's "
        "keepalive_requests does. BentoML's workers accept from one shared socket and the first awake takes every "
        "pending connection, so a client's pool can land on one worker; a closed connection reopens on whichever "
        "worker accepts first, usually the idle one (BENCHMARKS.md).",
    )
    balance_connections: bool = Field(
        default=True,
        description="Close a keep-alive connection (Connection: close) when its worker has clearly more API "
        "requests in flight than the least loaded worker (at least 2 and a quarter more), so the client reopens "
        "it on a less busy one; the workers share their counts in a small memory-mapped file (BENCHMARKS.md).",
    )
    gc_threshold: int = Field(
        default=50_000,
        ge=0,
        description="Allocations between young-generation garbage collections in a worker (0: Python's default "
        "of 700). A 100-candidate /rank allocates thousands of objects, so the default collects several times per "
        "request and the older generations often; 50,000 cut the /rank p99 at 8 clients by about a third "
        "(BENCHMARKS.md).",
    )
    batching: ServingBatching = ServingBatching()
    log: ServingLog = ServingLog()


# --------------------------------------------------------------------------------------------------- the spec
class Spec(_Frozen):
    """Everything the platform needs to know about features, sources, tasks, the world and thresholds."""

    name: str = "coldcast"
    features: dict[str, dict[str, FeatureDef]]
    outcomes: dict[str, Outcome]
    sources: dict[str, Source]
    tasks: dict[str, Task]
    world: WorldConfig
    popularity: Popularity
    split: Split = Split()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    gate: GateConfig = GateConfig()
    drift: DriftThresholds = DriftThresholds()
    validation: ValidationConfig = ValidationConfig()
    kuairand: KuaiRandConfig = KuaiRandConfig()
    serving: ServingConfig = ServingConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        problems = list(_consistency_problems(self))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ---- derived views: every layer reads these rather than re-deriving them
    @property
    def feature_list(self) -> list[Feature]:
        return [
            Feature(name=name, group=group, definition=definition)
            for group in GROUPS
            for name, definition in self.features.get(group, {}).items()
        ]

    def feature(self, name: str) -> Feature:
        for f in self.feature_list:
            if f.name == name:
                return f
        raise KeyError(f"no feature named {name!r}")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.feature_list]

    def group_features(self, group: str) -> list[Feature]:
        return [f for f in self.feature_list if f.group == group]

    @property
    def outcome_names(self) -> list[str]:
        return list(self.outcomes)

    @property
    def true_columns(self) -> list[str]:
        return [TRUE_PREFIX + o for o in self.outcomes]

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    @property
    def source_names(self) -> list[str]:
        return list(self.sources)

    def label_table(self) -> dict[str, dict[str, str | None]]:
        """source -> task -> outcome column (None where the source does not label the task)."""
        return {s: {t: self.tasks[t].labels.get(s) for t in self.tasks} for s in self.sources}

    def loss_mask(self) -> dict[str, dict[str, float]]:
        """source -> task -> directional mask weight."""
        return {s: {t: self.tasks[t].mask.get(s, 0.0) for t in self.tasks} for s in self.sources}

    def allowed_values(self, source: str, feature: str) -> list[Any]:
        """The values `feature` may take on rows of `source` (the feature's whole vocabulary if unrestricted)."""
        restricted = self.sources[source].values.get(feature)
        if restricted is not None:
            return list(restricted)
        definition = self.feature(feature).definition
        if not isinstance(definition, CategoricalFeature):
            raise KeyError(f"feature {feature!r} is not categorical")
        return list(definition.values)

    def fingerprint(self) -> str:
        """A short stable hash of the spec's content, stored with data and models."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _consistency_problems(spec: Spec) -> Iterable[str]:
    unknown_groups = set(spec.features) - set(GROUPS)
    if unknown_groups:
        yield f"features: unknown group(s) {sorted(unknown_groups)}; groups are {list(GROUPS)}"
    seen: dict[str, str] = {}
    reserved = set(META_COLUMNS) | set(spec.outcomes)
    for group, feats in spec.features.items():
        for name in feats:
            if name in seen:
                yield f"features.{group}.{name}: also declared in group {seen[name]!r}"
            seen[name] = group
            if name in reserved or name.startswith(TRUE_PREFIX):
                yield f"features.{group}.{name}: the name is reserved for a meta, outcome or true_* column"
    for sname, source in spec.sources.items():
        for outcome in source.observes:
            if outcome not in spec.outcomes:
                yield f"sources.{sname}.observes: unknown outcome {outcome!r}; outcomes are {list(spec.outcomes)}"
        for fname, values in source.values.items():
            definition = spec.features.get(seen.get(fname, ""), {}).get(fname)
            if not isinstance(definition, CategoricalFeature):
                yield f"sources.{sname}.values.{fname}: not a declared categorical feature"
                continue
            extra = set(values) - set(definition.values)
            if extra:
                yield f"sources.{sname}.values.{fname}: {sorted(extra, key=str)} not among the feature's values"
    if not spec.tasks:
        yield "tasks: at least one task is needed"
    for tname, task in spec.tasks.items():
        for sname, outcome in task.labels.items():
            if sname not in spec.sources:
                yield f"tasks.{tname}.labels.{sname}: unknown source; sources are {list(spec.sources)}"
            elif outcome is not None and outcome not in spec.sources[sname].observes:
                yield f"tasks.{tname}.labels.{sname}: source {sname!r} does not observe outcome {outcome!r}"
        for sname, weight in task.mask.items():
            if sname not in spec.sources:
                yield f"tasks.{tname}.mask.{sname}: unknown source; sources are {list(spec.sources)}"
            elif not 0 <= weight <= 1:
                yield f"tasks.{tname}.mask.{sname}: weight {weight} outside [0, 1]"
            elif weight > 0 and task.labels.get(sname) is None:
                yield f"tasks.{tname}.mask.{sname}: the source trains this task but labels.{sname} maps no outcome"
        if not any(w > 0 for w in task.mask.values()):
            yield f"tasks.{tname}.mask: no source trains this task"
        if task.home_source is not None and task.home_source not in spec.sources:
            yield f"tasks.{tname}.home_source: unknown source {task.home_source!r}"
    for oname in spec.outcomes:
        model = spec.world.outcomes.get(oname)
        if model is None:
            yield f"world.outcomes: no generator model for outcome {oname!r}"
            continue
        if model.given is not None and model.given not in spec.outcomes:
            yield f"world.outcomes.{oname}.given: unknown outcome {model.given!r}"
        missing = [s for s in spec.sources if oname in spec.sources[s].observes and s not in model.rate]
        if missing:
            yield f"world.outcomes.{oname}.rate: no rate for source(s) {missing}"
        for sname, rate in model.rate.items():
            if not 0 < rate < 1:
                yield f"world.outcomes.{oname}.rate.{sname}: {rate} is not a probability in (0, 1)"
    for oname in set(spec.world.outcomes) - set(spec.outcomes):
        yield f"world.outcomes.{oname}: not a declared outcome"
    for group in spec.model.exclude_groups:
        if group not in GROUPS:
            yield f"model.exclude_groups: unknown group {group!r}; groups are {list(GROUPS)}"
    for sname in spec.training.sources:
        if sname not in spec.sources:
            yield f"training.sources: unknown source {sname!r}"
    for sname in spec.training.source_ratio:
        if sname not in spec.sources:
            yield f"training.source_ratio.{sname}: unknown source"
    for tname in spec.training.selection_tasks:
        if tname not in spec.tasks:
            yield f"training.selection_tasks: unknown task {tname!r}"
    for slname, sl in spec.evaluation.slices.items():
        if sl.column not in set(seen) | set(META_COLUMNS):
            yield f"evaluation.slices.{slname}.column: {sl.column!r} is neither a feature nor a meta column"
    for tname, floors in spec.gate.floors.items():
        if tname not in spec.tasks:
            yield f"gate.floors.{tname}: unknown task"
        for metric in set(floors) - set(METRICS):
            yield f"gate.floors.{tname}.{metric}: unknown metric; metrics are {list(METRICS)}"
    for metric in set(spec.gate.max_regression) - set(METRICS):
        yield f"gate.max_regression.{metric}: unknown metric; metrics are {list(METRICS)}"
    for oname in set(spec.validation.positive_rates) - set(spec.outcomes):
        yield f"validation.positive_rates.{oname}: not a declared outcome"
    yield from _drift_problems(spec, seen)
    # every task is an objective by its own name, so a named objective may not reuse one
    for oname in set(spec.serving.objectives) & set(spec.tasks):
        yield f"serving.objectives.{oname}: the name is taken by a task (which is an objective by itself)"
    days_needed = spec.split.validation_days + spec.split.test_days
    if spec.world.days <= days_needed:
        yield f"world.days: {spec.world.days} leaves no training days after {days_needed} validation + test days"


def drift_columns(spec: Spec) -> dict[str, Feature]:
    """Monitored column -> feature: each feature by name, a multi-valued one as `<name>.len` and `<name>.top`."""
    out: dict[str, Feature] = {}
    for f in spec.feature_list:
        if f.name in spec.drift.exclude:
            continue
        if isinstance(f.definition, MultiFeature):
            out[f"{f.name}.len"] = out[f"{f.name}.top"] = f
        else:
            out[f.name] = f
    return out


def _drift_problems(spec: Spec, features: Mapping[str, str]) -> Iterable[str]:
    # Exclusions and thresholds that name a feature the spec does not declare are ignored (monitoring only reads
    # declared features), so a preset that drops a feature need not edit the drift section too.
    for column in spec.drift.segments:
        definition = spec.features.get(features.get(column, ""), {}).get(column)
        if column != "source" and not isinstance(definition, CategoricalFeature):
            yield f"drift.segments: {column!r} is neither 'source' nor a categorical feature"
    columns = drift_columns(spec)
    for column, key in spec.drift.within.items():
        if column.partition(".")[0] in features and column not in columns:
            yield f"drift.within.{column}: {column!r} is not a monitored column (excluded, or a wrong suffix)"
        if column.partition(".")[0] in features and key not in features:
            yield f"drift.within.{column}: {key!r} is not a feature"
    for column in spec.drift.label_segments:
        definition = spec.features.get(features.get(column, ""), {}).get(column)
        if column in features and not isinstance(definition, CategoricalFeature):
            yield f"drift.label_segments: {column!r} is not a categorical feature"
    within = {f"{c}|{k}" for c, k in spec.drift.within.items()}
    for key in spec.drift.thresholds:
        segment, _, column = key.rpartition("/")
        if column in within:
            pass  # a within column (`format|campaign_id`)
        elif column.partition(".")[0] in features and column not in columns:
            yield f"drift.thresholds.{key}: {column!r} is not a monitored column (excluded, or a wrong suffix)"
        if segment and segment.partition("=")[0] not in spec.drift.segments:
            yield f"drift.thresholds.{key}: {segment!r} is not a segment (segments: {spec.drift.segments})"


# --------------------------------------------------------------------------------------------------- loading
def default_spec_path() -> Path:
    """Where the default spec ships inside the package."""
    return Path(str(resources.files("coldcast") / "presets" / "default.yaml"))


def load_spec(
    path: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    *,
    preset: str | None = None,
    base: str | Path | None = None,
) -> Spec:
    """Load the shipped default spec, deep-merge a preset, a YAML file and `key=value` overrides, and validate.

    `path` may be a full spec or a partial one: its keys are merged over the default. Overrides are dotted
    paths (`world.impressions=20000`) whose values are parsed as YAML, or a nested mapping. `base` replaces the
    shipped default as the starting point (e.g. the spec a dataset or a model directory was made with).
    """
    raw = _read_yaml(Path(base) if base is not None else default_spec_path())
    if preset is not None:
        preset_path = default_spec_path().parent / f"{preset}.yaml"
        if not preset_path.exists():
            available = sorted(p.stem for p in preset_path.parent.glob("*.yaml"))
            raise SpecError(f"unknown preset {preset!r}; presets are {available}")
        raw = deep_merge(raw, _read_yaml(preset_path))
    if path is not None:
        raw = deep_merge(raw, _read_yaml(Path(path)))
    if overrides:
        raw = apply_overrides(raw, overrides)
    return spec_from_dict(raw)


def spec_from_dict(raw: Mapping[str, Any]) -> Spec:
    """Validate a plain mapping into a Spec, turning pydantic's errors into messages that name the key."""
    try:
        return Spec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_explain(err, raw)) from None


def dump_spec(spec: Spec, path: str | Path) -> None:
    """Write the resolved spec as YAML."""
    Path(path).write_text(spec.to_yaml())


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise SpecError(f"spec file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec must be a mapping at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge `update` over `base`; a mapping key set to null in `update` deletes it.

    A null for a key `base` lacks is a no-op, so a preset that deletes keys merges the same over the shipped
    default as over a spec it already shaped (e.g. a dataset's spec.yaml).
    """
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if value is None and (key not in out or isinstance(out[key], Mapping)):
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (values parsed as YAML) or a nested mapping over a raw spec."""
    if isinstance(overrides, Mapping):
        return deep_merge(raw, overrides)
    out = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"override {item!r} is not of the form key.path=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise SpecError(f"override {item!r}: value is not valid YAML: {err}") from None
        nested: Any = value
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        out = deep_merge(out, nested)
    return out


def _explain(err: ValidationError, raw: Mapping[str, Any]) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        # Discriminated unions put the tag in the location ("...country.categorical.values"): drop it.
        loc = [p for p in loc if p not in {"id", "categorical", "numeric", "multi"} or p == loc[-1]]
        key = ".".join(loc) or "<spec>"
        if e["type"] == "extra_forbidden":
            parent = _lookup(raw, loc[:-1])
            hint = ""
            if isinstance(parent, Mapping):
                known = _known_keys(err, loc)
                close = difflib.get_close_matches(loc[-1], known, n=1)
                if close:
                    hint = f" (did you mean {close[0]!r}?)"
            lines.append(f"unknown key {key!r}{hint}")
        elif e["type"] == "missing":
            lines.append(f"missing key {key!r}")
        elif e["type"] == "value_error" and key == "<spec>":
            lines.append(str(e["msg"]).removeprefix("Value error, "))
        else:
            lines.append(f"{key}: {str(e['msg']).removeprefix('Value error, ')}")
    return "invalid spec: " + "; ".join(lines)


def _lookup(raw: Any, path: Sequence[str]) -> Any:
    node = raw
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return None
    return node


def _known_keys(err: ValidationError, loc: Sequence[str]) -> list[str]:
    """Field names of the model that rejected an extra key, found by walking the Spec's fields."""
    model: Any = Spec
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            # A dict level (e.g. features.user.<name>) or a union: fall back to every field name we know.
            return sorted(_all_field_names())
        annotation = fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None:
            return sorted(_all_field_names())
    return list(getattr(model, "model_fields", {}))


def _all_field_names() -> set[str]:
    names: set[str] = set()
    stack: list[type[BaseModel]] = [Spec]
    seen: set[type[BaseModel]] = set()
    models = [IdFeature, CategoricalFeature, NumericFeature, MultiFeature, Source, Task, OutcomeModel]
    stack.extend(models)
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            names.add(name)
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                stack.append(ann)
    return names
