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
