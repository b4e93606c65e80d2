"""Model layers: feature encoders per group, the shared encoder (shared-bottom, MMoE, PLE) and task towers."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

from coldcast.core.spec import GROUPS as GROUP_ORDER
from coldcast.core.spec import CategoricalFeature, Feature, IdFeature, ModelConfig, MultiFeature, NumericFeature


def mlp(units: list[int], *, batch_norm: bool, dropout: float, name: str) -> keras.Sequential:
    """Dense -> (batch norm) -> ReLU -> (dropout), per layer."""
    layers: list[keras.layers.Layer] = []
    for i, u in enumerate(units):
        layers.append(keras.layers.Dense(u, use_bias=not batch_norm, name=f"{name}_dense_{i}"))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization(name=f"{name}_bn_{i}"))
        layers.append(keras.layers.ReLU(name=f"{name}_relu_{i}"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout, name=f"{name}_dropout_{i}"))
    return keras.Sequential(layers, name=name)


# --------------------------------------------------------------------------------------------------- features
class FeatureInput(keras.layers.Layer):
    """One feature: raw values -> a vector. Unknown ids and categories map to an out-of-vocabulary bucket."""

    def __init__(self, feature: Feature, default_dim: int, stats: tuple[float, float] | None = None) -> None:
        super().__init__(name=f"feature_{feature.name}")
        self.feature = feature
        d = feature.definition
        dim = d.embedding_dim or default_dim
        self.kind = d.kind
        if isinstance(d, IdFeature):
            self.lookup = keras.layers.Hashing(num_bins=d.hash_buckets, name="hash")
            self.embedding = keras.layers.Embedding(d.hash_buckets, dim, name="embedding")
        elif isinstance(d, CategoricalFeature):
            if d.dtype == "int64":
                self.lookup = keras.layers.IntegerLookup(vocabulary=list(d.values), num_oov_indices=1, name="lookup")
            else:
                self.lookup = keras.layers.StringLookup(vocabulary=list(d.values), num_oov_indices=1, name="lookup")
            self.embedding = keras.layers.Embedding(self.lookup.vocabulary_size(), dim, name="embedding")
        elif isinstance(d, MultiFeature):
            if d.values is not None:
                # index 0 is the padding '' (masked out of the pooling), 1 the out-of-vocabulary bucket
                self.lookup = keras.layers.StringLookup(
                    vocabulary=list(d.values), mask_token="", num_oov_indices=1, name="lookup"
                )
                size = self.lookup.vocabulary_size()
            else:
                self.lookup = keras.layers.Hashing(num_bins=d.hash_buckets, name="hash")
                size = d.hash_buckets + 1
            self.embedding = keras.layers.Embedding(size, dim, name="embedding")
            self.max_length = d.max_length
        else:
            assert isinstance(d, NumericFeature)
            mean, std = stats or (0.0, 1.0)
            self.mean, self.std, self.log = float(mean), float(std) or 1.0, d.log
        self.output_dim = 1 if isinstance(d, NumericFeature) else dim

    def call(self, x: tf.Tensor) -> tf.Tensor:
        if self.kind == "numeric":
            x = tf.cast(x, tf.float32)
            if self.log:
                x = tf.math.log1p(tf.maximum(x, 0.0))
            z = (x - self.mean) / self.std
            # missing values sit at the mean; extreme values are clipped rather than blowing up activations
            z = tf.where(tf.math.is_nan(z), tf.zeros_like(z), tf.clip_by_value(z, -5.0, 5.0))
            return z[:, None]
        if self.kind == "multi":
            x = x[:, : self.max_length]
            if isinstance(self.lookup, keras.layers.Hashing):
                ids = tf.where(x == "", tf.zeros_like(x, tf.int64), tf.cast(self.lookup(x), tf.int64) + 1)
            else:
                ids = tf.cast(self.lookup(x), tf.int64)
            present = tf.cast(ids > 0, tf.float32)[:, :, None]
            vectors = self.embedding(ids) * present
            return tf.math.divide_no_nan(tf.reduce_sum(vectors, axis=1), tf.reduce_sum(present, axis=1))
        return self.embedding(self.lookup(x))


class FeatureEncoder(keras.layers.Layer):
    """All features of the spec's groups, concatenated group by group into one input vector."""

    def __init__(self, features: list[Feature], config: ModelConfig, stats: dict[str, tuple[float, float]]) -> None:
        super().__init__(name="features")
        self.feature_inputs = {f.name: FeatureInput(f, config.embedding_dim, stats.get(f.name)) for f in features}
        # group by group, in spec order; a tuple so Keras does not track it as mutable state
        self.order = tuple(f.name for f in sorted(features, key=lambda f: GROUP_ORDER.index(f.group)))

    def call(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.concat([self.feature_inputs[name](features[name]) for name in self.order], axis=1)


# --------------------------------------------------------------------------------------------------- encoders
class SharedBottom(keras.layers.Layer):
    """The paper's production encoder: one MLP with batch normalisation whose output every tower reads."""

    def __init__(self, config: ModelConfig, tasks: list[str]) -> None:
        super().__init__(name="shared_bottom")
        self.tasks = tasks
        self.net = mlp(config.shared_layers, batch_norm=config.batch_norm, dropout=config.dropout, name="bottom")

    def call(self, x: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        z = self.net(x, training=training)
        return {t: z for t in self.tasks}


class MMoE(keras.layers.Layer):
    """Multi-gate mixture of experts: shared experts, one softmax gate per task."""

    def __init__(self, config: ModelConfig, tasks: list[str]) -> None:
        super().__init__(name="mmoe")
        self.tasks = tasks
        self.experts = [
            mlp(config.expert_layers, batch_norm=config.batch_norm, dropout=config.dropout, name=f"expert_{i}")
            for i in range(config.experts)
        ]
        self.gates = {t: keras.layers.Dense(config.experts, activation="softmax", name=f"gate_{t}") for t in tasks}

    def call(self, x: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        experts = tf.stack([e(x, training=training) for e in self.experts], axis=1)  # [B, E, D]
        return {t: tf.einsum("be,bed->bd", self.gates[t](x), experts) for t in self.tasks}


class PLE(keras.layers.Layer):
    """Progressive layered extraction: per level, task-specific and shared experts with per-task gates."""

    def __init__(self, config: ModelConfig, tasks: list[str], levels: int = 2) -> None:
        super().__init__(name="ple")
        self.tasks, self.levels = tasks, levels
        n = max(1, config.experts // 2)

        def experts(prefix: str) -> list[keras.Sequential]:
            return [
                mlp(config.expert_layers, batch_norm=config.batch_norm, dropout=config.dropout, name=f"{prefix}_{i}")
                for i in range(n)
            ]

        self.task_experts = [{t: experts(f"l{level}_{t}") for t in tasks} for level in range(levels)]
        self.shared_experts = [experts(f"l{level}_shared") for level in range(levels)]
        self.task_gates = [
            {t: keras.layers.Dense(2 * n, activation="softmax", name=f"l{level}_gate_{t}") for t in tasks}
            for level in range(levels)
        ]
        self.shared_gates = [
            keras.layers.Dense(n * (len(tasks) + 1), activation="softmax", name=f"l{level}_gate_shared")
            for level in range(levels - 1)
        ]

    def call(self, x: tf.Tensor, training: bool | None = None) -> dict[str, tf.Tensor]:
        task_in = {t: x for t in self.tasks}
        shared_in = x
        for level in range(self.levels):
            shared = [e(shared_in, training=training) for e in self.shared_experts[level]]
            own = {t: [e(task_in[t], training=training) for e in self.task_experts[level][t]] for t in self.tasks}
            out = {}
            for t in self.tasks:
                stacked = tf.stack(own[t] + shared, axis=1)
                out[t] = tf.einsum("be,bed->bd", self.task_gates[level][t](task_in[t]), stacked)
            if level < self.levels - 1:
                everything = tf.stack([v for t in self.tasks for v in own[t]] + shared, axis=1)
                shared_in = tf.einsum("be,bed->bd", self.shared_gates[level](shared_in), everything)
            task_in = out
        return task_in


ENCODERS: dict[str, Any] = {"shared_bottom": SharedBottom, "mmoe": MMoE, "ple": PLE}


class Tower(keras.layers.Layer):
    """One task's head: an MLP and a sigmoid."""

    def __init__(self, task: str, config: ModelConfig) -> None:
        super().__init__(name=f"tower_{task}")
        self.net = mlp(config.tower_layers, batch_norm=False, dropout=config.dropout, name=f"tower_{task}_mlp")
        self.out = keras.layers.Dense(1, activation="sigmoid", name="probability")

    def call(self, z: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return tf.squeeze(self.out(self.net(z, training=training)), axis=1)
