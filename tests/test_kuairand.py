"""The KuaiRand adapter on small files in the upstream layout: accounting, no outcome leaks, time, files, CLI."""

import csv
import datetime as dt
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from coldcast.cli import app
from coldcast.core.data import Dataset
from coldcast.core.kuairand import (
    LABEL_COLUMNS,
    OUTCOME_COLUMNS,
    KuaiRandError,
    import_kuairand,
    impression_schema,
)
from coldcast.core.spec import META_COLUMNS, load_spec
from coldcast.core.validation import validate_dataset

LOG_COLUMNS = [
    "user_id",
    "video_id",
    "date",
    "hourmin",
    "time_ms",
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "long_view",
    "play_time_ms",
    "duration_ms",
    "profile_stay_time",
    "comment_stay_time",
    "is_profile_enter",
    "is_rand",
    "tab",
]
STATISTIC_COLUMNS = ["video_id", "show_cnt", "play_cnt", "long_time_play_cnt", "like_cnt", "follow_cnt"]
LOCAL = dt.timezone(dt.timedelta(hours=8))  # the app's clock (Asia/Shanghai has no daylight saving)
FIRST_DAY = dt.date(2022, 4, 19)
DAYS = 6
N_USERS, N_VIDEOS = 150, 90
UNKNOWN_VIDEO = 99_999


# ------------------------------------------------------------------------------------------------ the layout
def _users(rng):
    n = N_USERS
    frame = pd.DataFrame(
        {
            "user_id": np.arange(n),
            "user_active_degree": rng.choice(["full_active", "high_active", "middle_active", "UNKNOWN"], n),
            "is_lowactive_period": 0,
            "is_live_streamer": rng.choice([-124, 1], n),
            "is_video_author": rng.integers(0, 2, n),
            "follow_user_num": rng.integers(0, 500, n),
            "follow_user_num_range": "(0,10]",
            "fans_user_num": rng.integers(0, 5000, n),
            "fans_user_num_range": "[1,10)",
            "friend_user_num": rng.integers(0, 100, n),
            "friend_user_num_range": "[1,5)",
            "register_days": rng.integers(14, 3000, n),
            "register_days_range": "730+",
        }
    )
    cards = [2, 7, 50, 1400, 15, 34, 3, 118, 454, 7, 5, 5, 2, 2, 2, 2, 2, 2]
    for i, card in enumerate(cards):
        values = rng.integers(0, card, n).astype(float)
        if i in (4, 12, 13, 14, 15, 16, 17):
            values[rng.random(n) < 0.05] = np.nan  # upstream writes these as floats with blanks
        frame[f"onehot_feat{i}"] = values if i in (4, 12, 13, 14, 15, 16, 17) else values.astype(int)
    return frame


def _videos(rng):
    n = N_VIDEOS
    video_type = np.where(np.arange(n) % 6 == 0, "AD", "NORMAL").astype(object)
    video_type[5] = "UNKNOWN"  # KuaiRand's own code for a missing type: the promotion source
    tags = [",".join(str(t) for t in rng.choice(70, rng.integers(1, 3), replace=False)) for _ in range(n)]
    tags[7] = ""
    music_type = rng.choice([4.0, 9.0, 8.0], n)
    music_type[:4] = np.nan
    duration = rng.integers(5_000, 300_000, n).astype(float)
    duration[3] = np.nan
    return pd.DataFrame(
        {
            "video_id": np.arange(n),
            "author_id": rng.integers(1, 40, n) * 1000 + 7,
            "video_type": video_type,
            "upload_dt": "2022-04-10",
            "upload_type": rng.choice(["Kmovie", "LongImport", "ShortImport", "UNKNOWN"], n),
            "visible_status": 0.0,
            "video_duration": duration,
            "server_width": 720.0,
            "server_height": 1280.0,
            "music_id": rng.integers(0, 10**9, n),
            "music_type": music_type,
            "tag": tags,
        }
    )


def _log_rows(rng, days, n_per_day, is_rand):
    """Impressions with labels that depend on the user and the video (so there is something to learn)."""
    user_bias = rng.normal(size=N_USERS)
    video_bias = rng.normal(size=N_VIDEOS)
    rows = []
    for day in days:
        local_day = FIRST_DAY + dt.timedelta(days=day)
        seconds = np.sort(rng.integers(0, 86_400, n_per_day))
        for s in seconds:
            u, v = int(rng.integers(N_USERS)), int(rng.integers(N_VIDEOS))
            when = dt.datetime.combine(local_day, dt.time(), LOCAL) + dt.timedelta(seconds=int(s))
            time_ms = int(when.timestamp() * 1000) + int(rng.integers(1000))
            z = user_bias[u] + video_bias[v]
            click = rng.random() < 1 / (1 + np.exp(-z))
            long_view = click and rng.random() < 0.7
            rows.append(
                {
                    "user_id": u,
                    "video_id": v,
                    "date": local_day.strftime("%Y%m%d"),
                    "hourmin": when.hour * 100,
                    "time_ms": time_ms,
                    "is_click": int(click),
                    "is_like": int(long_view and rng.random() < 0.15),
                    "is_follow": int(long_view and rng.random() < 0.05),
                    "is_comment": int(rng.random() < 0.01),
                    "is_forward": int(rng.random() < 0.01),
                    "is_hate": 0,
                    "long_view": int(long_view),
                    "play_time_ms": int(rng.integers(0, 100_000)),
                    "duration_ms": int(rng.integers(5_000, 300_000)),
                    "profile_stay_time": int(rng.integers(0, 50)),
                    "comment_stay_time": int(rng.integers(0, 500)),
                    "is_profile_enter": int(rng.random() < 0.02),
                    "is_rand": is_rand,
                    "tab": int(rng.choice([1, 1, 1, 0, 2, 4, 6])),
                }
            )
    return pd.DataFrame(rows, columns=LOG_COLUMNS)


def _plant(log):
    """The upstream traps and some corruption, on known rows of one log. Returns the log as CSV text lines."""
    exact = log.iloc[10:15]
    bucket = log.iloc[20:23].assign(hourmin=lambda f: (f["hourmin"] + 100) % 2400)
    conflict = log.iloc[[30]].assign(is_click=lambda f: 1 - f["is_click"])
    bad_time = log.iloc[[40]].astype(str).assign(time_ms="abc")
    bad_label = log.iloc[[41]].assign(is_click=2)
    unknown_video = log.iloc[[42]].assign(video_id=UNKNOWN_VIDEO)
    unknown_tab = log.iloc[[43]].assign(tab=99, time_ms=lambda f: f["time_ms"] + 1)
    planted = pd.concat([log, exact, bucket, conflict, bad_label, unknown_video, unknown_tab]).astype(str)
    planted = pd.concat([planted, bad_time]).sort_values("time_ms", kind="stable")
    lines = planted.to_csv(index=False).splitlines()
    lines.insert(50, "1,2,3")  # a malformed line
    return lines


PLANTED = {
    "exact": 5,
    "bucket": 3,
    "conflicting_duplicate": 2,
    "malformed_row": 1,
    "unparseable:time_ms": 1,
    "label_value:is_click": 1,
    "unknown_video": 1,
    "value_in_set:tab": 1,
}


def write_layout(root, *, statistics=True, users=True):
    """Small files in the upstream KuaiRand-Pure layout: two standard logs, a random log, the static files."""
    rng = np.random.default_rng(11)
    root.mkdir(parents=True, exist_ok=True)
    first = _log_rows(rng, range(0, 3), 160, 0)
    second = _log_rows(rng, range(3, DAYS), 160, 0)
    random_log = _log_rows(rng, range(3, DAYS), 40, 1)
    user_table, video_table = _users(rng), _videos(rng)
    stats = pd.DataFrame({c: rng.integers(0, 1000, N_VIDEOS) for c in STATISTIC_COLUMNS}).assign(
        video_id=np.arange(N_VIDEOS)
    )
    first.to_csv(root / "log_standard_4_08_to_4_21_pure.csv", index=False)
    (root / "log_standard_4_22_to_5_08_pure.csv").write_text("\n".join(_plant(second)) + "\n")
    random_log.to_csv(root / "log_random_4_22_to_5_08_pure.csv", index=False)
    video_table.to_csv(root / "video_features_basic_pure.csv", index=False)
    if users:
        user_table.to_csv(root / "user_features_pure.csv", index=False)
    if statistics:
        stats.to_csv(root / "video_features_statistic_pure.csv", index=False)
    return root


SLICE_LOG = "log_standard_4_25_to_4_30_pure.csv"  # the name of the six-day slice in ../shared/data


def write_slice(root):
    """Small files in the six-day slice's layout: one standard log, the user and basic video files, nothing else."""
    rng = np.random.default_rng(5)
    root.mkdir(parents=True)
    _log_rows(rng, range(DAYS), 100, 0).to_csv(root / SLICE_LOG, index=False)
    _users(rng).to_csv(root / "user_features_pure.csv", index=False)
    _videos(rng).to_csv(root / "video_features_basic_pure.csv", index=False)
    return root


def _rewrite_logs(src, dst, change):
    """Copy a layout, passing every log's rows (as text) through `change` (header and malformed lines kept)."""
    shutil.copytree(src, dst)
    for path in dst.glob("log_*.csv"):
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        header = rows[0]
        out = [header] + [change(dict(zip(header, r, strict=True))) if len(r) == len(header) else r for r in rows[1:]]
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            for r in out:
                writer.writerow([r[c] for c in header] if isinstance(r, dict) else r)
    return dst


@pytest.fixture(scope="module")
def spec():
    return load_spec(preset="kuairand")


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return write_layout(tmp_path_factory.mktemp("kuairand") / "src")


@pytest.fixture(scope="module")
def imported(layout, spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "kr"
    summary = import_kuairand(layout, out, spec)
    return summary, Dataset.open(out)


def _features(ds, spec):
    """Every feature and derived meta column by impression (lists as tuples, so frames compare)."""
    df = ds.read().set_index("impression_id").sort_index()
    df = df[[*spec.feature_names, "popularity_tier", "less_streamed", "show_launch_date"]].copy()
    for f in spec.feature_list:
        if f.kind == "multi":
            df[f.name] = df[f.name].map(tuple)
    return df


# ------------------------------------------------------------------------------------------------ accounting
def test_every_row_is_written_counted_as_a_duplicate_or_quarantined_with_its_reason(imported, spec):
    summary, ds = imported
    manifest = ds.manifest
    assert summary.rows_read == summary.rows_written + summary.duplicates_dropped + summary.rows_quarantined
    assert summary.exact_duplicates == PLANTED["exact"]
    assert summary.bucket_duplicates == PLANTED["bucket"]
    assert summary.reasons == {r: n for r, n in PLANTED.items() if r not in ("exact", "bucket")}
    assert manifest["duplicates"]["exact"] == PLANTED["exact"]
    assert manifest["quarantine"]["rows"] == summary.rows_quarantined == sum(summary.reasons.values())
    quarantined = pd.concat([pd.read_parquet(p) for p in (ds.root / "quarantine").glob("*.parquet")])
    assert len(quarantined) == summary.rows_quarantined
    assert quarantined["reason"].str.len().gt(0).all()
    assert manifest["rows"] == sum(manifest["shards"].values()) == len(ds.read())
    assert not (ds.root / ".staging").exists()


def test_shards_follow_the_platform_schema_and_pass_production_validation(imported, spec, tmp_path):
    _, ds = imported
    df = ds.read()
    assert list(df.columns) == impression_schema(spec).names
    assert df["impression_id"].is_unique
    assert set(df["source"]) == {"promotion", "ad"}
    unknown_type = df["video_type"] == "UNKNOWN"
    assert unknown_type.any() and (df.loc[unknown_type, "source"] == "promotion").all()
    assert (df["timestamp"].dt.strftime("%Y-%m-%d") == df["date"]).all()
    assert not [c for c in df.columns if c.startswith("true_")]
    report = validate_dataset(ds.root, spec, tmp_path / "valid", production=True, policy="fail")
    assert report.clean and report.rows_valid == len(df) and report.rows_quarantined == 0


# ------------------------------------------------------------------------------------------------ no leaks
def test_outcome_columns_never_reach_the_features(layout, imported, spec, tmp_path):
    _, ds = imported
    assert not set(OUTCOME_COLUMNS) & set(ds.read().columns)
    assert not set(STATISTIC_COLUMNS[1:]) & set(ds.read().columns)
    assert ds.manifest["summary"]["files"]["statistics"]["used_as_features"] is False

    # Scramble every outcome column (consistently, so duplicates stay duplicates): no feature may move.
    def scramble(row):
        for c in OUTCOME_COLUMNS:
            row[c] = str((int(row[c]) * 7919 + 13) % 100_003) if row[c].isdigit() else row[c]
        return row

    scrambled = _rewrite_logs(layout, tmp_path / "scrambled", scramble)
    import_kuairand(scrambled, tmp_path / "out", spec)
    pd.testing.assert_frame_equal(_features(Dataset.open(tmp_path / "out"), spec), _features(ds, spec))


@pytest.mark.parametrize("name", [*OUTCOME_COLUMNS, "long_view", "show_cnt"])
def test_a_spec_naming_an_outcome_or_a_whole_period_statistic_as_feature_is_refused(layout, tmp_path, name):
    spec = load_spec(preset="kuairand", overrides=[f"features.content.{name}={{kind: numeric, min: 0, max: 1}}"])
    with pytest.raises(KuaiRandError, match=name):
        import_kuairand(layout, tmp_path / "out", spec)
    assert not (tmp_path / "out").exists()


def test_features_see_only_earlier_impressions(layout, imported, spec, tmp_path):
    _, ds = imported
    times = ds.read(columns=["timestamp"])["timestamp"]
    cut = int(times.quantile(0.5).value // 1_000_000)  # ms

    # Flip every label from the cut on: features up to and including the cut must stay; later ones move.
    def flip(row):
        if row["time_ms"].isdigit() and int(row["time_ms"]) >= cut:
            for c in ("is_click", "long_view", "is_like", "is_follow"):
                row[c] = {"0": "1", "1": "0"}.get(row[c], row[c])
        return row

    flipped = _rewrite_logs(layout, tmp_path / "flipped", flip)
    import_kuairand(flipped, tmp_path / "out", spec)
    before, after = _features(ds, spec), _features(Dataset.open(tmp_path / "out"), spec)
    when = ds.read(columns=["impression_id", "timestamp"]).set_index("impression_id").sort_index()["timestamp"]
    early = (when <= pd.Timestamp(cut, unit="ms", tz="UTC")).to_numpy()
    pd.testing.assert_frame_equal(after[early], before[early])
    moved = after[~early]["video_trailing_streams"] != before[~early]["video_trailing_streams"]
    assert moved.any()  # the comparison could fail: later features do read the flipped labels


def test_the_split_is_by_time_and_cold_items_are_the_ones_unseen_before_it(imported, spec):
    _, ds = imported
    split = ds.split(spec)
    assert split["train"] and split["validation"] and split["test"]
    assert max(split["train"]) < min(split["validation"]) <= max(split["validation"]) < min(split["test"])
    train, test = ds.read(split["train"]), ds.read(split["test"])
    assert train["timestamp"].max() < test["timestamp"].min()
    df = ds.read()
    first = df.groupby("video_id")["date"].min()
    assert (df["show_launch_date"].astype(str) == df["video_id"].map(first)).all()
    cold = test[pd.to_datetime(test["show_launch_date"]) > pd.Timestamp(max(split["train"]))]
    assert not set(cold["video_id"]) & set(train["video_id"])
    assert set(test["video_id"]) - set(train["video_id"]) - set(ds.read(split["validation"])["video_id"]) <= set(
        cold["video_id"]
    )


# ------------------------------------------------------------------------------------------------ the layout
def test_several_logs_are_read_and_the_statistic_file_is_only_recorded(imported):
    _, ds = imported
    logs = {f["name"]: f for f in ds.manifest["summary"]["files"]["logs"]}
    assert set(logs) == {
        "log_standard_4_08_to_4_21_pure.csv",
        "log_standard_4_22_to_5_08_pure.csv",
        "log_random_4_22_to_5_08_pure.csv",
    }
    assert all(f["rows_read"] > 0 for f in logs.values())
    assert logs["log_standard_4_22_to_5_08_pure.csv"]["malformed"] == 1
    df = ds.read()
    assert set(df["is_rand"]) == {0, 1}
    assert df["date"].min() < "2022-04-22" < df["date"].max()  # both standard logs made it
    stats = ds.manifest["summary"]["files"]["statistics"]
    assert stats["name"] == "video_features_statistic_pure.csv" and stats["rows"] == N_VIDEOS


def test_the_folder_an_upstream_archive_unpacks_to_is_read_as_it_is(layout, imported, spec, tmp_path):
    # KuaiRand-Pure.tar.gz unpacks to KuaiRand-Pure/data/*.csv beside other files: the top folder is enough
    top = tmp_path / "KuaiRand-Pure"
    shutil.copytree(layout, top / "data")
    (top / "README.md").write_text("KuaiRand-Pure\n")
    import_kuairand(top, tmp_path / "out", spec)
    ds = Dataset.open(tmp_path / "out")
    assert ds.manifest["source_dir"] == str((top / "data").resolve())
    assert len(ds.manifest["summary"]["files"]["logs"]) == 3
    pd.testing.assert_frame_equal(_features(ds, spec), _features(imported[1], spec))
    (tmp_path / "elsewhere" / "data").mkdir(parents=True)
    with pytest.raises(KuaiRandError, match=r"no impression log.*nor has its data/ folder"):
        import_kuairand(tmp_path / "elsewhere", tmp_path / "out2", spec)


def test_the_six_day_slice_layout_imports_and_splits_by_utc_day(tmp_path, spec):
    src = write_slice(tmp_path / "slice")
    summary = import_kuairand(src, tmp_path / "out", spec)
    ds = Dataset.open(tmp_path / "out")
    files = ds.manifest["summary"]["files"]
    assert [f["name"] for f in files["logs"]] == [SLICE_LOG]
    assert files["statistics"] is None
    assert (files["users"]["name"], files["videos"]["name"]) == (
        "user_features_pure.csv",
        "video_features_basic_pure.csv",
    )
    assert summary.rows_read == summary.rows_written == DAYS * 100 and not summary.reasons
    df = ds.read()
    assert set(df["is_rand"]) == {0}
    # six local days on UTC+8 are seven UTC days (the first local morning falls on the UTC day before)
    assert ds.dates == [str(FIRST_DAY + dt.timedelta(days=d - 1)) for d in range(DAYS + 1)]
    split = ds.split(spec)
    assert split["train"] == ds.dates[:-2] and split["validation"] == ds.dates[-2:-1] and split["test"] == ds.dates[-1:]
    test = df[df["date"].isin(split["test"])]
    assert df[df["date"].isin(split["train"])]["timestamp"].max() < test["timestamp"].min()


def test_optional_files_may_be_missing_unless_the_spec_needs_them(tmp_path, spec, imported):
    bare = write_layout(tmp_path / "bare", statistics=False, users=False)
    with pytest.raises(KuaiRandError, match=r"kuairand\.users"):
        import_kuairand(bare, tmp_path / "out", spec)
    from_user_file = [f.name for f in spec.group_features("user") if f.name.startswith(("onehot", "is_", "user_a"))]
    from_user_file += ["follow_user_num", "fans_user_num", "friend_user_num", "register_days"]
    lean = load_spec(preset="kuairand", overrides={"features": {"user": dict.fromkeys(from_user_file)}})
    summary = import_kuairand(bare, tmp_path / "out", lean)
    ds = Dataset.open(tmp_path / "out")
    assert ds.manifest["summary"]["files"]["statistics"] is None
    assert ds.manifest["summary"]["files"]["users"] is None
    assert summary.rows_written == imported[0].rows_written


def test_chunked_reading_gives_the_same_dataset(layout, imported, spec, tmp_path):
    small = load_spec(preset="kuairand", overrides=["kuairand.chunk_rows=64"])
    summary = import_kuairand(layout, tmp_path / "out", small)
    assert summary.reasons == imported[0].reasons
    chunked = Dataset.open(tmp_path / "out").read().set_index("impression_id").sort_index()
    whole = imported[1].read().set_index("impression_id").sort_index()
    pd.testing.assert_frame_equal(chunked, whole)


def test_sources_can_come_from_groups_of_tabs(layout, tmp_path):
    spec = load_spec(preset="kuairand", overrides=["kuairand.source_by=tab"])
    summary = import_kuairand(layout, tmp_path / "out", spec)
    df = Dataset.open(tmp_path / "out").read()
    assert (df.loc[df["tab"] == 1, "source"] == "promotion").all()
    assert (df.loc[df["tab"] != 1, "source"] == "ad").all()
    assert summary.reasons.get("unmapped_source:tab=99") == 1


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_refused_naming_the_problem(layout, spec, tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    shutil.copytree(layout, broken)
    path = broken / "log_random_4_22_to_5_08_pure.csv"
    pd.read_csv(path).drop(columns=["long_view"]).to_csv(path, index=False)
    with pytest.raises(KuaiRandError, match=r"log_random_4_22_to_5_08_pure.csv: missing column\(s\) \['long_view'\]"):
        import_kuairand(broken, tmp_path / "out", spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KuaiRandError, match="no impression log"):
        import_kuairand(tmp_path / "empty", tmp_path / "out", spec)
    with pytest.raises(KuaiRandError, match="unknown time zone"):
        import_kuairand(
            layout, tmp_path / "out", load_spec(preset="kuairand", overrides=["kuairand.timezone=Mars/Base"])
        )
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        import_kuairand(layout, tmp_path / "taken", spec)

    import coldcast.core.kuairand as adapter

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(adapter._Writer, "day", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        import_kuairand(layout, tmp_path / "out", spec)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "empty", "taken"]


# ------------------------------------------------------------------------------------------------ CLI and train
def test_presets_merge_over_an_imported_spec_as_over_the_default(imported, spec):
    _, ds = imported
    base = ds.root / "spec.yaml"
    assert load_spec(preset="kuairand", base=base) == spec
    assert load_spec(preset="promotions_only", base=base).task_names == ["promo_stream", "click", "like", "follow"]


@pytest.mark.slow
def test_cli_imports_and_coldcast_train_works_on_the_import(layout, tmp_path):
    from coldcast.model.scoring import ScoringModel

    runner = CliRunner()
    result = runner.invoke(app, ["import-kuairand", str(layout), "--out", str(tmp_path / "kr")])
    assert result.exit_code == 0, result.output
    for heading in ("Rows read", "Positive rate", "quarantined"):
        assert heading in result.output
    again = runner.invoke(app, ["import-kuairand", str(layout), "--out", str(tmp_path / "kr")])
    assert again.exit_code == 2 and "already exists" in again.output
    fast = ["model.shared_layers=[16]", "model.tower_layers=[8]", "model.embedding_dim=4", "training.batch_size=128"]
    sets = [a for o in fast for a in ("--set", o)]
    args = ["train", str(tmp_path / "kr"), "--out", str(tmp_path / "m"), "--preset", "kuairand", "--epochs", "1"]
    result = runner.invoke(app, [*args, "--steps-per-epoch", "4", *sets])
    assert result.exit_code == 0, result.output
    ds = Dataset.open(tmp_path / "kr")
    model = ScoringModel.load(tmp_path / "m")
    assert model.spec.feature_names == ds.spec().feature_names  # the KuaiRand spec, no podcast feature added back
    assert not {*OUTCOME_COLUMNS, *LABEL_COLUMNS} & set(model.metadata["features"])
    # trained on the first days only: validation and test come after every training day
    split = ds.split(model.spec)
    first, last = model.metadata["data"]["dates"]
    assert [first, last] == [split["train"][0], split["train"][-1]]
    assert last < model.metadata["validation_dates"][0] <= model.metadata["validation_dates"][-1] < split["test"][0]
    scores = model.predict(ds.read(split["test"]))
    assert set(scores.columns) == {"promo_stream", "ad_stream", "click", "like", "follow"}
    assert np.isfinite(scores.to_numpy()).all()


def test_every_option_has_help():
    result = CliRunner().invoke(app, ["import-kuairand", "--help"])
    assert result.exit_code == 0
    assert "--source-by" in result.output and "--out" in result.output


def test_meta_columns_come_first(spec):
    assert impression_schema(spec).names[: len(META_COLUMNS)] == list(META_COLUMNS)
