"""The input pipeline: source-balanced or natural sampling, seeding, and tf.data giving exactly the numpy batches."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from coldcast.core.spec import load_spec
from coldcast.model.inputs import label_arrays, training_batches
from coldcast.model.train import training_dataset
from tests.worlds import SMALL


@pytest.fixture(scope="module")
def train_files(small_world, small_spec):
    return small_world.shards(small_world.split(small_spec)["train"])


def _promo_share(batches):
    """Share of rows that train promo_stream: promotion rows with a stream label (ads are masked out of it)."""
    weights = np.concatenate([w["promo_stream"] for _, _, w in batches])
    return float((weights > 0).mean())


@pytest.mark.parametrize("sampling", ["balanced", "natural"])
def test_batches_hold_the_sources_in_the_configured_mix(small_world, train_files, sampling):
    spec = load_spec(overrides=[*SMALL, f"training.sampling={sampling}", "training.batch_size=256"])
    batches = list(training_batches(train_files, spec, batch_size=256, steps=60, seed=4))
    frame = small_world.read(small_world.split(spec)["train"])
    _, weights = label_arrays(frame, spec)
    promo_labelled = weights["promo_stream"] > 0
    promo_rows = (frame["source"] == "promotion").to_numpy()
    expected = 0.5 * promo_labelled[promo_rows].mean() if sampling == "balanced" else promo_labelled.mean()
    assert promo_rows.mean() < 0.45 or promo_rows.mean() > 0.55  # the data's mix is not 50/50: the test can tell
    # 15,360 draws: the binomial standard error is under 0.005
    assert abs(_promo_share(batches) - expected) < 0.03
    assert all(len(b[0]["user_id"]) == 256 for b in batches)


def test_the_same_seed_gives_the_same_batches_and_another_seed_others(train_files, small_spec):
    def users(seed):
        return np.concatenate(
            [f["user_id"] for f, _, _ in training_batches(train_files, small_spec, batch_size=128, steps=5, seed=seed)]
        )

    assert (users(1) == users(1)).all()
    assert not (users(1) == users(2)).all()


def _awkward_shard(small_world, small_spec, path):
    """A real shard with values that stress the conversion: non-ASCII, nulls, empty and over-long lists."""
    table = pq.read_table(small_world.shards(small_world.split(small_spec)["train"])[0])
    table = table.filter(pc.equal(table.column("source"), "promotion"))
    users = table.column("user_id").to_pylist()
    users[0], users[1] = "usuário-ñ-🎧", None
    lists = table.column("recent_shows").to_pylist()
    limit = next(f.definition.max_length for f in small_spec.feature_list if f.name == "recent_shows")
    lists[0], lists[1], lists[2] = [], None, [f"show-é{i}" for i in range(limit + 3)]
    table = table.set_column(table.schema.get_field_index("user_id"), "user_id", pa.array(users, pa.string()))
    field = table.schema.field("recent_shows")
    table = table.set_column(table.schema.get_field_index("recent_shows"), field, pa.array(lists, field.type))
    pq.write_table(table, path)
    return limit


def test_tf_data_delivers_exactly_the_numpy_batches_even_for_awkward_strings(small_world, small_spec, tmp_path):
    path = tmp_path / "2026-01-01.parquet"
    limit = _awkward_shard(small_world, small_spec, path)
    spec = load_spec(overrides=[*SMALL, "training.sampling=natural", "training.shuffle_buffer=64"])
    steps, size = 40, 64
    numpy_batches = list(training_batches([path], spec, batch_size=size, steps=steps, seed=9, sources=["promotion"]))
    tf_batches = list(training_dataset([path], spec, size, steps, 9, ["promotion"]).as_numpy_iterator())
    assert len(tf_batches) == steps
    for (f_np, y_np, w_np), (f_tf, y_tf, w_tf) in zip(numpy_batches, tf_batches, strict=True):
        assert set(f_tf) <= set(f_np)
        for name, values in f_tf.items():
            assert values.shape == f_np[name].shape, name
            np.testing.assert_array_equal(values, f_np[name], err_msg=name)
        for task in spec.task_names:
            np.testing.assert_array_equal(y_tf[task], y_np[task])
            np.testing.assert_array_equal(w_tf[task], w_np[task])
    seen_users = {v.decode("utf-8") for f, _, _ in tf_batches for v in f["user_id"]}
    assert "usuário-ñ-🎧" in seen_users and "" in seen_users  # the null user arrives as ''
    lists = np.concatenate([f["recent_shows"] for f, _, _ in tf_batches])
    assert lists.shape[1] == limit
    long = [row for row in lists if row[0] == "show-é0".encode()]
    assert long and all(list(row) == [f"show-é{i}".encode() for i in range(limit)] for row in long)
    assert (lists == b"").all(axis=1).any()  # the empty and the null list: all padding
