"""Data helpers: dataset opening, the temporal split, task labels and loss weights from the spec."""

import numpy as np
import pandas as pd
import pytest

from coldcast.core.data import (
    DataError,
    Dataset,
    atomic_dir,
    feature_columns,
    task_labels,
    task_weights,
    temporal_split,
    write_parquet,
)


def test_temporal_split_is_ordered_and_disjoint(small_world, small_spec):
    split = small_world.split(small_spec)
    assert len(split["validation"]) == small_spec.split.validation_days
    assert len(split["test"]) == small_spec.split.test_days
    assert max(split["train"]) < min(split["validation"]) <= max(split["validation"]) < min(split["test"])
    assert sorted(split["train"] + split["validation"] + split["test"]) == small_world.dates
    test = small_world.read_split(small_spec, "test", columns=["timestamp"])
    train = small_world.read_split(small_spec, "train", columns=["timestamp"])
    assert train["timestamp"].max() < test["timestamp"].min()


def test_split_needs_enough_days(small_spec):
    with pytest.raises(DataError, match="cannot hold"):
        temporal_split(["2026-01-01", "2026-01-02"], small_spec)


def test_open_rejects_what_is_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Dataset.open(tmp_path / "missing")
    with pytest.raises(DataError, match=r"no manifest\.json"):
        Dataset.open(tmp_path)


def test_task_labels_follow_the_label_map(small_world, small_spec):
    df = small_world.read(small_world.dates[:3])
    labels = task_labels(df, small_spec)
    assert list(labels.columns) == small_spec.task_names
    np.testing.assert_array_equal(labels["promo_stream"].to_numpy(), df["stream"].to_numpy())
    np.testing.assert_array_equal(labels["click"].to_numpy(), df["click"].to_numpy())


def test_task_weights_apply_the_directional_mask(small_world, small_spec):
    df = small_world.read(small_world.dates[:3])
    weights = task_weights(df, small_spec)
    ads = (df["source"] == "ad").to_numpy()
    assert (weights.loc[ads, "promo_stream"] == 0).all()
    assert (weights.loc[~ads, "promo_stream"] == 1).all()
    assert (weights["ad_stream"] == 1).all()


def test_unobserved_labels_get_zero_weight(small_spec):
    df = pd.DataFrame(
        {
            "source": ["ad", "promotion"],
            "stream": [np.nan, 1.0],
            "click": [1.0, np.nan],
            "like": [0.0, 0.0],
            "follow": [0.0, 0.0],
        }
    )
    weights = task_weights(df, small_spec)
    assert weights["ad_stream"].tolist() == [0.0, 1.0]
    assert weights["click"].tolist() == [1.0, 0.0]


def test_feature_columns_are_the_spec_features(small_spec):
    assert feature_columns(small_spec) == small_spec.feature_names


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        write_parquet(pd.DataFrame({"a": [1]}), tmp / "x.parquet")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(tmp_path / "out") as tmp:
        write_parquet(pd.DataFrame({"a": [1]}), tmp / "x.parquet")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.parquet"]
