"""The budget-split A/B simulator and the experiments harness (plan, derived datasets, a quick end-to-end run)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coldcast.evaluation import oracle_scorer, random_scorer, simulate_ab
from coldcast.evaluation.experiments import (
    DEFAULT,
    QUICK,
    Protocol,
    derive_ad_fraction,
    plan,
    protocol_from_file,
    run_experiments,
)


@pytest.fixture(scope="module")
def oracle_vs_random(small_world):
    settings = dict(opportunities=600, campaigns_per_opportunity=10, bootstrap=60, seed=3)
    return simulate_ab(small_world, random_scorer(1), oracle_scorer(), **settings), settings


def test_an_oracle_beats_a_random_policy_on_ecps(oracle_vs_random):
    result, _ = oracle_vs_random
    overall = result.overall
    assert overall.control.impressions > 0 and overall.treatment.impressions > 0
    assert overall.treatment.ecps < overall.control.ecps  # cheaper streams
    assert overall.treatment.expected_i2s > 1.5 * overall.control.expected_i2s
    assert overall.lift.i2s.value > 0 and overall.lift.ecps.value < 0
    assert overall.lift.expected_i2s.low > 0  # the interval excludes no effect
    names = [s.name for s in result.segments]
    assert names[:3] == ["all", "less_streamed", "more_streamed"] and "tier_7" in names
    for arm in ("control", "treatment"):
        tiers = sum(getattr(result.segment(f"tier_{t}"), arm).impressions for t in range(8))
        assert tiers == getattr(overall, arm).impressions
        assert 0 < result.fill_rate[arm] <= 1


def test_results_repeat_exactly_for_a_seed(small_world, oracle_vs_random):
    result, settings = oracle_vs_random
    again = simulate_ab(small_world, random_scorer(1), oracle_scorer(), **settings)
    assert again == result
    other = simulate_ab(small_world, random_scorer(1), oracle_scorer(), **{**settings, "seed": 4})
    assert other.overall.control != result.overall.control


def test_budgets_bind_and_are_respected(small_world):
    tight = simulate_ab(
        small_world, oracle_scorer(), oracle_scorer(), opportunities=400, campaigns_per_opportunity=10,
        budget_ratio=0.3, bootstrap=0, seed=1,
    )  # fmt: skip
    # the same scorer in both arms picks the same ads and draws the same outcomes
    assert tight.overall.control == tight.overall.treatment and tight.overall.lift.i2s.value == 0
    # each arm may spend at most 0.3x of filling every opportunity at the mean CPM, so many go unfilled
    assert tight.fill_rate["control"] < 0.6
    with pytest.raises(ValueError, match="budget_ratio"):
        simulate_ab(small_world, oracle_scorer(), oracle_scorer(), opportunities=10, budget_ratio=0)


def test_a_scorer_must_score_every_candidate(small_world):
    def broken(df):
        return np.zeros(len(df) - 1)

    with pytest.raises(ValueError, match="one finite score per candidate"):
        simulate_ab(small_world, broken, oracle_scorer(), opportunities=20, campaigns_per_opportunity=5)


# --------------------------------------------------------------------------------------------------- experiments
def test_the_default_plan_covers_every_experiment_with_three_seeds():
    p = plan(DEFAULT, Path("/nowhere"), Path("/nowhere/world"), base_similarity=0.7)
    ids = [c.id for c in p.cells]
    assert len(ids) == len(set(ids))
    for variant in ("promotions_only", "promo_stream_only", "ads_stream_only", "ads_multitask", "joint"):
        assert all(f"table/{variant}/s{s}" in ids for s in (1, 2, 3))
    for cell in ("mask/mask_off", "mask/mask_symmetric", "sampler/natural", "encoders/mmoe", "encoders/ple"):
        assert all(f"{cell}/s{s}" in ids for s in (1, 2, 3))
    assert {c.variant for c in p.cells if c.experiment == "groups"} == {f"no_{g}" for g in DEFAULT.groups}
    # fine-tuning starts from the baseline of the same seed, which runs first
    finetunes = [c for c in p.cells if c.warm_start]
    assert finetunes and all(ids.index(c.warm_start) < ids.index(c.id) for c in finetunes)
    assert all(c.warm_start.endswith(f"/s{c.seed}") for c in finetunes)
    # the base world's similarity is a point of the sweep without cells of its own
    assert {k for k in p.worlds if k.startswith("similarity")} == {"similarity-0.00", "similarity-0.35"}
    # the table at every seed first, then the rest seed by seed: a partial run stays useful
    order = [(c.experiment != "table", c.seed) for c in p.cells]
    assert order == sorted(order) and p.cells[0].experiment == "table"
    with pytest.raises(ValueError, match="unknown experiment"):
        DEFAULT.only(["tabel"])


def test_a_protocol_file_narrows_the_plan_and_names_bad_fields(tmp_path):
    path = tmp_path / "protocol.yaml"
    path.write_text("ablation_seeds: [1]\nfractions: [0.01]\nsweep_variants: [promotions_only, joint]\n")
    protocol = protocol_from_file(path, DEFAULT)
    p = plan(protocol, Path("/nowhere"), Path("/nowhere/world"), base_similarity=0.7)
    table = [c for c in p.cells if c.experiment == "table"]
    rest = [c for c in p.cells if c.experiment != "table"]
    assert {c.seed for c in table} == {1, 2, 3} and {c.seed for c in rest} == {1}
    assert {c.variant for c in rest if c.experiment == "similarity"} == {"promotions_only@0.0", "joint@0.0"} | {
        "promotions_only@0.35",
        "joint@0.35",
    }
    assert {c.world for c in rest if c.experiment == "curve"} == {"ads-1pct"}
    path.write_text("ablation_seed: [1]\n")
    with pytest.raises(ValueError, match="ablation_seed"):
        protocol_from_file(path, DEFAULT)
    with pytest.raises(ValueError, match="must be among"):
        plan(DEFAULT.model_copy(update={"ablation_seeds": [4]}), Path("/n"), Path("/n/w"), base_similarity=0.7)


def test_derived_datasets_thin_ad_rows_before_the_test_days(small_world, small_spec, tmp_path):
    small = derive_ad_fraction(small_world, tmp_path / "ads-5", 0.05)
    large = derive_ad_fraction(small_world, tmp_path / "ads-25", 0.25)
    from coldcast.core.data import Dataset

    split = small_world.split(small_spec)
    full, five, quarter = (Dataset.open(p).read(columns=["impression_id", "source", "date"]) for p in (
        small_world.root, small, large))  # fmt: skip
    before = ~full["date"].isin(split["test"])
    ads = full[before & (full["source"] == "ad")]
    kept5 = set(five[(five["source"] == "ad") & ~five["date"].isin(split["test"])]["impression_id"])
    kept25 = set(quarter[(quarter["source"] == "ad") & ~quarter["date"].isin(split["test"])]["impression_id"])
    assert kept5 < kept25 < set(ads["impression_id"])  # nested
    assert abs(len(kept25) / len(ads) - 0.25) < 0.03
    # promotions and the test days are untouched
    for derived in (five, quarter):
        pd.testing.assert_frame_equal(
            derived[derived["source"] == "promotion"].reset_index(drop=True),
            full[full["source"] == "promotion"].reset_index(drop=True),
        )
        assert (derived["date"].isin(split["test"])).sum() == (full["date"].isin(split["test"])).sum()
    assert json.loads((small / "manifest.json").read_text())["ad_fraction"] == 0.05


@pytest.mark.slow
def test_a_quick_experiment_run_writes_tables_reports_and_resumes(small_world, tmp_path):
    protocol = QUICK.model_copy(update={"experiments": ["abtest"], "epochs": 1, "steps_per_epoch": 8})
    assert isinstance(protocol, Protocol)
    logs: list[str] = []
    root = run_experiments(protocol, tmp_path / "exp", world=small_world.root, log=logs.append)
    results = json.loads((root / "results.json").read_text())
    assert results["complete"] and set(results["cells"]) == {"table/promotions_only/s1", "table/joint/s1"}
    rows = {r["variant"]: r for r in results["table"]}
    assert rows["promotions_only"]["ads_lift"]["mean"] == 0.0
    assert rows["joint"]["ads_ap"]["mean"] is not None
    assert results["direct_apply_check"]["equal"]  # direct apply through transfer == the baseline's promo head
    ab = results["abtest"][0]["result"]
    assert ab["opportunities"] == protocol.ab_opportunities and ab["segments"][0]["name"] == "all"
    assert results["gate"] is not None and set(results["reports"]) == {"direct_apply", "joint"}
    summary = (root / "summary.md").read_text()
    assert "Table 1" in summary and "+50.2%" in summary and "Table 2 shape" in summary
    assert (root / "report.html").exists() and (root / "plots" / "table1.png").exists()
    assert (Path(results["reports"]["joint"]) / "report.html").exists()
    # a second run trains nothing and reuses the simulations and reports
    logs.clear()
    run_experiments(protocol, root, world=small_world.root, log=logs.append)
    assert any("2 of 2 cells already done; 0 to run" in line for line in logs)
    assert not any(line.startswith(("A/B simulation", "evaluation report")) for line in logs)
