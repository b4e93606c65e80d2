"""Data validation: the spec's suite catches each planted corruption; quarantine keeps every valid row."""

import json
import shutil
import socket
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coldcast.core.data import Dataset, write_parquet
from coldcast.core.spec import SpecError, load_spec
from coldcast.core.validation import (
    QUARANTINE,
    REASON,
    REPORT_FILE,
    DataValidationError,
    ExpectationRunner,
    build_suite,
    validate_dataset,
    validate_frame,
)
from coldcast.core.world import generate
from tests.worlds import TINY

# TINY over three days (GX costs about 2 s per batch, so few shards), with ads that observe no likes or follows so
# that a label where the source observes none can be planted, and bounds that one small shard meets.
VALIDATION_WORLD = [
    *TINY,
    "world.days=3",
    "split.validation_days=1",
    "split.test_days=1",
    "sources.ad.observes=[stream, click]",
    "tasks.like.labels.ad=null",
    "tasks.like.mask.ad=0",
    "tasks.follow.labels.ad=null",
    "tasks.follow.mask.ad=0",
    "validation.min_rows=200",
    "validation.positive_rates.stream={min: 0.005, max: 0.2}",
]


@pytest.fixture(scope="module")
def spec():
    return load_spec(overrides=VALIDATION_WORLD)


@pytest.fixture(scope="module")
def world(tmp_path_factory, spec) -> Dataset:
    out = tmp_path_factory.mktemp("validation") / "world"
    generate(spec, out)
    return Dataset.open(out)


@pytest.fixture(scope="module")
def runner(spec):
    return ExpectationRunner(spec)


@pytest.fixture(scope="module")
def clean(world) -> pd.DataFrame:
    """The first day's shard, as read from the generated world."""
    return world.read(world.dates[:1])


def _set(df: pd.DataFrame, column: str, row: int, value) -> None:
    col = df[column].copy()
    col.iat[row] = value
    df[column] = col


def _before_the_day(df: pd.DataFrame) -> pd.Timestamp:
    return df["timestamp"].iat[0].normalize() - pd.Timedelta(hours=1)


# kind -> (source of the row to corrupt or None for any, the corruption, the reasons the row must be quarantined with)
ROW_KINDS = {
    "unknown_category": ("promotion", lambda df, r: _set(df, "country", r, "XX"), {"value_in_set:country"}),
    "unknown_int_category": (None, lambda df, r: _set(df, "hour", r, 24), {"value_in_set:hour"}),
    "value_not_allowed_for_source": (
        "promotion",
        lambda df, r: _set(df, "surface", r, "now_playing"),
        {"source_values:surface"},
    ),
    "value_not_allowed_for_ads": ("ad", lambda df, r: _set(df, "surface", r, "browse"), {"source_values:surface"}),
    "out_of_range": (
        None,
        lambda df, r: _set(df, "weekly_listening_hours", r, -1.0),
        {"in_range:weekly_listening_hours"},
    ),
    "null_id_feature": (None, lambda df, r: _set(df, "user_id", r, None), {"not_null:user_id"}),
    "null_numeric_feature": (None, lambda df, r: _set(df, "show_age_days", r, np.nan), {"not_null:show_age_days"}),
    # GX sees list columns as 0.0 / NaN (ExpectationRunner.batch): a null list must still fail its check
    "null_list_feature": (None, lambda df, r: _set(df, "recent_shows", r, None), {"not_null:recent_shows"}),
    "unknown_source": (None, lambda df, r: _set(df, "source", r, "email"), {"value_in_set:source"}),
    "bad_label_value": ("promotion", lambda df, r: _set(df, "stream", r, 0.5), {"label_value:stream"}),
    "label_where_unobserved": ("ad", lambda df, r: _set(df, "like", r, 1.0), {"label_unobserved:like"}),
    "missing_label": ("promotion", lambda df, r: _set(df, "click", r, np.nan), {"label_missing:click"}),
    "duplicate_id": (
        None,
        lambda df, r: _set(df, "impression_id", r, df["impression_id"].iat[0]),
        {"unique_id:impression_id"},
    ),
    "timestamp_out_of_window": (
        None,
        lambda df, r: _set(df, "timestamp", r, _before_the_day(df)),
        {"timestamp_window:timestamp", "date_matches_timestamp:date"},
    ),
    "date_out_of_window": (
        None,
        lambda df, r: _set(df, "date", r, "2025-12-31"),
        {"date_window:date", "date_matches_timestamp:date"},
    ),
    "date_not_the_timestamp_day": (
        None,
        lambda df, r: _set(df, "date", r, "2026-01-06"),
        {"date_matches_timestamp:date"},
    ),
    "unknown_list_value": (
        None,
        lambda df, r: _set(df, "listened_genres", r, np.array(["comedy", "polka"], dtype=object)),
        {"list_values:listened_genres"},
    ),
    "list_too_long": (
        None,
        lambda df, r: _set(
            df, "searched_topics", r, np.array(["ai", "food", "film", "books", "space", "travel"], dtype=object)
        ),
        {"list_length:searched_topics"},
    ),
}


@pytest.fixture(scope="module")
def planted(clean, spec, runner):
    """Every row kind planted on its own row of one shard, validated once (GX is slow per run, not per row)."""
    df = clean.copy()
    used = {0}  # row 0 is the original of the duplicated id and must stay valid
    rows = {}
    for kind, (source, corrupt, _) in ROW_KINDS.items():
        candidates = np.arange(len(df)) if source is None else np.flatnonzero(df["source"].to_numpy() == source)
        row = int(next(r for r in candidates if r >= 10 and r not in used))
        used.add(row)
        corrupt(df, row)
        rows[kind] = row
    return df, rows, validate_frame(df, spec, runner=runner)


def test_clean_shard_passes_with_nothing_quarantined(clean, spec, runner):
    result = validate_frame(clean, spec, runner=runner)
    assert result.report.rows_in == len(clean) > 1000
    assert result.report.rows_quarantined == 0
    assert result.report.failures == []
    pd.testing.assert_frame_equal(result.valid, clean)


@pytest.mark.parametrize("kind", list(ROW_KINDS))
def test_planted_row_corruption_is_quarantined_with_its_reason(planted, kind):
    _, rows, result = planted
    row = rows[kind]
    assert not result.valid_mask[row]
    assert set(result.reasons.iat[row].split("; ")) == ROW_KINDS[kind][2]
    assert result.quarantined.loc[row, REASON] == result.reasons.iat[row]


def test_quarantine_keeps_every_valid_row(planted, clean):
    df, rows, result = planted
    report = result.report
    bad = sorted(rows.values())
    pd.testing.assert_frame_equal(result.quarantined.drop(columns=REASON), df.loc[bad])
    assert report.rows_in == report.rows_valid + report.rows_quarantined == len(clean)
    assert report.rows_quarantined == len(ROW_KINDS)
    pd.testing.assert_frame_equal(result.valid, clean.drop(index=list(rows.values())))
    expected = Counter(reason for _, _, reasons in ROW_KINDS.values() for reason in reasons)
    assert report.reasons == dict(expected)


def _drop_genre(df):
    return df.drop(columns="genre"), {}


def _hours_as_text(df):
    return df.assign(weekly_listening_hours=df["weekly_listening_hours"].astype(str)), {}


def _all_ad_clicks(df):
    return df.assign(click=np.where(df["source"] == "ad", 1.0, df["click"]).astype(np.float32)), {}


def _no_ad_streams(df):
    return df.assign(stream=np.where(df["source"] == "ad", 0.0, df["stream"]).astype(np.float32)), {}


# kind -> (make the frame and validate_frame options, the check and column the error must name)
TABLE_KINDS = {
    "missing_column": (_drop_genre, ("columns_present", "genre")),
    "wrong_type": (_hours_as_text, ("column_type", "weekly_listening_hours")),
    "too_few_rows": (lambda df: (df.head(50), {}), ("row_count", None)),
    "positive_rate_too_high": (_all_ad_clicks, ("positive_rate", "click")),
    "positive_rate_too_low": (_no_ad_streams, ("positive_rate", "stream")),
    "truth_column_in_production": (lambda df: (df, {"production": True}), ("truth_columns", "true_stream")),
}


@pytest.mark.parametrize("kind", list(TABLE_KINDS))
def test_table_failure_raises_naming_check_and_column(clean, spec, runner, kind):
    make, (check, column) = TABLE_KINDS[kind]
    df, options = make(clean.copy())
    # even under the quarantine policy: a table-level failure cannot be pinned on rows
    assert spec.validation.policy == "quarantine"
    with pytest.raises(DataValidationError) as err:
        validate_frame(df, spec, runner=runner, **options)
    assert (check, column) in {(f.check, f.column) for f in err.value.failures}
    assert check in str(err.value)
    if column is not None:
        assert repr(column) in str(err.value)


def test_production_data_without_truth_columns_passes(clean, spec, runner):
    result = validate_frame(clean.drop(columns=spec.true_columns), spec, runner=runner, production=True)
    assert result.report.rows_quarantined == 0
    assert result.report.rows_valid == len(clean)


def test_fail_policy_raises_naming_each_check_and_column(clean, spec, runner):
    df = clean.copy()
    _set(df, "country", 12, "XX")
    _set(df, "weekly_listening_hours", 13, 1e6)
    with pytest.raises(DataValidationError) as err:
        validate_frame(df, spec, runner=runner, policy="fail")
    message = str(err.value)
    assert "value_in_set on column 'country' (1 rows)" in message
    assert "in_range on column 'weekly_listening_hours' (1 rows)" in message


def test_suite_is_generated_from_the_spec(spec):
    extra = load_spec(
        overrides=[*VALIDATION_WORLD, "features.context.weather={kind: categorical, values: [sun, rain]}"]
    )
    expectations = {}
    for e in build_suite(extra).expectations:
        expectations.setdefault((e.meta["check"], e.meta["column"]), []).append(e)
    assert [e.value_set for e in expectations["value_in_set", "weather"]] == [["sun", "rain"]]
    for f in spec.feature_list:
        if f.kind == "categorical":
            assert expectations["value_in_set", f.name][0].value_set == list(f.definition.values)
        if f.kind == "numeric":
            (e,) = expectations["in_range", f.name]
            assert (e.min_value, e.max_value) == (f.definition.min, f.definition.max)
    # one row-conditioned set per source that restricts a feature (promotion restricts format, ads do not)
    assert len(expectations["source_values", "surface"]) == 2
    assert len(expectations["source_values", "format"]) == 1
    # ads observe no likes or follows: those labels must be null on ad rows
    assert {c for (check, c) in expectations if check == "label_unobserved"} == {"like", "follow"}
    assert {c for (check, c) in expectations if check == "label_missing"} == set(spec.outcome_names)


def test_validation_config_is_checked_with_the_spec(spec):
    assert spec.validation.rate_bounds("stream").min == 0.005
    assert spec.validation.rate_bounds("click").max == load_spec().validation.max_positive_rate
    with pytest.raises(SpecError, match=r"validation\.positive_rates\.nope: not a declared outcome"):
        load_spec(overrides=["validation.positive_rates.nope={min: 0, max: 1}"])
    with pytest.raises(SpecError, match="min_positive_rate"):
        load_spec(overrides=["validation.min_positive_rate=0.6", "validation.max_positive_rate=0.5"])
    with pytest.raises(SpecError, match=r"validation\.policy"):
        load_spec(overrides=["validation.policy=ignore"])


# --------------------------------------------------------------------------------------------------- datasets
@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("validation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def test_clean_dataset_round_trips_with_report_and_docs(world, spec, tmp_path, no_network):
    out = tmp_path / "validated"
    report = validate_dataset(world.root, spec, out)
    assert report.rows_in == report.rows_valid == world.manifest["rows"]
    assert report.rows_quarantined == 0 and report.clean
    validated = Dataset.open(out)
    assert validated.dates == world.dates
    pd.testing.assert_frame_equal(validated.read(), world.read())
    assert validated.spec() == spec
    assert validated.manifest["validation"]["rows_valid"] == report.rows_valid
    assert json.loads((out / REPORT_FILE).read_text()) == json.loads(json.dumps(report.to_dict(), default=str))
    assert set(report.positive_rates["stream"]) == {"promotion", "ad"}
    assert set(report.positive_rates["like"]) == {"promotion"}
    assert (out / report.docs).exists()
    assert len(list((out / "docs" / "validations").rglob("*.html"))) == len(world.dates)
    assert list((out / QUARANTINE).iterdir()) == []


@pytest.fixture(scope="module")
def corrupted(world, tmp_path_factory):
    """A copy of the world with bad rows in two shards: date -> {row: reason}."""
    root = tmp_path_factory.mktemp("corrupted") / "world"
    shutil.copytree(world.root, root)
    dataset = Dataset.open(root)
    first, second = dataset.shards()[:2]
    planted: dict[str, dict[int, str]] = {}
    t1 = pq.read_table(first)
    df1 = t1.to_pandas()
    _set(df1, "country", 5, "XX")
    _set(df1, "country", 6, "XX")
    write_parquet(pa.Table.from_pandas(df1, schema=t1.schema, preserve_index=False), first)
    planted[first.stem] = {5: "value_in_set:country", 6: "value_in_set:country"}
    t2 = pq.read_table(second)
    df2 = t2.to_pandas()
    _set(df2, "impression_id", 3, df1["impression_id"].iat[0])  # a duplicate across shards
    ad = int(np.flatnonzero(df2["source"].to_numpy() == "ad")[0])
    _set(df2, "like", ad, 0.0)
    write_parquet(pa.Table.from_pandas(df2, schema=t2.schema, preserve_index=False), second)
    planted[second.stem] = {3: "unique_id:impression_id", ad: "label_unobserved:like"}
    return dataset, planted


def test_quarantined_dataset_keeps_valid_rows_and_writes_reasons(world, corrupted, spec, tmp_path):
    dataset, planted = corrupted
    out = tmp_path / "validated"
    report = validate_dataset(dataset.root, spec, out)
    assert report.rows_in == report.rows_valid + report.rows_quarantined == world.manifest["rows"]
    assert report.rows_quarantined == 4
    assert report.reasons == {"value_in_set:country": 2, "unique_id:impression_id": 1, "label_unobserved:like": 1}
    validated = Dataset.open(out)
    assert validated.dates == world.dates
    for date in world.dates:
        bad = planted.get(date, {})
        expected = world.read([date]).drop(index=list(bad)).reset_index(drop=True)
        pd.testing.assert_frame_equal(validated.read([date]), expected)
        quarantine = out / QUARANTINE / f"{date}.parquet"
        assert quarantine.exists() == bool(bad)
        if bad:
            q = pd.read_parquet(quarantine)
            source = dataset.read([date])
            assert q["impression_id"].tolist() == source["impression_id"].iloc[sorted(bad)].tolist()
            assert q[REASON].tolist() == [bad[r] for r in sorted(bad)]
    assert {s.name: s.rows_quarantined for s in report.shards} == {d: len(planted.get(d, {})) for d in world.dates}


def test_fail_policy_dataset_raises_and_leaves_nothing(corrupted, tmp_path):
    dataset, _ = corrupted
    strict = load_spec(overrides=[*VALIDATION_WORLD, "validation.policy=fail"])
    out = tmp_path / "validated"
    with pytest.raises(DataValidationError) as err:
        validate_dataset(dataset.root, strict, out)
    message = str(err.value)
    assert "value_in_set on column 'country' (2 rows)" in message
    assert "unique_id on column 'impression_id' (1 rows)" in message
    assert "label_unobserved on column 'like' (1 rows)" in message
    assert not out.exists()
    assert err.value.report.rows_quarantined == 4


def test_cli_validate_quarantines_and_fail_policy_exits_2(corrupted, tmp_path):
    from typer.testing import CliRunner

    from coldcast.cli import app

    dataset, _ = corrupted
    cli = CliRunner()
    result = cli.invoke(app, ["validate", str(dataset.root), "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    assert "quarantined" in result.output and "value_in_set:country" in result.output
    assert Dataset.open(tmp_path / "ok").manifest["rows"] == dataset.manifest["rows"] - 4
    result = cli.invoke(app, ["validate", str(dataset.root), "--out", str(tmp_path / "no"), "--policy", "fail"])
    assert result.exit_code == 2
    assert "value_in_set on column 'country'" in result.output
    assert not (tmp_path / "no").exists()
