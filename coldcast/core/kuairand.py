"""KuaiRand adapter: the upstream KuaiRand file layout -> a coldcast dataset (impressions by UTC day, a manifest)."""

from __future__ import annotations

import csv
import datetime as dt
import glob
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from coldcast.core.data import IMPRESSIONS, MANIFEST, SPEC_FILE, DataError, atomic_dir, write_json, write_parquet
from coldcast.core.spec import (
    CategoricalFeature,
    Feature,
    IdFeature,
    MultiFeature,
    NumericFeature,
    Spec,
)
from coldcast.core.world import assign_tiers

KIND = "coldcast.kuairand"
ADAPTER_VERSION = "1"
ATTRIBUTION = (
    "KuaiRand: Gao et al., 'KuaiRand: An Unbiased Sequential Recommendation Dataset with Randomly Exposed "
    "Videos', CIKM 2022 (https://kuairand.com), licensed CC BY-SA 4.0"
)
QUARANTINE = "quarantine"
REASON = "reason"
ProgressFn = Callable[[int, int], None]

# What the impression led to, recorded beside the labels: never a feature, nor anything derived from one. They
# are not even parsed; they only take part in recognising duplicate rows.
OUTCOME_COLUMNS: tuple[str, ...] = ("play_time_ms", "profile_stay_time", "comment_stay_time", "is_profile_enter")
# Binary labels of the impression: a label map may name one, a feature never (earlier rows' labels may feed the
# trailing counts and recent_* lists, which read the past only).
LABEL_COLUMNS: tuple[str, ...] = (
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "long_view",
)
KEY_COLUMNS: tuple[str, ...] = ("user_id", "video_id", "time_ms")
# The hour bucket of an event: copies of one event upstream sometimes differ only here.
BUCKET_COLUMNS: tuple[str, ...] = ("date", "hourmin")
# Features the adapter computes rather than reads.
DERIVED_FEATURES: dict[str, str] = {
    "hour": "hour of the impression on the app's local clock (kuairand.timezone)",
    "weekday": "weekday of the impression on the local clock (0 = Monday)",
    "video_trailing_streams": "earlier plays (kuairand.history_outcome) of the video in the popularity window",
    "video_trailing_impressions": "earlier impressions of the video in the popularity window",
    "recent_videos": "videos the user played before the impression, most recent first",
    "recent_authors": "authors of those videos",
}
# The upstream archive (KuaiRand-Pure.tar.gz and the larger variants) unpacks its CSVs into this subfolder.
UPSTREAM_DATA_DIR = "data"
_MS_PER_DAY = 86_400_000
_BLOCK_BYTES = 8 << 20


class KuaiRandError(DataError):
    """KuaiRand files that cannot be imported with the given spec; the message names the file, column or key."""


# --------------------------------------------------------------------------------------------------- files
@dataclass(frozen=True)
class KuaiRandFiles:
    """The upstream files found in a source folder (every optional one may be None)."""

    logs: list[Path]
    users: Path | None
    videos: Path | None
    statistics: Path | None


def find_files(src_dir: str | Path, spec: Spec) -> KuaiRandFiles:
    """Find the logs and the static files by the spec's `kuairand` patterns; at least one log is required.

    `src_dir` is the folder of CSVs, or the folder an upstream archive unpacks to (KuaiRand-Pure/, whose CSVs
    are in data/).
    """
    root = Path(src_dir)
    if not root.is_dir():
        raise KuaiRandError(f"KuaiRand folder not found: {root}")
    cfg = spec.kuairand

    def matching_logs(folder: Path) -> list[Path]:
        return sorted({Path(p) for pattern in cfg.logs for p in glob.glob(str(folder / pattern))})

    logs = matching_logs(root)
    if not logs and (root / UPSTREAM_DATA_DIR).is_dir():
        logs = matching_logs(root / UPSTREAM_DATA_DIR)
        if logs:
            root = root / UPSTREAM_DATA_DIR
    if not logs:
        raise KuaiRandError(
            f"{root} has no impression log matching {cfg.logs} (kuairand.logs), nor has its {UPSTREAM_DATA_DIR}/ folder"
        )

    def one(pattern: str, key: str) -> Path | None:
        found = sorted(glob.glob(str(root / pattern)))
        if len(found) > 1:
            names = [Path(f).name for f in found]
            raise KuaiRandError(f"{root}: several files match kuairand.{key} {pattern!r}: {names}; name one")
        return Path(found[0]) if found else None

    return KuaiRandFiles(
        logs=logs,
        users=one(cfg.users, "users"),
        videos=one(cfg.videos, "videos"),
        statistics=one(cfg.statistics, "statistics"),
    )


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        row = next(csv.reader(f), None)
    if not row:
        raise KuaiRandError(f"{path}: empty file (no header line)")
    return [c.strip() for c in row]


def _count_lines(path: Path) -> int:
    """Data lines of a CSV (for progress), counted in binary blocks without parsing."""
    n = 0
    with path.open("rb") as f:
        while block := f.read(1 << 24):
            n += block.count(b"\n")
    return max(n - 1, 0)


# --------------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class FeaturePlan:
    """Where each feature of the spec comes from: the log, the user file, the video file, or computed."""

    log: list[Feature]
    user: list[Feature]
    video: list[Feature]
    derived: list[Feature]


def plan_features(spec: Spec, files: KuaiRandFiles) -> FeaturePlan:
    """Resolve every spec feature to a KuaiRand column or a derived feature, refusing outcomes and leaky columns."""
    log_cols = set().union(*(_header(p) for p in files.logs))
    user_cols = set(_header(files.users)) if files.users else set()
    video_cols = set(_header(files.videos)) if files.videos else set()
    stat_cols = set(_header(files.statistics)) - {"video_id"} if files.statistics else set()
    plan: dict[str, list[Feature]] = {"log": [], "user": [], "video": [], "derived": []}
    problems = []
    for f in spec.feature_list:
        where = f"features.{f.group}.{f.name}"
        if f.name in OUTCOME_COLUMNS:
            problems.append(f"{where}: {f.name!r} is an outcome of the impression and can never be a feature")
        elif f.name in LABEL_COLUMNS:
            problems.append(f"{where}: {f.name!r} is a label of the impression and can never be a feature")
        elif f.name in DERIVED_FEATURES:
            plan["derived"].append(f)
        elif f.name in ("user_id", "video_id"):
            plan["log"].append(f)  # the join keys come from the log itself, known or not to the static files
        elif f.name in user_cols:
            plan["user"].append(f)
        elif f.name in video_cols:
            plan["video"].append(f)
        elif f.name in log_cols and f.name not in BUCKET_COLUMNS and f.name != "time_ms":
            plan["log"].append(f)
        elif f.name in stat_cols:
            problems.append(
                f"{where}: {f.name!r} exists only in {files.statistics.name if files.statistics else ''}, whose "
                "counts cover the whole upstream period (the future of most impressions): never a feature"
            )
        else:
            # say where we looked, so that a missing optional file is obvious
            looked = ["the logs"] + [p.name for p in (files.users, files.videos) if p is not None]
            absent = [key for key, p in (("users", files.users), ("videos", files.videos)) if p is None]
            hint = "".join(f" (no file matches kuairand.{key})" for key in absent)
            problems.append(
                f"{where}: no column {f.name!r} in {', '.join(looked)} and no derived feature of that name{hint}; "
                f"derived features are {sorted(DERIVED_FEATURES)}"
            )
    if problems:
        raise KuaiRandError("spec and KuaiRand files disagree: " + "; ".join(problems))
    return FeaturePlan(**plan)


def _check_spec(spec: Spec, files: KuaiRandFiles, plan: FeaturePlan) -> None:
    """Label map, source mapping and history outcome must fit the spec and the files."""
    cfg = spec.kuairand
    problems = []
    for outcome in spec.outcome_names:
        column = cfg.labels.get(outcome)
        if column is None:
            problems.append(f"kuairand.labels: no KuaiRand column for outcome {outcome!r}")
        elif column in OUTCOME_COLUMNS:
            problems.append(f"kuairand.labels.{outcome}: {column!r} is not a binary label (labels are {LABEL_COLUMNS})")
        elif column not in LABEL_COLUMNS:
            problems.append(f"kuairand.labels.{outcome}: unknown label column {column!r}; labels are {LABEL_COLUMNS}")
    for outcome in set(cfg.labels) - set(spec.outcome_names):
        problems.append(f"kuairand.labels.{outcome}: not an outcome of the spec ({spec.outcome_names})")
    mapped = set(cfg.video_type_sources.values()) if cfg.source_by == "video_type" else set(cfg.tab_sources)
    for source in sorted(mapped - set(spec.source_names)):
        problems.append(f"kuairand: source {source!r} of the {cfg.source_by} mapping is not a spec source")
    if cfg.source_by == "video_type" and files.videos is None:
        problems.append(f"kuairand.source_by=video_type needs the video file (kuairand.videos {cfg.videos!r})")
    if cfg.history_outcome not in spec.outcome_names:
        problems.append(f"kuairand.history_outcome: {cfg.history_outcome!r} is not an outcome of the spec")
    try:
        pd.Timestamp(0, tz=cfg.timezone)
    except Exception:
        problems.append(f"kuairand.timezone: unknown time zone {cfg.timezone!r}")
    if cfg.launch_date == "upload_dt" and (files.videos is None or "upload_dt" not in _header(files.videos)):
        problems.append("kuairand.launch_date=upload_dt needs upload_dt in the video file")
    needs_author = any(f.name == "recent_authors" for f in plan.derived)
    if needs_author and (files.videos is None or "author_id" not in _header(files.videos)):
        problems.append("feature recent_authors needs author_id in the video file")
    if problems:
        raise KuaiRandError("; ".join(problems))


# --------------------------------------------------------------------------------------------------- typing
def _clean(values: pd.Series) -> pd.Series:
    """Text with surrounding whitespace trimmed and nulls as '' (in Arrow: string work in Python is slow)."""
    arr = pa.array(values.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    trimmed = pc.utf8_trim_whitespace(arr).fill_null("")
    return pd.Series(trimmed.to_numpy(zero_copy_only=False), index=values.index, dtype=object)


def _num(values: pd.Series) -> pd.Series:
    """Numbers from clean text; anything unparseable becomes NaN."""
    return pd.to_numeric(values, errors="coerce")


def _id_text(values: pd.Series) -> pd.Series:
    """Ids as text; integral numbers lose a trailing '.0' (pandas writes ints with nulls as floats)."""
    text = _clean(values.astype(str))
    num = pd.to_numeric(text, errors="coerce")
    integral = num.notna() & np.isfinite(num) & (num == np.round(num))
    out = text.copy()
    out[integral] = num[integral].astype("int64").astype(str)
    return out


def type_feature(values: pd.Series, feature: Feature) -> tuple[pd.Series, pd.Series]:
    """Raw text values -> the spec's type, and per value the reason it is unusable ('' where it is fine).

    A missing value becomes -1 (integer categoricals) or 'UNKNOWN' (string categoricals) where the spec lists
    that value, as KuaiRand itself does; otherwise it is a bad row.
    """
    d = feature.definition
    name = feature.name
    text = _clean(values)
    missing = text.eq("") | text.str.lower().isin(["nan", "null", "none"])
    reason = pd.Series("", index=values.index, dtype=object)
    if isinstance(d, IdFeature):
        reason[missing] = f"not_null:{name}"
        num = pd.to_numeric(text, errors="coerce")
        integral = num.notna() & np.isfinite(num) & (num == np.round(num))
        ids = text.copy()
        ids[integral] = num[integral].astype("int64").astype(str)
        return ids.where(~missing, ""), reason
    if isinstance(d, MultiFeature):
        lists = text.where(~missing, "").map(lambda s: [v.strip() for v in s.split(",") if v.strip()])
        lists = lists.map(lambda items: [str(int(float(v))) if _is_intlike(v) else v for v in items])
        too_long = lists.map(len) > d.max_length
        reason[too_long] = f"list_length:{name}"
        if d.values is not None:
            allowed = set(d.values)
            outside = lists.map(lambda items: any(v not in allowed for v in items))
            reason[outside & (reason == "")] = f"list_values:{name}"
        return lists, reason
    if isinstance(d, NumericFeature):
        num = _num(text)
        reason[missing] = f"not_null:{name}"
        reason[~missing & num.isna()] = f"unparseable:{name}"
        reason[num.notna() & ((num < d.min) | (num > d.max))] = f"in_range:{name}"
        return num.astype("float32"), reason
    assert isinstance(d, CategoricalFeature)
    if d.dtype == "int64":
        num = _num(text)
        if -1 in d.values:
            num = num.where(~missing, -1)
        else:
            reason[missing] = f"not_null:{name}"
        bad = ~missing & (num.isna() | (num != np.round(num)))
        reason[bad] = f"unparseable:{name}"
        ok = num.notna() & ~bad
        reason[ok & ~num.isin(d.values)] = f"value_in_set:{name}"
        return num.fillna(-1).where(ok, -1).astype("int64"), reason
    if "UNKNOWN" in d.values:
        text = text.where(~missing, "UNKNOWN")
    else:
        reason[missing] = f"not_null:{name}"
    reason[(reason == "") & ~text.isin([str(v) for v in d.values])] = f"value_in_set:{name}"
    return text, reason


def _is_intlike(value: str) -> bool:
    try:
        x = float(value)
    except ValueError:
        return False
    return np.isfinite(x) and x == round(x)


def _arrow_array(values: Any, type_: pa.DataType) -> pa.Array:
    """Values of one output column as Arrow (integers arrive as floats where pandas met a null on the way)."""
    if pa.types.is_integer(type_):
        values = np.asarray(values).astype(np.int64)
    elif pa.types.is_floating(type_):
        values = np.asarray(values, dtype=np.float64)
    return pa.array(values, type=type_, from_pandas=True)


def _arrow_type(feature: Feature) -> pa.DataType:
    d = feature.definition
    if isinstance(d, MultiFeature):
        return pa.list_(pa.string())
    if isinstance(d, NumericFeature):
        return pa.float32()
    if isinstance(d, CategoricalFeature) and d.dtype == "int64":
        return pa.int64()
    return pa.string()


def impression_schema(spec: Spec) -> pa.Schema:
    """The Arrow schema of every shard the adapter writes (the same for every day, empty days included)."""
    fields = [
        pa.field("impression_id", pa.string()),
        pa.field("timestamp", pa.timestamp("us", tz="UTC")),
        pa.field("date", pa.string()),
        pa.field("source", pa.string()),
        pa.field("cost", pa.float64()),
        pa.field("show_launch_date", pa.date32()),
        pa.field("popularity_tier", pa.int8()),
        pa.field("less_streamed", pa.bool_()),
    ]
    fields += [pa.field(f.name, _arrow_type(f)) for f in spec.feature_list]
    fields += [pa.field(o, pa.float32()) for o in spec.outcome_names]
    return pa.schema(fields)


# --------------------------------------------------------------------------------------------------- static tables
@dataclass
class _Static:
    """A static table typed once: features per entity, the reason an entity's rows are unusable, extra columns."""

    name: str
    rows: int
    duplicates: int
    values: pd.DataFrame  # index: entity id; one typed column per planned feature
    reasons: pd.Series  # index: entity id; '' where every planned feature is usable
    extra: pd.DataFrame  # index: entity id; columns the adapter needs besides features (video_type, ...)


def _read_static(path: Path, key: str, features: list[Feature], extra: Sequence[str]) -> _Static:
    header = _header(path)
    wanted = [key, *dict.fromkeys([f.name for f in features] + [c for c in extra if c in header])]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise KuaiRandError(f"{path}: missing column(s) {missing}")
    raw = pd.read_csv(path, usecols=wanted, dtype=str, keep_default_na=False)
    rows = len(raw)
    raw[key] = _id_text(raw[key])
    bad_key = raw[key].eq("") | pd.to_numeric(raw[key], errors="coerce").isna()
    if bad_key.any():
        raise KuaiRandError(f"{path}: {int(bad_key.sum())} row(s) without a numeric {key}")
    exact = raw.duplicated(keep="first")
    raw = raw[~exact]
    conflicting = raw[key].duplicated(keep=False)
    if conflicting.any():
        ids = sorted(raw.loc[conflicting, key].unique().tolist())[:5]
        raise KuaiRandError(f"{path}: {key} {ids} appear on rows that disagree; the file must hold one row per {key}")
    raw = raw.set_index(raw[key].astype("int64"))
    values = pd.DataFrame(index=raw.index)
    reasons = pd.Series("", index=raw.index, dtype=object)
    for f in features:
        typed, why = type_feature(raw[f.name], f)
        values[f.name] = typed
        reasons = reasons.where(reasons != "", why)
    extra_cols = [c for c in extra if c in raw.columns]
    return _Static(path.name, rows, int(exact.sum()), values, reasons, raw[extra_cols].copy())


# --------------------------------------------------------------------------------------------------- stage 1
@dataclass
class _LogStats:
    name: str
    bytes: int
    rows_read: int = 0
    malformed: int = 0
    quarantined: int = 0
    staged: int = 0


def _utc_dates(time_ms: np.ndarray) -> np.ndarray:
    return (np.datetime64("1970-01-01") + (time_ms // _MS_PER_DAY).astype("timedelta64[D]")).astype(str)


class _Stager:
    """Stage 1: read every log in chunks, check raw values, and park the usable rows in per-day Parquet parts."""

    def __init__(self, spec: Spec, plan: FeaturePlan, root: Path, quarantine: Path) -> None:
        self.spec, self.plan, self.root, self.quarantine = spec, plan, root, quarantine
        cfg = spec.kuairand
        self.labels = list(dict.fromkeys(cfg.labels[o] for o in spec.outcome_names))
        self.raw_columns = [f.name for f in plan.log if f.name not in KEY_COLUMNS]
        if cfg.source_by == "tab" and "tab" not in self.raw_columns:
            self.raw_columns.append("tab")
        self.tz = cfg.timezone
        self.parts = 0
        self.dates: set[str] = set()
        self.reasons: Counter[str] = Counter()

    def required(self) -> list[str]:
        return list(dict.fromkeys([*KEY_COLUMNS, *self.labels, *self.raw_columns]))

    def stage(self, file_index: int, path: Path, stats: _LogStats, progress: Callable[[int], None]) -> None:
        header = _header(path)
        missing = [c for c in self.required() if c not in header]
        if missing:
            raise KuaiRandError(f"{path.name}: missing column(s) {missing} (needed for the spec's labels and features)")
        bad_rows: list[str] = []

        def invalid(row: Any) -> str:
            bad_rows.append(row.text)
            return "skip"

        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        buffered: list[pa.RecordBatch] = []
        n_buffered = 0
        ordinal = 0
        for batch in reader:
            buffered.append(batch)
            n_buffered += batch.num_rows
            if n_buffered >= self.spec.kuairand.chunk_rows:
                ordinal = self._chunk(file_index, path, pa.Table.from_batches(buffered), ordinal, stats)
                progress(n_buffered)
                buffered, n_buffered = [], 0
        if buffered:
            ordinal = self._chunk(file_index, path, pa.Table.from_batches(buffered), ordinal, stats)
            progress(n_buffered)
        if bad_rows:
            stats.malformed += len(bad_rows)
            stats.quarantined += len(bad_rows)
            self.reasons["malformed_row"] += len(bad_rows)
            frame = pd.DataFrame(
                {"source_file": path.name, "source_row": -1, "raw_line": bad_rows, REASON: "malformed_row"}
            )
            write_parquet(frame, self.quarantine / f"{path.stem}-malformed.parquet")

    def _chunk(self, file_index: int, path: Path, table: pa.Table, ordinal: int, stats: _LogStats) -> int:
        raw = table.to_pandas()
        n = len(raw)
        stats.rows_read += n
        rows = np.arange(ordinal, ordinal + n)
        # Identity of the row: every column (exact duplicates), and every column but the hour bucket (one event
        # logged in two buckets). Only hashes of the outcome columns leave this function, never their values.
        exact = pd.util.hash_pandas_object(raw, index=False).to_numpy()
        event_cols = [c for c in raw.columns if c not in BUCKET_COLUMNS]
        event = pd.util.hash_pandas_object(raw[event_cols], index=False).to_numpy()
        reason = pd.Series("", index=raw.index, dtype=object)

        def flag(mask: pd.Series, why: str) -> None:
            reason[mask & (reason == "")] = why

        parsed: dict[str, pd.Series] = {}
        for c in KEY_COLUMNS:
            num = _num(_clean(raw[c]))
            flag(num.isna() | (num != np.round(num)) | (num < 0), f"unparseable:{c}")
            parsed[c] = num
        for c in self.labels:
            num = _num(_clean(raw[c]))
            flag(~num.isin([0, 1]), f"label_value:{c}")
            parsed[c] = num
        time_ms = parsed["time_ms"].fillna(0).astype("int64")
        if "date" in raw.columns:
            # the log's own day (app local time) must agree with time_ms to within a day: anything else is corrupt
            stated = pd.to_datetime(_clean(raw["date"]), format="%Y%m%d", errors="coerce")
            local = pd.to_datetime(time_ms, unit="ms", utc=True).dt.tz_convert(self.tz).dt.tz_localize(None)
            gap = (local.dt.normalize() - stated).abs()
            flag(stated.isna() | (gap > pd.Timedelta(days=1)), "time_date_mismatch")
        bad = (reason != "").to_numpy()
        if bad.any():
            q = raw[bad].copy()
            q.insert(0, "source_row", rows[bad])
            q.insert(0, "source_file", path.name)
            q[REASON] = reason[bad].to_numpy()
            self.parts += 1
            write_parquet(
                q.astype({c: str for c in raw.columns}), self.quarantine / f"{path.stem}-{self.parts:05d}.parquet"
            )
            for why, count in Counter(reason[bad]).items():
                self.reasons[why] += count
            stats.quarantined += int(bad.sum())
        good = ~bad
        staged = pd.DataFrame(
            {
                "user_id": parsed["user_id"][good].astype("int64").to_numpy(),
                "video_id": parsed["video_id"][good].astype("int64").to_numpy(),
                "time_ms": time_ms[good].to_numpy(),
                **{c: parsed[c][good].astype("int8").to_numpy() for c in self.labels},
                **{c: raw.loc[good, c].to_numpy() for c in self.raw_columns},
                "_exact": exact[good],
                "_event": event[good],
                "_file": np.full(int(good.sum()), file_index, dtype=np.int32),
                "_row": rows[good],
            }
        )
        stats.staged += len(staged)
        staged["_date"] = _utc_dates(staged["time_ms"].to_numpy())
        for day, part in staged.groupby("_date", sort=True):
            self.parts += 1
            self.dates.add(str(day))
            write_parquet(part.drop(columns="_date"), self.root / str(day) / f"part-{self.parts:06d}.parquet")
        return ordinal + n


# --------------------------------------------------------------------------------------------------- stage 2
class _History:
    """What earlier impressions left behind: daily plays and impressions per video, first sightings, user lists."""

    def __init__(self, window_days: int, keep_lists: dict[str, int]) -> None:
        self.window = window_days
        self.daily: dict[dt.date, tuple[pd.Series, pd.Series]] = {}
        self.first_seen: dict[int, dt.date] = {}
        self.lists: dict[str, dict[int, list[str]]] = {name: {} for name in keep_lists}
        self.max_length = keep_lists

    def trailing(self, day: dt.date, videos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Plays and impressions of each video on the `window` days before `day`."""
        plays = np.zeros(len(videos))
        shows = np.zeros(len(videos))
        index = pd.Index(videos)
        for d, (p, s) in self.daily.items():
            if 0 < (day - d).days <= self.window:
                plays += p.reindex(index, fill_value=0).to_numpy()
                shows += s.reindex(index, fill_value=0).to_numpy()
        return plays, shows

    def record_day(self, day: dt.date, videos: np.ndarray, played: np.ndarray) -> None:
        frame = pd.DataFrame({"v": videos, "p": played.astype(np.int64)})
        grouped = frame.groupby("v")["p"]
        self.daily[day] = (grouped.sum(), grouped.size())
        for d in [d for d in self.daily if (day - d).days >= self.window]:
            del self.daily[d]


def _earlier_today(videos: np.ndarray, times: np.ndarray, played: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: plays and impressions of the same video earlier the same day (strictly earlier time_ms)."""
    frame = pd.DataFrame({"v": videos, "t": times, "p": played.astype(np.int64), "one": 1})
    order = np.lexsort((times, videos))
    f = frame.iloc[order]
    g = f.groupby("v", sort=False)
    plays_before = g["p"].cumsum() - f["p"]
    shows_before = g["one"].cumsum() - 1
    # rows at the same instant do not see each other: take the count before the first of them
    tie = [f["v"], f["t"]]
    plays_before = plays_before.groupby(tie).transform("min")
    shows_before = shows_before.groupby(tie).transform("min")
    out_p = np.empty(len(frame))
    out_s = np.empty(len(frame))
    out_p[order] = plays_before.to_numpy()
    out_s[order] = shows_before.to_numpy()
    return out_p, out_s


def _recent_lists(
    users: np.ndarray,
    times: np.ndarray,
    played: np.ndarray,
    items: dict[str, np.ndarray],
    state: dict[str, dict[int, list[str]]],
    max_length: dict[str, int],
) -> dict[str, list[list[str]]]:
    """Per row (in time order): the user's last plays before it; rows at the same instant do not see each other."""
    out: dict[str, list[list[str]]] = {name: [] for name in items}
    pending: dict[int, tuple[int, list[int]]] = {}  # user -> (time, rows played at that time, not yet visible)

    def flush(user: int) -> None:
        _, rows = pending.pop(user)
        for name, values in items.items():
            history = state[name].setdefault(user, [])
            for r in rows:
                history.insert(0, values[r])
            del history[max_length[name] :]

    for i in range(len(users)):
        u, t = int(users[i]), int(times[i])
        if u in pending and pending[u][0] < t:
            flush(u)
        for name in items:
            out[name].append(list(state[name].get(u, ())))
        if played[i]:
            if u in pending:
                pending[u][1].append(i)
            else:
                pending[u] = (t, [i])
    for u in list(pending):
        flush(u)
    return out


@dataclass
class _DayResult:
    table: pa.Table
    quarantined: pd.DataFrame
    exact_duplicates: int
    bucket_duplicates: int


class _Writer:
    """Stage 2: one UTC day at a time, in order: dedupe, join static features, derive, check, write the shard."""

    def __init__(
        self,
        spec: Spec,
        plan: FeaturePlan,
        users: _Static | None,
        videos: _Static | None,
        log_names: list[str],
    ) -> None:
        self.spec, self.plan, self.users, self.videos, self.log_names = spec, plan, users, videos, log_names
        cfg = spec.kuairand
        self.cfg = cfg
        self.schema = impression_schema(spec)
        self.play_label = cfg.labels[cfg.history_outcome]
        lists = {f.name: f.definition.max_length for f in plan.derived if isinstance(f.definition, MultiFeature)}
        self.history = _History(spec.popularity.window_days, lists)
        self.tab_source = {tab: source for source, tabs in cfg.tab_sources.items() for tab in tabs}

    def day(self, day: str, parts: list[Path]) -> _DayResult:
        df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        df = df.sort_values(["_file", "_row"], kind="stable").reset_index(drop=True)
        # ---- duplicates: one event kept; copies that disagree on anything but the hour bucket are bad rows
        dup = df["_event"].duplicated(keep="first")
        first_exact = df.groupby("_event")["_exact"].transform("first")
        exact_dups = int((dup & (df["_exact"] == first_exact)).sum())
        bucket_dups = int(dup.sum()) - exact_dups
        df = df[~dup].reset_index(drop=True)
        reason = pd.Series("", index=df.index, dtype=object)

        def flag(mask: Any, why: Any) -> None:
            """Give rows in `mask` that have no reason yet this one (a string, or one per row)."""
            m = np.asarray(mask, dtype=bool) & (reason == "").to_numpy()
            reason.loc[m] = why if isinstance(why, str) else np.asarray(why, dtype=object)[m]

        flag(df.duplicated(list(KEY_COLUMNS), keep=False), "conflicting_duplicate")
        # ---- static features and the source
        typed: dict[str, Any] = {}
        for static, key, label in ((self.users, "user_id", "user"), (self.videos, "video_id", "video")):
            planned = self.plan.user if label == "user" else self.plan.video
            if static is None:
                continue
            ids = df[key].to_numpy()
            known = pd.Index(static.values.index).get_indexer(ids) >= 0
            if planned:
                flag(~known, f"unknown_{label}")
            why = static.reasons.reindex(ids, fill_value="").to_numpy()
            flag(why != "", why)
            for f in planned:
                col = static.values[f.name].reindex(ids)
                typed[f.name] = col.to_numpy() if not isinstance(f.definition, MultiFeature) else col.tolist()
        if self.cfg.source_by == "video_type":
            assert self.videos is not None
            vt = self.videos.extra["video_type"].reindex(df["video_id"].to_numpy()).fillna("").str.strip()
            vt = vt.where(vt != "", "UNKNOWN").to_numpy()
            source = pd.Series(vt).map(self.cfg.video_type_sources)
            flag(self.videos.extra.index.get_indexer(df["video_id"].to_numpy()) < 0, "unknown_video")
            flag(source.isna(), "unmapped_source:video_type=" + pd.Series(vt).astype(str))
        else:
            tab = _num(_clean(df["tab"].astype(str)))
            source = tab.map(lambda t: self.tab_source.get(int(t)) if pd.notna(t) and t == round(t) else None)
            flag(source.isna(), "unmapped_source:tab=" + df["tab"].astype(str))
        for f in self.plan.log:
            values, why = type_feature(df[f.name].astype(str), f)
            flag(why != "", why)
            typed[f.name] = values.to_numpy() if not isinstance(f.definition, MultiFeature) else values.tolist()
        good = (reason == "").to_numpy()
        quarantined = df[~good].assign(**{REASON: reason[~good].to_numpy(), "source_file": None})
        quarantined["source_file"] = [self.log_names[i] for i in quarantined["_file"]]
        quarantined = quarantined.drop(columns=["_exact", "_event", "_file"]).rename(columns={"_row": "source_row"})
        # ---- the valid rows, in time order; derived features see earlier valid rows only
        keep = np.flatnonzero(good)
        order = keep[
            np.lexsort(
                (df["video_id"].to_numpy()[keep], df["user_id"].to_numpy()[keep], df["time_ms"].to_numpy()[keep])
            )
        ]
        v = df.loc[order]
        n = len(v)
        users, videos = v["user_id"].to_numpy(), v["video_id"].to_numpy()
        times = v["time_ms"].to_numpy()
        played = v[self.play_label].to_numpy().astype(bool)
        date = dt.date.fromisoformat(day)
        prev_plays, prev_shows = self.history.trailing(date, videos)
        today_plays, today_shows = _earlier_today(videos, times, played)
        trailing_plays = prev_plays + today_plays
        trailing_shows = prev_shows + today_shows
        stamp = pd.to_datetime(times, unit="ms", utc=True)
        local = stamp.tz_convert(self.cfg.timezone)
        derived: dict[str, Any] = {
            "hour": local.hour.to_numpy().astype(np.int64),
            "weekday": local.weekday.to_numpy().astype(np.int64),
            "video_trailing_streams": trailing_plays.astype(np.float32),
            "video_trailing_impressions": trailing_shows.astype(np.float32),
        }
        list_features = [f.name for f in self.plan.derived if f.name in ("recent_videos", "recent_authors")]
        if list_features:
            items: dict[str, np.ndarray] = {}
            if "recent_videos" in list_features:
                items["recent_videos"] = videos.astype(str)
            if "recent_authors" in list_features:
                assert self.videos is not None
                authors = _id_text(self.videos.extra["author_id"].reindex(videos).fillna(""))
                items["recent_authors"] = authors.to_numpy().astype(str)
            derived.update(_recent_lists(users, times, played, items, self.history.lists, self.history.max_length))
        # ---- launch date: the first impression of the video in the imported logs (past only), or upload_dt
        if self.cfg.launch_date == "first_seen":
            for vid in np.unique(videos):
                self.history.first_seen.setdefault(int(vid), date)
            launch = [self.history.first_seen[int(x)] for x in videos]
        else:
            assert self.videos is not None
            upload = pd.to_datetime(self.videos.extra["upload_dt"].reindex(videos), errors="coerce")
            if upload.isna().any():
                raise KuaiRandError(
                    f"kuairand.launch_date=upload_dt: {int(upload.isna().sum())} impression(s) on {day} of videos "
                    "without a valid upload_dt; use launch_date=first_seen"
                )
            launch = [d.date() for d in upload]
        self.history.record_day(date, videos, played)
        cols: dict[str, Any] = {
            "impression_id": [f"kr{t}-{u}-{x}" for t, u, x in zip(times, users, videos, strict=True)],
            "timestamp": stamp.as_unit("us"),
            "date": [day] * n,
            "source": source.to_numpy()[order].astype(str),
            "cost": np.zeros(n),  # KuaiRand has no prices
            "show_launch_date": launch,
            "popularity_tier": assign_tiers(trailing_plays, self.spec.popularity.tier_edges),
            "less_streamed": trailing_plays < self.spec.popularity.less_streamed_below,
        }
        for f in self.spec.feature_list:
            if f.name in derived:
                values = derived[f.name]
                self._check_derived(f, values)
                cols[f.name] = values
            else:
                values = typed[f.name]
                cols[f.name] = [values[i] for i in order] if isinstance(values, list) else values[order]
        sources = cols["source"]
        for outcome in self.spec.outcome_names:
            y = v[self.cfg.labels[outcome]].to_numpy().astype(np.float32)
            observing = [s for s in self.spec.source_names if outcome in self.spec.sources[s].observes]
            cols[outcome] = np.where(np.isin(sources, observing), y, np.float32(np.nan))
        arrays = [_arrow_array(cols[fld.name], fld.type) for fld in self.schema]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        return _DayResult(table, quarantined, exact_dups, bucket_dups)

    @staticmethod
    def _check_derived(f: Feature, values: Any) -> None:
        d = f.definition
        if isinstance(d, NumericFeature):
            x = np.asarray(values)
            if len(x) and (x.min() < d.min or x.max() > d.max):
                raise KuaiRandError(
                    f"features.{f.group}.{f.name}: computed values reach {x.min():g}..{x.max():g}, outside the "
                    f"spec's range [{d.min:g}, {d.max:g}]; widen the range in the spec"
                )
        elif isinstance(d, CategoricalFeature):
            outside = set(np.unique(np.asarray(values)).tolist()) - set(d.values)
            if outside:
                raise KuaiRandError(f"features.{f.group}.{f.name}: computed values {sorted(outside)} not in the spec")


# --------------------------------------------------------------------------------------------------- the import
@dataclass
class ImportSummary:
    """What an import read, wrote, dropped as duplicates and quarantined (rows in = out + duplicates + quarantined)."""

    out_dir: Path
    rows_read: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    exact_duplicates: int = 0
    bucket_duplicates: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    shards: dict[str, int] = field(default_factory=dict)
    rows_by_source: dict[str, int] = field(default_factory=dict)
    positives: dict[str, dict[str, int]] = field(default_factory=dict)
    observed: dict[str, dict[str, int]] = field(default_factory=dict)
    impressions_by_tier: dict[int, int] = field(default_factory=dict)
    users: int = 0
    videos: int = 0
    new_videos_by_day: dict[str, int] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)

    @property
    def duplicates_dropped(self) -> int:
        return self.exact_duplicates + self.bucket_duplicates

    def positive_rate(self, outcome: str, source: str) -> float | None:
        n = self.observed.get(outcome, {}).get(source, 0)
        return self.positives[outcome][source] / n if n else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["out_dir"] = str(self.out_dir)
        out["duplicates_dropped"] = self.duplicates_dropped
        out["impressions_by_tier"] = {str(k): v for k, v in sorted(self.impressions_by_tier.items())}
        return out


def _accumulate(summary: ImportSummary, table: pa.Table, spec: Spec, users: set[int], videos: set[int]) -> None:
    df = table.select(["source", "popularity_tier", "user_id", "video_id", *spec.outcome_names]).to_pandas()
    summary.rows_written += len(df)
    for source, n in df["source"].value_counts().items():
        summary.rows_by_source[str(source)] = summary.rows_by_source.get(str(source), 0) + int(n)
    for tier, n in df["popularity_tier"].value_counts().items():
        summary.impressions_by_tier[int(tier)] = summary.impressions_by_tier.get(int(tier), 0) + int(n)
    for o in spec.outcome_names:
        pos = summary.positives.setdefault(o, {})
        obs = summary.observed.setdefault(o, {})
        for source, values in df.groupby("source")[o]:
            obs[str(source)] = obs.get(str(source), 0) + int(values.notna().sum())
            pos[str(source)] = pos.get(str(source), 0) + int(values.fillna(0).sum())
    users.update(int(u) for u in pd.unique(df["user_id"]))
    videos.update(int(v) for v in pd.unique(df["video_id"]))


def import_kuairand(
    src_dir: str | Path,
    out_dir: str | Path,
    spec: Spec,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> ImportSummary:
    """Import KuaiRand files (upstream layout) into a coldcast dataset at `out_dir` and return what happened.

    Every log matching `spec.kuairand.logs` is read in chunks and its rows parked by UTC day; the days are then
    written in order, so trailing counts, popularity tiers, first sightings and the recent_* lists see earlier
    impressions only. Exact duplicates (and copies of one event that differ only in the hour bucket) are
    dropped and counted; rows that cannot be used are quarantined under quarantine/ with their reason. The
    folder (impressions/<date>.parquet, quarantine/, manifest.json, spec.yaml) appears only when complete.
    `progress(done, total)` counts rows over both passes.
    """
    files = find_files(src_dir, spec)
    plan = plan_features(spec, files)
    _check_spec(spec, files, plan)
    if files.users is None and plan.user:
        raise KuaiRandError(f"no user file matches kuairand.users {spec.kuairand.users!r}")
    video_extra = ["video_type", "author_id", "upload_dt"]
    users = _read_static(files.users, "user_id", plan.user, []) if files.users and plan.user else None
    videos = _read_static(files.videos, "video_id", plan.video, video_extra) if files.videos else None
    if videos is not None and spec.kuairand.source_by == "video_type" and "video_type" not in videos.extra:
        raise KuaiRandError(f"{files.videos}: no video_type column (needed by kuairand.source_by=video_type)")
    stats_info = _statistics_info(files.statistics)
    lines = sum(_count_lines(p) for p in files.logs)
    total = 2 * lines
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done = min(done + n, total)
        if progress is not None:
            progress(done, total)

    summary = ImportSummary(out_dir=Path(out_dir))
    log_stats = [_LogStats(p.name, p.stat().st_size) for p in files.logs]
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        staging = tmp / ".staging"
        quarantine = tmp / QUARANTINE
        (tmp / IMPRESSIONS).mkdir()
        quarantine.mkdir()
        stager = _Stager(spec, plan, staging, quarantine)
        for i, path in enumerate(files.logs):
            stager.stage(i, path, log_stats[i], advance)
        if not stager.dates:
            raise KuaiRandError(f"no usable impression in {[p.name for p in files.logs]}: every row was quarantined")
        writer = _Writer(spec, plan, users, videos, [p.name for p in files.logs])
        reasons: Counter[str] = Counter(stager.reasons)
        seen_users: set[int] = set()
        seen_videos: set[int] = set()
        dates = sorted(stager.dates)
        for day in dates:
            parts = sorted((staging / day).glob("*.parquet"))
            before = len(seen_videos)
            result = writer.day(day, parts)
            write_parquet(result.table, tmp / IMPRESSIONS / f"{day}.parquet")
            if len(result.quarantined):
                write_parquet(result.quarantined, quarantine / f"{day}.parquet")
                reasons.update(result.quarantined[REASON].tolist())
            summary.exact_duplicates += result.exact_duplicates
            summary.bucket_duplicates += result.bucket_duplicates
            summary.shards[day] = result.table.num_rows
            _accumulate(summary, result.table, spec, seen_users, seen_videos)
            summary.new_videos_by_day[day] = len(seen_videos) - before
            advance(sum(pq.read_metadata(p).num_rows for p in parts))
        shutil.rmtree(staging)
        summary.rows_read = sum(s.rows_read + s.malformed for s in log_stats)
        summary.reasons = dict(sorted(reasons.items()))
        summary.rows_quarantined = sum(reasons.values())
        summary.users, summary.videos = len(seen_users), len(seen_videos)
        summary.files = {
            "logs": [asdict(s) for s in log_stats],
            "users": _static_info(users, files.users),
            "videos": _static_info(videos, files.videos),
            "statistics": stats_info,
        }
        accounted = summary.rows_written + summary.rows_quarantined + summary.duplicates_dropped
        if accounted != summary.rows_read:  # nothing may vanish between the files and the dataset
            raise KuaiRandError(f"internal error: read {summary.rows_read} rows but accounted for {accounted}")
        (tmp / SPEC_FILE).write_text(spec.to_yaml())
        write_json(_manifest(spec, files, plan, summary, dates), tmp / MANIFEST)
    return summary


def _statistics_info(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return {
        "name": path.name,
        "rows": _count_lines(path),
        "columns": _header(path),
        "used_as_features": False,
        "why": "per-video counts over the whole upstream period: they contain the outcomes of later impressions",
    }


def _static_info(static: _Static | None, path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    if static is None:
        return {"name": path.name, "used": False, "why": "the spec uses none of its columns"}
    unusable = static.reasons[static.reasons != ""]
    return {
        "name": static.name,
        "rows": static.rows,
        "exact_duplicates_dropped": static.duplicates,
        "features": list(static.values.columns),
        "entities_with_unusable_features": len(unusable),
    }


def _manifest(
    spec: Spec, files: KuaiRandFiles, plan: FeaturePlan, s: ImportSummary, dates: list[str]
) -> dict[str, Any]:
    cfg = spec.kuairand
    start, end = dt.date.fromisoformat(dates[0]), dt.date.fromisoformat(dates[-1])
    log_columns = sorted(set().union(*(_header(p) for p in files.logs)))
    used = {*KEY_COLUMNS, *cfg.labels.values(), *(f.name for f in plan.log)}
    if cfg.source_by == "tab":
        used.add("tab")
    dropped = {
        c: (
            "outcome of the impression: never a feature"
            if c in OUTCOME_COLUMNS
            else "label not mapped to an outcome (kuairand.labels)"
            if c in LABEL_COLUMNS
            else "hour bucket: checked against time_ms, which gives the time"
            if c in BUCKET_COLUMNS
            else "not a feature of the spec"
        )
        for c in log_columns
        if c not in used
    }
    return {
        "kind": KIND,
        "adapter_version": ADAPTER_VERSION,
        "attribution": ATTRIBUTION,
        "spec_fingerprint": spec.fingerprint(),
        "source_dir": str(Path(files.logs[0]).parent.resolve()),
        "start_date": start.isoformat(),
        "days": (end - start).days + 1,
        "rows": s.rows_written,
        "shards": s.shards,
        "time": {
            "timestamp": "time_ms as UTC; shards and the split are by UTC day",
            "local_clock": cfg.timezone,
            "local_features": ["hour", "weekday"],
        },
        "sources": {
            "by": cfg.source_by,
            "mapping": cfg.video_type_sources if cfg.source_by == "video_type" else cfg.tab_sources,
        },
        "labels": {o: cfg.labels[o] for o in spec.outcome_names},
        "features": {
            "log": [f.name for f in plan.log],
            "user_file": [f.name for f in plan.user],
            "video_file": [f.name for f in plan.video],
            "derived": {f.name: DERIVED_FEATURES[f.name] for f in plan.derived},
        },
        "log_columns_not_imported": dropped,
        "launch_date": cfg.launch_date,
        "cost": "0 on every row: KuaiRand has no prices",
        "duplicates": {
            "policy": "one row kept per event; copies counted here",
            "exact": s.exact_duplicates,
            "hour_bucket_only": s.bucket_duplicates,
            "conflicting_quarantined": s.reasons.get("conflicting_duplicate", 0),
        },
        "quarantine": {"folder": QUARANTINE, "rows": s.rows_quarantined, "reasons": s.reasons},
        "summary": s.to_dict(),
    }


def iter_days(dataset_dir: str | Path) -> Iterator[tuple[str, pd.DataFrame]]:
    """The imported impressions day by day (a convenience for analyses that need one day in memory at a time)."""
    for path in sorted((Path(dataset_dir) / IMPRESSIONS).glob("*.parquet")):
        yield path.stem, pd.read_parquet(path)
