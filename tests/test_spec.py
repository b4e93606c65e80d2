"""The spec: validation, error messages that name the key, overrides, and derived views."""

import pytest

from coldcast.core.spec import META_COLUMNS, SpecError, load_spec


def test_default_spec_loads_with_five_tasks_and_four_groups():
    spec = load_spec()
    assert spec.task_names == ["promo_stream", "ad_stream", "click", "like", "follow"]
    assert {f.group for f in spec.feature_list} == {"user", "content", "context", "creative"}
    assert spec.source_names == ["promotion", "ad"]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("world.impresions=10", "world.impresions"),
        ("model.encodr=mmoe", "model.encodr"),
        ("features.user.country.valuse=[US]", "features.user.country.valuse"),
        ("tasks.click.wieght=2", "tasks.click.wieght"),
        ("typo_at_top=1", "typo_at_top"),
    ],
)
def test_misspelt_key_fails_naming_it(override, named):
    with pytest.raises(SpecError) as err:
        load_spec(overrides=[override])
    assert named in str(err.value)
    assert "unknown key" in str(err.value)


def test_misspelt_key_suggests_the_right_one():
    with pytest.raises(SpecError, match="did you mean 'impressions'"):
        load_spec(overrides=["world.impresions=10"])


def test_misspelt_key_in_a_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("training:\n  batch_sise: 64\n")
    with pytest.raises(SpecError, match=r"training\.batch_sise"):
        load_spec(path)


def test_file_and_overrides_merge_over_default(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("world:\n  users: 123\n")
    spec = load_spec(path, ["world.shows=45", "training.sampling=natural"])
    assert spec.world.users == 123
    assert spec.world.shows == 45
    assert spec.training.sampling == "natural"
    assert spec.world.impressions == load_spec().world.impressions


def test_spec_is_frozen():
    spec = load_spec()
    with pytest.raises(Exception, match="frozen"):
        spec.world.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tasks.like.labels.ad=bogus", "does not observe outcome 'bogus'"),
        ("tasks.like.labels.radio=like", "tasks.like.labels.radio: unknown source"),
        ("tasks.like.mask.ad=2", "outside [0, 1]"),
        ("world.outcomes.stream.rate.ad=1.5", "not a probability"),
        ("sources.ad.values.format=[hologram]", "not among the feature's values"),
        ("features.user.stream={kind: numeric, min: 0, max: 1}", "reserved"),
        ("features.user.true_stream={kind: numeric, min: 0, max: 1}", "reserved"),
        ("features.context.genre={kind: categorical, values: [a]}", "also declared"),
        ("features.user.age={kind: numeric, min: 5, max: 1}", "min (5.0) must be below max"),
        ("world.days=10", "leaves no training days"),
        ("evaluation.slices.bad={column: nowhere}", "evaluation.slices.bad.column"),
        ("gate.floors.nope={auc: 0.5}", "gate.floors.nope"),
    ],
)
def test_inconsistent_specs_are_rejected_with_the_key(override, message):
    with pytest.raises(SpecError) as err:
        load_spec(overrides=[override])
    assert message in str(err.value)


def test_bad_override_syntax():
    with pytest.raises(SpecError, match=r"key\.path=value"):
        load_spec(overrides=["world.users"])


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="unknown preset"):
        load_spec(preset="nope")


def test_no_true_or_label_or_meta_column_is_a_feature():
    spec = load_spec()
    features = set(spec.feature_names)
    assert not features & set(spec.outcome_names)
    assert not features & set(META_COLUMNS)
    assert not [f for f in features if f.startswith("true_")]


def test_label_table_and_directional_mask():
    spec = load_spec()
    mask = spec.loss_mask()
    # an ad impression never trains a promotion tower; a promotion impression trains all towers
    assert mask["ad"]["promo_stream"] == 0.0
    assert all(w == 1.0 for w in mask["promotion"].values())
    assert spec.label_table()["ad"]["ad_stream"] == "stream"


def test_adding_an_objective_is_a_spec_change():
    spec = load_spec(
        overrides={
            "outcomes": {"share": {"description": "shared the show"}},
            "sources": {"promotion": {"observes": ["stream", "click", "like", "follow", "share"]}},
            "world": {"outcomes": {"share": {"given": "stream", "rate": {"promotion": 0.05}}}},
            "tasks": {"share": {"labels": {"promotion": "share", "ad": None}, "mask": {"promotion": 1.0}}},
        }
    )
    assert "share" in spec.task_names
    assert spec.label_table()["ad"]["share"] is None
    assert spec.loss_mask()["ad"]["share"] == 0.0


def test_fingerprint_changes_with_content():
    assert load_spec().fingerprint() == load_spec().fingerprint()
    assert load_spec().fingerprint() != load_spec(overrides=["world.seed=8"]).fingerprint()


def test_to_yaml_round_trips(tmp_path):
    spec = load_spec(overrides=["world.users=77"])
    path = tmp_path / "resolved.yaml"
    path.write_text(spec.to_yaml())
    assert load_spec(path) == spec
