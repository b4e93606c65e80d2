"""A budget-split A/B test simulated from the synthetic world's ground truth: i2s, CTR, eCPS and streams per arm."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from coldcast.core.data import Dataset, write_json
from coldcast.core.records import Record
from coldcast.core.spec import TRUE_PREFIX, Spec

# The generator's own rules for what a creative's format implies about its slot and the app's focus, and how
# it writes every feature: reused so that candidate rows look exactly like logged impressions to a model.
from coldcast.core.world import (
    _FORMAT_FOCUS,
    _FORMAT_SLOTS,
    Draw,
    Simulator,
    World,
    _Columns,
    _organic,
    assign_tiers,
    build_world,
)
from coldcast.evaluation.metrics import MetricValue, poisson_weights

Scorer = Callable[[pd.DataFrame], np.ndarray]
ARMS: tuple[str, str] = ("control", "treatment")
ProgressFn = Callable[[int, int], None]
# Context values that depend on the creative shown, so each candidate gets its own (from shared uniforms).
_PER_CREATIVE = ("slot", "app_in_focus")


class ArmStats(Record):
    """What one arm bought in one segment, and the business metrics of the paper's Table 2."""

    impressions: int
    streams: int
    clicks: int
    spend: float
    i2s: float | None  # streams / impressions
    ctr: float | None  # clicks / impressions
    ecps: float | None  # spend / streams: effective cost per stream, lower is better
    # The same from the true probabilities of the ads shown (no outcome noise): what the arm is really worth.
    expected_streams: float
    expected_i2s: float | None
    expected_ecps: float | None


# Metrics a Lift reports; for eCPS negative is better.
LIFT_METRICS: tuple[str, ...] = ("impressions", "streams", "clicks", "spend", "i2s", "ctr", "ecps", "expected_i2s")


class Lift(Record):
    """Treatment relative to control, (treatment - control) / control, each with a paired bootstrap 95% interval
    over opportunities (both arms resampled together); None where control is zero or undefined."""

    impressions: MetricValue
    streams: MetricValue
    clicks: MetricValue
    spend: MetricValue
    i2s: MetricValue
    ctr: MetricValue
    ecps: MetricValue  # negative is better
    expected_i2s: MetricValue


class Segment(Record):
    """One row of the Table-2 shape: a segment of shows (by the show each arm chose), both arms and the lift."""

    name: str
    control: ArmStats
    treatment: ArmStats
    lift: Lift


class ABResult(Record):
    """A simulated budget-split A/B test: settings, fill rates and per-segment results."""

    seed: int
    days: list[str]
    opportunities: int
    campaigns_per_opportunity: int
    budget_ratio: float | None
    rank_by: str
    bootstrap: int
    fill_rate: dict[str, float]
    segments: list[Segment]

    def segment(self, name: str) -> Segment:
        for s in self.segments:
            if s.name == name:
                return s
        raise KeyError(f"no segment {name!r}; segments are {[s.name for s in self.segments]}")

    @property
    def overall(self) -> Segment:
        return self.segment("all")

    def write(self, path: str | Path) -> Path:
        return write_json(self.to_dict(), path)

    @classmethod
    def read(cls, path: str | Path) -> ABResult:
        return cls.model_validate(json.loads(Path(path).read_text()))


# --------------------------------------------------------------------------------------------------- scorers
def model_scorer(model: str | Path | object, task: str = "ad_stream", head: str | None = None) -> Scorer:
    """Scores candidates with a model directory's head for `task` (or `head`: direct apply, e.g. the promotions
    model's promo_stream head scoring ads). Loads TensorFlow, so it is imported only when a model is used."""
    from coldcast.model.scoring import ScoringModel

    loaded = model if isinstance(model, ScoringModel) else ScoringModel.load(model)  # type: ignore[arg-type]
    name = head or task
    if name not in loaded.tasks:
        raise KeyError(f"{loaded.path} has no head {name!r}; heads are {loaded.tasks}")

    def score(df: pd.DataFrame) -> np.ndarray:
        return loaded.predict(df, batch_size=16_384)[name].to_numpy(dtype=np.float64)

    return score


def oracle_scorer(outcome: str = "stream") -> Scorer:
    """Scores every candidate by its true probability of `outcome`: the best any model could do."""

    def score(df: pd.DataFrame) -> np.ndarray:
        return df[TRUE_PREFIX + outcome].to_numpy(dtype=np.float64)

    return score


def random_scorer(seed: int = 0) -> Scorer:
    """Scores by a hash of each candidate's id: uniform, uninformative, and independent of call order."""
    key = f"{seed:016d}"[-16:]

    def score(df: pd.DataFrame) -> np.ndarray:
        hashed = pd.util.hash_pandas_object(df["impression_id"], index=False, hash_key=key).to_numpy()
        return hashed.astype(np.float64) / 2.0**64

    return score


# --------------------------------------------------------------------------------------------------- simulation
def simulate_ab(
    source: World | Spec | Dataset,
    control: Scorer,
    treatment: Scorer,
    *,
    days: Sequence[int | str] | None = None,
    opportunities: int = 2000,
    campaigns_per_opportunity: int = 40,
    budget_ratio: float | None = 1.0,
    rank_by: Literal["score", "score_per_cost"] = "score",
    bootstrap: int = 200,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> ABResult:
    """Simulate a budget-split A/B test of two scorers on ad opportunities drawn by the world's own Simulator.

    In a budget-split test every campaign's budget is split in half and each half serves its own half of the
    traffic. Here both arms see the same opportunities (a listener and a context, drawn for an ad impression,
    with common random numbers: the comparison carries far less noise than two disjoint halves), so each arm's
    half of a campaign's budget is scaled to the traffic it sees, paced evenly over the days the campaign is
    active. For each opportunity `campaigns_per_opportunity` active campaigns are sampled uniformly (the same
    for both arms), and each arm shows the candidate creative its scorer ranks first (by p(stream), or by
    p(stream) / cost) among campaigns with enough of that arm's budget left today. Streams and clicks are drawn
    from the true probabilities with uniforms shared by the arms, and the impression's cost (CPM / 1000) is
    charged to the arm's budget.

    `days` are world day indexes or ISO dates (default: the spec's test days). `budget_ratio` sets each arm's
    budget to that multiple of what showing one ad in every opportunity at the mean CPM costs (below 1 the
    budgets bind and campaigns run out), split across campaigns in proportion to their own budgets; None keeps
    the world's budgets scaled to the sampled traffic. With a Dataset, popularity tiers come from its recorded
    daily streams; with a spec or world, from the world's organic streams (which dominate them). Lifts carry
    paired bootstrap 95% intervals from `bootstrap` Poisson resamples of the opportunities.
    """
    dataset = source if isinstance(source, Dataset) else None
    if isinstance(source, World):
        world = source
    else:
        world = build_world(source.spec() if isinstance(source, Dataset) else source)
    spec = world.spec
    sim = Simulator(world)
    if sim.ad is None:
        raise ValueError("the spec has no ad source to run an A/B test on")
    window = _window_days(spec, days)
    counts = _per_day(opportunities, len(window))
    market = _Market(world, sim, window, dataset)
    caps = market.daily_caps(counts, budget_ratio)
    builder = _Candidates(world, sim)
    scorers = {"control": control, "treatment": treatment}
    log: list[_DayLog] = []
    for i, (day, n) in enumerate(zip(window.tolist(), counts, strict=True)):
        rng = np.random.default_rng([seed, 5, day])
        active = market.active(day)
        if n == 0 or not len(active):
            continue
        cands = builder.build(day, n, active, campaigns_per_opportunity, market, rng)
        u_stream, u_click = rng.random(n), rng.random(n)
        picks = {}
        for arm, scorer in scorers.items():
            scores = np.asarray(scorer(cands.frame), dtype=np.float64).ravel()
            if scores.shape != (len(cands.frame),) or not np.isfinite(scores).all():
                raise ValueError(f"the {arm} scorer must return one finite score per candidate row")
            key = scores / cands.cost if rank_by == "score_per_cost" else scores
            picks[arm] = _choose(cands, key, caps[:, i].copy())
        log.append(_DayLog(cands, picks, u_stream, u_click, market.tiers(day), market.less_streamed(day)))
        if progress is not None:
            progress(i + 1, len(window))
    total = int(sum(counts))
    segments, fill = _summarise(log, spec.popularity.tiers, total, bootstrap, seed)
    return ABResult(
        seed=seed,
        days=[(spec.world.start_date + timedelta(days=d)).isoformat() for d in window.tolist()],
        opportunities=total,
        campaigns_per_opportunity=campaigns_per_opportunity,
        budget_ratio=budget_ratio,
        rank_by=rank_by,
        bootstrap=bootstrap,
        fill_rate=fill,
        segments=segments,
    )


def _window_days(spec: Spec, days: Sequence[int | str] | None) -> np.ndarray:
    cfg = spec.world
    if days is None:
        return np.arange(cfg.days - spec.split.test_days, cfg.days)
    out = []
    for d in days:
        index = (date.fromisoformat(d) - cfg.start_date).days if isinstance(d, str) else int(d)
        if not 0 <= index < cfg.days:
            raise ValueError(f"day {d!r} is outside the world's {cfg.days} days from {cfg.start_date}")
        out.append(index)
    return np.array(sorted(set(out)))


def _per_day(total: int, n_days: int) -> list[int]:
    base, extra = divmod(total, n_days)
    return [base + (1 if i < extra else 0) for i in range(n_days)]


class _Market:
    """Campaign calendars and budgets, and show popularity, over the simulated window."""

    def __init__(self, world: World, sim: Simulator, window: np.ndarray, dataset: Dataset | None) -> None:
        self.world, self.sim, self.window = world, sim, window
        spec = world.spec
        self.launch = world.show_launch
        # active[c, j]: campaign c can show ads on the window's j-th day (as the world's logging policy has it)
        self.is_active = (
            sim.camp_is_ad[:, None]
            & (sim.camp_start[:, None] <= window[None, :])
            & (sim.camp_end[:, None] >= window[None, :])
            & (self.launch[sim.camp_show][:, None] <= window[None, :])
        )
        pop = spec.popularity
        self.trailing = {int(d): t for d, t in zip(window, _trailing(world, window, dataset), strict=True)}
        self.edges, self.less_below = pop.tier_edges, pop.less_streamed_below
        cr = world.creatives
        self.cr_cost = cr["cpm"].to_numpy(dtype=np.float64) / 1000.0

    def active(self, day: int) -> np.ndarray:
        return np.flatnonzero(self.is_active[:, int(np.searchsorted(self.window, day))])

    def tiers(self, day: int) -> np.ndarray:
        return assign_tiers(self.trailing[day], self.edges)

    def less_streamed(self, day: int) -> np.ndarray:
        return self.trailing[day] < self.less_below

    def daily_caps(self, counts: list[int], budget_ratio: float | None) -> np.ndarray:
        """Per campaign and window day, the spend one arm may make that day: its half of the campaign's paced
        window budget, scaled from the half of the traffic it would serve to the opportunities it sees."""
        sim, cfg = self.sim, self.world.config
        days_active = self.is_active.sum(axis=1)
        duration = np.maximum(sim.camp_end - sim.camp_start + 1, 1)
        window_budget = sim.camp_budget * days_active / duration
        opps = sum(counts)
        if budget_ratio is None:
            # Half of each world budget for half of the world's ad traffic in the window, per sampled opportunity.
            traffic = sum(sim.day_count(int(d)) for d in self.window) * cfg.ads_share
            scale = opps / max(traffic, 1.0)
        else:
            if budget_ratio <= 0:
                raise ValueError(f"budget_ratio must be positive (or None), not {budget_ratio}")
            live = np.isin(sim.cr_campaign, np.flatnonzero(days_active > 0))
            mean_cost = float(self.cr_cost[live].mean()) if live.any() else 0.0
            scale = budget_ratio * opps * mean_cost / max(float(window_budget.sum()), 1e-12)
        per_day = np.divide(window_budget * scale, days_active, out=np.zeros(len(days_active)), where=days_active > 0)
        return per_day[:, None] * self.is_active


def _trailing(world: World, window: np.ndarray, dataset: Dataset | None) -> list[np.ndarray]:
    """Streams per show over the popularity window before each day (never the day itself), as tiers use them."""
    span = world.spec.popularity.window_days
    first = int(window.min()) - span
    days = np.arange(first, int(window.max()))
    daily = np.stack([_organic(world, int(d)) for d in days], axis=1).astype(np.float64)
    if dataset is not None:
        # The recorded streams also count those the logged impressions caused.
        recorded = dataset.entity("show_daily_streams")
        start = np.datetime64(world.config.start_date, "D")
        offset = (pd.to_datetime(recorded["date"]).to_numpy().astype("datetime64[D]") - start).astype(int) - first
        show = np.searchsorted(world.show_ids, recorded["show_id"].to_numpy())
        keep = (offset >= 0) & (offset < len(days))
        daily[:] = 0.0
        np.add.at(daily, (show[keep], offset[keep]), recorded["streams"].to_numpy(dtype=np.float64)[keep])
    return [daily[:, int(d) - span - first : int(d) - first].sum(axis=1) for d in window]


class _CandidateSet:
    """One day's candidate rows: opportunity of each row, creative, campaign, cost, true outcome probabilities."""

    def __init__(
        self,
        frame: pd.DataFrame,
        opp: np.ndarray,
        creative: np.ndarray,
        campaign: np.ndarray,
        cost: np.ndarray,
        p_stream: np.ndarray,
        p_click: np.ndarray,
        show: np.ndarray,
        bounds: np.ndarray,
    ) -> None:
        self.frame, self.opp, self.creative, self.campaign, self.cost = frame, opp, creative, campaign, cost
        self.p_stream, self.p_click, self.show = p_stream, p_click, show
        self.bounds = bounds  # rows of opportunity i are bounds[i]:bounds[i + 1]


class _Candidates:
    """Builds candidate rows in the dataset's column schema, with the features the generator would write."""

    def __init__(self, world: World, sim: Simulator) -> None:
        self.world, self.sim, self.spec = world, sim, world.spec
        self.columns = _Columns(world, sim)
        self.ad = self.spec.source_names.index(sim.ad)  # type: ignore[arg-type]
        cr = world.creatives
        ad_rows = np.flatnonzero(cr["source"].to_numpy() == sim.ad)
        by_campaign = ad_rows[np.argsort(sim.cr_campaign[ad_rows], kind="stable")]
        self.cr_sorted = by_campaign
        n_camp = len(sim.camp_show)
        self.cr_start = np.r_[0, np.cumsum(np.bincount(sim.cr_campaign[by_campaign], minlength=n_camp))]
        self.cr_count = np.diff(self.cr_start)
        self.cr_format = cr["format"].astype(str).to_numpy()
        self.names = set(self.spec.feature_names)
        self.slot_choices = self._slot_choices()
        self.start = np.datetime64(world.config.start_date, "D")

    def _slot_choices(self) -> dict[str, np.ndarray]:
        if "slot" not in self.names:
            return {}
        allowed = [str(v) for v in self.spec.allowed_values(self.sim.ad, "slot")]  # type: ignore[arg-type]
        return {
            f: np.array([v for v in _FORMAT_SLOTS.get(f, []) if v in allowed] or allowed, dtype=object)
            for f in np.unique(self.cr_format)
        }

    def _opportunities(self, day: int, n: int, rng: np.random.Generator) -> Draw:
        """n ad opportunities: the ad rows of the Simulator's draws for the day, in draw order."""
        parts: list[Draw] = []
        have = 0
        while have < n:
            # about ads_share of the Simulator's impressions are ads: draw enough to need one round, usually
            d = self.sim.draw(day, int((n - have) / max(self.world.config.ads_share, 0.01) * 1.2) + 32, rng)
            rows = np.flatnonzero(d.source == self.ad)[: n - have]
            parts.append(_take(d, rows))
            have += len(rows)
        return _concat(parts)

    def build(
        self, day: int, n: int, active: np.ndarray, k: int, market: _Market, rng: np.random.Generator
    ) -> _CandidateSet:
        world, sim, spec = self.world, self.sim, self.spec
        opp = self._opportunities(day, n, rng)
        # k campaigns per opportunity, uniformly among the active ones (all of them if there are fewer)
        if len(active) > k:
            sampled = active[np.argpartition(rng.random((n, len(active))), k - 1, axis=1)[:, :k]]
        else:
            sampled = np.broadcast_to(active, (n, len(active)))
        sampled = np.sort(sampled, axis=1)
        per_pair = self.cr_count[sampled]
        pair_opp = np.repeat(np.arange(n), sampled.shape[1])
        counts = per_pair.ravel()
        row_opp = np.repeat(pair_opp, counts)
        first = np.repeat(self.cr_start[sampled.ravel()], counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        creative = self.cr_sorted[first + within]
        bounds = np.r_[0, np.cumsum(per_pair.sum(axis=1))]
        m = len(creative)
        show = sim.cr_show[creative]
        fmt = self.cr_format[creative]

        # context: the opportunity's own values, except those the creative's format decides
        values = {name: v[row_opp] for name, v in opp.values.items() if name not in _PER_CREATIVE}
        u_slot, u_focus = rng.random(n)[row_opp], rng.random(n)[row_opp]
        if "slot" in self.names:
            slots = np.empty(m, dtype=object)
            for f, choices in self.slot_choices.items():
                rows = fmt == f
                slots[rows] = choices[np.minimum((u_slot[rows] * len(choices)).astype(int), len(choices) - 1)]
            values["slot"] = slots
        if "app_in_focus" in self.names:
            p_focus = np.array([_FORMAT_FOCUS.get(f, 0.9) for f in fmt])
            values["app_in_focus"] = (u_focus < p_focus).astype(np.int64)
        weeks = np.maximum((day - world.show_launch[show]) // 7, 0)
        latest = rng.random(m) < 0.6
        episode = np.where(latest, weeks, (rng.random(m) * (weeks + 1)).astype(np.int64))
        draw = Draw(
            day=day,
            user=opp.user[row_opp],
            source=np.full(m, self.ad),
            show=show,
            creative=creative,
            values=values,
            episode=episode,
        )
        truth = sim.probabilities(draw)
        trailing = market.trailing[day]
        cost = market.cr_cost[creative]
        frame = self._frame(draw, row_opp, cost, truth, trailing, market, rng)
        names = spec.outcome_names
        p_click = truth[names.index("click")] if "click" in names else np.zeros(m)
        return _CandidateSet(
            frame=frame,
            opp=row_opp,
            creative=creative,
            campaign=sim.cr_campaign[creative],
            cost=cost,
            p_stream=truth[names.index("stream")],
            p_click=p_click,
            show=show,
            bounds=bounds,
        )

    def _frame(
        self,
        d: Draw,
        row_opp: np.ndarray,
        cost: np.ndarray,
        truth: np.ndarray,
        trailing: np.ndarray,
        market: _Market,
        rng: np.random.Generator,
    ) -> pd.DataFrame:
        """Candidate rows with every column a logged impression has; outcomes are unknown (null) here."""
        spec, world, m = self.spec, self.world, len(d.user)
        day_date = world.config.start_date + timedelta(days=d.day)
        within = np.arange(m) - np.searchsorted(row_opp, row_opp)
        hour = d.values.get("hour", np.zeros(m, dtype=np.int64)).astype(np.int64)
        seconds = hour * 3600 + (row_opp * 7919) % 3600
        cols: dict[str, pa.Array] = {
            # unique per day: opportunity x 10,000 + rank within it (an opportunity has far fewer candidates)
            "impression_id": pa.array(
                np.char.add(f"ab{day_date:%Y%m%d}-", (row_opp.astype(np.int64) * 10_000 + within).astype(str)),
                type=pa.string(),
            ),
            "timestamp": pa.array(
                (np.datetime64(day_date, "s") + seconds.astype("timedelta64[s]")).astype("datetime64[us]"),
                type=pa.timestamp("us", tz="UTC"),
            ),
            "date": pa.array(np.full(m, day_date.isoformat(), dtype=object), type=pa.string()),
            "source": pa.array(np.full(m, self.sim.ad, dtype=object), type=pa.string()),
            "cost": pa.array(cost),
            "show_launch_date": pa.array(self.start + world.show_launch[d.show].astype("timedelta64[D]"), pa.date32()),
            "popularity_tier": pa.array(market.tiers(d.day)[d.show], type=pa.int8()),
            "less_streamed": pa.array(market.less_streamed(d.day)[d.show]),
        }
        for f in spec.feature_list:
            cols[f.name] = self.columns._feature(f.name, f.definition, d, trailing, rng)
        for o, name in enumerate(spec.outcome_names):
            cols[name] = pa.nulls(m, type=pa.float32())
            cols[TRUE_PREFIX + name] = pa.array(truth[o].astype(np.float32))
        return pa.table(cols).to_pandas()


def _take(d: Draw, rows: np.ndarray) -> Draw:
    return Draw(
        day=d.day,
        user=d.user[rows],
        source=d.source[rows],
        show=d.show[rows],
        creative=d.creative[rows],
        values={k: v[rows] for k, v in d.values.items()},
        episode=d.episode[rows],
    )


def _concat(parts: list[Draw]) -> Draw:
    return Draw(
        day=parts[0].day,
        user=np.concatenate([p.user for p in parts]),
        source=np.concatenate([p.source for p in parts]),
        show=np.concatenate([p.show for p in parts]),
        creative=np.concatenate([p.creative for p in parts]),
        values={k: np.concatenate([p.values[k] for p in parts]) for k in parts[0].values},
        episode=np.concatenate([p.episode for p in parts]),
    )


def _choose(c: _CandidateSet, key: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Per opportunity, in order, the best-ranked candidate whose campaign can still pay for it (-1: none).

    Scoring is batched; only this walk is sequential, because each impression spends budget the next
    opportunity may need.
    """
    n = len(c.bounds) - 1
    # Within each opportunity, candidates by descending key (ties: the earlier row).
    order = np.lexsort((-key, c.opp))
    camp, cost = c.campaign[order], c.cost[order]
    chosen = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        lo, hi = c.bounds[i], c.bounds[i + 1]
        ok = budget[camp[lo:hi]] >= cost[lo:hi]
        if ok.any():
            j = lo + int(np.argmax(ok))
            budget[camp[j]] -= cost[j]
            chosen[i] = order[j]
    return chosen


class _DayLog:
    """One day's picks per arm and the shared random numbers that decide their outcomes."""

    def __init__(
        self,
        cands: _CandidateSet,
        picks: dict[str, np.ndarray],
        u_stream: np.ndarray,
        u_click: np.ndarray,
        tiers: np.ndarray,
        less: np.ndarray,
    ) -> None:
        self.cands, self.picks, self.u_stream, self.u_click = cands, picks, u_stream, u_click
        self.tiers, self.less = tiers, less


_SELECTORS = ("all", "less_streamed", "more_streamed")


def _summarise(
    log: list[_DayLog], n_tiers: int, opportunities: int, bootstrap: int, seed: int
) -> tuple[list[Segment], dict[str, float]]:
    """Per segment, each arm's totals and the lift, with intervals from resampling opportunities (paired)."""
    # One row per opportunity, aligned across arms (both arms saw the same opportunities in the same order).
    per_arm: dict[str, dict[str, np.ndarray]] = {}
    for arm in ARMS:
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("filled", "stream", "click", "cost", "p", "tier", "less")}
        for day in log:
            chosen = day.picks[arm]
            filled = chosen >= 0
            rows, c = np.where(filled, chosen, 0), day.cands
            # The same uniform per opportunity in both arms: an arm that picks the same ad gets the same outcome.
            cols["filled"].append(filled)
            cols["stream"].append(filled & (day.u_stream < c.p_stream[rows]))
            cols["click"].append(filled & (day.u_click < c.p_click[rows]))
            cols["cost"].append(np.where(filled, c.cost[rows], 0.0))
            cols["p"].append(np.where(filled, c.p_stream[rows], 0.0))
            cols["tier"].append(np.where(filled, day.tiers[c.show[rows]], -1))
            cols["less"].append(filled & day.less[c.show[rows]])
        per_arm[arm] = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    n = len(per_arm["control"]["filled"])
    # (opportunities x replicates), float once: every segment's totals are one matrix product
    weights = poisson_weights(bootstrap, n, seed=[seed, 7]).T.astype(np.float64) if bootstrap > 0 and n else None
    names = [*_SELECTORS, *(f"tier_{t}" for t in range(n_tiers))]
    segments = []
    for name in names:
        sums = {arm: _sums(per_arm[arm], _select(per_arm[arm], name), weights) for arm in ARMS}
        point = {arm: {k: float(v[0]) for k, v in sums[arm].items()} for arm in ARMS}
        segments.append(
            Segment(
                name=name,
                control=_stats(point["control"]),
                treatment=_stats(point["treatment"]),
                lift=_lift(sums["control"], sums["treatment"]),
            )
        )
    fill = {arm: float(per_arm[arm]["filled"].sum()) / opportunities if opportunities else 0.0 for arm in ARMS}
    return segments, fill


def _select(arm: dict[str, np.ndarray], name: str) -> np.ndarray:
    filled = arm["filled"].astype(bool)
    if name == "all":
        return filled
    if name == "less_streamed":
        return arm["less"].astype(bool)
    if name == "more_streamed":
        return filled & ~arm["less"].astype(bool)
    return arm["tier"] == int(name.removeprefix("tier_"))


def _sums(arm: dict[str, np.ndarray], rows: np.ndarray, weights: np.ndarray | None) -> dict[str, np.ndarray]:
    """Totals of the selected opportunities: column 0 the point estimate, then one per bootstrap replicate."""
    x = np.vstack(
        [
            rows.astype(np.float64),
            np.where(rows, arm["stream"], 0).astype(np.float64),
            np.where(rows, arm["click"], 0).astype(np.float64),
            np.where(rows, arm["cost"], 0.0),
            np.where(rows, arm["p"], 0.0),
        ]
    )
    point = x.sum(axis=1, keepdims=True)
    totals = point if weights is None else np.hstack([point, x @ weights])
    return dict(zip(("impressions", "streams", "clicks", "spend", "expected"), totals, strict=True))


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def _metrics(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "impressions": s["impressions"],
        "streams": s["streams"],
        "clicks": s["clicks"],
        "spend": s["spend"],
        "i2s": _ratio(s["streams"], s["impressions"]),
        "ctr": _ratio(s["clicks"], s["impressions"]),
        "ecps": _ratio(s["spend"], s["streams"]),
        "expected_i2s": _ratio(s["expected"], s["impressions"]),
    }


def _stats(s: dict[str, float]) -> ArmStats:
    impressions, streams, expected = round(s["impressions"]), round(s["streams"]), s["expected"]
    return ArmStats(
        impressions=impressions,
        streams=streams,
        clicks=round(s["clicks"]),
        spend=s["spend"],
        i2s=streams / impressions if impressions else None,
        ctr=s["clicks"] / impressions if impressions else None,
        ecps=s["spend"] / streams if streams else None,
        expected_streams=expected,
        expected_i2s=expected / impressions if impressions else None,
        expected_ecps=s["spend"] / expected if expected > 0 else None,
    )


def _lift(control: dict[str, np.ndarray], treatment: dict[str, np.ndarray]) -> Lift:
    c, t = _metrics(control), _metrics(treatment)
    out = {}
    for name in LIFT_METRICS:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where((c[name] != 0) & np.isfinite(c[name]), (t[name] - c[name]) / np.abs(c[name]), np.nan)
        point, reps = rel[0], rel[1:]
        if not np.isfinite(point):
            out[name] = MetricValue(value=None, reason="control is zero or undefined in this segment")
            continue
        finite = reps[np.isfinite(reps)]
        if len(reps) and len(finite) >= 0.9 * len(reps):
            low, high = np.percentile(finite, [2.5, 97.5])
            out[name] = MetricValue(value=float(point), low=float(low), high=float(high))
        else:
            out[name] = MetricValue(value=float(point))
    return Lift(**out)
