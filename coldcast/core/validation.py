"""Data validation from the spec: a Great Expectations suite per shard, quarantine of bad rows, a typed report."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from coldcast.core.data import (
    IMPRESSIONS,
    MANIFEST,
    SPEC_FILE,
    DataError,
    Dataset,
    atomic_dir,
    write_json,
    write_parquet,
)
from coldcast.core.spec import (
    META_COLUMNS,
    TRUE_PREFIX,
    CategoricalFeature,
    MultiFeature,
    NumericFeature,
    Spec,
)

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.core import ExpectationSuiteValidationResult

Policy = Literal["fail", "quarantine"]
Level = Literal["table", "row"]

QUARANTINE = "quarantine"
REPORT_FILE = "validation.json"
DOCS = "docs"
REASON = "reason"
_SITE = "coldcast"
_ANALYTICS_ENV = "GX_ANALYTICS_ENABLED"
# The lower positive-rate bound is enforced once this many positives are expected at it: with fewer, an
# all-zero (outcome, source) is ordinary noise on small data rather than broken labels.
_MIN_EXPECTED_POSITIVES = 3.0

# dtype names GX's type-list expectation understands. Integer categoricals may arrive as floats: pandas reads an
# integer column with nulls as float64, and the null is a row failure, not a wrong column type.
_STR = ["str", "StringDtype"]
_INT = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
_NUMBER = [*_INT, "float32", "float64"]
_BOOL = ["bool", "BooleanDtype"]
_META_TYPES: dict[str, list[str]] = {
    "impression_id": _STR,
    "date": _STR,
    "source": _STR,
    "cost": _NUMBER,
    "popularity_tier": _NUMBER,
    "less_streamed": _BOOL,
}


class DataValidationError(ValueError):
    """Data that failed validation; the message names each failed check and its column."""

    def __init__(self, where: str, failures: list[CheckResult], report: Any = None) -> None:
        self.failures = failures
        self.report = report
        lines = "; ".join(f.describe() for f in failures)
        super().__init__(f"data validation failed on {where}: {lines}")


# --------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class CheckResult:
    """One failed check: its name, the column it is about, whether it is a table or a row check, and how many rows."""

    check: str
    column: str | None
    level: Level
    rows: int = 0
    detail: str = ""
    engine: Literal["great_expectations", "pandas"] = "pandas"

    @property
    def reason(self) -> str:
        """The label a quarantined row carries for this check (`value_in_set:country`)."""
        return f"{self.check}:{self.column}" if self.column else self.check

    def describe(self) -> str:
        where = f"column {self.column!r}" if self.column else "the table"
        rows = f" ({self.rows} rows)" if self.level == "row" else ""
        return f"{self.check} on {where}{rows}: {self.detail}"


@dataclass(frozen=True)
class FrameReport:
    """Counts in and out for one validated frame (a shard), with every failed check."""

    name: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    reasons: dict[str, int]
    failures: list[CheckResult]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FrameValidation:
    """A validated frame: the input (index reset), which rows passed, and the reasons of those that did not."""

    frame: pd.DataFrame
    valid_mask: np.ndarray
    reasons: pd.Series
    report: FrameReport

    @property
    def valid(self) -> pd.DataFrame:
        return self.frame[self.valid_mask]

    @property
    def quarantined(self) -> pd.DataFrame:
        """The failed rows with a `reason` column: every failed check of the row, joined by '; '."""
        bad = ~self.valid_mask
        return self.frame[bad].assign(**{REASON: self.reasons[bad]})


@dataclass(frozen=True)
class ValidationReport:
    """What validation did to a dataset: counts in and out, reasons, rates, per-shard reports, where artifacts are."""

    policy: str
    production: bool
    spec_fingerprint: str
    expectations: int
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    reasons: dict[str, int]
    failures: list[CheckResult]
    positive_rates: dict[str, dict[str, float]]
    shards: list[FrameReport] = field(default_factory=list)
    docs: str | None = None

    @property
    def clean(self) -> bool:
        """True when no check failed on any row (a report returned under `quarantine` may have quarantined some)."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["clean"] = self.clean
        return out


# --------------------------------------------------------------------------------------------------- the suite
def required_columns(spec: Spec) -> list[str]:
    """Columns every impression table must have: meta columns, features and outcomes."""
    return [*META_COLUMNS, *spec.feature_names, *spec.outcome_names]


def _gx_types(spec: Spec) -> dict[str, list[str]]:
    """Expected dtypes of the columns GX can type-check (timestamps, dates and lists are checked in pandas)."""
    types = dict(_META_TYPES)
    for f in spec.feature_list:
        d = f.definition
        if isinstance(d, CategoricalFeature):
            types[f.name] = _NUMBER if d.dtype == "int64" else _STR
        elif isinstance(d, NumericFeature):
            types[f.name] = _NUMBER
        elif not isinstance(d, MultiFeature):
            types[f.name] = _STR
    for o in spec.outcome_names:
        types[o] = _NUMBER
    return types


def build_suite(spec: Spec) -> ExpectationSuite:
    """The Great Expectations suite for one batch of impressions, generated from the spec.

    Each expectation's `meta` names its check, column and level (table or row). The time window is a suite
    parameter ($window_start, $window_end, $window_dates) so one suite serves every shard.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    def tag(check: str, column: str | None = None, level: Level = "row") -> dict[str, Any]:
        return {"check": check, "column": column, "level": level}

    ex: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=required_columns(spec), exact_match=False, meta=tag("columns_present", level="table")
        )
    ]
    for column, types in _gx_types(spec).items():
        ex.append(
            gxe.ExpectColumnValuesToBeInTypeList(
                column=column, type_list=types, meta=tag("column_type", column, "table")
            )
        )
    for column in [*META_COLUMNS, *spec.feature_names]:
        ex.append(gxe.ExpectColumnValuesToNotBeNull(column=column, meta=tag("not_null", column)))
    ex += [
        gxe.ExpectColumnValuesToBeInSet(
            column="source", value_set=spec.source_names, meta=tag("value_in_set", "source")
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="popularity_tier",
            value_set=list(range(spec.popularity.tiers)),
            meta=tag("value_in_set", "popularity_tier"),
        ),
        gxe.ExpectColumnValuesToBeBetween(column="cost", min_value=0, meta=tag("in_range", "cost")),
        gxe.ExpectColumnValuesToBeBetween(
            column="timestamp",
            min_value={"$PARAMETER": "window_start"},
            max_value={"$PARAMETER": "window_end"},
            strict_max=True,
            meta=tag("timestamp_window", "timestamp"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="date", value_set={"$PARAMETER": "window_dates"}, meta=tag("date_window", "date")
        ),
    ]
    for f in spec.feature_list:
        d = f.definition
        if isinstance(d, CategoricalFeature):
            ex.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=f.name, value_set=list(d.values), meta=tag("value_in_set", f.name)
                )
            )
            for sname, source in spec.sources.items():
                if f.name in source.values:
                    ex.append(
                        gxe.ExpectColumnValuesToBeInSet(
                            column=f.name,
                            value_set=list(source.values[f.name]),
                            row_condition=Column("source") == sname,
                            meta=tag("source_values", f.name),
                        )
                    )
        elif isinstance(d, NumericFeature):
            ex.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=f.name, min_value=d.min, max_value=d.max, meta=tag("in_range", f.name)
                )
            )
    for o in spec.outcome_names:
        ex.append(gxe.ExpectColumnValuesToBeInSet(column=o, value_set=[0, 1], meta=tag("label_value", o)))
        observing = [s for s in spec.source_names if o in spec.sources[s].observes]
        blind = [s for s in spec.source_names if s not in observing]
        if observing:
            ex.append(
                gxe.ExpectColumnValuesToNotBeNull(
                    column=o, row_condition=Column("source").is_in(observing), meta=tag("label_missing", o)
                )
            )
        if blind:
            ex.append(
                gxe.ExpectColumnValuesToBeNull(
                    column=o, row_condition=Column("source").is_in(blind), meta=tag("label_unobserved", o)
                )
            )
    return gx.ExpectationSuite(name=f"{spec.name}-impressions", expectations=ex)


@contextlib.contextmanager
def _analytics_off() -> Iterator[None]:
    """GX reads GX_ANALYTICS_ENABLED when a context starts: off for this call unless the caller chose otherwise."""
    previous = os.environ.get(_ANALYTICS_ENV)
    if previous is None:
        os.environ[_ANALYTICS_ENV] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_ANALYTICS_ENV, None)


class ExpectationRunner:
    """An ephemeral GX context holding the spec's suite: build once, run once per batch, then build Data Docs."""

    def __init__(self, spec: Spec) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        with _analytics_off():
            context = gx.get_context(mode="ephemeral")
        context.enable_analytics(False)
        # tqdm bars per batch would flood logs of a pipeline step
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        # the ephemeral context comes with a site in a temp folder; docs go only where we say
        for site in list(context.list_data_docs_sites()):
            context.delete_data_docs_site(site)
        batch = (
            context.data_sources.add_pandas("coldcast")
            .add_dataframe_asset("impressions")
            .add_batch_definition_whole_dataframe("batch")
        )
        suite = context.suites.add(build_suite(spec))
        self.expectations = len(suite.expectations)
        # the columns the suite reads, and the list columns it only checks for nulls (see `batch`)
        read = {getattr(e, "column", None) for e in suite.expectations} - {None}
        self.columns = list(dict.fromkeys([*required_columns(spec), *sorted(read)]))
        self.lists = frozenset(f.name for f in spec.feature_list if isinstance(f.definition, MultiFeature))
        self.context = context
        self.definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{spec.name}-impressions", data=batch, suite=suite)
        )

    def run(self, df: pd.DataFrame, window: tuple[dt.date, dt.date], name: str) -> ExpectationSuiteValidationResult:
        """Validate one frame; COMPLETE results carry the index of every failing row."""
        from great_expectations.core.run_identifier import RunIdentifier

        start, end = window
        days = (end - start).days + 1
        params = {
            "window_start": pd.Timestamp(start, tz="UTC"),
            "window_end": pd.Timestamp(end + dt.timedelta(days=1), tz="UTC"),
            "window_dates": [(start + dt.timedelta(days=i)).isoformat() for i in range(days)],
        }
        with _analytics_off():
            return self.definition.run(
                batch_parameters={"dataframe": self.batch(df)},
                expectation_parameters=params,
                result_format={"result_format": "COMPLETE"},
                run_id=RunIdentifier(run_name=name),
            )

    def batch(self, df: pd.DataFrame) -> pd.DataFrame:
        """The frame GX validates: the columns the suite reads (same index), each list column as 0.0 / NaN.

        The suite checks list columns for nulls only (their types, lengths and values are checked in pandas),
        and lists cost GX dearly: its batch fingerprint cannot hash them and pickles the whole frame instead,
        and each expectation copies the frame it filters. Columns the suite never reads (`true_*`, extras) are
        left out for the same reason; results and row positions are unchanged.
        """
        columns = {
            c: np.where(df[c].isna().to_numpy(), np.nan, 0.0) if c in self.lists else df[c]
            for c in self.columns
            if c in df.columns
        }
        # built in one go, the frame's blocks are merged by dtype once; a frame with columns replaced in place
        # has them merged again by each of GX's filtered copies (3.2 against 1.8 s per default-density shard)
        return pd.DataFrame(columns, index=df.index)

    def build_docs(self, folder: Path) -> Path:
        """Render Data Docs for every batch run so far into `folder` (the HTML loads its styles from CDNs)."""
        self.context.add_data_docs_site(
            _SITE,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(folder)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        with _analytics_off():
            self.context.build_data_docs(site_names=[_SITE])
        return folder / "index.html"


# --------------------------------------------------------------------------------------------------- one frame
def _raised(info: Any) -> str | None:
    """The exception message of a GX result, if computing it raised (the shape differs by failure point)."""
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info["raised_exception"] else None
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _gx_failures(
    result: ExpectationSuiteValidationResult,
) -> tuple[list[CheckResult], list[tuple[CheckResult, np.ndarray]]]:
    """Split GX results into table failures and row failures with the positions of the failing rows."""
    table: list[CheckResult] = []
    rows: list[tuple[CheckResult, np.ndarray]] = []
    errors: list[tuple[str | None, str]] = []
    for r in result.results:
        meta = r.expectation_config.meta or {}
        check, column, level = meta.get("check", r.expectation_config.type), meta.get("column"), meta.get("level")
        error = _raised(r.exception_info)
        if error is not None:
            errors.append((column, error))
            continue
        if r.success:
            continue
        res = r.result or {}
        if check == "columns_present":
            for missing in res.get("details", {}).get("mismatched", {}).get("missing", []):
                table.append(
                    CheckResult(check, missing, "table", 0, "required by the spec but absent", "great_expectations")
                )
        elif level == "table":
            expected = r.expectation_config.kwargs.get("type_list")
            detail = f"expected one of {expected}, found {res.get('observed_value')}"
            table.append(CheckResult(check, column, "table", 0, detail, "great_expectations"))
        else:
            index = np.asarray(
                [i["index"] if isinstance(i, dict) else i for i in res.get("unexpected_index_list") or []]
            )
            sample = list(res.get("partial_unexpected_list") or [])[:5]
            detail = f"unexpected values, e.g. {sample}" if sample else "failed"
            rows.append((CheckResult(check, column, "row", len(index), detail, "great_expectations"), index))
    # an expectation on a missing or mistyped column raises: that column's table failure already says why
    broken = {c.column for c in table}
    for column, error in errors:
        if column not in broken:
            table.append(CheckResult("expectation_error", column, "table", 0, error, "great_expectations"))
    return table, rows


def _table_checks(df: pd.DataFrame, spec: Spec, truth_allowed: bool) -> list[CheckResult]:
    """Table checks GX cannot express here: forbidden truth columns and the dtypes of timestamps, dates and lists."""
    out = [
        CheckResult("truth_columns", c, "table", 0, "true_* columns are not allowed in production data")
        for c in df.columns
        if str(c).startswith(TRUE_PREFIX) and not truth_allowed
    ]
    if "timestamp" in df and not isinstance(df["timestamp"].dtype, pd.DatetimeTZDtype):
        out.append(
            CheckResult(
                "column_type", "timestamp", "table", 0, f"expected UTC timestamps, found {df['timestamp'].dtype}"
            )
        )
    if "show_launch_date" in df:
        col = df["show_launch_date"]
        dated = pd.api.types.is_datetime64_any_dtype(col) or all(isinstance(v, dt.date) for v in col.dropna())
        if not dated:
            out.append(CheckResult("column_type", "show_launch_date", "table", 0, f"expected dates, found {col.dtype}"))
    for f in spec.feature_list:
        if not isinstance(f.definition, MultiFeature) or f.name not in df:
            continue
        if not all(isinstance(v, list | tuple | np.ndarray) for v in df[f.name].dropna()):
            out.append(CheckResult("column_type", f.name, "table", 0, "expected a list of values per row"))
    return out


def _row_checks(df: pd.DataFrame, spec: Spec, seen_ids: set[str] | None) -> list[tuple[CheckResult, np.ndarray]]:
    """Row checks GX cannot express: ids unique across shards (keeping the first copy), dates and list columns."""
    out: list[tuple[CheckResult, np.ndarray]] = []

    def add(check: str, column: str, positions: Iterable[int], detail: str) -> None:
        index = np.unique(np.asarray(list(positions), dtype=np.int64))
        if len(index):
            out.append((CheckResult(check, column, "row", len(index), detail), index))

    # table checks have passed by now, so every column is present with the right type
    ids = df["impression_id"]
    # GX's uniqueness expectation flags every copy, the first one too; only later copies are bad rows
    dup = ids.duplicated(keep="first") & ids.notna()
    if seen_ids:
        # a lookup per row: Series.isin would copy the whole set (every earlier shard's ids) into an array
        dup |= np.fromiter(map(seen_ids.__contains__, ids.to_numpy()), dtype=bool, count=len(ids))
    add("unique_id", "impression_id", np.flatnonzero(dup.to_numpy()), "id seen on an earlier row")
    day = df["timestamp"].dt.tz_convert("UTC").dt.floor("D")
    stated = pd.to_datetime(df["date"], format="%Y-%m-%d", errors="coerce", utc=True)
    mismatch = df["date"].notna() & day.notna() & (stated != day)
    add("date_matches_timestamp", "date", np.flatnonzero(mismatch.to_numpy()), "date is not the timestamp's UTC day")
    for f in spec.feature_list:
        d = f.definition
        if not isinstance(d, MultiFeature):
            continue
        lists = df[f.name].dropna()
        lengths = lists.map(len)
        add("list_length", f.name, lengths.index[lengths > d.max_length], f"more than {d.max_length} values")
        items = lists[lengths > 0].explode()
        bad = ~items.isin(d.values) if d.values is not None else items.isna()
        sample = sorted({str(v) for v in items[bad].head(20)})[:5]
        add("list_values", f.name, items.index[bad.to_numpy()], f"values outside the vocabulary, e.g. {sample}")
    return out


def _label_counts(df: pd.DataFrame, spec: Spec) -> Counter[tuple[str, str, str]]:
    """(outcome, source, 'labelled' | 'positive') -> rows, for positive rates summed over shards."""
    counts: Counter[tuple[str, str, str]] = Counter()
    if "source" not in df:
        return counts
    for o in spec.outcome_names:
        if o not in df:
            continue
        for s in spec.source_names:
            if o not in spec.sources[s].observes:
                continue
            values = df.loc[df["source"] == s, o]
            counts[o, s, "labelled"] += int(values.notna().sum())
            counts[o, s, "positive"] += int((values == 1).sum())
    return counts


def _aggregate_checks(
    rows: int, counts: Counter[tuple[str, str, str]], spec: Spec
) -> tuple[list[CheckResult], dict[str, dict[str, float]]]:
    """Table checks on the valid rows as a whole: the row count and positive rates per outcome and source."""
    cfg = spec.validation
    failures = []
    if rows < cfg.min_rows:
        failures.append(
            CheckResult("row_count", None, "table", 0, f"{rows} valid rows, at least {cfg.min_rows} required")
        )
    rates: dict[str, dict[str, float]] = {}
    for o in spec.outcome_names:
        bounds = cfg.rate_bounds(o)
        for s in spec.source_names:
            labelled = counts.get((o, s, "labelled"), 0)
            if not labelled:
                continue
            rate = counts.get((o, s, "positive"), 0) / labelled
            rates.setdefault(o, {})[s] = rate
            too_low = rate < bounds.min and labelled * bounds.min >= _MIN_EXPECTED_POSITIVES
            if rate > bounds.max or too_low:
                detail = (
                    f"source {s!r}: rate {rate:.4f} outside [{bounds.min}, {bounds.max}] over {labelled} labelled rows"
                )
                failures.append(CheckResult("positive_rate", o, "table", 0, detail))
    return failures, rates


def _world_window(spec: Spec) -> tuple[dt.date, dt.date]:
    start = spec.world.start_date
    return start, start + dt.timedelta(days=spec.world.days - 1)


def validate_frame(
    df: pd.DataFrame,
    spec: Spec,
    *,
    production: bool = False,
    window: tuple[dt.date, dt.date] | None = None,
    policy: Policy | None = None,
    aggregates: bool = True,
    seen_ids: set[str] | None = None,
    name: str = "frame",
    runner: ExpectationRunner | None = None,
) -> FrameValidation:
    """Validate one frame of impressions against the spec and split it into valid and quarantined rows.

    `window` is the first and last allowed date (default: the spec's world window). Table failures always raise
    DataValidationError; row failures raise under the `fail` policy (default: the spec's) and are quarantined
    otherwise. `aggregates` adds the row-count and positive-rate checks on the valid rows (a dataset validated
    shard by shard checks those over all shards instead). `seen_ids` holds ids from earlier shards and is updated.
    """
    policy = policy or spec.validation.policy
    truth_allowed = spec.validation.allow_truth_columns and not production
    frame = df.reset_index(drop=True)
    runner = runner or ExpectationRunner(spec)
    table = _table_checks(frame, spec, truth_allowed)
    gx_table, gx_rows = _gx_failures(runner.run(frame, window or _world_window(spec), name))
    table += gx_table
    if table:
        # nothing is split when the table itself is wrong: no row is valid, none is quarantined
        raise DataValidationError(name, table, FrameReport(name, len(frame), 0, 0, {}, table))
    row_failures = _merge_rows(gx_rows + _row_checks(frame, spec, seen_ids))
    if seen_ids is not None:
        seen_ids.update(frame["impression_id"].dropna())
    per_row: dict[int, list[str]] = defaultdict(list)
    for check, index in row_failures:
        for i in index:
            per_row[int(i)].append(check.reason)
    reasons = pd.Series([""] * len(frame), index=frame.index, dtype=object)
    for i, labels in per_row.items():
        reasons.iat[i] = "; ".join(labels)
    valid_mask = np.ones(len(frame), dtype=bool)
    valid_mask[list(per_row)] = False
    failures = [check for check, _ in row_failures]
    rows_valid = int(valid_mask.sum())
    reason_counts = {check.reason: check.rows for check in failures}
    report = FrameReport(name, len(frame), rows_valid, len(frame) - rows_valid, reason_counts, failures)
    result = FrameValidation(frame, valid_mask, reasons, report)
    if failures and policy == "fail":
        raise DataValidationError(name, failures, report)
    if aggregates:
        agg, _ = _aggregate_checks(rows_valid, _label_counts(result.valid, spec), spec)
        if agg:
            raise DataValidationError(name, agg, replace(report, failures=failures + agg))
    return result


def _merge_rows(failures: list[tuple[CheckResult, np.ndarray]]) -> list[tuple[CheckResult, np.ndarray]]:
    """One entry per reason, in reason order (a per-source check runs once per source under the same reason)."""
    merged: dict[str, tuple[CheckResult, np.ndarray]] = {}
    for check, index in failures:
        if check.reason in merged:
            first, seen = merged[check.reason]
            index = np.union1d(seen, index)
            check = replace(first, rows=len(index))
        merged[check.reason] = (check, index)
    return [merged[reason] for reason in sorted(merged)]


# --------------------------------------------------------------------------------------------------- a dataset
def _manifest_window(manifest: dict[str, Any]) -> tuple[dt.date, dt.date] | None:
    if "start_date" not in manifest or "days" not in manifest:
        return None
    start = dt.date.fromisoformat(str(manifest["start_date"]))
    return start, start + dt.timedelta(days=int(manifest["days"]) - 1)


def _shard_date(path: Path) -> dt.date:
    try:
        return dt.date.fromisoformat(path.stem)
    except ValueError:
        raise DataError(f"{path}: shard names must be dates (YYYY-MM-DD.parquet)") from None


def _merge_failures(reports: list[FrameReport]) -> list[CheckResult]:
    """One row-failure entry per reason across shards, with the total row count."""
    merged: dict[str, CheckResult] = {}
    for rep in reports:
        for f in rep.failures:
            prev = merged.get(f.reason)
            merged[f.reason] = f if prev is None else replace(prev, rows=prev.rows + f.rows)
    return [merged[reason] for reason in sorted(merged)]


def validate_dataset(
    dataset_dir: str | Path,
    spec: Spec,
    out_dir: str | Path,
    *,
    production: bool = False,
    policy: Policy | None = None,
    overwrite: bool = False,
) -> ValidationReport:
    """Validate a dataset shard by shard and write the valid rows as a dataset of the same layout.

    `out_dir` gets impressions/<date>.parquet (valid rows; a shard may be empty), quarantine/<date>.parquet
    (failed rows with their `reason`), validation.json, Data Docs under docs/, the manifest and the spec. It
    appears only if validation passes under the policy; any failure raises DataValidationError and leaves
    nothing. Only one shard is in memory at a time (plus the set of impression ids seen).
    """
    dataset = Dataset.open(dataset_dir)
    policy = policy or spec.validation.policy
    manifest = dataset.manifest
    span = _manifest_window(manifest)
    runner = ExpectationRunner(spec)
    seen: set[str] = set()
    counts: Counter[tuple[str, str, str]] = Counter()
    shards: list[FrameReport] = []
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / IMPRESSIONS).mkdir()
        (tmp / QUARANTINE).mkdir()
        for path in dataset.shards():
            day = _shard_date(path)
            if span is not None and not span[0] <= day <= span[1]:
                detail = f"shard {path.name} lies outside the manifest's window {span[0]}..{span[1]}"
                raise DataValidationError(path.stem, [CheckResult("shard_window", "date", "table", 0, detail)])
            table = pq.read_table(path)
            result = validate_frame(
                table.to_pandas(),
                spec,
                production=production,
                window=(day, day),
                policy="quarantine",
                aggregates=False,
                seen_ids=seen,
                name=path.stem,
                runner=runner,
            )
            keep = pa.array(result.valid_mask)
            # write from the Arrow table, so types (and empty shards) come out exactly as they came in
            write_parquet(table.filter(keep), tmp / IMPRESSIONS / path.name)
            if result.report.rows_quarantined:
                bad = table.filter(pc.invert(keep))
                reasons = pa.array(result.reasons[~result.valid_mask].tolist(), type=pa.string())
                write_parquet(bad.append_column(REASON, reasons), tmp / QUARANTINE / path.name)
            counts += _label_counts(result.valid, spec)
            shards.append(result.report)
        rows_valid = sum(s.rows_valid for s in shards)
        row_failures = _merge_failures(shards)
        aggregate, rates = _aggregate_checks(rows_valid, counts, spec)
        report = ValidationReport(
            policy=policy,
            production=production,
            spec_fingerprint=spec.fingerprint(),
            expectations=runner.expectations,
            rows_in=sum(s.rows_in for s in shards),
            rows_valid=rows_valid,
            rows_quarantined=sum(s.rows_quarantined for s in shards),
            reasons={f.reason: f.rows for f in row_failures},
            failures=row_failures + aggregate,
            positive_rates=rates,
            shards=shards,
            docs=f"{DOCS}/index.html",
        )
        if policy == "fail" and row_failures:
            raise DataValidationError(str(dataset.root), row_failures, report)
        if aggregate:
            raise DataValidationError(str(dataset.root), aggregate, report)
        if (dataset.root / "entities").is_dir():
            shutil.copytree(dataset.root / "entities", tmp / "entities")
        (tmp / SPEC_FILE).write_text(spec.to_yaml())
        out_manifest = {
            **manifest,
            "rows": report.rows_valid,
            "shards": {s.name: s.rows_valid for s in shards},
            "spec_fingerprint": spec.fingerprint(),
            "validation": {
                "input": str(dataset.root),
                "policy": policy,
                "rows_in": report.rows_in,
                "rows_valid": report.rows_valid,
                "rows_quarantined": report.rows_quarantined,
                "report": REPORT_FILE,
            },
        }
        write_json(out_manifest, tmp / MANIFEST)
        runner.build_docs(tmp / DOCS)
        write_json(report.to_dict(), tmp / REPORT_FILE)
    return report
