"""Serving: the real BentoML server on a free port scores like the SavedModel, refuses bad input with a 4xx naming
the field (and keeps serving), ranks by objectives, logs predictions that read back; the bento builds and serves."""

import asyncio
import http.client
import json
import math
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from typer.testing import CliRunner

from coldcast.cli import app
from coldcast.core.data import DataError
from coldcast.core.predlog import LogFiles, PredictionLogger, prediction_column
from coldcast.core.spec import load_spec
from coldcast.serving.balance import load_file
from coldcast.serving.batching import Batcher
from coldcast.serving.schema import RequestSchemas

TOL = 1e-6
RECYCLE = 3  # the served fixture closes keep-alive connections after this many requests (every test crosses it)


# --------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def bentoml_home(tmp_path_factory):
    """A private BentoML home (model and bento stores) for this module, telemetry off."""
    home = tmp_path_factory.mktemp("bentoml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(home))
        mp.setenv("BENTOML_DO_NOT_TRACK", "true")
        mp.setenv("DO_NOT_TRACK", "1")
        yield home


@pytest.fixture(scope="module")
def served(small_model, bentoml_home, tmp_path_factory):
    """(server, spec, model dir, log folder): the real `bentoml serve`, started once for the module."""
    from coldcast.serving.server import start_server

    spec, model_dir = small_model
    log_dir = tmp_path_factory.mktemp("predlog")
    overrides = ["serving.log.max_seconds=0.5", f"serving.max_requests_per_connection={RECYCLE}"]
    server = start_server(model_dir, log_dir=log_dir, overrides=overrides, timeout=300)
    try:
        yield server, spec, model_dir, log_dir
    finally:
        workers = psutil.Process(server.pid).children(recursive=True)
        server.stop()
    assert workers and not server.running
    assert not load_file(server.pid).exists()  # the workers' shared in-flight counts go with the server
    assert not [p.pid for p in workers if p.is_running()]  # BentoML's workers sit in process groups of their own


@pytest.fixture(scope="module")
def reference(small_model):
    """The in-process SavedModel the server's scores must equal."""
    from coldcast.model.scoring import ScoringModel

    return ScoringModel.load(small_model[1])


@pytest.fixture(scope="module")
def schemas(small_model):
    """The request and response models the server generated (from the model's own spec)."""
    meta = json.loads((small_model[1] / "metadata.json").read_text())
    spec = load_spec(base=small_model[1] / "spec.yaml")
    return RequestSchemas(spec, meta["tasks"], meta["features"])


@pytest.fixture(scope="module")
def rows(small_world, small_spec):
    """Test-split impressions as JSON-ready dicts (Python types, lists as lists), both sources."""
    shard = small_world.shards(small_world.split(small_spec)["test"])[0]
    table = pq.read_table(shard).slice(0, 400)
    return table.to_pylist()


def features_of(row, spec):
    return {name: row[name] for name in spec.feature_names}


def score(server, body, **kw):
    return requests.post(server.url + "/score", json=body, timeout=60, **kw)


def expected(reference, dict_rows):
    return reference.predict(pa.Table.from_pylist(dict_rows).to_pandas())


# --------------------------------------------------------------------------------------------------- /score
def test_scores_equal_the_in_process_savedmodel_under_concurrency(served, rows, reference, schemas):
    server, spec, _, _ = served
    # 8 concurrent requests of different sizes, so the batcher merges them into shared model calls
    chunks = [rows[i * 40 : i * 40 + 5 + 5 * i] for i in range(8)]

    def call(chunk):
        body = {"rows": [features_of(r, spec) | {"impression_id": r["impression_id"]} for r in chunk]}
        return score(server, body)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, chunks))
    for chunk, resp in zip(chunks, responses, strict=True):
        assert resp.status_code == 200, resp.text
        schemas.ScoreResponse.model_validate(resp.json())  # the declared response model
        got = pd.DataFrame(resp.json()["predictions"])
        want = expected(reference, [features_of(r, spec) for r in chunk])
        assert list(got.columns) == reference.tasks
        np.testing.assert_allclose(got.to_numpy(), want[reference.tasks].to_numpy(), atol=TOL, rtol=0)
    assert resp.json()["model_version"] == server.model_tag


def test_unknown_ids_and_categories_score_through_oov_buckets(served, rows, reference):
    server, spec, _, _ = served
    row = features_of(rows[0], spec) | {
        "user_id": "never-seen-user",
        "show_id": "s-brand-new",
        "country": "XX",
        "genre": "polka",
        "hour": 99,
        "listened_genres": ["not_a_genre"],
    }
    resp = score(server, {"rows": [row]})
    assert resp.status_code == 200, resp.text
    got = resp.json()["predictions"][0]
    want = expected(reference, [row]).iloc[0]
    for task in reference.tasks:
        assert abs(got[task] - want[task]) <= TOL


def _bad_cases(rows, spec, max_rows):
    good = features_of(rows[0], spec)
    missing = {k: v for k, v in good.items() if k != "show_age_days"}
    return {
        "wrong type": ({"rows": [good | {"hour": "7"}]}, "hour"),
        "string for a number": ({"rows": [good | {"weekly_listening_hours": "3.5"}]}, "weekly_listening_hours"),
        "null feature": ({"rows": [good | {"country": None}]}, "country"),
        "missing feature": ({"rows": [missing]}, "show_age_days"),
        # json.dumps writes NaN and Infinity literals, which the server must refuse rather than score
        "nan": (json.dumps({"rows": [good | {"show_streams_30d": math.nan}]}), "show_streams_30d"),
        "infinity": (json.dumps({"rows": [good | {"episode_duration_min": math.inf}]}), "episode_duration_min"),
        "list feature not a list": ({"rows": [good | {"recent_shows": "s00001"}]}, "recent_shows"),
        "unknown key": ({"rows": [good | {"user_idd": "u1"}]}, "user_idd"),
        "unknown source": ({"rows": [good | {"source": "radio"}]}, "source"),
        "empty batch": ({"rows": []}, "rows"),
        "over the maximum": ({"rows": [good] * (max_rows + 1)}, "rows"),
        "not json": ("{rows: [", "json"),
        "no body": (None, "rows"),
    }


def test_each_bad_input_gets_a_4xx_naming_the_field_and_the_server_keeps_serving(served, rows):
    server, spec, _, _ = served
    for name, (body, field) in _bad_cases(rows, spec, spec.serving.max_request_rows).items():
        if isinstance(body, str):
            resp = requests.post(
                server.url + "/score", data=body, headers={"content-type": "application/json"}, timeout=60
            )
        else:
            resp = requests.post(server.url + "/score", json=body, timeout=60)
        assert 400 <= resp.status_code < 500, f"{name}: {resp.status_code} {resp.text}"
        assert field.lower() in resp.text.lower(), f"{name}: the error does not name {field!r}: {resp.text}"
    for content_type in ("text/plain", "multipart/form-data", "application/vnd.bentoml+pickle"):
        resp = requests.post(server.url + "/score", data=b"\x80abc", headers={"content-type": content_type})
        assert 400 <= resp.status_code < 500, f"{content_type}: {resp.status_code} {resp.text}"
    assert score(server, {"rows": [features_of(rows[1], spec)]}).status_code == 200


# --------------------------------------------------------------------------------------------------- /rank
def _rank_body(rows, spec, n=20, **extra):
    groups = spec.serving.request_groups
    first = rows[0]
    body = {g: {f.name: first[f.name] for f in spec.group_features(g)} for g in groups}
    candidates = []
    for i, r in enumerate(rows[1 : n + 1]):
        c = {f.name: r[f.name] for f in spec.feature_list if f.group not in groups}
        candidates.append(c | {"candidate_id": f"c{i}", "cost": 0.01 + 0.002 * i})
    return body | {"candidates": candidates} | extra


def _candidate_rows(body, spec):
    groups = spec.serving.request_groups
    shared = {k: v for g in groups for k, v in body[g].items()}
    return [{k: v for k, v in c.items() if k not in ("candidate_id", "cost")} | shared for c in body["candidates"]]


def test_rank_orders_candidates_by_task_weighted_and_per_cost_objectives(served, rows, reference, schemas):
    server, spec, _, _ = served
    body = _rank_body(rows, spec)
    want = expected(reference, _candidate_rows(body, spec))
    cost = np.array([c["cost"] for c in body["candidates"]])
    objectives = {
        "ad_stream": want["ad_stream"].to_numpy(),
        "ad_streams_per_cost": want["ad_stream"].to_numpy() / cost,
        '{"weights": {"promo_stream": 1.0, "click": 0.5}}': (want["promo_stream"] + 0.5 * want["click"]).to_numpy(),
    }
    for objective, value in objectives.items():
        obj = json.loads(objective) if objective.startswith("{") else objective
        resp = requests.post(server.url + "/rank", json=body | {"objective": obj}, timeout=60)
        assert resp.status_code == 200, resp.text
        schemas.RankResponse.model_validate(resp.json())
        ranking = resp.json()["ranking"]
        order = [r["index"] for r in ranking]
        assert order == list(np.argsort(-value, kind="stable")), objective
        assert [r["candidate_id"] for r in ranking] == [f"c{i}" for i in order]
        np.testing.assert_allclose([r["score"] for r in ranking], value[order], rtol=1e-5)
        np.testing.assert_allclose(
            [r["predictions"]["click"] for r in ranking], want["click"].to_numpy()[order], atol=TOL, rtol=0
        )
    top = requests.post(server.url + "/rank", json=body | {"objective": "click", "top_k": 3}, timeout=60).json()
    assert [r["rank"] for r in top["ranking"]] == [1, 2, 3]
    assert top["objective"] == {"name": "click", "weights": {"click": 1.0}, "per_cost": False}


def test_rank_refuses_bad_objectives_and_costs_with_a_4xx(served, rows):
    server, spec, _, _ = served
    body = _rank_body(rows, spec, n=3)
    no_cost = body | {"candidates": [{k: v for k, v in c.items() if k != "cost"} for c in body["candidates"]]}
    negative = body["candidates"][0] | {"cost": -1.0}
    cases = {
        "unknown objective": (body | {"objective": "streams"}, "objective"),
        "unknown task in weights": (body | {"objective": {"weights": {"stream": 1}}}, "weights"),
        "all-zero weights": (body | {"objective": {"weights": {"click": 0}}}, "weights"),
        "per-cost without costs": (no_cost | {"objective": "ad_streams_per_cost"}, "cost"),
        "no objective and no default": (body, "objective"),
        "missing request group": ({k: v for k, v in body.items() if k != "user"} | {"objective": "click"}, "user"),
        "no candidates": (body | {"candidates": [], "objective": "click"}, "candidates"),
        "negative cost": (body | {"candidates": [negative], "objective": "click"}, "cost"),
    }
    for name, (payload, field) in cases.items():
        resp = requests.post(server.url + "/rank", json=payload, timeout=60)
        assert 400 <= resp.status_code < 500, f"{name}: {resp.status_code} {resp.text}"
        assert field in resp.text, f"{name}: the error does not name {field!r}: {resp.text}"


# --------------------------------------------------------------------------------------------------- the rest
def test_health_readiness_and_metadata(served, small_model):
    server, spec, model_dir, _ = served
    assert requests.get(server.url + "/livez", timeout=10).status_code == 200
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
    meta = requests.get(server.url + "/metadata", timeout=10).json()
    trained = json.loads((model_dir / "metadata.json").read_text())
    assert meta["model_tag"] == server.model_tag
    assert meta["tasks"] == trained["tasks"]
    assert meta["features"] == trained["features"]
    assert meta["trained"]["spec_fingerprint"] == trained["spec_fingerprint"]
    assert meta["spec"]["tasks"].keys() == spec.tasks.keys()
    assert "ad_streams_per_cost" in meta["objectives"]
    assert meta["logging"]["folder"]
    # the spec's default: 2 workers, TensorFlow's threads shared among them
    assert meta["processes"]["workers"] == spec.serving.workers == 2
    assert meta["processes"]["model_threads"] == max(1, (os.cpu_count() or 1) // 2)
    worker_pids = {p.pid for p in psutil.Process(server.pid).children(recursive=True)}
    assert meta["processes"]["pid"] in worker_pids
    # both workers count their API requests in flight in one shared file, each in its own slot
    loads = {}
    for _ in range(50):  # a new connection per try: which worker answers is up to the kernel
        with requests.Session() as session:
            m = session.get(server.url + "/metadata", timeout=10).json()["processes"]
        loads[m["pid"]] = m["in_flight"]
        if len(loads) == 2:
            break
    assert len(loads) == 2 and len({v["file"] for v in loads.values()}) == 1
    assert sorted(v["index"] for v in loads.values()) == [0, 1]
    assert all(len(v["counts"]) == 2 for v in loads.values())
    # the worker froze TensorFlow's heap and collects its young generation at the spec's threshold
    assert meta["processes"]["gc"]["threshold"][0] == spec.serving.gc_threshold != 700
    assert meta["processes"]["gc"]["frozen_objects"] > 100_000


def test_keep_alive_connections_close_after_the_configured_requests(served):
    """serving.max_requests_per_connection: the response that reaches it says `Connection: close` and the server
    closes the connection (a count left by an earlier connection on the same client port can make it come
    sooner, never later); a new connection is served."""
    server, *_ = served
    url = urlsplit(server.url)
    for _ in range(2):
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            headers = []
            for _ in range(RECYCLE):
                sock.sendall(b"GET /livez HTTP/1.1\r\nHost: coldcast\r\n\r\n")
                response = http.client.HTTPResponse(sock)
                response.begin()
                response.read()
                assert response.status == 200
                headers.append(response.getheader("connection"))
                if headers[-1] == "close":
                    break
            assert headers[-1] == "close" and set(headers[:-1]) <= {None}, headers
            assert sock.recv(1) == b""  # the server's end is closed


def test_connection_recycling_counts_requests_per_connection():
    """The middleware itself, exactly: every n-th request of one client connection closes it, others are not
    touched, and 0 switches it off."""
    from coldcast.serving.service import RecycleConnections

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"connection", b"keep-alive")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def closes(middleware, peer):
        sent = []

        async def send(message):
            sent.append(message)

        asyncio.run(middleware({"type": "http", "client": peer}, None, send))
        values = [v for k, v in sent[0]["headers"] if k == b"connection"]
        assert len(values) == 1  # never two Connection headers
        return values == [b"close"]

    every3 = RecycleConnections(app, every=3)
    a, b = ("127.0.0.1", 50001), ("127.0.0.1", 50002)
    assert [closes(every3, a) for _ in range(7)] == [False, False, True, False, False, True, False]
    assert [closes(every3, b) for _ in range(3)] == [False, False, True]
    assert not closes(every3, None)  # no client address (e.g. a Unix socket): nothing to count
    assert not any(closes(RecycleConnections(app, every=0), a) for _ in range(5))


def test_worker_loads_are_shared_and_a_clearly_busier_worker_is_crowded(tmp_path):
    from coldcast.serving.balance import WorkerLoad

    path = tmp_path / "inflight"
    a, b = WorkerLoad(path, 2, 0), WorkerLoad(path, 2, 1)  # two workers' views of one file
    for _ in range(2):
        a.enter()
    assert b.snapshot() == [2, 0] and a.crowded() and not b.crowded()
    a.leave()
    assert not a.crowded()  # one more is ordinary jitter
    for _ in range(4):
        b.enter()
    assert a.snapshot() == [1, 4] and b.crowded() and not a.crowded()
    for _ in range(36):  # 40 against 35: within a quarter of its own, not crowded
        b.enter()
    for _ in range(34):
        a.enter()
    assert b.snapshot() == [35, 40] and not b.crowded()
    for _ in range(5):
        a.leave()
    assert b.crowded()  # 40 against 30
    with pytest.raises(ValueError, match="index 2"):
        WorkerLoad(path, 2, 2)
    a.close()
    b.close()


def test_a_crowded_worker_closes_the_connection_and_its_counts_stay_exact(tmp_path):
    """The balancing half of RecycleConnections: API requests are counted in flight while they run (also when
    the app fails), a response from a crowded worker says `Connection: close`, other paths are left alone."""
    from coldcast.serving.balance import WorkerLoad
    from coldcast.serving.service import RecycleConnections

    mine, other = WorkerLoad(tmp_path / "f", 2, 0), WorkerLoad(tmp_path / "f", 2, 1)
    seen = []

    async def app(scope, receive, send):
        seen.append(mine.snapshot()[0])  # in flight while the app runs
        if scope["path"] == "/fail":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = RecycleConnections(app, every=0, balance=True, workers=2, paths=("/rank", "/fail"))
    middleware.load, middleware._load_ready = mine, True

    def closes(path):
        sent = []

        async def send(message):
            sent.append(message)

        asyncio.run(middleware({"type": "http", "path": path, "client": ("127.0.0.1", 5)}, None, send))
        return (b"connection", b"close") in sent[0]["headers"]

    assert not closes("/rank") and seen[-1] == 1  # alone: 1 in flight, not crowded
    mine.enter()  # another request of this worker in flight: 2 against 0 when this one answers
    assert closes("/rank") and seen[-1] == 2
    other.enter()
    other.enter()
    assert not closes("/rank")  # 2 against 2
    mine.leave()
    for _ in range(3):
        mine.enter()
    assert not closes("/metadata")  # not an API route: neither counted nor closed
    assert seen[-1] == 3
    with pytest.raises(RuntimeError):
        closes("/fail")
    assert mine.snapshot() == [3, 2]  # every request that entered has left


def test_prediction_logs_are_written_and_read_back(served, rows):
    server, spec, _, log_dir = served
    ids = [{"impression_id": r["impression_id"], "source": r["source"]} for r in rows[:7]]
    body = {"rows": [features_of(r, spec) | i for r, i in zip(rows[:7], ids, strict=True)]}
    resp = score(server, body, headers={"x-request-id": "log-test-score"})
    assert resp.status_code == 200 and resp.headers["x-request-id"] == "log-test-score"
    sent = json.dumps(_rank_body(rows, spec, n=5, objective="like", source="ad"), indent=1).encode()
    rank = requests.post(
        server.url + "/rank",
        data=sent,
        headers={"x-request-id": "log-test-rank", "content-type": "application/json"},
        timeout=60,
    )
    assert rank.status_code == 200
    deadline, logged = time.monotonic() + 30, pd.DataFrame()
    while time.monotonic() < deadline:  # the writer flushes every serving.log.max_seconds (0.5 s here)
        if LogFiles(log_dir).partitions():
            logged = LogFiles(log_dir).read()
            if {"log-test-score", "log-test-rank"} <= set(logged["request_id"]):
                break
        time.sleep(0.25)
    scored = logged[logged["request_id"] == "log-test-score"]
    assert len(scored) == 7
    assert set(scored["model_version"]) == {server.model_tag} and set(scored["endpoint"]) == {"score"}
    assert list(scored["impression_id"]) == [r["impression_id"] for r in rows[:7]]
    assert list(scored["source"]) == [r["source"] for r in rows[:7]]
    assert list(scored["user_id"]) == [r["user_id"] for r in rows[:7]]
    assert [list(v) for v in scored["recent_shows"]] == [r["recent_shows"][:10] for r in rows[:7]]
    np.testing.assert_allclose(
        scored[prediction_column("click")], [p["click"] for p in resp.json()["predictions"]], atol=TOL
    )
    ranked = logged[logged["request_id"] == "log-test-rank"]
    assert len(ranked) == 5 and set(ranked["endpoint"]) == {"rank"} and set(ranked["source"]) == {"ad"}
    # the user's features, sent once, are on every candidate's row; each candidate's own features on its row
    assert list(ranked["user_id"]) == [rows[0]["user_id"]] * 5
    assert [list(v) for v in ranked["recent_shows"]] == [rows[0]["recent_shows"][:10]] * 5
    assert list(ranked["show_id"]) == [r["show_id"] for r in rows[1:6]]
    # the log holds the body as the server received it, byte for byte
    records = pa.concat_tables([pq.read_table(f) for f in LogFiles(log_dir).files() if f.name.startswith("requests-")])
    bodies = dict(zip(records["request_id"].to_pylist(), records["request"].to_pylist(), strict=True))
    assert bodies["log-test-rank"] == sent


def test_the_bento_builds_with_pinned_requirements_and_serves_like_the_savedmodel(served, rows, reference, tmp_path):
    """`coldcast package` builds without Docker; `bentoml serve` of that bento (not the source tree) answers
    /score with the SavedModel's scores and logs to $COLDCAST_LOG_DIR, as a container of it would."""
    import re

    import yaml

    from coldcast.serving.server import serve_bento
    from coldcast.serving.store import store_home

    server, spec, _, _ = served
    result = CliRunner().invoke(app, ["package", server.model_tag, "--label", "team=ads"])
    assert result.exit_code == 0, result.output
    bento = re.search(r"Built bento (\S+)", result.output).group(1)
    name, version = bento.split(":")
    root = Path(store_home()) / "bentos" / name / version
    info = yaml.safe_load((root / "bento.yaml").read_text())
    assert info["service"] == "coldcast.serving.service:ColdcastService"
    assert info["args"]["model"] == server.model_tag  # the served model is fixed in the bento
    assert [m["tag"] for m in info["services"][0]["models"]] == [server.model_tag]
    assert info["labels"]["team"] == "ads"
    pins = (root / "env" / "python" / "requirements.txt").read_text().split()
    assert "protobuf==6.33.6" in pins and "tensorflow==2.21.0" in pins and "bentoml==1.4.40" in pins
    assert all("==" in p for p in pins)  # every requirement pinned, nothing left to resolve
    assert (root / "src" / "coldcast" / "serving" / "service.py").exists()
    assert (root / "src" / "coldcast" / "presets" / "default.yaml").exists()

    row = features_of(rows[2], spec) | {"impression_id": "bento-row"}
    log_dir = tmp_path / "bento-log"
    with serve_bento(bento, log_dir=log_dir, timeout=300) as running:
        assert bento in psutil.Process(running.pid).cmdline()  # the bento from the store, not the source service
        resp = score(running, {"rows": [row]}, headers={"x-request-id": "bento-test"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["model_version"] == server.model_tag
        bad = score(running, {"rows": [row | {"hour": "7"}]})
        assert bad.status_code == 400 and "hour" in bad.text
    want = expected(reference, [features_of(rows[2], spec)]).iloc[0]
    for task in reference.tasks:
        assert abs(resp.json()["predictions"][0][task] - want[task]) <= TOL
    logged = LogFiles(log_dir).read()  # flushed by the graceful stop
    assert list(logged["request_id"]) == ["bento-test"] and list(logged["impression_id"]) == ["bento-row"]


# --------------------------------------------------------------------------------------------------- in process
@pytest.mark.parametrize("thread", [False, True], ids=["on-the-loop", "model-thread"])
def test_the_batcher_merges_concurrent_requests_and_returns_each_its_rows(thread):
    calls = []
    threads = set()

    def predict(arrays):
        time.sleep(0.01)  # long enough for the other requests to queue behind the first call
        calls.append(len(arrays["x"]))
        threads.add(threading.get_ident())
        return {"double": arrays["x"] * 2.0}

    async def main():
        batcher = Batcher(predict, max_rows=64, thread=thread)
        inputs = [np.arange(i, i + 3 + i, dtype=np.float64) for i in range(10)]
        outs = await asyncio.gather(*(batcher.predict({"x": x}) for x in inputs))
        await batcher.aclose()
        return inputs, outs, batcher.stats

    inputs, outs, stats = asyncio.run(main())
    for x, out in zip(inputs, outs, strict=True):
        np.testing.assert_array_equal(out["double"], x * 2.0)
    assert len(calls) < len(inputs)  # batched
    assert max(calls) <= 64 and sum(calls) == sum(len(x) for x in inputs)
    assert stats.requests == len(inputs) and stats.calls == len(calls)
    # every call ran on one thread: the event loop's (this one, under asyncio.run), or the model thread
    assert len(threads) == 1 and (threading.get_ident() in threads) == (not thread)


def test_the_logger_writes_off_the_request_path_and_counts_what_it_drops(tmp_path, small_spec):
    tasks = small_spec.task_names
    logger = PredictionLogger(
        tmp_path, small_spec, tasks, "m:1", max_rows=10_000, max_seconds=0.2, max_buffer_rows=50, background=True
    )
    preds = {t: np.full(20, 0.5, np.float32) for t in tasks}
    logger.append({"user_id": np.array(["u"] * 20, dtype=object)}, preds, request_id="a")
    deadline = time.monotonic() + 10
    while not logger.rows_written and time.monotonic() < deadline:  # flushed by age, with no further append
        time.sleep(0.05)
    assert logger.rows_written == 20
    for i in range(4):  # 80 rows at once over a 50-row buffer: the overflow is dropped and counted
        logger.append({}, preds, request_id=f"b{i}")
    logger.close()
    logged = LogFiles(tmp_path).read()
    assert logger.rows_written + logger.dropped_rows == 100 and logger.dropped_rows > 0
    assert len(logged) == logger.rows_written
    assert logged["user_id"].iloc[0] == "u" and logged["user_id"].iloc[-1] is None


def test_request_records_read_back_as_the_rows_they_scored(tmp_path, small_spec, rows):
    """append_request keeps a body as received; LogFiles.read expands it into one row per /score row or /rank
    candidate, with its own scores, the request-level groups on every candidate and lists cut as the model
    reads them, in the order the requests were logged."""
    spec, tasks = small_spec, small_spec.task_names
    logger = PredictionLogger(tmp_path, spec, tasks, "m:1", max_rows=10_000, max_seconds=3600)

    def preds(n, first):
        return {t: np.arange(first, first + n, dtype=np.float32) / 100 + k for k, t in enumerate(tasks)}

    rank = _rank_body(rows, spec, n=4, objective="like", source="ad")
    rank["user"]["recent_shows"] = ["", "a", *(f"s{i}" for i in range(12))]  # over max_length, with a blank
    logger.append_request(json.dumps(rank, indent=2).encode(), preds(4, 0), request_id="r1", endpoint="rank")
    logger.flush()
    arrays = {"user_id": np.array(["u"], dtype=object)}
    logger.append(arrays, preds(1, 4), request_id="a1", meta={"impression_id": ["imp-a"]})
    first, second = features_of(rows[5], spec), features_of(rows[6], spec)
    second.pop("user_id")  # absent from the body: null in the log
    body = {"rows": [first | {"impression_id": "imp-1", "source": "promo"}, second]}
    logger.append_request(json.dumps(body).encode(), preds(2, 5), request_id="s1", endpoint="score")
    logger.close()
    logged = LogFiles(tmp_path).read()

    assert list(logged["request_id"]) == ["r1"] * 4 + ["a1"] + ["s1"] * 2
    assert list(logged["endpoint"]) == ["rank"] * 4 + ["score"] * 3
    assert set(logged["model_version"]) == {"m:1"} and str(logged["logged_at"].dt.tz) == "UTC"
    for k, t in enumerate(tasks):  # each row its own score, in order
        np.testing.assert_allclose(logged[prediction_column(t)], np.arange(7, dtype=np.float32) / 100 + k)
    ranked = logged.iloc[:4]
    assert list(ranked["user_id"]) == [rank["user"]["user_id"]] * 4
    assert list(ranked["show_id"]) == [c["show_id"] for c in rank["candidates"]]
    assert list(ranked["source"]) == ["ad"] * 4 and list(ranked["impression_id"]) == [None] * 4
    width = spec.feature("recent_shows").definition.max_length
    assert [list(v) for v in ranked["recent_shows"]] == [[v for v in rank["user"]["recent_shows"][:width] if v]] * 4
    assert logged["user_id"].iloc[4] == "u" and logged["impression_id"].iloc[4] == "imp-a"
    scored = logged.iloc[5:]
    assert list(scored["impression_id"]) == ["imp-1", None] and list(scored["source"]) == ["promo", None]
    assert list(scored["user_id"]) == [first["user_id"], None]
    assert list(scored["show_id"]) == [first["show_id"], second["show_id"]]

    # a body that is not what was logged as scored is refused with the file named, not skipped
    bad = PredictionLogger(tmp_path / "bad", spec, tasks, "m:1")
    bad.append_request(b'{"rows": [{"user_id": "u"}]}', preds(2, 0), request_id="x", endpoint="score")
    bad.close()
    with pytest.raises(DataError, match=r"requests-.*number of rows and scores"):
        LogFiles(tmp_path / "bad").read()
    with pytest.raises(ValueError, match="endpoint"):
        bad.append_request(b"{}", preds(1, 0), request_id="y", endpoint="other")


def test_the_flat_model_call_scores_exactly_like_the_keyword_call(reference, rows):
    from coldcast.model.inputs import feature_arrays

    assert reference._flat_order is not None  # the fast path is taken with the pinned TensorFlow
    arrays = feature_arrays(pa.Table.from_pylist(rows[:50]), reference.spec)
    flat, keywords = reference.predict_arrays(arrays), reference.predict_arrays(arrays, flat=False)
    assert flat.keys() == keywords.keys() == set(reference.tasks)
    for task in reference.tasks:
        np.testing.assert_array_equal(flat[task], keywords[task])


def test_a_new_feature_in_the_spec_is_a_new_required_request_field(small_spec):
    network = {"kind": "categorical", "values": ["wifi", "cell"]}
    spec = load_spec(overrides={"features": {"context": {"network": network}}})
    schemas = RequestSchemas(spec, spec.task_names, spec.feature_names)
    assert schemas.Row.model_fields["network"].is_required()
    assert "network" in schemas.RankRequest.model_fields["context"].annotation.model_fields
    with pytest.raises(ValueError, match="network"):
        schemas.Row.model_validate({f.name: None for f in spec.feature_list if f.name != "network"})


def test_cli_serve_and_package_help_and_errors_exit_2(bentoml_home):
    runner = CliRunner()
    for command in ("serve", "package"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "MODEL" in result.output.upper()
    result = runner.invoke(app, ["serve", "coldcast:no-such-version"])
    assert result.exit_code == 2 and "coldcast:no-such-version" in result.output
    result = runner.invoke(app, ["serve", "coldcast:x", "--set", "model.embedding_dim=8"])
    assert result.exit_code == 2 and "serving." in result.output
    result = runner.invoke(app, ["package", "/no/such/model/dir"])
    assert result.exit_code == 2 and "/no/such/model/dir" in result.output
