"""Shared fixtures: small synthetic worlds generated once per test session."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from coldcast.core.data import Dataset
from coldcast.core.spec import load_spec
from coldcast.core.world import generate
from tests.worlds import SMALL


@pytest.fixture(scope="session")
def small_spec():
    return load_spec(overrides=SMALL)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory, small_spec) -> Dataset:
    out = tmp_path_factory.mktemp("worlds") / "small"
    generate(small_spec, out)
    return Dataset.open(out)


# A quick model on the small world: enough to score, serve, monitor and gate, not to judge quality.
FAST_MODEL = [
    "training.epochs=1",
    "training.batch_size=256",
    "model.shared_layers=[32]",
    "model.tower_layers=[16]",
    "model.embedding_dim=4",
]


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, small_world):
    """(spec, model directory) of the default five-task model trained briefly on the small world."""
    from coldcast.model.train import train
    from tests.worlds import SMALL

    spec = load_spec(overrides=[*SMALL, *FAST_MODEL])
    out = tmp_path_factory.mktemp("models") / "small"
    train(spec, small_world.root, out, steps_per_epoch=60, verbose=0, log=lambda _: None)
    return spec, out
