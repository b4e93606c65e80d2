"""The synthetic world: determinism, schema, past-only tiers, observability, learnability, atomic writes."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from coldcast.core.data import Dataset, non_feature_columns
from coldcast.core.spec import CategoricalFeature, IdFeature, MultiFeature, NumericFeature, load_spec
from coldcast.core.world import assign_tiers, build_world, generate
from tests.worlds import TINY


def tiny_spec(*extra):
    return load_spec(overrides=[*TINY, *extra])


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    generate(tiny_spec(), tmp_path / "a")
    generate(tiny_spec(), tmp_path / "b")
    generate(tiny_spec("world.seed=8"), tmp_path / "c")
    a, b, c = (Dataset.open(tmp_path / x).read() for x in "abc")
    pd.testing.assert_frame_equal(a, b)
    assert not a["stream"].equals(c["stream"]) or not a["user_id"].equals(c["user_id"])
    for f in Dataset.open(tmp_path / "a").shards():
        assert pq.read_table(f).equals(pq.read_table(tmp_path / "b" / "impressions" / f.name))


def test_columns_and_types_follow_the_spec(small_world, small_spec):
    df = small_world.read()
    expected = set(non_feature_columns(small_spec)) | set(small_spec.feature_names)
    assert set(df.columns) == expected
    for f in small_spec.feature_list:
        col = df[f.name]
        d = f.definition
        if isinstance(d, CategoricalFeature):
            assert set(col.unique()) <= set(d.values), f.name
        elif isinstance(d, NumericFeature):
            assert col.between(d.min, d.max).all(), f.name
        elif isinstance(d, IdFeature):
            assert col.map(type).eq(str).all(), f.name
        elif isinstance(d, MultiFeature):
            lengths = col.map(len)
            assert lengths.max() <= d.max_length, f.name
            if d.values:
                assert set(np.concatenate(col.to_list())) <= set(d.values), f.name
    assert df["impression_id"].is_unique


def test_source_values_are_respected(small_world, small_spec):
    df = small_world.read()
    for source in small_spec.source_names:
        rows = df[df["source"] == source]
        for feature in small_spec.sources[source].values:
            assert set(rows[feature].unique()) <= set(small_spec.allowed_values(source, feature))
    ads = df[df["source"] == "ad"]
    assert (ads["cost"] > 0).all()
    assert (df.loc[df["source"] == "promotion", "cost"] == 0).all()


def test_rates_are_plausible(small_world):
    df = small_world.read()
    rate = df.groupby("source")[["stream", "click", "like", "follow"]].mean()
    assert 0.01 < rate.loc["promotion", "stream"] < 0.08
    assert rate.loc["ad", "stream"] < rate.loc["promotion", "stream"]
    for source in ("promotion", "ad"):
        assert rate.loc[source, "follow"] < rate.loc[source, "stream"]
    # likes and follows follow streams
    assert (df.loc[df["like"] == 1, "stream"] == 1).all()
    assert (df.loc[df["follow"] == 1, "stream"] == 1).all()


def test_true_probabilities_match_observed_rates(small_world):
    df = small_world.read()
    for outcome in ("stream", "click"):
        for _, g in df.groupby("source"):
            assert g[outcome].mean() == pytest.approx(g["true_" + outcome].mean(), rel=0.15)


def test_labels_exist_only_where_the_channel_observes_them(tmp_path):
    spec = tiny_spec("sources.ad.observes=[stream, click, follow]", "tasks.like.labels.ad=null", "tasks.like.mask.ad=0")
    generate(spec, tmp_path / "w")
    df = Dataset.open(tmp_path / "w").read()
    assert df.loc[df["source"] == "ad", "like"].isna().all()
    assert df.loc[df["source"] == "promotion", "like"].notna().all()
    assert df["true_like"].notna().all()


def test_assign_tiers_edges():
    edges = [100, 10, 1]
    assert assign_tiers(np.array([100, 99, 10, 9, 1, 0]), edges).tolist() == [0, 1, 1, 2, 2, 3]


def _tiers_from_daily(ds, spec, include_today):
    daily = ds.entity("show_daily_streams")
    daily["date"] = pd.to_datetime(daily["date"])
    wide = daily.pivot_table(index="date", columns="show_id", values="streams", fill_value=0).sort_index()
    all_days = pd.date_range(wide.index.min(), wide.index.max())
    wide = wide.reindex(all_days, fill_value=0)
    window = spec.popularity.window_days
    trailing = wide.rolling(window, min_periods=1).sum()
    if not include_today:
        trailing = trailing.shift(1).fillna(0)
    return trailing


def test_tiers_use_the_past_only(small_world, small_spec):
    df = small_world.read(columns=["date", "show_id", "popularity_tier", "show_streams_30d", "less_streamed"])
    expected = {}
    for include_today in (False, True):
        trailing = _tiers_from_daily(small_world, small_spec, include_today)
        stacked = trailing.stack().rename("streams").reset_index()
        stacked.columns = ["date", "show_id", "streams"]
        stacked["date"] = stacked["date"].dt.strftime("%Y-%m-%d")
        merged = df.merge(stacked, on=["date", "show_id"], how="left").fillna({"streams": 0})
        expected[include_today] = merged
    past = expected[False]
    np.testing.assert_array_equal(past["show_streams_30d"].to_numpy(), past["streams"].to_numpy())
    np.testing.assert_array_equal(
        past["popularity_tier"].to_numpy(), assign_tiers(past["streams"].to_numpy(), small_spec.popularity.tier_edges)
    )
    assert (past["less_streamed"] == (past["streams"] < small_spec.popularity.less_streamed_below)).all()
    # the same check with the impression's own day included would fail: the test can catch a leak
    leaky = expected[True]
    assert (leaky["show_streams_30d"].to_numpy() != leaky["streams"].to_numpy()).mean() > 0.5


def test_a_crash_leaves_nothing_half_written(tmp_path):
    def crash(done, total):
        if done == 10:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        generate(tiny_spec(), tmp_path / "w", progress=crash)
    assert list(tmp_path.iterdir()) == []


def test_generation_is_atomic_and_refuses_to_overwrite(tmp_path):
    spec = tiny_spec()
    generate(spec, tmp_path / "w")
    with pytest.raises(FileExistsError, match="already exists"):
        generate(spec, tmp_path / "w")
    before = Dataset.open(tmp_path / "w").manifest["rows"]
    generate(tiny_spec("world.impressions=5000"), tmp_path / "w", overwrite=True)
    assert Dataset.open(tmp_path / "w").manifest["rows"] == 5000 != before


def test_manifest_and_spec_travel_with_the_data(small_world, small_spec):
    m = small_world.manifest
    assert m["rows"] == sum(m["shards"].values()) == len(small_world.read(columns=["source"]))
    assert small_world.spec() == small_spec
    assert m["spec_fingerprint"] == small_spec.fingerprint()


def test_a_new_feature_is_a_spec_change(tmp_path):
    spec = tiny_spec(
        "features.user.podcast_app_version={kind: categorical, values: [v1, v2, v3]}",
        "features.context.battery={kind: numeric, min: 0, max: 100}",
    )
    generate(spec, tmp_path / "w")
    df = Dataset.open(tmp_path / "w").read()
    assert set(df["podcast_app_version"].unique()) <= {"v1", "v2", "v3"}
    assert df["battery"].between(0, 100).all()


def test_a_new_outcome_and_task_are_a_spec_change(tmp_path):
    spec = load_spec(
        overrides={
            "outcomes": {"share": {"description": "shared the show"}},
            "sources": {"promotion": {"observes": ["stream", "click", "like", "follow", "share"]}},
            "world": {
                "users": 800,
                "shows": 150,
                "campaigns": 30,
                "impressions": 8000,
                "days": 28,
                "outcomes": {"share": {"given": "stream", "rate": {"promotion": 0.2}}},
            },
            "split": {"validation_days": 4, "test_days": 4},
            "tasks": {"share": {"labels": {"promotion": "share", "ad": None}, "mask": {"promotion": 1.0}}},
        }
    )
    generate(spec, tmp_path / "w")
    df = Dataset.open(tmp_path / "w").read()
    assert df.loc[df["source"] == "ad", "share"].isna().all()
    assert df.loc[df["source"] == "promotion", "share"].sum() > 0
    assert (df.loc[df["share"] == 1, "stream"] == 1).all()


@pytest.mark.parametrize("kind", ["video_shift", "new_show_surge"])
def test_drift_scenarios_change_the_later_window(tmp_path, kind):
    spec = tiny_spec(f"world.drift.kind={kind}", "world.drift.start_day=14", "world.drift.strength=2")
    generate(spec, tmp_path / "w")
    df = Dataset.open(tmp_path / "w").read()
    day = (pd.to_datetime(df["date"]) - pd.Timestamp(spec.world.start_date)).dt.days
    before, after = df[day < 14], df[day >= 14]
    if kind == "video_shift":
        share = lambda d: (d.loc[d["source"] == "ad", "format"] == "video").mean()  # noqa: E731
        assert share(after) > share(before) + 0.05
    else:
        assert (after["show_age_days"] < 14).mean() > (before["show_age_days"] < 14).mean() + 0.05


def test_channel_similarity_moves_ad_affinity():
    def ad_promo_corr(similarity):
        world = build_world(tiny_spec(f"world.channel_similarity={similarity}"))
        return np.corrcoef(world.show_quality, world.show_ad_quality)[0, 1]

    assert ad_promo_corr(1.0) > 0.99
    assert abs(ad_promo_corr(0.0)) < 0.3


# ------------------------------------------------------------------------------------------ learnability
def _simple_model(spec):
    """One-hot categoricals, log-scaled numerics and one cross (genre in history), L2 logistic regression."""
    categorical = [f.name for f in spec.feature_list if isinstance(f.definition, CategoricalFeature)]
    numeric = [f.name for f in spec.feature_list if isinstance(f.definition, NumericFeature)]
    columns = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
            ("numeric", StandardScaler(), [*numeric, "genre_listened"]),
        ]
    )
    return make_pipeline(columns, LogisticRegression(C=0.05, max_iter=300)), categorical + numeric


def _design(df, columns):
    X = df[columns].copy()
    X["genre_listened"] = [g in set(h) for g, h in zip(df["genre"], df["listened_genres"], strict=True)]
    return X


@pytest.fixture(scope="module")
def learn_world(tmp_path_factory):
    # Large enough that even ad follows (about 0.15%) have dozens of positives in the held-out days.
    spec = load_spec(
        overrides=[
            *TINY,
            "world.impressions=300000",
            "world.users=10000",
            "world.shows=1000",
            "world.campaigns=200",
            "split.validation_days=1",
            "split.test_days=8",
        ]
    )
    out = tmp_path_factory.mktemp("learn") / "w"
    generate(spec, out)
    return Dataset.open(out), spec


def test_every_label_is_learnable_and_the_truth_is_better(learn_world):
    ds, spec = learn_world
    split = ds.split(spec)
    train = ds.read(split["train"] + split["validation"])
    test = ds.read(split["test"])
    checked = []
    for outcome in spec.outcome_names:
        for source in spec.source_names:
            model, columns = _simple_model(spec)
            tr = (train["source"] == source) & train[outcome].notna()
            te = (test["source"] == source) & test[outcome].notna()
            y_test = test.loc[te, outcome].to_numpy()
            assert y_test.sum() >= 20, (outcome, source, y_test.sum())
            model.fit(_design(train[tr], columns), train.loc[tr, outcome].to_numpy())
            auc_model = roc_auc_score(y_test, model.predict_proba(_design(test[te], columns))[:, 1])
            auc_truth = roc_auc_score(y_test, test.loc[te, "true_" + outcome].to_numpy())
            assert auc_model > 0.6, (outcome, source, auc_model)
            assert auc_truth > auc_model, (outcome, source, auc_truth, auc_model)
            checked.append((outcome, source))
    assert len(checked) == len(spec.outcome_names) * len(spec.source_names)
