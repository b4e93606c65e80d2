"""The synthetic podcast world: users, shows, campaigns and impressions whose outcomes follow a known truth."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from coldcast.core.data import (
    IMPRESSIONS,
    MANIFEST,
    SPEC_FILE,
    atomic_dir,
    write_json,
    write_parquet,
)
from coldcast.core.spec import (
    CategoricalFeature,
    IdFeature,
    MultiFeature,
    NumericFeature,
    Spec,
    WorldConfig,
)

GENERATOR_VERSION = "1"
ProgressFn = Callable[[int, int], None]

# Fallback vocabularies when the spec does not declare the features that carry them.
_DEFAULT_GENRES = [f"genre_{i}" for i in range(16)]
_DEFAULT_TOPICS = [f"topic_{i}" for i in range(40)]
# Realistic structure for known values; values the spec adds get a neutral default.
_FORMAT_WEIGHT = {"audio": 0.5, "video": 0.2, "display": 0.3}
_FORMAT_CPM = {"audio": 15.0, "video": 25.0, "display": 8.0}
_FORMAT_FOCUS = {"audio": 0.35, "video": 0.85, "display": 0.95}
_FORMAT_SLOTS = {
    "audio": ["preroll", "midroll", "postroll"],
    "video": ["preroll", "midroll"],
    "display": ["companion", "banner", "shelf", "hero", "card"],
}
# Share of impressions by hour of day (UTC in the world): a morning and an evening peak.
_HOURLY = np.array(
    [
        1,
        0.6,
        0.4,
        0.3,
        0.3,
        0.5,
        1.2,
        2.2,
        2.8,
        2.2,
        1.8,
        1.8,
        2.0,
        1.9,
        1.8,
        1.9,
        2.2,
        2.8,
        3.2,
        3.4,
        3.2,
        2.6,
        2.0,
        1.4,
    ]
)
_WEEKDAY = np.array([1.0, 1.0, 1.0, 1.02, 1.05, 0.95, 0.93])


def assign_tiers(streams: np.ndarray, edges: list[float]) -> np.ndarray:
    """Popularity tier per show: 0 for streams >= edges[0], ..., len(edges) below the last edge."""
    return np.sum(np.asarray(streams, dtype=np.float64)[:, None] < np.asarray(edges)[None, :], axis=1).astype(np.int8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def _categorical(feature: Any) -> list[Any] | None:
    return list(feature.values) if isinstance(feature, CategoricalFeature) else None


def _pick(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """Draw n indices from a cumulative distribution."""
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(cdf) - 1)


def _grouped_cdf(groups: np.ndarray, weights: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Order items by group and build a cdf where group g occupies (g, g+1]; empty groups get no mass."""
    order = np.argsort(groups, kind="stable")
    g, w = groups[order], weights[order].astype(np.float64)
    totals = np.bincount(g, weights=w, minlength=n_groups)
    within = np.cumsum(w) - np.concatenate([[0.0], np.cumsum(totals)])[g]
    cdf = g + np.divide(within, totals[g], out=np.zeros_like(within), where=totals[g] > 0)
    return order, cdf


def _pick_in_group(rng: np.random.Generator, order: np.ndarray, cdf: np.ndarray, groups: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(cdf, groups + rng.random(len(groups)) * (1 - 1e-9), side="left")
    return order[np.minimum(idx, len(order) - 1)]


# --------------------------------------------------------------------------------------------------- entities
@dataclass
class World:
    """Entities and the ground truth of one synthetic world (deterministic for its spec and seed)."""

    spec: Spec
    genres: list[str]
    topics: list[str]
    # users
    user_ids: np.ndarray
    user_activity: np.ndarray
    user_pref: np.ndarray  # (U, G) genre preferences behind promotion responses
    user_ad_pref: np.ndarray  # (U, G) preferences behind ad-specific responses
    user_taste: np.ndarray  # (U, k)
    user_ad_taste: np.ndarray  # (U, k)
    user_propensity: np.ndarray  # (U,)
    user_top_genre: np.ndarray  # (U,) index of the first observed listened genre
    user_columns: dict[str, Any]  # observed per-user feature values (arrays or list arrays)
    # shows
    show_ids: np.ndarray
    show_genre: np.ndarray
    show_vec: np.ndarray
    show_ad_vec: np.ndarray
    show_quality: np.ndarray
    show_ad_quality: np.ndarray
    show_launch: np.ndarray  # launch day relative to the window start
    show_popularity: np.ndarray
    show_columns: dict[str, Any]
    show_duration: np.ndarray
    # creatives (promotion creatives first, then ad creatives)
    creatives: pd.DataFrame
    campaigns: pd.DataFrame
    # truth
    effects: dict[str, np.ndarray]  # feature -> (outcomes, sources, values) logit effects
    intercepts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (outcomes, sources)
    drift_taste: np.ndarray | None = None
    # mean and sd of the raw promotion and ad-specific affinities, to standardise them
    affinity_stats: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)

    @property
    def config(self) -> WorldConfig:
        return self.spec.world

    @property
    def outcomes(self) -> list[str]:
        return self.spec.outcome_names

    @property
    def sources(self) -> list[str]:
        return self.spec.source_names


def build_world(spec: Spec) -> World:
    """Draw users, shows, campaigns, creatives and the effects of every categorical value."""
    cfg = spec.world
    rng = np.random.default_rng([cfg.seed, 0])
    names = set(spec.feature_names)
    genre_values = _categorical(spec.feature("genre").definition) if "genre" in names else None
    genres = [str(g) for g in (genre_values or _DEFAULT_GENRES)]
    topic_def = spec.feature("topics").definition if "topics" in names else None
    topics = list(topic_def.values) if isinstance(topic_def, MultiFeature) and topic_def.values else _DEFAULT_TOPICS
    G, k, U, S = len(genres), cfg.latent_dim, cfg.users, cfg.shows
    rho = cfg.channel_similarity
    mix = math.sqrt(max(0.0, 1 - rho**2))

    centres = rng.normal(size=(G, k))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    genre_prior = rng.dirichlet(np.full(G, 2.0))

    # ---- users
    user_pref = rng.dirichlet(np.full(G, 0.3), size=U) * 0.8 + 0.2 * genre_prior
    user_ad_pref = rng.dirichlet(np.full(G, 0.3), size=U) * 0.8 + 0.2 * genre_prior
    user_taste = user_pref @ centres + rng.normal(scale=0.15, size=(U, k))
    user_ad_taste = user_ad_pref @ centres + rng.normal(scale=0.15, size=(U, k))
    log_activity = rng.normal(size=U)
    user_activity = np.exp(0.8 * log_activity)
    user_propensity = _standardise(0.6 * log_activity + 0.8 * rng.normal(size=U))
    # Observed listening history reflects tastes imperfectly: noisy preferences, top three.
    noisy = np.log(user_pref) + rng.gumbel(size=(U, G)) * 0.7
    listened = np.argsort(-noisy, axis=1)[:, :3]
    user_top_genre = listened[:, 0]

    # ---- shows
    show_genre = _pick(rng, np.cumsum(genre_prior), S)
    show_vec = centres[show_genre] + rng.normal(scale=0.35, size=(S, k))
    show_ad_vec = centres[show_genre] + rng.normal(scale=0.35, size=(S, k))
    publisher = np.minimum(rng.zipf(1.6, size=S) - 1, cfg.publishers - 1)
    publisher_quality = rng.normal(size=cfg.publishers)
    show_quality = _standardise(0.4 * publisher_quality[publisher] + 0.9 * rng.normal(size=S))
    show_ad_quality = rho * show_quality + mix * _standardise(rng.normal(size=S))
    show_popularity = np.exp(cfg.popularity_sigma * (0.6 * show_quality + 0.8 * rng.normal(size=S)))
    show_popularity /= show_popularity.mean()
    is_new = rng.random(S) < cfg.new_show_share
    show_launch = np.where(is_new, rng.integers(0, cfg.days, size=S), -rng.integers(30, 2500, size=S))
    if cfg.drift.kind == "new_show_surge":
        # A wave of launches at the drift start: an extra share of shows launches within its first week.
        surge = rng.random(S) < min(0.5, 0.05 * cfg.drift.strength)
        show_launch = np.where(surge, cfg.drift.start_day + rng.integers(0, 7, size=S), show_launch)
    show_duration = np.exp(rng.normal(np.log(40), 0.5, size=S))
    show_ids = np.array([f"s{i:05d}" for i in range(S)])
    topic_genre = np.arange(len(topics)) % G
    show_topics = []
    for s in range(S):
        own = np.flatnonzero(topic_genre == show_genre[s])
        n_topics = int(rng.integers(1, 4))
        pool = own if len(own) and rng.random() < 0.8 else np.arange(len(topics))
        show_topics.append([topics[t] for t in rng.choice(pool, size=min(n_topics, len(pool)), replace=False)])

    # ---- user histories: recent shows by genre preference, shows weighted by popularity
    launched_before = show_launch < 0
    order, cdf = _grouped_cdf(show_genre, show_popularity * launched_before, G)
    n_recent = 10
    pref_cdf = np.cumsum(user_pref, axis=1)
    picks = (pref_cdf[:, None, :] < rng.random((U, n_recent, 1)) * pref_cdf[:, -1:, None]).sum(axis=2)
    picks = np.minimum(picks, G - 1)
    recent = _pick_in_group(rng, order, cdf, picks.ravel()).reshape(U, n_recent)
    # Searches mix both preference profiles, so ad-specific taste is observable, just not from listening.
    search_pref = 0.5 * user_pref + 0.5 * user_ad_pref
    search_cdf = np.cumsum(search_pref, axis=1)
    n_search = rng.integers(0, 6, size=U)
    search_genres = (search_cdf[:, None, :] < rng.random((U, 5, 1)) * search_cdf[:, -1:, None]).sum(axis=2)
    search_genres = np.minimum(search_genres, G - 1)
    by_genre = [np.flatnonzero(topic_genre == g) for g in range(G)]

    user_columns: dict[str, Any] = {
        "user_id": np.array([f"u{i:06d}" for i in range(U)]),
        "weekly_listening_hours": np.clip(np.round(user_activity * 4.0, 1), 0, None),
        "listened_genres": [[genres[g] for g in row] for row in listened],
        "recent_shows": [list(dict.fromkeys(show_ids[row])) for row in recent],
        "searched_topics": [
            list(
                dict.fromkeys(
                    topics[rng.choice(by_genre[g])] for g in search_genres[u, : n_search[u]] if len(by_genre[g])
                )
            )
            for u in range(U)
        ],
    }
    show_columns: dict[str, Any] = {
        "show_id": show_ids,
        "publisher_id": np.array([f"pub{p:04d}" for p in publisher]),
        "genre": np.array(genres)[show_genre],
        "topics": show_topics,
    }

    # ---- generic columns: any declared user / content feature the world has no rule for is noise
    for group, columns, n in (("user", user_columns, U), ("content", show_columns, S)):
        for f in spec.group_features(group):
            if f.name in columns or f.name in _PER_IMPRESSION:
                continue
            columns[f.name] = _noise_column(rng, f.definition, n)

    creatives, campaigns = _build_creatives(spec, rng, show_ids, show_launch, show_popularity)
    effects = _draw_effects(spec, rng)
    world = World(
        spec=spec,
        genres=genres,
        topics=topics,
        user_ids=user_columns["user_id"],
        user_activity=user_activity,
        user_pref=user_pref,
        user_ad_pref=user_ad_pref,
        user_taste=user_taste,
        user_ad_taste=user_ad_taste,
        user_propensity=user_propensity,
        user_top_genre=user_top_genre,
        user_columns=user_columns,
        show_ids=show_ids,
        show_genre=show_genre,
        show_vec=show_vec,
        show_ad_vec=show_ad_vec,
        show_quality=show_quality,
        show_ad_quality=show_ad_quality,
        show_launch=show_launch,
        show_popularity=show_popularity,
        show_columns=show_columns,
        show_duration=show_duration,
        creatives=creatives,
        campaigns=campaigns,
        effects=effects,
    )
    if cfg.drift.kind == "taste_shift":
        # Concept drift: from the drift start, tastes move towards a random genre for everyone.
        direction = centres[rng.integers(G)]
        shifted = user_taste + cfg.drift.strength * 0.5 * direction[None, :]
        world.drift_taste = shifted
    world.intercepts = _calibrate(world)
    return world


# Features computed per impression (context, creative, time-varying content) rather than per entity.
_PER_IMPRESSION = {
    "episode_id",
    "show_age_days",
    "episode_duration_min",
    "show_streams_30d",
    "hour",
    "weekday",
    "device",
    "surface",
    "app_in_focus",
    "creative_id",
    "campaign_id",
    "format",
    "slot",
    "layout",
}


def _noise_column(rng: np.random.Generator, definition: Any, n: int) -> Any:
    """Values for a feature the world has no rule for: plausible, uncorrelated with any outcome."""
    if isinstance(definition, CategoricalFeature):
        p = rng.dirichlet(np.ones(len(definition.values)))
        return np.array(definition.values)[_pick(rng, np.cumsum(p), n)]
    if isinstance(definition, NumericFeature):
        return rng.uniform(definition.min, definition.max, size=n)
    if isinstance(definition, IdFeature):
        return np.array([f"x{i}" for i in rng.integers(0, definition.hash_buckets * 2, size=n)])
    assert isinstance(definition, MultiFeature)
    vocab = definition.values or [f"x{i}" for i in range(100)]
    lengths = rng.integers(0, definition.max_length + 1, size=n)
    return [list(dict.fromkeys(rng.choice(vocab, size=m))) for m in lengths]


def _build_creatives(
    spec: Spec, rng: np.random.Generator, show_ids: np.ndarray, launch: np.ndarray, popularity: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    cfg = spec.world
    S = len(show_ids)
    names = set(spec.feature_names)
    promo, ad = _promo_source(spec), _ad_source(spec)
    rows: list[dict[str, Any]] = []
    campaigns: list[dict[str, Any]] = []

    def values(source: str | None, feature: str, default: list[Any]) -> list[Any]:
        if source is None or feature not in names:
            return default
        return spec.allowed_values(source, feature)

    if promo is not None:
        layouts = values(promo, "layout", ["none"])
        formats = values(promo, "format", ["display"])
        for s in range(S):
            campaigns.append(
                {
                    "campaign_id": f"pcmp{s:05d}",
                    "source": promo,
                    "show": s,
                    "start": int(launch[s]),
                    "end": cfg.days + 1,
                    "budget": 0.0,
                }
            )
            for j in range(2):
                rows.append(
                    {
                        "creative_id": f"pc{s:05d}-{j}",
                        "campaign_id": f"pcmp{s:05d}",
                        "source": promo,
                        "show": s,
                        "format": formats[int(rng.integers(len(formats)))],
                        "layout": layouts[int(rng.integers(len(layouts)))],
                        "cpm": 0.0,
                        "quality": float(rng.normal(scale=0.3)),
                    }
                )
    if ad is not None:
        formats = values(ad, "format", list(_FORMAT_WEIGHT))
        layouts = values(ad, "layout", ["none"])
        fmt_p = np.array([_FORMAT_WEIGHT.get(str(f), 0.2) for f in formats])
        fmt_cdf = np.cumsum(fmt_p / fmt_p.sum())
        advertised = _pick(rng, np.cumsum(popularity**0.3), cfg.campaigns)
        for c in range(cfg.campaigns):
            s = int(advertised[c])
            start = max(int(launch[s]), int(rng.integers(-30, max(cfg.days - 7, -29))))
            end = start + int(rng.integers(14, 57))
            budget = float(np.exp(rng.normal(np.log(5000), 1.0)))
            campaigns.append(
                {
                    "campaign_id": f"cmp{c:05d}",
                    "source": ad,
                    "show": s,
                    "start": start,
                    "end": end,
                    "budget": budget,
                }
            )
            for _ in range(int(rng.integers(1, 5))):
                fmt = formats[int(_pick(rng, fmt_cdf, 1)[0])]
                rows.append(
                    {
                        "creative_id": f"cr{len(rows):06d}",
                        "campaign_id": f"cmp{c:05d}",
                        "source": ad,
                        "show": s,
                        "format": fmt,
                        "layout": layouts[int(rng.integers(len(layouts)))],
                        "cpm": float(_FORMAT_CPM.get(str(fmt), 12.0) * np.exp(rng.normal(0, 0.3))),
                        "quality": float(rng.normal(scale=0.3)),
                    }
                )
    return pd.DataFrame(rows), pd.DataFrame(campaigns)


def _promo_source(spec: Spec) -> str | None:
    return "promotion" if "promotion" in spec.sources else (spec.source_names[0] if spec.sources else None)


def _ad_source(spec: Spec) -> str | None:
    others = [s for s in spec.source_names if s != _promo_source(spec)]
    return "ad" if "ad" in spec.sources else (others[0] if others else None)


def _draw_effects(spec: Spec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per categorical value, a logit effect per outcome and source: shared across channels to the degree of
    `channel_similarity`, channel-specific otherwise."""
    cfg = spec.world
    rho = cfg.channel_similarity
    mix = math.sqrt(max(0.0, 1 - rho**2))
    n_out, n_src = len(spec.outcomes), len(spec.sources)
    effects = {}
    for f in spec.feature_list:
        if not isinstance(f.definition, CategoricalFeature):
            continue
        V = len(f.definition.values)
        shared = rng.normal(scale=cfg.effect_scale, size=(n_out, 1, V))
        specific = rng.normal(scale=cfg.effect_scale, size=(n_out, n_src, V))
        effects[f.name] = rho * shared + mix * specific
        if f.name == "app_in_focus":
            # A listener with the app in the background cannot tap and rarely acts on the ad.
            off = f.definition.values.index(0) if 0 in f.definition.values else None
            if off is not None:
                effects[f.name][:, :, off] -= 0.8
    return effects


# --------------------------------------------------------------------------------------------------- impressions
@dataclass
class Draw:
    """One day's impressions as entity indices and per-impression values, before outcomes."""

    day: int
    user: np.ndarray
    source: np.ndarray  # index into spec.sources
    show: np.ndarray
    creative: np.ndarray
    values: dict[str, np.ndarray]  # per-impression categorical / numeric values by feature name
    episode: np.ndarray


class Simulator:
    """Draws impressions day by day from a World; all randomness is keyed by (seed, stream, day)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.spec = world.spec
        cfg = self.spec.world
        self.cfg = cfg
        self.user_cdf = np.cumsum(world.user_activity)
        cr = world.creatives
        self.cr_source = cr["source"].map({s: i for i, s in enumerate(self.spec.sources)}).to_numpy()
        self.cr_show = cr["show"].to_numpy()
        self.cr_format = cr["format"].astype(str).to_numpy()
        camp = world.campaigns
        self.camp_index = {c: i for i, c in enumerate(camp["campaign_id"])}
        self.cr_campaign = cr["campaign_id"].map(self.camp_index).to_numpy()
        self.camp_show = camp["show"].to_numpy()
        self.camp_start = camp["start"].to_numpy()
        self.camp_end = camp["end"].to_numpy()
        self.camp_budget = camp["budget"].to_numpy()
        self.camp_is_ad = camp["source"].to_numpy() == _ad_source(self.spec)
        self.promo = _promo_source(self.spec)
        self.ad = _ad_source(self.spec)
        self.promo_creatives = np.flatnonzero(cr["source"].to_numpy() == self.promo)
        # promo creatives are laid out two per show in show order
        self.names = set(self.spec.feature_names)
        surfaces_rng = np.random.default_rng([cfg.seed, 4])
        self.surface_p = {}
        for s in self.spec.source_names:
            if "surface" in self.names:
                n = len(self.spec.allowed_values(s, "surface"))
                self.surface_p[s] = np.cumsum(surfaces_rng.dirichlet(np.full(n, 2.0)))

    def day_count(self, day: int) -> int:
        """Impressions on `day`: the total spread over days with a weekly pattern, summing exactly."""
        cfg = self.cfg
        weekday = np.array([(cfg.start_date + timedelta(days=d)).weekday() for d in range(cfg.days)])
        w = _WEEKDAY[weekday]
        raw = cfg.impressions * w / w.sum()
        counts = np.floor(raw).astype(int)
        remainder = cfg.impressions - counts.sum()
        counts[np.argsort(-(raw - counts), kind="stable")[:remainder]] += 1
        return int(counts[day])

    def draw(self, day: int, n: int, rng: np.random.Generator) -> Draw:
        w, cfg = self.world, self.cfg
        user = _pick(rng, self.user_cdf, n)
        ads_share = cfg.ads_share
        is_ad = rng.random(n) < ads_share if self.ad is not None else np.zeros(n, dtype=bool)
        if self.promo is None:
            is_ad[:] = True
        source = np.where(
            is_ad,
            self.spec.source_names.index(self.ad) if self.ad else 0,
            self.spec.source_names.index(self.promo) if self.promo else 0,
        )
        show = np.zeros(n, dtype=np.int64)
        creative = np.zeros(n, dtype=np.int64)
        G = len(w.genres)
        drifting = cfg.drift.kind != "none" and day >= cfg.drift.start_day

        # promotions: the platform's logging policy favours the listener's top genre and newly launched shows
        p_rows = np.flatnonzero(~is_ad)
        if len(p_rows):
            launched = w.show_launch <= day
            age = day - w.show_launch
            boost = np.where((age >= 0) & (age < 30), 2.0, 1.0)
            if drifting and cfg.drift.kind == "new_show_surge":
                boost = np.where((age >= 0) & (age < 30), 2.0 + 5.0 * cfg.drift.strength, 1.0)
            weight = np.sqrt(w.show_popularity) * boost * launched
            order, cdf = _grouped_cdf(w.show_genre, weight, G)
            genre_of_row = np.where(
                rng.random(len(p_rows)) < 0.6,
                w.user_top_genre[user[p_rows]],
                _pick(rng, np.cumsum(np.bincount(w.show_genre, weights=weight, minlength=G)), len(p_rows)),
            )
            has = np.bincount(w.show_genre, weights=weight, minlength=G) > 0
            genre_of_row = np.where(has[genre_of_row], genre_of_row, int(np.argmax(has)))
            show[p_rows] = _pick_in_group(rng, order, cdf, genre_of_row)
            creative[p_rows] = self.promo_creatives[2 * show[p_rows] + rng.integers(0, 2, size=len(p_rows))]

        # ads: active campaigns, half of the time targeted at the listener's top genre
        a_rows = np.flatnonzero(is_ad)
        if len(a_rows):
            active = (
                self.camp_is_ad
                & (self.camp_start <= day)
                & (self.camp_end >= day)
                & (w.show_launch[self.camp_show] <= day)
            )
            if not active.any():
                active = self.camp_is_ad.copy()
            weight = self.camp_budget / np.maximum(self.camp_end - self.camp_start, 1) * active
            camp_genre = w.show_genre[self.camp_show]
            order, cdf = _grouped_cdf(camp_genre, weight, G)
            has = np.bincount(camp_genre, weights=weight, minlength=G) > 0
            want = w.user_top_genre[user[a_rows]]
            targeted = (rng.random(len(a_rows)) < 0.5) & has[want]
            camp = _pick(rng, np.cumsum(weight), len(a_rows))
            camp[targeted] = _pick_in_group(rng, order, cdf, want[targeted])
            # one of the campaign's creatives; video creatives win more often under the video-shift drift
            video_boost = 1.0 + (4.0 * cfg.drift.strength if drifting and cfg.drift.kind == "video_shift" else 0.0)
            cr_weight = np.where(self.cr_format == "video", video_boost, 1.0) * (self.cr_source == source[a_rows[0]])
            corder, ccdf = _grouped_cdf(self.cr_campaign, cr_weight, len(self.camp_show))
            creative[a_rows] = _pick_in_group(rng, corder, ccdf, camp)
            show[a_rows] = self.cr_show[creative[a_rows]]

        values = self._context(day, user, source, creative, rng)
        launched_weeks = np.maximum((day - w.show_launch[show]) // 7, 0)
        latest = rng.random(n) < 0.6
        episode = np.where(latest, launched_weeks, (rng.random(n) * (launched_weeks + 1)).astype(np.int64))
        return Draw(day=day, user=user, source=source, show=show, creative=creative, values=values, episode=episode)

    def _context(
        self, day: int, user: np.ndarray, source: np.ndarray, creative: np.ndarray, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        spec, n = self.spec, len(user)
        out: dict[str, np.ndarray] = {}
        names = self.names
        fmt = self.cr_format[creative]
        if "hour" in names:
            out["hour"] = _pick(rng, np.cumsum(_HOURLY), n).astype(np.int64)
        if "weekday" in names:
            out["weekday"] = np.full(n, (self.cfg.start_date + timedelta(days=day)).weekday(), dtype=np.int64)
        if "device" in names:
            devices = list(spec.feature("device").definition.values)  # type: ignore[union-attr]
            primary = self.world.user_columns.get("primary_device")
            other = np.array(devices, dtype=object)[rng.integers(0, len(devices), size=n)]
            if primary is not None:
                prim = np.asarray(primary, dtype=object)[user]
                ok = np.isin(prim, devices)
                out["device"] = np.where((rng.random(n) < 0.8) & ok, prim, other)
            else:
                out["device"] = other
        for i, s in enumerate(spec.source_names):
            rows = np.flatnonzero(source == i)
            if not len(rows):
                continue
            if "surface" in names:
                allowed = np.array(spec.allowed_values(s, "surface"), dtype=object)
                out.setdefault("surface", np.empty(n, dtype=object))[rows] = allowed[
                    _pick(rng, self.surface_p[s], len(rows))
                ]
            if "slot" in names:
                allowed = [str(v) for v in spec.allowed_values(s, "slot")]
                slots = out.setdefault("slot", np.empty(n, dtype=object))
                for f in np.unique(fmt[rows]):
                    fr = rows[fmt[rows] == f]
                    ok = [v for v in _FORMAT_SLOTS.get(str(f), []) if v in allowed] or allowed
                    slots[fr] = np.array(ok, dtype=object)[rng.integers(0, len(ok), size=len(fr))]
        if "app_in_focus" in names:
            p_focus = np.array([_FORMAT_FOCUS.get(str(f), 0.9) for f in fmt])
            p_focus = np.where(source == (spec.source_names.index(self.promo) if self.promo else -1), 0.97, p_focus)
            out["app_in_focus"] = (rng.random(n) < p_focus).astype(np.int64)
        # any other declared context feature the world has no rule for is noise
        for f in spec.group_features("context"):
            if f.name not in out:
                out[f.name] = np.asarray(_noise_column(rng, f.definition, n), dtype=object)
        return out

    # ---- truth
    def logits(self, d: Draw, tier_streams: np.ndarray | None = None) -> np.ndarray:
        """Logits without intercepts, shape (outcomes, n)."""
        w, spec, cfg = self.world, self.spec, self.cfg
        rho = cfg.channel_similarity
        mix = math.sqrt(max(0.0, 1 - rho**2))
        taste = w.user_taste
        if w.drift_taste is not None and d.day >= cfg.drift.start_day:
            taste = w.drift_taste
        k = math.sqrt(cfg.latent_dim)
        a_promo = np.einsum("ij,ij->i", taste[d.user], w.show_vec[d.show]) / k
        a_ad_own = np.einsum("ij,ij->i", w.user_ad_taste[d.user], w.show_ad_vec[d.show]) / k
        m_p, s_p, m_a, s_a = w.affinity_stats
        a_promo, a_ad_own = (a_promo - m_p) / s_p, (a_ad_own - m_a) / s_a
        ad_idx = spec.source_names.index(self.ad) if self.ad else -1
        is_ad = d.source == ad_idx
        affinity = np.where(is_ad, rho * a_promo + mix * a_ad_own, a_promo)
        quality = np.where(is_ad, w.show_ad_quality[d.show], w.show_quality[d.show])
        quality = quality + w.creatives["quality"].to_numpy()[d.creative]
        out = np.zeros((len(spec.outcomes), len(d.user)))
        context = np.zeros((len(spec.outcomes), len(d.user)))
        for f in spec.feature_list:
            eff = w.effects.get(f.name)
            if eff is None:
                continue
            vals = self.column(d, f.name)
            lookup = {v: i for i, v in enumerate(f.definition.values)}  # type: ignore[union-attr]
            idx = (
                np.array([lookup.get(v, -1) for v in vals])
                if vals.dtype == object
                else np.searchsorted(np.array(f.definition.values), vals)
            )  # type: ignore[union-attr]
            context += np.where(idx >= 0, eff[:, d.source, np.maximum(idx, 0)], 0.0)
        for o, name in enumerate(spec.outcome_names):
            m = cfg.outcomes[name]
            out[o] = (
                m.affinity * affinity
                + m.quality * quality
                + m.user_propensity * w.user_propensity[d.user]
                + m.context * context[o]
            )
        return out

    def column(self, d: Draw, name: str) -> np.ndarray:
        """A per-impression categorical value for the effects lookup."""
        w = self.world
        if name in d.values:
            return np.asarray(d.values[name])
        if name in w.user_columns:
            return np.asarray(w.user_columns[name], dtype=object)[d.user]
        if name in w.show_columns:
            return np.asarray(w.show_columns[name], dtype=object)[d.show]
        if name in ("format", "layout"):
            return w.creatives[name].to_numpy(dtype=object)[d.creative]
        raise KeyError(name)

    def conditional(self, d: Draw) -> np.ndarray:
        """Probability of each outcome given its `given` parent happened, shape (outcomes, n)."""
        return _sigmoid(self.logits(d) + self.world.intercepts[:, d.source])

    def probabilities(self, d: Draw) -> np.ndarray:
        """Marginal true probability of each outcome, shape (outcomes, n)."""
        return self._chain(self.conditional(d))

    def _chain(self, p: np.ndarray) -> np.ndarray:
        """Turn conditional probabilities of `given` outcomes into marginal ones."""
        names = self.spec.outcome_names
        out = p.copy()
        for o, name in enumerate(names):
            parent = self.cfg.outcomes[name].given
            chain = []
            while parent is not None:
                chain.append(names.index(parent))
                parent = self.cfg.outcomes[parent].given
            for c in chain:
                out[o] = out[o] * p[c]
        return out

    def set_affinity_stats(self, d: Draw) -> None:
        w, k = self.world, math.sqrt(self.cfg.latent_dim)
        a = np.einsum("ij,ij->i", w.user_taste[d.user], w.show_vec[d.show]) / k
        b = np.einsum("ij,ij->i", w.user_ad_taste[d.user], w.show_ad_vec[d.show]) / k
        w.affinity_stats = (float(a.mean()), float(a.std() or 1.0), float(b.mean()), float(b.std() or 1.0))


def _calibrate(world: World) -> np.ndarray:
    """Solve each (outcome, source) intercept so the mean probability on a sample matches the spec's rate."""
    spec, cfg = world.spec, world.spec.world
    sim = Simulator(world)
    rng = np.random.default_rng([cfg.seed, 3])
    # Every pre-drift day contributes, so weekday effects and the launch calendar average out.
    last = max(1, min(cfg.days, cfg.drift.start_day if cfg.drift.kind != "none" else cfg.days))
    days = np.unique(np.linspace(0, last - 1, num=min(last, 40)).astype(int))
    draws = [sim.draw(int(day), 40_000 // len(days), rng) for day in days]
    d = Draw(
        day=int(days[0]),
        user=np.concatenate([x.user for x in draws]),
        source=np.concatenate([x.source for x in draws]),
        show=np.concatenate([x.show for x in draws]),
        creative=np.concatenate([x.creative for x in draws]),
        values={k: np.concatenate([x.values[k] for x in draws]) for k in draws[0].values},
        episode=np.concatenate([x.episode for x in draws]),
    )
    sim.set_affinity_stats(d)
    z = sim.logits(d)
    names = spec.outcome_names
    intercepts = np.zeros((len(names), len(spec.sources)))
    # Parents first, so a conditional rate can be weighted by the parent's probability.
    done: dict[int, np.ndarray] = {}
    pending = list(range(len(names)))
    while pending:
        for o in list(pending):
            parent = cfg.outcomes[names[o]].given
            if parent is not None and names.index(parent) not in done:
                continue
            marginal = np.zeros(len(d.user))
            for s, sname in enumerate(spec.source_names):
                rows = d.source == s
                rate = cfg.outcomes[names[o]].rate.get(sname)
                if rate is None or not rows.any():
                    continue
                weights = done[names.index(parent)][rows] if parent is not None else np.ones(rows.sum())
                intercepts[o, s] = _solve_intercept(z[o, rows], weights, rate)
                marginal[rows] = _sigmoid(z[o, rows] + intercepts[o, s]) * weights
            done[o] = marginal
            pending.remove(o)
    return intercepts


def _solve_intercept(z: np.ndarray, weights: np.ndarray, rate: float) -> float:
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        mean = np.average(_sigmoid(z + mid), weights=weights) if weights.sum() > 0 else 0.0
        lo, hi = (mid, hi) if mean < rate else (lo, mid)
    return (lo + hi) / 2


# --------------------------------------------------------------------------------------------------- generation
@dataclass
class Summary:
    """What a generated world looks like: counts and rates the README and the CLI report."""

    rows: int = 0
    days: int = 0
    rows_by_source: dict[str, int] = field(default_factory=dict)
    rows_by_source_surface: dict[str, dict[str, int]] = field(default_factory=dict)
    positives: dict[str, dict[str, int]] = field(default_factory=dict)
    observed: dict[str, dict[str, int]] = field(default_factory=dict)
    impressions_by_tier: dict[int, int] = field(default_factory=dict)
    shows_by_tier: dict[int, int] = field(default_factory=dict)
    shows: int = 0
    new_shows: int = 0
    new_shows_impressed: int = 0
    less_streamed_share: float = 0.0

    def positive_rate(self, outcome: str, source: str) -> float | None:
        n = self.observed.get(outcome, {}).get(source, 0)
        return self.positives[outcome][source] / n if n else None

    def to_dict(self) -> dict[str, Any]:
        rates = {o: {s: self.positive_rate(o, s) for s in self.observed[o]} for o in self.observed}
        return {
            "rows": self.rows,
            "days": self.days,
            "rows_by_source": self.rows_by_source,
            "rows_by_source_surface": self.rows_by_source_surface,
            "positives": self.positives,
            "observed": self.observed,
            "positive_rate": rates,
            "impressions_by_tier": {str(k): v for k, v in sorted(self.impressions_by_tier.items())},
            "shows_by_tier": {str(k): v for k, v in sorted(self.shows_by_tier.items())},
            "shows": self.shows,
            "new_shows": self.new_shows,
            "new_shows_impressed": self.new_shows_impressed,
            "less_streamed_share": self.less_streamed_share,
        }


def _organic(world: World, day: int) -> np.ndarray:
    """Organic streams of every show on `day` across the whole platform (not only from impressions)."""
    cfg = world.config
    rng = np.random.default_rng([cfg.seed, 2, day + 10_000])
    age = day - world.show_launch
    ramp = np.clip((age + 1) / 30.0, 0.0, 1.0)  # a new show grows into its audience over a month
    lam = cfg.organic_daily_streams * world.show_popularity * ramp
    return rng.poisson(lam).astype(np.int64)


class _Columns:
    """Builds the Arrow columns of one day's shard from a Draw."""

    def __init__(self, world: World, sim: Simulator) -> None:
        self.world, self.sim, self.spec = world, sim, world.spec
        self.user_lists = {
            k: pa.array(v, type=pa.list_(pa.string())) for k, v in world.user_columns.items() if isinstance(v, list)
        }
        self.show_lists = {
            k: pa.array(v, type=pa.list_(pa.string())) for k, v in world.show_columns.items() if isinstance(v, list)
        }
        cr = world.creatives
        self.cr_id = cr["creative_id"].to_numpy(dtype=object)
        self.cr_campaign = cr["campaign_id"].to_numpy(dtype=object)
        self.cr_cpm = cr["cpm"].to_numpy()
        start = np.datetime64(world.config.start_date, "D")
        self.launch_date = start + world.show_launch.astype("timedelta64[D]")

    def table(
        self,
        d: Draw,
        tiers: np.ndarray,
        trailing: np.ndarray,
        cond: np.ndarray,
        truth: np.ndarray,
        rng: np.random.Generator,
    ) -> pa.Table:
        w, spec, n = self.world, self.spec, len(d.user)
        day_date = w.config.start_date + timedelta(days=d.day)
        names = spec.outcome_names
        hour = d.values.get("hour", rng.integers(0, 24, size=n))
        seconds = hour.astype(np.int64) * 3600 + rng.integers(0, 3600, size=n)
        ts = np.datetime64(day_date, "s") + seconds.astype("timedelta64[s]")
        order = np.argsort(seconds, kind="stable")  # rows in time order within the day
        source_names = np.array(spec.source_names, dtype=object)[d.source]
        cols: dict[str, pa.Array] = {
            "impression_id": pa.array([f"{day_date:%Y%m%d}-{i:07d}" for i in range(n)]),
            "timestamp": pa.array(ts.astype("datetime64[us]"), type=pa.timestamp("us", tz="UTC")),
            "date": pa.array(np.full(n, day_date.isoformat(), dtype=object), type=pa.string()),
            "source": pa.array(source_names, type=pa.string()),
            "cost": pa.array(np.where(source_names == self.sim.ad, self.cr_cpm[d.creative] / 1000.0, 0.0)),
            "show_launch_date": pa.array(self.launch_date[d.show], type=pa.date32()),
            "popularity_tier": pa.array(tiers[d.show], type=pa.int8()),
            "less_streamed": pa.array(trailing[d.show] < spec.popularity.less_streamed_below),
        }
        for f in spec.feature_list:
            cols[f.name] = self._feature(f.name, f.definition, d, trailing, rng)
        # outcomes: drawn parents first; a `given` outcome can only happen if its parent did
        drawn: dict[str, np.ndarray] = {}
        pending = list(names)
        while pending:
            for name in list(pending):
                parent = w.config.outcomes[name].given
                if parent is not None and parent not in drawn:
                    continue
                y = rng.random(n) < cond[names.index(name)]
                if parent is not None:
                    y &= drawn[parent]
                drawn[name] = y
                pending.remove(name)
        for name in names:
            observed = np.array([name in spec.sources[s].observes for s in spec.source_names])[d.source]
            values = np.where(observed, drawn[name].astype(np.float32), np.float32(np.nan))
            cols[name] = pa.array(values, type=pa.float32(), from_pandas=True)
        for o, name in enumerate(names):
            cols["true_" + name] = pa.array(truth[o].astype(np.float32))
        table = pa.table(cols)
        table = table.take(pa.array(order))
        # ids follow time order so that sorting by id sorts by time
        return table.set_column(0, "impression_id", pa.array([f"{day_date:%Y%m%d}-{i:07d}" for i in range(n)]))

    def _feature(self, name: str, definition: Any, d: Draw, trailing: np.ndarray, rng: np.random.Generator) -> pa.Array:
        w = self.world
        if name in self.user_lists:
            return self.user_lists[name].take(pa.array(d.user))
        if name in self.show_lists:
            return self.show_lists[name].take(pa.array(d.show))
        if name in w.user_columns:
            return _typed(np.asarray(w.user_columns[name])[d.user], definition)
        if name in w.show_columns:
            return _typed(np.asarray(w.show_columns[name])[d.show], definition)
        if name == "episode_id":
            return pa.array([f"{w.show_ids[s]}-e{e:04d}" for s, e in zip(d.show, d.episode, strict=True)])
        if name == "show_age_days":
            return _typed(np.maximum(d.day - w.show_launch[d.show], 0), definition)
        if name == "episode_duration_min":
            # a fixed duration per episode: the show's typical length times a per-episode factor
            u = ((d.show * 7919 + d.episode * 104729) % 1000) / 1000.0
            return _typed(np.clip(w.show_duration[d.show] * np.exp((u - 0.5) * 0.7), 1, 300), definition)
        if name == "show_streams_30d":
            return _typed(trailing[d.show], definition)
        if name == "creative_id":
            return pa.array(self.cr_id[d.creative], type=pa.string())
        if name == "campaign_id":
            return pa.array(self.cr_campaign[d.creative], type=pa.string())
        if name in ("format", "layout"):
            return _typed(w.creatives[name].to_numpy(dtype=object)[d.creative], definition)
        if name in d.values:
            return _typed(d.values[name], definition)
        # a creative feature the world has no rule for
        values = _noise_column(rng, definition, len(d.user))
        return _typed(values, definition)


def _typed(values: Any, definition: Any) -> pa.Array:
    if isinstance(definition, CategoricalFeature):
        if definition.dtype == "int64":
            return pa.array(np.asarray(values).astype(np.int64), type=pa.int64())
        return pa.array(np.asarray(values, dtype=object).astype(str), type=pa.string())
    if isinstance(definition, NumericFeature):
        return pa.array(np.asarray(values, dtype=np.float32), type=pa.float32())
    if isinstance(definition, IdFeature):
        return pa.array(np.asarray(values, dtype=object).astype(str), type=pa.string())
    return pa.array(list(values), type=pa.list_(pa.string()))


def generate(spec: Spec, out: str | Path, *, overwrite: bool = False, progress: ProgressFn | None = None) -> Summary:
    """Generate the world's impressions into `out`, one Parquet shard per day, and return its summary.

    Memory stays flat in the number of impressions: only one day is held at a time. The folder appears under
    its final name only when every shard, entity table and the manifest are written.
    """
    cfg = spec.world
    world = build_world(spec)
    sim = Simulator(world)
    columns = _Columns(world, sim)
    window = spec.popularity.window_days
    S = cfg.shows
    daily = np.zeros((S, window + cfg.days), dtype=np.int64)  # streams per show and day, warm-up first
    for d in range(-window, 0):
        daily[:, d + window] = _organic(world, d)
    summary = Summary(days=cfg.days, shows=S)
    names = spec.outcome_names
    for o in names:
        summary.positives[o] = {s: 0 for s in spec.source_names if o in spec.sources[s].observes}
        summary.observed[o] = {s: 0 for s in spec.source_names if o in spec.sources[s].observes}
    impressed = np.zeros(S, dtype=bool)
    less_streamed = 0
    shards: dict[str, int] = {}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / IMPRESSIONS).mkdir()
        for day in range(cfg.days):
            rng = np.random.default_rng([cfg.seed, 1, day])
            draw = sim.draw(day, sim.day_count(day), rng)
            # the trailing window ends the day before: an impression's tier never sees its own day or later
            trailing = daily[:, day : day + window].sum(axis=1)
            tiers = assign_tiers(trailing, spec.popularity.tier_edges)
            cond = sim.conditional(draw)
            truth = sim._chain(cond)
            table = columns.table(draw, tiers, trailing, cond, truth, rng)
            day_date = (cfg.start_date + timedelta(days=day)).isoformat()
            write_parquet(table, tmp / IMPRESSIONS / f"{day_date}.parquet")
            shards[day_date] = table.num_rows
            # today's streams (organic plus those the impressions caused) count from tomorrow on
            streams = (
                np.nan_to_num(table.column("stream").to_numpy(zero_copy_only=False))
                if "stream" in names
                else np.zeros(table.num_rows)
            )
            shows_today = (
                np.searchsorted(world.show_ids, table.column("show_id").to_numpy(zero_copy_only=False))
                if "show_id" in spec.feature_names
                else draw.show
            )
            daily[:, day + window] = _organic(world, day) + np.bincount(
                shows_today, weights=streams, minlength=S
            ).astype(np.int64)
            _accumulate(summary, table, spec)
            impressed[draw.show] = True
            less_streamed += int(np.sum(table.column("less_streamed").to_numpy(zero_copy_only=False)))
            if progress is not None:
                progress(day + 1, cfg.days)
        final = assign_tiers(daily[:, cfg.days : cfg.days + window].sum(axis=1), spec.popularity.tier_edges)
        launched = world.show_launch < cfg.days
        summary.shows_by_tier = {
            int(t): int(c) for t, c in zip(*np.unique(final[launched], return_counts=True), strict=True)
        }
        new = (world.show_launch >= 0) & launched
        summary.new_shows = int(new.sum())
        summary.new_shows_impressed = int((new & impressed).sum())
        summary.less_streamed_share = less_streamed / max(summary.rows, 1)
        _write_entities(tmp, world, daily, window)
        (tmp / SPEC_FILE).write_text(spec.to_yaml())
        write_json(
            {
                "kind": "coldcast.synthetic",
                "generator_version": GENERATOR_VERSION,
                "spec_fingerprint": spec.fingerprint(),
                "seed": cfg.seed,
                "start_date": cfg.start_date.isoformat(),
                "days": cfg.days,
                "rows": summary.rows,
                "shards": shards,
                "summary": summary.to_dict(),
            },
            tmp / MANIFEST,
        )
    return summary


def _accumulate(summary: Summary, table: pa.Table, spec: Spec) -> None:
    summary.rows += table.num_rows
    df = table.select(
        [c for c in ["source", "surface", "popularity_tier", *spec.outcome_names] if c in table.column_names]
    ).to_pandas()
    for source, n in df["source"].value_counts().items():
        summary.rows_by_source[str(source)] = summary.rows_by_source.get(str(source), 0) + int(n)
    if "surface" in df:
        for (source, surface), n in df.groupby(["source", "surface"]).size().items():
            per = summary.rows_by_source_surface.setdefault(str(source), {})
            per[str(surface)] = per.get(str(surface), 0) + int(n)
    for tier, n in df["popularity_tier"].value_counts().items():
        summary.impressions_by_tier[int(tier)] = summary.impressions_by_tier.get(int(tier), 0) + int(n)
    for o in spec.outcome_names:
        for source, values in df.groupby("source")[o]:
            if str(source) in summary.observed[o]:
                summary.observed[o][str(source)] += int(values.notna().sum())
                summary.positives[o][str(source)] += int(values.fillna(0).sum())


def _write_entities(root: Path, world: World, daily: np.ndarray, window: int) -> None:
    ent = root / "entities"
    start = world.config.start_date
    users = {k: v for k, v in world.user_columns.items()}
    write_parquet(pd.DataFrame(users), ent / "users.parquet")
    shows = {k: v for k, v in world.show_columns.items()}
    shows["launch_date"] = [start + timedelta(days=int(x)) for x in world.show_launch]
    write_parquet(pd.DataFrame(shows), ent / "shows.parquet")
    cr = world.creatives.copy()
    cr["show_id"] = world.show_ids[cr.pop("show").to_numpy()]
    write_parquet(cr, ent / "creatives.parquet")
    camp = world.campaigns.copy()
    camp["show_id"] = world.show_ids[camp.pop("show").to_numpy()]
    camp["start_date"] = [start + timedelta(days=int(x)) for x in camp.pop("start")]
    camp["end_date"] = [start + timedelta(days=int(x)) for x in camp.pop("end")]
    write_parquet(camp, ent / "campaigns.parquet")
    s_idx, d_idx = np.nonzero(daily)
    write_parquet(
        pd.DataFrame(
            {
                "show_id": world.show_ids[s_idx],
                "date": [start + timedelta(days=int(d) - window) for d in d_idx],
                "streams": daily[s_idx, d_idx],
            }
        ),
        ent / "show_daily_streams.parquet",
    )


def date_of(spec: Spec, day: int) -> date:
    return spec.world.start_date + timedelta(days=day)
