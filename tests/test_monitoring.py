"""Monitoring: reports from real serving logs (the real BentoML server, and PredictionLogger with real model scores),
typed results that agree with Evidently's own, thresholds mapped to OK / WARN / ALERT, the CLI's exit codes."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from evidently.core.report import Snapshot
from typer.testing import CliRunner

from coldcast.cli import app
from coldcast.core.data import Dataset
from coldcast.core.predlog import LogFiles, PredictionLogger, prediction_column
from coldcast.core.spec import SpecError, drift_columns, load_spec
from coldcast.monitoring import (
    ColumnPlan,
    DriftResult,
    Status,
    apply_thresholds,
    build_reference,
    check_window,
    join_labels,
    read_window,
)
from coldcast.monitoring.columns import EMPTY, OTHER
from coldcast.monitoring.reports import (
    ColumnDrift,
    GroupDrift,
    PredictionDrift,
    SegmentCalibration,
    SegmentReport,
    TaskQuality,
    check_values,
    checks_snapshot,
    drift_report,
    threshold_of,
    within_drift,
)
from coldcast.monitoring.status import evaluate, summarise
from coldcast.monitoring.workspace import open_workspace
from tests.worlds import SMALL as SMALL_OVERRIDES

TOL = 1e-5


# --------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def quiet_services(tmp_path_factory):
    """A private BentoML home, telemetry off (BentoML and Evidently)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml")))
        mp.setenv("BENTOML_DO_NOT_TRACK", "true")
        mp.setenv("DO_NOT_TRACK", "1")
        yield


@pytest.fixture(scope="module")
def model(small_model):
    from coldcast.model.scoring import ScoringModel

    return ScoringModel.load(small_model[1])


@pytest.fixture(scope="module")
def reference(small_world, small_model):
    spec, model_dir = small_model
    return build_reference(small_world, model_dir, spec)


@pytest.fixture(scope="module")
def simulated(small_world, small_model, tmp_path_factory):
    """Two test days replayed through the real BentoML server, each checked and added to a workspace."""
    from coldcast.monitoring.simulate import simulate

    spec, model_dir = small_model
    days = small_world.split(spec)["test"][-2:]
    out = tmp_path_factory.mktemp("simulate")
    # the small world's sources have 600-1,400 rows a day: report them as segments anyway
    result = simulate(
        out,
        spec,
        world=small_world.root,
        model=model_dir,
        dates=days,
        monitor_overrides=["drift.min_segment_rows=500"],
        log=lambda _: None,
    )
    return result, days


def scored(model, frame):
    out = frame.copy()
    scores = model.predict(frame)
    for task in model.tasks:
        out[prediction_column(task)] = scores[task].to_numpy()
    return out


def log_rows(log_dir, frame, spec, tasks, request_id):
    """Write rows with their scores as serving does (PredictionLogger), ids included."""
    logger = PredictionLogger(log_dir, spec, tasks, model_version="test-model")
    features = {name: frame[name].to_numpy() for name in spec.feature_names}
    for name, values in features.items():
        if values.dtype == object and len(values) and isinstance(values[0], np.ndarray):
            features[name] = [list(v) for v in values]
    predictions = {t: frame[prediction_column(t)].to_numpy() for t in tasks}
    meta = {"impression_id": list(frame["impression_id"]), "source": list(frame["source"])}
    logger.append(features, predictions, request_id=request_id, meta=meta)
    logger.close()


@pytest.fixture(scope="module")
def video_ads(small_world, small_model, model, reference, tmp_path_factory):
    """A test day whose ads all became video preroll creatives, scored by the model and logged by PredictionLogger."""
    small_segments = ["drift.min_segment_rows=500"]  # the small world's sources as segments
    spec = load_spec(base=small_model[1] / "spec.yaml", overrides=small_segments)
    day = small_world.split(spec)["test"][0]
    frame = small_world.read([day])
    ads = frame["source"] == "ad"
    frame.loc[ads, "format"] = "video"
    frame.loc[ads, "slot"] = "preroll"
    frame = scored(model, frame)
    log_dir = tmp_path_factory.mktemp("predlog-video")
    log_rows(log_dir, frame, spec, model.tasks, "video-ads")
    window = join_labels(read_window(log_dir), small_world, spec)
    out = tmp_path_factory.mktemp("video") / "check"
    return check_window(reference, window, spec, out, window=day, model_version="test-model"), window


# --------------------------------------------------------------------------------------------------- reports
def test_simulated_days_come_from_real_serving_logs(simulated, small_world, model):
    sim, days = simulated
    logged = LogFiles(Path(sim.logs)).read()
    expected = small_world.read(days)
    assert len(logged) == len(expected)
    assert set(logged["impression_id"]) == set(expected["impression_id"])
    assert set(logged["request_id"].str.slice(0, 18)) == {f"replay-{d}-" for d in days}
    # the server's logged scores are the model's scores of the same impressions
    rows = expected.set_index("impression_id").loc[logged["impression_id"]].reset_index()
    mine = model.predict(rows)
    for task in model.tasks:
        np.testing.assert_allclose(logged[prediction_column(task)], mine[task], atol=TOL)
    assert [d.date for d in sim.days] == days and all(not d.drifting for d in sim.days)  # the small world has no drift
    assert {d.rows for d in sim.days} == {len(small_world.read([d])) for d in days}


def test_reports_are_typed_written_and_agree_with_evidently(simulated, small_model):
    sim, days = simulated
    spec, _ = small_model
    result = DriftResult.read(sim.days[-1].report)
    out = Path(result.out_dir)
    assert (out / "report.html").stat().st_size > 100_000 and (out / "drift.json").exists()
    assert result == DriftResult.read(result.json_path)
    assert result.status is sim.days[-1].status and result.window == days[-1]
    # the label checks judged both replayed days (label_window_days covers them), every row with its labels
    assert result.label_window == f"{days[0]}..{days[1]}"
    assert result.labelled_rows == sum(d.rows for d in sim.days)
    assert [s.segment for s in result.segments] == ["all", "source=ad", "source=promotion"]
    monitored = set(drift_columns(spec))
    assert {"listened_genres.len", "listened_genres.top", "show_id", "hour"} <= monitored
    excluded = set(result.excluded)
    assert excluded == {"weekday", "episode_id", "creative_id", "campaign_id", "user_id"}
    assert all(result.excluded.values())  # each with its reason
    for seg in result.segments:
        assert {c.column for c in seg.columns} == monitored
        assert {p.task for p in seg.predictions} == set(result.tasks) == set(spec.task_names)
        assert all(c.score is not None and c.score >= 0 for c in seg.columns)
        # our group shares are Evidently's FeatureGroupDrift results in the stored snapshot
        snap = Snapshot.load(out / "snapshots" / f"drift-{seg.segment.replace('=', '_')}.json")
        shares = {}
        for res in snap.metric_results.values():
            params = getattr(res, "share", None) and res.share.metric_value_location.metric.params
            if params and params["type"].endswith("FeatureGroupDrift"):
                shares[params["group"]] = res.share.value
        assert shares.pop("all") == pytest.approx(seg.share)
        assert shares == pytest.approx({g.group: g.share for g in seg.groups})
    # the values Evidently does not compute (within drift, calibration shifts) ride in a snapshot of their own
    carried = _carried(Snapshot.load(out / "snapshots" / "checks.json"))
    assert carried.pop(("within", "", "format|campaign_id")) == pytest.approx(
        result.segment("all").column("format|campaign_id").score
    )
    assert carried.pop(("calibration", "click", "all")) == pytest.approx(result.quality["click"].calibration_shift)
    # too few positives in a day of the small world for the other tasks, or per genre: nothing measured, no point
    assert carried == {}
    click = result.quality["click"]
    assert click.population == "all" and click.rows == result.labelled_rows
    assert click.average_precision is not None and 0 < click.auc < 1 and click.calibration_shift is not None
    follow = result.quality["follow"]  # the small world has too few follows in a day to judge
    assert follow.note is not None and follow.average_precision is None
    assert result.quality["promo_stream"].population == "promotion"


def test_days_land_in_one_workspace_project_with_the_dashboard(simulated, small_model):
    sim, _ = simulated
    ws = open_workspace(sim.workspace)
    projects = [p for p in ws.list_projects() if p.name == sim.project]
    assert len(projects) == 1
    runs = ws.list_runs(projects[0].id)
    per_day = len(DriftResult.read(sim.days[0].report).snapshots)
    assert len(runs) >= per_day and len(runs) == sum(len(DriftResult.read(d.report).snapshots) for d in sim.days)
    titles = [p.title for p in ws.get_dashboard(projects[0].id).panels]
    assert "Feature drift share: content features" in titles
    assert all(f"{t}: average precision and ROC-AUC" in titles for t in small_model[0].task_names)


def test_video_ads_alert_on_the_ad_creative_group(video_ads):
    result, _ = video_ads
    assert result.status is Status.ALERT and result.exit_code == 4
    ads = result.segment("source=ad")
    assert ads.column("format").drifted and ads.column("slot").drifted
    assert ads.group("creative").share >= 2 / 3
    assert not result.segment("source=promotion").group("creative").drifted  # promotions did not change
    alerts = [r for r in result.reasons if r.startswith("ALERT")]
    assert any("source=ad" in r and "creative" in r and "format" in r for r in alerts)


def test_thresholds_rejudge_a_stored_window(video_ads, small_model):
    result, _ = video_ads
    cfg = small_model[0].drift
    lenient = cfg.model_copy(
        update={"threshold": 50.0, "thresholds": {}, "prediction_warn": 50.0, "prediction_alert": 60.0}
        | {"calibration_warn": 50.0, "calibration_alert": 60.0, "quality_warn": 0.9, "quality_alert": 0.95}
    )
    assert apply_thresholds(result, lenient).status is Status.OK
    assert apply_thresholds(result, lenient).segment("source=ad").group("creative").drifted == 0
    strict = lenient.model_copy(update={"threshold": 1e-9})
    strict_result = apply_thresholds(result, strict)
    assert strict_result.status is Status.ALERT and strict_result.reasons[0].startswith("ALERT")
    per_column = lenient.model_copy(update={"thresholds": {"source=ad/format": 1e-9}})
    one = apply_thresholds(result, per_column).segment("source=ad")
    assert one.column("format").drifted and not one.column("slot").drifted
    assert apply_thresholds(result, cfg) == result  # the spec's own thresholds reproduce the stored verdict


# --------------------------------------------------------------------------------------------------- thresholds
def _segment(share_drifted: int, of: int, prediction: float, score: float = 0.15) -> SegmentReport:
    columns = [
        ColumnDrift(
            column=f"c{i}",
            feature=f"c{i}",
            group="content",
            kind="numerical",
            encoding="value",
            method="psi",
            threshold=0.1,
            score=score if i < share_drifted else 0.01,
            drifted=i < share_drifted,
        )
        for i in range(of)
    ]
    hit = [c.column for c in columns if c.drifted]
    group = GroupDrift(group="content", columns=of, drifted=len(hit), share=len(hit) / of, drifted_columns=hit)
    pred = PredictionDrift(task="click", method="psi", score=prediction, mean=0.1, reference_mean=0.1)
    return SegmentReport(
        segment="all",
        rows=1000,
        reference_rows=1000,
        share=group.share,
        columns=columns,
        groups=[group],
        predictions=[pred],
    )


def _quality(observed: float, auc: float) -> TaskQuality:
    return TaskQuality(
        task="click",
        population="all",
        rows=5000,
        positives=500,
        reference_rows=5000,
        reference_positives=500,
        average_precision=0.2,
        reference_average_precision=0.2,
        auc=auc,
        reference_auc=0.7,
        observed_rate=observed,
        mean_prediction=0.1,
        reference_observed_rate=0.1,
        reference_mean_prediction=0.1,
    )


@pytest.mark.parametrize(
    ("drifted", "score", "prediction", "observed", "auc", "status", "rules"),
    [
        (0, 0.15, 0.01, 0.1, 0.7, Status.OK, set()),
        (1, 0.15, 0.01, 0.1, 0.7, Status.WARN, {"column"}),  # one drifted column warns; 1/10 is under warn_share
        (1, 0.25, 0.01, 0.1, 0.7, Status.ALERT, {"column"}),  # 2.5 x its threshold: major, alerts alone
        (2, 0.15, 0.01, 0.1, 0.7, Status.WARN, {"column", "group_share"}),  # 2/10 = warn_share exactly
        (4, 0.15, 0.01, 0.1, 0.7, Status.ALERT, {"column", "group_share"}),  # 4/10 = alert_share
        (0, 0.15, 0.10, 0.1, 0.7, Status.WARN, {"prediction"}),
        (0, 0.15, 0.30, 0.1, 0.7, Status.ALERT, {"prediction"}),
        (0, 0.15, 0.01, 0.1 * np.exp(0.25), 0.7, Status.WARN, {"calibration"}),  # |log| 0.25 between 0.2 and 0.3
        (0, 0.15, 0.01, 0.1 * np.exp(-0.31), 0.7, Status.ALERT, {"calibration"}),  # too few observed
        (0, 0.15, 0.01, 0.1, 0.64, Status.WARN, {"quality"}),  # AUC 0.06 lower
        (0, 0.15, 0.01, 0.1, 0.60, Status.ALERT, {"quality"}),  # AUC 0.10 lower
        (0, 0.15, 0.01, 0.1, 0.80, Status.OK, set()),  # AUC rising is no alarm
    ],
)
def test_thresholds_map_to_the_right_status(drifted, score, prediction, observed, auc, status, rules):
    cfg = load_spec(
        overrides=[
            "drift.warn_share=0.2",
            "drift.alert_share=0.4",
            "drift.major_factor=2.5",
            "drift.prediction_warn=0.1",
            "drift.prediction_alert=0.25",
            "drift.calibration_warn=0.2",
            "drift.calibration_alert=0.3",
            "drift.quality_warn=0.05",
            "drift.quality_alert=0.08",
            "drift.calibration_min_z=3",  # 0.25 on 500 vs 500 positives is 3.95 standard errors
            "drift.tasks=null",  # no per task levels
        ]
    ).drift
    checks = evaluate([_segment(drifted, 10, prediction, score)], {"click": _quality(observed, auc)}, cfg)
    got, reasons = summarise(checks)
    assert got is status and got.exit_code == {Status.OK: 0, Status.WARN: 3, Status.ALERT: 4}[status]
    assert {c.rule for c in checks if c.status is not Status.OK} == rules
    assert len(reasons) == sum(c.status is not Status.OK for c in checks)
    assert all(r.startswith(status.value) for r in reasons[:1])  # worst first


def test_within_and_segment_calibration_checks_map_to_the_right_status():
    levels = ["drift.major_factor=2.5", "drift.calibration_warn=0.2", "drift.calibration_alert=0.3"]
    cfg = load_spec(overrides=[*levels, "drift.calibration_min_z=3", "drift.tasks=null"]).drift
    seg = _segment(0, 10, 0.01)

    def within(score: float) -> SegmentReport:
        column = seg.columns[0].model_copy(update={"column": "format|campaign_id", "score": score, "drifted": True})
        return seg.model_copy(update={"within": [column]})

    def cell(name: str, positives: int, predicted: float) -> SegmentCalibration:
        return SegmentCalibration(
            segment=name,
            rows=10 * positives,
            positives=positives,
            predicted=predicted,
            reference_rows=10_000,
            reference_positives=1000,
            reference_predicted=1000.0,
        )

    for score, status in ((0.05, Status.OK), (0.15, Status.WARN), (0.25, Status.ALERT)):
        checks = [c for c in evaluate([within(score)], {}, cfg) if c.rule == "within"]
        assert Status.worst([c.status for c in checks]) is status
    assert "format within campaign_id" in evaluate([within(0.3)], {}, cfg)[0].message
    quality = _quality(0.1, 0.7)
    cells = [
        cell("genre=comedy", 40, 20.0),  # twice the positives predicted, z = log 2 / sqrt(1/40 + 1/1000) = 4.3
        cell("genre=news", 8, 4.0),  # the same shift on 8 positives: z 1.9, noise
        cell("genre=arts", 500, 440.0),  # 0.13, significant but small
    ]
    checks = evaluate([], {"click": quality.model_copy(update={"segments": cells})}, cfg)
    flagged = {(c.segment, c.status) for c in checks if c.status is not Status.OK}
    assert flagged == {("genre=comedy", Status.ALERT)}
    # the whole population's shift also needs |z| >= 3: 0.25 on 500 vs 500 positives passes (z 3.95), on 50 not
    shifted = _quality(0.1 * np.exp(0.25), 0.7)
    assert [c.status for c in evaluate([], {"click": shifted}, cfg)] == [Status.WARN, Status.OK]
    few = shifted.model_copy(update={"positives": 50, "reference_positives": 50})
    assert {c.status for c in evaluate([], {"click": few}, cfg)} == {Status.OK}


def _carried(snapshot: Snapshot) -> dict[tuple[str, str, str], float]:
    """A checks snapshot's CheckValue results by (check, task, name)."""
    out = {}
    for res in snapshot.metric_results.values():
        params = res.metric_value_location.metric.params
        assert params["type"].endswith("CheckValue")
        out[params["check"], params["task"], params["name"]] = res.value
    return out


def test_within_scores_and_segment_calibration_shifts_reach_a_snapshot():
    seg = _segment(0, 10, 0.01)
    column = seg.columns[0].model_copy(update={"column": "format|campaign_id", "score": 0.07})
    unmeasured = column.model_copy(update={"column": "topics.top|show_id", "score": None, "note": "too few rows"})
    other = seg.model_copy(update={"segment": "source=ad", "within": [column.model_copy(update={"score": 0.5})]})
    cells = [
        SegmentCalibration(
            segment=f"genre={name}",
            rows=400,
            positives=positives,
            predicted=20.0,
            reference_rows=10_000,
            reference_positives=1000,
            reference_predicted=1000.0,
        )
        for name, positives in (("comedy", 40), ("news", 10))
    ]
    quality = {
        "click": _quality(0.12, 0.7).model_copy(update={"segments": cells}),
        "follow": _quality(0.1, 0.7).model_copy(update={"note": "too few positives", "segments": cells}),
    }
    values = check_values([seg.model_copy(update={"within": [column, unmeasured]}), other], quality)
    assert len(values) == 4 and set(values["note"].str.len()) != {0}
    carried = _carried(checks_snapshot(values))
    # the whole window's within score only (a segment's is judged, not plotted); no point for what was not measured
    assert carried == pytest.approx(
        {
            ("within", "", "format|campaign_id"): 0.07,
            ("calibration", "click", "all"): np.log(1.2),
            ("calibration", "click", "genre=comedy"): np.log(2.0),  # 40 positives for 20 predicted
            ("calibration", "click", "genre=news"): np.log(0.5),
        }
    )
    assert checks_snapshot(check_values([], {})) is None


def test_within_drift_ignores_the_mix_of_keys_and_sees_changes_within_them(small_world, small_spec):
    spec = load_spec(overrides=[*SMALL_OVERRIDES, "drift.min_segment_rows=200"])
    raw = small_world.read(small_world.dates[-8:])
    raw = raw[raw["source"] == "ad"].reset_index(drop=True)
    raw[prediction_column("click")] = 0.01
    reference, rest = raw.iloc[::2].reset_index(drop=True), raw.iloc[1::2].reset_index(drop=True)
    plan = ColumnPlan.from_reference(spec, reference, ["click"])
    ref = plan.frame(reference)
    # campaigns with video creatives served five times as often: the format mix moves, each campaign's does not
    has_video = set(rest.loc[rest["format"] == "video", "campaign_id"])
    weight = np.where(rest["campaign_id"].isin(has_video), 5.0, 1.0)
    picked = np.random.default_rng(0).choice(len(rest), size=len(rest), p=weight / weight.sum())
    mix = plan.frame(rest.iloc[picked].reset_index(drop=True))
    plain = drift_report(plan, ref, mix)[0].column("format")
    inside = within_drift(plan, ref, mix, "format", "campaign_id", 0.05)
    assert plain.score > 0.05 and plain.drifted
    assert inside.score < 0.02 and not inside.drifted and inside.column == "format|campaign_id"
    # the same campaigns as served, but inside them video creatives win: the within score sees it
    changed = rest.copy()
    mixed = changed["campaign_id"].isin(has_video) & (changed["format"] != "video")
    changed.loc[mixed, "format"] = "video"
    inside = within_drift(plan, ref, plan.frame(changed), "format", "campaign_id", 0.05)
    assert inside.score > 0.05 and inside.drifted


def test_a_task_can_have_its_own_levels():
    levels = ["drift.prediction_warn=0.1", "drift.prediction_alert=0.25", "drift.tasks=null"]
    cfg = load_spec(overrides=[*levels, "drift.tasks={click: {prediction_alert: 0.5}}"]).drift
    assert cfg.levels("click", "prediction") == (0.1, 0.5) and cfg.levels("like", "prediction") == (0.1, 0.25)
    checks = evaluate([_segment(0, 10, 0.3)], {}, cfg)
    assert [(c.subject, c.status) for c in checks if c.rule == "prediction"] == [("click", Status.WARN)]


def test_the_drift_section_is_validated():
    with pytest.raises(SpecError, match=r"drift.thresholds.genre.len: 'genre.len' is not a monitored column"):
        load_spec(overrides=["drift.thresholds={genre.len: 0.2}"])
    with pytest.raises(SpecError, match=r"drift\.segments: 'user_id' is neither"):
        load_spec(overrides=["drift.segments=[user_id]"])
    with pytest.raises(SpecError, match=r"prediction_warn \(0\.5\) must not exceed prediction_alert"):
        load_spec(overrides=["drift.prediction_warn=0.5", "drift.prediction_alert=0.2"])
    with pytest.raises(SpecError, match=r"drift\.within\.format: 'nope' is not a feature"):
        load_spec(overrides=["drift.within={format: nope}"])
    with pytest.raises(SpecError, match=r"drift\.label_segments: 'show_age_days' is not a categorical feature"):
        load_spec(overrides=["drift.label_segments=[show_age_days]"])
    assert load_spec(overrides=["drift.thresholds={source=ad/format|campaign_id: 0.01}"]).drift.thresholds
    spec = load_spec(overrides=["drift.thresholds=null", "drift.thresholds={source=ad/show_id: 2.0, topics.top: 0.3}"])
    assert spec.drift.thresholds == {"source=ad/show_id": 2.0, "topics.top": 0.3}
    cfg = spec.drift
    assert threshold_of(cfg, "source=ad", "show_id") == 2.0 and threshold_of(cfg, "all", "show_id") == cfg.threshold
    assert threshold_of(spec.drift, "source=promotion", "topics.top") == 0.3


# --------------------------------------------------------------------------------------------------- columns
def test_columns_encode_ids_lists_logs_and_categories(small_world, small_spec):
    frame = small_world.read(small_world.dates[:2]).head(3000).reset_index(drop=True)
    for task in ("click",):
        frame[prediction_column(task)] = 0.1
    plan = ColumnPlan.from_reference(small_spec, frame, ["click"])
    top_shows = plan.vocabularies["show_id"]
    assert len(top_shows) == small_spec.drift.top_k
    counts = frame["show_id"].value_counts()
    assert counts[top_shows[0]] == counts.max()
    probe = frame.head(4).copy()
    probe.loc[0, "show_id"] = "a-show-nobody-saw"
    probe["listened_genres"] = [
        np.array([], dtype=object) if i == 1 else v for i, v in enumerate(probe.listened_genres)
    ]
    probe["recent_shows"] = [np.array(["never-streamed"]) if i == 2 else v for i, v in enumerate(probe.recent_shows)]
    probe.loc[3, "hour"] = 7
    encoded = plan.frame(probe)
    assert encoded.loc[0, "show_id"] == OTHER and encoded.loc[1, "show_id"] in (*top_shows, OTHER)
    assert encoded.loc[1, "listened_genres.len"] == 0 and encoded.loc[1, "listened_genres.top"] == EMPTY
    assert encoded.loc[2, "recent_shows.top"] == OTHER and encoded.loc[2, "recent_shows.len"] == 1
    assert encoded.loc[3, "hour"] == "7"  # an int category is tested as a category, not as a number
    assert encoded.loc[0, "show_streams_30d"] == pytest.approx(np.log1p(probe.loc[0, "show_streams_30d"]))
    assert encoded.loc[0, "label_click"] == probe.loc[0, "click"]
    assert "weekday" not in encoded and plan.excluded["weekday"]
    assert [c.name for c in plan.columns] == list(drift_columns(small_spec))


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_check_exit_code_is_the_status(simulated, small_world, small_model, tmp_path):
    sim, days = simulated
    _, model_dir = small_model
    dates = [arg for d in LogFiles(Path(sim.logs)).partitions() for arg in ("--date", d)]  # UTC days of the replay
    args = ["monitor", "check", str(model_dir), "--logs", sim.logs, *dates, "--labels", str(small_world.root)]
    args += ["--request-prefix", f"replay-{days[0]}-", "--out", str(tmp_path / "check")]
    args += ["--workspace", str(tmp_path / "ws")]
    res = CliRunner().invoke(app, args)
    result = DriftResult.read(tmp_path / "check")
    assert res.exit_code == result.exit_code, res.output
    assert result.status.value in res.output and result.rows == sim.days[0].rows
    assert json.loads((tmp_path / "check" / "drift.json").read_text())["status"] == result.status.value
    assert [p.name for p in open_workspace(tmp_path / "ws").list_projects()] == [model_dir.name]

    again = CliRunner().invoke(app, args)  # OUT exists
    assert again.exit_code == 2 and "error:" in again.output and "--overwrite" in again.output
    missing = CliRunner().invoke(
        app, ["monitor", "check", str(model_dir), "--logs", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]
    )
    assert missing.exit_code == 2 and "error:" in missing.output and "no prediction logs" in missing.output


def test_labels_join_by_impression_id_and_keep_unknown_rows(small_world, small_spec):
    day = small_world.dates[-1]
    truth = small_world.read([day])
    window = truth[["impression_id", *small_spec.feature_names]].head(50).copy()
    window.loc[0, "impression_id"] = "not-in-the-dataset"
    window["source"] = None  # a client that did not send the channel
    joined = join_labels(window, small_world, small_spec, dates=[day])
    assert len(joined) == 50 and joined.loc[0, ["stream", "click"]].isna().all()
    known = joined.iloc[1:].set_index("impression_id")
    expected = truth.set_index("impression_id").loc[known.index]
    pd.testing.assert_series_equal(known["click"], expected["click"], check_names=False)
    assert (known["source"] == expected["source"]).all()


def test_reference_is_a_seeded_sample_of_the_validation_days(reference, small_world, small_model, model):
    spec, model_dir = small_model
    meta = json.loads((Path(model_dir) / "metadata.json").read_text())
    assert set(reference["date"]) <= set(meta["validation_dates"])
    wanted = max(spec.drift.reference_rows, spec.drift.label_reference_rows)  # the label checks get every row
    assert len(reference) == min(wanted, len(small_world.read(meta["validation_dates"])))
    again = build_reference(Dataset.open(small_world.root), model_dir, spec, rows=500, seed=3)
    assert list(again["impression_id"]) == list(
        build_reference(small_world, model_dir, spec, rows=500, seed=3)["impression_id"]
    )
    mine = model.predict(again)
    np.testing.assert_allclose(again[prediction_column("click")], mine["click"], atol=TOL)


def test_a_feature_that_stops_arriving_alerts(video_ads, reference, small_model):
    _, window = video_ads
    broken = window.head(1500).copy()
    broken["country"] = None  # e.g. a client that stopped sending it
    result = check_window(reference, broken, small_model[0])
    column = result.segment("all").column("country")
    assert column.score is None and column.drifted and column.note == "no values in the window"
    assert result.status is Status.ALERT
    assert any(r.startswith("ALERT: all: country has no values in the window") for r in result.reasons)
