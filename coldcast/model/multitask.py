"""The multi-task model: feature encoders, a shared encoder, one TFRS ranking task per objective, masked loss."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from coldcast.core.spec import Spec
from coldcast.model.layers import ENCODERS, FeatureEncoder, Tower


def model_features(spec: Spec) -> list:
    """The spec's features minus any group the model is told to leave out (feature-group ablations)."""
    return [f for f in spec.feature_list if f.group not in spec.model.exclude_groups]


class MultiTaskModel(tfrs.models.Model):
    """features -> shared encoder -> one tower per task; `compute_loss` is the masked, per-task-normalised sum."""

    def __init__(self, spec: Spec, stats: dict[str, tuple[float, float]] | None = None) -> None:
        super().__init__(name="coldcast")
        self.spec = spec
        self.task_names = spec.task_names
        self.features = FeatureEncoder(model_features(spec), spec.model, stats or {})
        self.encoder = ENCODERS[spec.model.encoder](spec.model, self.task_names)
        self.towers = {t: Tower(t, spec.model) for t in self.task_names}
        # Loss with SUM reduction: compute_loss divides by the weight of the rows that carry the task's label,
        # not by the batch size (the default TFRS reduction).
        self.ranking = {
            t: tfrs.tasks.Ranking(
                loss=keras.losses.BinaryCrossentropy(reduction=keras.losses.Reduction.SUM),
                metrics=[
                    keras.metrics.AUC(name=f"{t}_auc"),
                    keras.metrics.AUC(curve="PR", name=f"{t}_ap"),
                ],
                name=f"task_{t}",
            )
            for t in self.task_names
        }
        self.task_weights = {t: float(spec.tasks[t].weight) for t in self.task_names}
        self.uncertainty = spec.training.loss_weighting == "uncertainty"
        if self.uncertainty:
            # Kendall et al.: learn a log-variance per task; total = sum exp(-s) L + s
            self.log_vars = {
                t: self.add_weight(name=f"log_var_{t}", shape=(), initializer="zeros") for t in self.task_names
            }

    def get_config(self) -> dict:
        # The model is rebuilt from the spec stored beside it, never from a Keras config.
        return {"spec_fingerprint": self.spec.fingerprint()}

    def call(self, features: dict[str, tf.Tensor], training: bool | None = None) -> dict[str, tf.Tensor]:
        z = self.encoder(self.features(features), training=training)
        return {t: self.towers[t](z[t], training=training) for t in self.task_names}

    def task_losses(
        self, inputs: tuple[dict, dict, dict], training: bool = False, compute_metrics: bool = True
    ) -> dict[str, tf.Tensor]:
        """Per task: sum of weighted BCE over the batch / sum of the weights (the rows that carry its label)."""
        features, labels, weights = inputs
        predictions = self(features, training=training)
        out = {}
        for t in self.task_names:
            w = tf.cast(weights[t], tf.float32)
            total = self.ranking[t](
                labels=tf.cast(labels[t], tf.float32)[:, None],
                predictions=predictions[t][:, None],
                sample_weight=w[:, None],
                training=training,
                compute_metrics=compute_metrics,
            )
            out[t] = tf.math.divide_no_nan(total, tf.reduce_sum(w))
        return out

    def compute_loss(self, inputs: tuple[dict, dict, dict], training: bool = False) -> tf.Tensor:
        losses = self.task_losses(inputs, training=training, compute_metrics=not training)
        total = tf.constant(0.0)
        for t, loss in losses.items():
            if self.uncertainty:
                total += tf.exp(-self.log_vars[t]) * loss + self.log_vars[t]
            else:
                total += self.task_weights[t] * loss
        # TFRS's train_step does not scale for distribution: gradients are summed across replicas, so each
        # replica contributes its share of the mean.
        return total / tf.distribute.get_strategy().num_replicas_in_sync
