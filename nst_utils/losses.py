"""Loss terms (content, Gram/style, total variation) and the Objective that weighs them."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from .model import FeatureExtractor

IMAGE_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32)


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """Return the (batch, C, C) Gram matrices of (batch, H, W, C) features, divided by H*W."""
    features = tf.convert_to_tensor(features, tf.float32)
    shape = tf.shape(features)
    positions = tf.cast(shape[1] * shape[2], tf.float32)
    return tf.einsum("bhwc,bhwd->bcd", features, features) / positions


def content_loss(features: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Return the per-image mean squared error between feature maps, shape (batch,)."""
    return tf.reduce_mean(tf.square(features - target), axis=[1, 2, 3])


def style_loss(gram: tf.Tensor, target_gram: tf.Tensor) -> tf.Tensor:
    """Return the per-image mean squared distance between Gram matrices, shape (batch,)."""
    return tf.reduce_mean(tf.square(gram - target_gram), axis=[1, 2])


def total_variation(image: tf.Tensor) -> tf.Tensor:
    """Return the per-image total variation (sum of absolute neighbour differences), shape (batch,)."""
    return tf.image.total_variation(tf.convert_to_tensor(image, tf.float32))


def _var(value) -> tf.Variable:
    """Return a non-trainable variable whose shape may change later without retracing."""
    return tf.Variable(tf.convert_to_tensor(value, tf.float32), trainable=False, shape=tf.TensorShape(None))


class Objective:
    """alpha * content + beta * style + tv * total variation, with weights and targets held in tf.Variables."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        content_layers: Sequence[str],
        style_layers: Sequence[str],
        *,
        alpha: float = 1e4,
        beta: float = 1e-2,
        tv: float = 30.0,
        style_layer_weights: Sequence[float] | None = None,
    ):
        self.extractor = extractor
        self.content_layers = tuple(content_layers)
        self.style_layers = tuple(style_layers)
        missing = set(self.content_layers + self.style_layers) - set(extractor.layers)
        if missing:
            raise ValueError(f"extractor lacks layers {sorted(missing)}")
        n = len(self.style_layers)
        w = style_layer_weights or [1.0 / n] * n
        self.alpha, self.beta, self.tv = _var(alpha), _var(beta), _var(tv)
        self.style_layer_weights = _var(w)
        self.content_targets = {n: None for n in self.content_layers}
        self.style_targets = {n: None for n in self.style_layers}
        self.loss_terms = tf.function(self._loss_terms, input_signature=[IMAGE_SPEC])
        self.value_and_grad = tf.function(self._value_and_grad, input_signature=[IMAGE_SPEC])

    def set_weights(self, alpha: float | None = None, beta: float | None = None, tv: float | None = None,
                    style_layer_weights: Sequence[float] | None = None) -> None:
        """Change loss weights in place (scalars, or one value per batch image; style_layer_weights
        (n_layers,) or (batch, n_layers)); never retraces."""
        for var, value in ((self.alpha, alpha), (self.beta, beta), (self.tv, tv),
                           (self.style_layer_weights, style_layer_weights)):
            if value is not None:
                var.assign(tf.convert_to_tensor(value, tf.float32))

    def set_content(self, image) -> None:
        """Compute and store the content targets from an RGB image batch in [0, 1]."""
        feats = self.extractor(image)
        for n in self.content_layers:
            if self.content_targets[n] is None:
                self.content_targets[n] = _var(feats[n])
            else:
                self.content_targets[n].assign(feats[n])

    def set_style(self, images: Sequence, blend: Sequence[float] | None = None) -> None:
        """Compute and store target Grams: the blend-weighted mean over one or more style images."""
        images = list(images)
        blend = list(blend) if blend is not None else [1.0] * len(images)
        total = float(sum(blend))
        grams = {n: 0.0 for n in self.style_layers}
        for img, b in zip(images, blend):
            feats = self.extractor(img)
            for n in self.style_layers:
                grams[n] = grams[n] + (b / total) * gram_matrix(feats[n])
        for n in self.style_layers:
            if self.style_targets[n] is None:
                self.style_targets[n] = _var(grams[n])
            else:
                self.style_targets[n].assign(grams[n])

    def _loss_terms(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        """Return the weighted terms {content, style, tv, total}, each of shape (batch,)."""
        feats = self.extractor(image)
        content = tf.add_n([content_loss(feats[n], self.content_targets[n]) for n in self.content_layers])
        content = content / len(self.content_layers)
        w = self.style_layer_weights  # (n_layers,) shared, or (batch, n_layers): one weight vector per image
        style = tf.add_n([w[..., i] * style_loss(gram_matrix(feats[n]), self.style_targets[n])
                          for i, n in enumerate(self.style_layers)])
        terms = {"content": self.alpha * content, "style": self.beta * style, "tv": self.tv * total_variation(image)}
        terms["total"] = terms["content"] + terms["style"] + terms["tv"]
        return terms

    def _value_and_grad(self, image: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """Return (terms, gradient of the summed total with respect to the image)."""
        with tf.GradientTape() as tape:
            tape.watch(image)
            terms = self._loss_terms(image)
            total = tf.reduce_sum(terms["total"])
        return terms, tape.gradient(total, image)

    def tracing_count(self) -> int:
        """Return how many times the loss functions were traced (should stay at one each)."""
        return self.loss_terms.experimental_get_tracing_count() + self.value_and_grad.experimental_get_tracing_count()
