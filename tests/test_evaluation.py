"""Evaluation: metrics equal scikit-learn's, slices see no future, reports are self-contained, the gate judges."""

import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.calibration import calibration_curve as sk_calibration_curve
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score
from typer.testing import CliRunner

from coldcast.cli import app
from coldcast.core.data import task_labels
from coldcast.core.spec import load_spec
from coldcast.core.world import assign_tiers
from coldcast.evaluation import (
    bless,
    compute_metrics,
    evaluate_model,
    evaluate_predictions,
    paired_lift,
    read_report,
    slice_values,
    training_reference,
    write_reports,
)
from coldcast.evaluation.metrics import calibration_curve, expected_calibration_error
from tests.worlds import SMALL

runner = CliRunner()


# --------------------------------------------------------------------------------------------------- metrics
@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(11)
    n = 4000
    # rounded scores: many ties, which scikit-learn groups into one threshold
    p = np.round(rng.beta(1.2, 25, n), 3)
    y = (rng.random(n) < np.clip(p * 1.4, 0, 1)).astype(float)
    return y, p


def test_metrics_equal_scikit_learn_with_ties(scores):
    y, p = scores
    m = compute_metrics(y, p, bins=10, strategy="quantile")
    assert m.average_precision.value == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert m.auc.value == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m.log_loss.value == pytest.approx(log_loss(y, p), abs=1e-12)
    assert m.positives == int(y.sum()) and m.rows == len(y)
    assert m.predicted_observed.value == pytest.approx(p.sum() / y.sum())
    for strategy in ("uniform", "quantile"):
        observed, predicted = sk_calibration_curve(y, p, n_bins=10, strategy=strategy)
        bins = [b for b in calibration_curve(y, p, 10, strategy=strategy) if b.count]
        np.testing.assert_allclose([b.observed_rate for b in bins], observed, atol=1e-12)
        np.testing.assert_allclose([b.mean_predicted for b in bins], predicted, atol=1e-12)
        # ECE is the row-weighted gap of those same bins
        counts = np.array([b.count for b in bins])
        expected = np.sum(counts / len(y) * np.abs(predicted - observed))
        assert expected_calibration_error(y, p, 10, strategy=strategy) == pytest.approx(expected, abs=1e-12)


def test_integer_weights_equal_repeated_rows(scores):
    """The bootstrap's weighted metrics are exactly the metrics of the rows repeated that many times."""
    from coldcast.evaluation.metrics import average_precision, roc_auc

    y, p = scores
    w = np.random.default_rng(3).poisson(1.0, len(y))
    rep = np.repeat(np.arange(len(y)), w)
    assert average_precision(y, p, w) == pytest.approx(average_precision_score(y[rep], p[rep]), abs=1e-12)
    assert roc_auc(y, p, w) == pytest.approx(roc_auc_score(y[rep], p[rep]), abs=1e-12)


def test_intervals_bracket_the_value_repeat_for_a_seed_and_pair_resamples(scores):
    y, p = scores
    a = compute_metrics(y, p, bootstrap=100, seed=[4, 2])
    assert a == compute_metrics(y, p, bootstrap=100, seed=[4, 2])
    assert a.average_precision.low < a.average_precision.value < a.average_precision.high
    assert a != compute_metrics(y, p, bootstrap=100, seed=[4, 3])
    # the same rows under the same seed get the same resamples: a score against itself has no spread at all
    same = paired_lift(y, p, p.copy(), bootstrap=100, seed=9)
    assert same.value == 0 and same.low == 0 and same.high == 0
    noisy = np.clip(p + np.random.default_rng(1).normal(0, 0.02, len(p)), 0, 1)
    lift = paired_lift(y, noisy, p, bootstrap=100, seed=9)
    assert lift.value < 0 and lift.low < lift.value < lift.high


def test_undefined_metrics_say_why():
    m = compute_metrics(np.zeros(20), np.full(20, 0.1), bootstrap=10)
    assert m.average_precision.value is None and m.average_precision.reason == "no positives"
    assert "one class" in m.auc.reason
    assert m.log_loss.value is not None
    with pytest.raises(ValueError, match="0 or 1"):
        compute_metrics(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="probabilities"):
        compute_metrics(np.array([0, 1]), np.array([0.1, 1.5]))


# --------------------------------------------------------------------------------------------------- slices
@pytest.fixture(scope="module")
def test_rows(small_world, small_spec):
    return small_world.read_split(small_spec, "test")


def test_slices_use_no_future_information(small_world, small_spec, test_rows):
    ref = training_reference(small_world, small_spec)
    split = small_world.split(small_spec)
    assert ref.cutoff == split["train"][-1]
    train_users = set(small_world.read(split["train"], columns=["user_id"])["user_id"])
    assert ref.users == frozenset(train_users)
    full = slice_values(test_rows, small_spec, ref.cutoff, ref.users)
    assert {"popularity_tier", "less_streamed", "new_show", "unseen_user", "surface", "format"} <= set(full)

    # a row's slice never depends on other rows (later days, other impressions) or on any outcome
    first_day = test_rows["date"] == split["test"][0]
    alone = slice_values(test_rows[first_day].reset_index(drop=True), small_spec, ref.cutoff, ref.users)
    scrambled = test_rows.copy()
    rng = np.random.default_rng(0)
    for col in [*small_spec.outcome_names, *small_spec.true_columns]:
        scrambled[col] = rng.permutation(scrambled[col].to_numpy())
    again = slice_values(scrambled, small_spec, ref.cutoff, ref.users)
    for name, values in full.items():
        np.testing.assert_array_equal(alone[name], values[first_day.to_numpy()])
        np.testing.assert_array_equal(again[name], values)

    # the derived slices read the cut-off and the training users only
    launched = pd.to_datetime(test_rows["show_launch_date"]) > pd.Timestamp(ref.cutoff)
    np.testing.assert_array_equal(full["new_show"] == "true", launched.to_numpy())
    np.testing.assert_array_equal(full["unseen_user"] == "true", ~test_rows["user_id"].isin(train_users).to_numpy())

    # tiers and the less-streamed flag come from the trailing window of streams before each impression's day
    daily = small_world.entity("show_daily_streams")
    daily["date"] = pd.to_datetime(daily["date"])
    day = pd.Timestamp(split["test"][0])
    window = small_spec.popularity.window_days
    recent = daily[(daily["date"] < day) & (daily["date"] >= day - pd.Timedelta(days=window))]
    trailing = recent.groupby("show_id")["streams"].sum()
    rows = test_rows[first_day]
    streams = rows["show_id"].map(trailing).fillna(0).to_numpy()
    np.testing.assert_array_equal(
        assign_tiers(streams, small_spec.popularity.tier_edges), rows["popularity_tier"].to_numpy()
    )
    np.testing.assert_array_equal(streams < small_spec.popularity.less_streamed_below, rows["less_streamed"])


# --------------------------------------------------------------------------------------------------- reports
@pytest.fixture(scope="module")
def evaluated(small_model, small_world, tmp_path_factory):
    _, model_dir = small_model
    report = evaluate_model(model_dir, small_world.root, bootstrap=30)
    out = tmp_path_factory.mktemp("reports") / "small"
    files = write_reports(report, out)
    return report, files


def test_evaluate_model_covers_tasks_sources_slices_and_the_ceiling(evaluated, small_spec):
    report, _ = evaluated
    assert set(report.tasks) == set(small_spec.task_names)
    assert report.has_ceiling and report.split == "test" and report.train_cutoff is not None
    ad = report.task("ad_stream")
    assert ad.headline_population == "ad" and set(ad.populations) == {"ad", "promotion"}
    assert set(report.task("click").populations) == {"ad", "promotion", "all"}
    pop = ad.population()
    assert {"surface", "format", "popularity_tier", "less_streamed", "new_show", "unseen_user"} <= set(pop.slices)
    assert "source" not in pop.slices  # within one source it would repeat the overall figure
    assert sum(f.model.rows for f in pop.slices["popularity_tier"].values()) == pop.overall.model.rows
    head = ad.headline
    assert head.model.positives > 0 and head.ceiling is not None
    assert head.ceiling.average_precision.value > head.model.average_precision.value  # the truth is the ceiling
    assert head.model.average_precision.low is not None


def test_reports_are_self_contained_and_read_back(evaluated):
    report, files = evaluated
    assert read_report(files.folder) == report
    assert json.loads(files.json.read_text())["rows"] == report.rows

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.images, self.links = [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "img":
                self.images.append(a.get("src", ""))
            for key in ("href", "src"):
                if a.get(key) and not a[key].startswith("data:"):
                    self.links.append(a[key])

    page = Collect()
    page.feed(files.html.read_text())
    assert page.links == []  # nothing loaded from elsewhere
    assert len(page.images) == len(files.plots) >= 3
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    markdown = files.markdown.read_text()
    for plot in files.plots:
        assert f"plots/{plot.name}" in markdown
    assert "| ad_stream | ad |" in markdown


# --------------------------------------------------------------------------------------------------- the gate
@pytest.fixture(scope="module")
def judged(small_world, small_spec, test_rows):
    """Reports of a good scorer (the truth, lightly perturbed), an equal copy and a deliberately degraded one."""
    ref = training_reference(small_world, small_spec)
    labels = task_labels(test_rows, small_spec)
    rng = np.random.default_rng(5)
    good, degraded = {}, {}
    for task in small_spec.task_names:
        outcome = small_spec.tasks[task].labels["promotion"]
        truth = test_rows[f"true_{outcome}"].to_numpy(dtype=np.float64)
        good[task] = np.clip(truth * np.exp(rng.normal(0, 0.3, len(truth))), 0, 1)
        # half of the rows scored at random: ranking and calibration both suffer
        noise = rng.random(len(truth)) < 0.5
        degraded[task] = np.where(noise, rng.random(len(truth)) * truth.max(), good[task])
    assert labels.notna().any().all()

    def report(predictions):
        return evaluate_predictions(
            test_rows, predictions, small_spec, train_cutoff=ref.cutoff, train_users=ref.users, bootstrap=40
        )

    return report(good), report({k: v.copy() for k, v in good.items()}), report(degraded)


def test_gate_blesses_an_equal_model_and_blocks_a_degraded_one(judged, small_spec, tmp_path):
    good, equal, degraded = judged
    verdict = bless(equal, small_spec, promoted=good)
    assert verdict.blessed and not verdict.first_model and not verdict.reasons
    assert any(c.kind == "regression" and c.passed for c in verdict.checks)
    blocked = bless(degraded, small_spec, promoted=good)
    assert not blocked.blessed
    assert any(
        c.kind == "regression" and c.slice == "headline" and c.metric == "average_precision" for c in blocked.failed
    )
    assert any("ad_stream [headline] average_precision" in r for r in blocked.reasons)
    path = blocked.write(tmp_path / "verdict.json")
    assert json.loads(path.read_text())["blessed"] is False


def test_the_first_model_meets_floors_only(judged, small_spec):
    good, _, _ = judged
    first = bless(good, small_spec)
    assert first.first_model and all(c.kind == "floor" for c in first.checks)
    assert first.blessed and any(c.passed for c in first.checks)
    strict = load_spec(overrides=[*SMALL, "gate.floors.ad_stream.average_precision=0.9"])
    assert strict.gate.floors["ad_stream"]["average_precision"] == 0.9
    verdict = bless(good, strict)
    assert not verdict.blessed
    assert any("ad_stream [headline] average_precision" in r for r in verdict.reasons)
    # slices where even the ground truth misses the floor are skipped, not failed
    assert all(c.slice == "headline" or c.metric != "average_precision" for c in verdict.failed)


def test_evaluate_and_gate_from_the_command_line(small_model, small_world, tmp_path):
    _, model_dir = small_model
    out = tmp_path / "eval"
    result = runner.invoke(
        app, ["evaluate", str(model_dir), str(small_world.root), "--out", str(out), "--bootstrap", "0"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "evaluation.json").exists() and (out / "report.html").exists()
    # the same model against itself: the floors of a briefly trained model are lowered to what it reaches
    sets = ["--set", "gate.floors.promo_stream.auc=0.5", "--set", "gate.floors.ad_stream.auc=0.5"]
    verdict = tmp_path / "verdict.json"
    result = runner.invoke(app, ["gate", str(out), "--promoted", str(out), "--out", str(verdict), *sets])
    assert result.exit_code == 0, result.output
    assert "BLESSED" in result.output and json.loads(verdict.read_text())["blessed"]
    result = runner.invoke(app, ["gate", str(out), "--set", "gate.floors.ad_stream.auc=0.99"])
    assert result.exit_code == 1 and "BLOCKED" in result.output and "must be at least 0.99" in result.output
    result = runner.invoke(app, ["gate", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no evaluation report" in result.output
