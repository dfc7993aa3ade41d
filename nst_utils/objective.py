"""The objective: the loss terms, the style statistics, the Objective that weighs them (plain or mask-guided), and
the one builder every run uses (`stylize`, sweeps and their split over devices, the sliders, coarse-to-fine).

The style term compares a *statistic* of each style layer's features with the style image's: Gatys et al.'s Gram
matrix by default (`Gram`), or the squared 2-Wasserstein distance between the features seen as Gaussians
(`GaussianW2`, as crowsonkb/style-transfer-pytorch). A new statistic is one class here plus its name in
`config.STYLE_STATISTICS`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from .config import NSTError, StyleConfig, layer_shapes
from .images import resize
from .model import FeatureExtractor, get_extractor

IMAGE_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32)


# --- the loss terms ----------------------------------------------------------------------------------------------


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


def temporal_loss(image: tf.Tensor, warped: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Return Ruder et al.'s short-term temporal loss per image, shape (batch,): (1/D) sum_k c_k (x_k - w_k)^2 over
    the D = H*W*C values, `warped` the previous stylised frame warped into this one and `weights` c per pixel
    ((..., H, W, 1), broadcast over the channels; 0 at disocclusions and motion boundaries).

    Ruder, Dosovitskiy & Brox (2016, arXiv 1604.08610), section 3.2. Scalars broadcast: warped = weights = 0 is no term.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    return tf.reduce_mean(weights * tf.square(image - warped), axis=[1, 2, 3])


# --- style statistics ----------------------------------------------------------------------------------------------


def total_weight(weights: tf.Tensor) -> tf.Tensor:
    """Return each (R, H, W) position weighting's total weight, shape (R,)."""
    return tf.reduce_sum(weights, axis=[1, 2]) + 1e-8


class Gram:
    """Gatys et al.'s statistic: the Gram matrix of the features, compared by mean squared distance."""

    def describe(self, features: tf.Tensor, weights: tf.Tensor | None = None):
        """Return the (batch, C, C) Gram matrices; with (R, H, W) position weights, (batch, R, C, C) weighted ones.

        Whatever `describe` returns (a tensor or a tuple of them) must average linearly over style images (blend).
        """
        if weights is None:
            return gram_matrix(features)
        return (
            tf.einsum("bhwc,rhw,bhwd->brcd", features, weights, features) / total_weight(weights)[None, :, None, None]
        )

    def target(self, stats):
        """Return what `distance` compares with, computed once from the style images' `describe` (here: itself)."""
        return stats

    def distance(self, stats, target) -> tf.Tensor:
        """Return the per-image distance of `describe`'s output from a `target`, shape (batch,)."""
        return style_loss(stats, target)


def _sqrtm(matrix: tf.Tensor) -> tf.Tensor:
    """Return the symmetric square root of symmetric positive semi-definite matrices (eigenvalues clipped at 0)."""
    vals, vecs = tf.linalg.eigh(matrix)
    return tf.einsum("...ij,...j,...kj->...ik", vecs, tf.sqrt(tf.maximum(vals, 0.0)), vecs)


class GaussianW2(Gram):
    """The features as a Gaussian (mean, covariance), compared by the squared 2-Wasserstein distance (crowsonkb).

    W2^2 = |m - m_t|^2 + tr(S) + tr(S_t) - 2 tr((S_t^1/2 S S_t^1/2)^1/2): it matches the channel means and
    covariances; its values scale as the features squared (the Gram's as their fourth power), so it needs its own
    beta.
    """

    EPS = 1e-8  # eigenvalues below this count as 0 in the trace of the root (its gradient stays finite)

    def describe(self, features: tf.Tensor, weights: tf.Tensor | None = None):
        """Return (mean, second raw moment), (batch, C) and (batch, C, C); (batch, R, ...) with position weights."""
        features = tf.convert_to_tensor(features, tf.float32)
        if weights is None:
            return tf.reduce_mean(features, axis=[1, 2]), gram_matrix(features)
        mean = tf.einsum("bhwc,rhw->brc", features, weights) / total_weight(weights)[None, :, None]
        return mean, super().describe(features, weights)

    def target(self, stats):
        """Return (mean, covariance, covariance square root) of the style features."""
        mean, raw = stats
        cov = raw - mean[..., :, None] * mean[..., None, :]
        return mean, cov, _sqrtm(cov)

    def distance(self, stats, target) -> tf.Tensor:
        """Return the per-image squared 2-Wasserstein distance between the two Gaussians, shape (batch,)."""
        mean, raw = stats
        t_mean, t_cov, t_root = target
        cov = raw - mean[..., :, None] * mean[..., None, :]
        inner = t_root @ cov @ t_root
        eig = tf.linalg.eigvalsh(0.5 * (inner + tf.linalg.matrix_transpose(inner)))
        root_trace = tf.reduce_sum(tf.sqrt(tf.maximum(eig, self.EPS)), -1)
        covariance = tf.linalg.trace(cov) + tf.linalg.trace(t_cov) - 2.0 * root_trace
        return tf.reduce_sum(tf.square(mean - t_mean), -1) + covariance


STATISTICS = {"gram": Gram(), "wasserstein": GaussianW2()}  # config.STYLE_STATISTICS names these


# --- the Objective -------------------------------------------------------------------------------------------------


def _var(value) -> tf.Variable:
    """Return a non-trainable variable whose shape may change later without retracing."""
    return tf.Variable(tf.convert_to_tensor(value, tf.float32), trainable=False, shape=tf.TensorShape(None))


def _store(targets: dict, name: str, value) -> None:
    """Put `value` (a tensor or a tuple of them) into `targets[name]`: new variables, or assigned in place."""
    if targets[name] is None:
        targets[name] = tf.nest.map_structure(_var, value)
    else:
        tf.nest.map_structure(lambda var, v: var.assign(v), targets[name], value)


class Objective:
    """alpha * content + beta * style + tv * total variation + temporal * temporal loss (video; 0 unless
    set_temporal gives it a target), with weights and targets held in tf.Variables."""

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
        statistic: str = "gram",
    ):
        self.extractor = extractor
        self.content_layers = tuple(content_layers)
        self.style_layers = tuple(style_layers)
        missing = set(self.content_layers + self.style_layers) - set(extractor.layers)
        if missing:
            raise ValueError(f"extractor lacks layers {sorted(missing)}")
        if statistic not in STATISTICS:
            raise NSTError(f"unknown style statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
        self.statistic = STATISTICS[statistic]
        n = len(self.style_layers)
        w = style_layer_weights or [1.0 / n] * n
        self.alpha, self.beta, self.tv = _var(alpha), _var(beta), _var(tv)
        self.temporal, self.temporal_target, self.temporal_weights = _var(0.0), _var(0.0), _var(0.0)
        self.style_layer_weights = _var(w)
        self.content_targets = {n: None for n in self.content_layers}
        self.style_targets = {n: None for n in self.style_layers}
        self.loss_terms = tf.function(self._loss_terms, input_signature=[IMAGE_SPEC], autograph=False)
        self.value_and_grad = tf.function(self._value_and_grad, input_signature=[IMAGE_SPEC], autograph=False)

    def set_weights(
        self,
        alpha: float | None = None,
        beta: float | None = None,
        tv: float | None = None,
        style_layer_weights: Sequence[float] | None = None,
        temporal: float | None = None,
    ) -> None:
        """Change loss weights in place (scalars, or one value per batch image; style_layer_weights
        (n_layers,) or (batch, n_layers)); never retraces."""
        for var, value in (
            (self.alpha, alpha),
            (self.beta, beta),
            (self.tv, tv),
            (self.style_layer_weights, style_layer_weights),
            (self.temporal, temporal),
        ):
            if value is not None:
                var.assign(tf.convert_to_tensor(value, tf.float32))

    def aim(self, config: StyleConfig, content: np.ndarray, styles: Sequence[np.ndarray], blend=None) -> None:
        """Take `config`'s weights and these images' targets, in place, with no temporal term (images of any size;
        never retraces)."""
        self.set_weights(config.alpha, config.beta, config.tv, config.layer_weights())
        self.set_content(content[None])
        self.set_style([s[None] for s in styles], blend)
        self.clear_temporal()

    def set_temporal(self, warped: np.ndarray, weights: np.ndarray, temporal: float | None = None) -> None:
        """Aim the temporal term at `warped` (HxWx3, the previous stylised frame warped into this one, in the space
        the image is optimised in) with per-pixel `weights` (HxW, Ruder's c), and set its weight if given; in place,
        never retraces."""
        warped = np.asarray(warped, np.float32)
        weights = np.asarray(weights, np.float32)
        if warped.ndim != 3 or weights.shape != warped.shape[:2]:
            raise NSTError(f"the temporal target must be HxWx3 with HxW weights: {warped.shape}, {weights.shape}")
        self.temporal_target.assign(warped[None])
        self.temporal_weights.assign(weights[None, :, :, None])
        if temporal is not None:
            self.temporal.assign(float(temporal))

    def clear_temporal(self) -> None:
        """Remove the temporal term: weight 0 and no target (an image of any size then costs nothing more)."""
        for var in (self.temporal, self.temporal_target, self.temporal_weights):
            var.assign(tf.zeros([]))

    def temporal_term(self, image: tf.Tensor) -> tf.Tensor:
        """Return the weighted temporal term, shape (batch,): temporal * temporal_loss against the stored target."""
        return self.temporal * temporal_loss(image, self.temporal_target, self.temporal_weights)

    def serves(self, config: StyleConfig, weights: str | os.PathLike | None = None) -> bool:
        """Return True if this objective computes `config`'s once aimed: the same network, layers and statistic (what
        its traced graph holds; the weights and targets are variables). A guided objective (it holds its mask) serves
        none."""
        layers = config.content_layers + config.style_layers
        return (
            type(self) is Objective
            and self.extractor is get_extractor(layers, config.pooling, weights, config.precision, config.normalize_vgg)
            and self.content_layers == tuple(config.content_layers)
            and self.style_layers == tuple(config.style_layers)
            and self.statistic is STATISTICS[config.style_statistic]
        )

    def set_content(self, image) -> None:
        """Compute and store the content targets from an RGB image batch in [0, 1]."""
        self.store_content(self.extractor(image))

    def store_content(self, features: dict) -> None:
        """Store the content targets from the content image's features {layer: (1, H, W, C)}."""
        for n in self.content_layers:
            _store(self.content_targets, n, features[n])

    def set_style(self, images: Sequence, blend: Sequence[float] | None = None) -> None:
        """Compute and store the style targets: the statistic's blend-weighted mean over one or more style images."""
        self.store_style([self.describe_image(img) for img in images], blend)

    def describe_image(self, image) -> dict:
        """Return each style layer's statistic of an RGB image batch in [0, 1] {layer: statistic}."""
        feats = self.extractor(image)
        return {n: self.statistic.describe(feats[n]) for n in self.style_layers}

    def store_style(self, described: Sequence[dict], blend: Sequence[float] | None = None) -> None:
        """Store the style targets from each style image's statistics (describe_image): their blend-weighted mean."""
        blend = list(blend) if blend is not None else [1.0] * len(described)
        total = float(sum(blend))
        for n in self.style_layers:
            parts = [tf.nest.map_structure(lambda t, w=b / total: w * t, d[n]) for d, b in zip(described, blend)]
            _store(self.style_targets, n, self.statistic.target(tf.nest.map_structure(lambda *t: tf.add_n(t), *parts)))

    def _style_distance(self, name: str, features: tf.Tensor) -> tf.Tensor:
        """Return the style layer `name`'s unweighted style term for a batch of its features, shape (batch,)."""
        return self.statistic.distance(self.statistic.describe(features), self.style_targets[name])

    def _loss_terms(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        """Return the weighted terms {content, style, tv, temporal, total}, each of shape (batch,)."""
        feats = self.extractor(image)
        content = tf.add_n([content_loss(feats[n], self.content_targets[n]) for n in self.content_layers])
        content = content / len(self.content_layers)
        w = self.style_layer_weights  # (n_layers,) shared, or (batch, n_layers): one weight vector per image
        style = tf.add_n([w[..., i] * self._style_distance(n, feats[n]) for i, n in enumerate(self.style_layers)])
        terms = {"content": self.alpha * content, "style": self.beta * style, "tv": self.tv * total_variation(image)}
        terms["temporal"] = self.temporal_term(image)
        terms["total"] = terms["content"] + terms["style"] + terms["tv"] + terms["temporal"]
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


def regions(mask: np.ndarray, n_styles: int) -> np.ndarray:
    """Return (R, H, W) guidance channels: style 1 where the mask is white, style 2 (if given) where it is black."""
    if n_styles == 1:
        return mask[None]
    if n_styles == 2:
        return np.stack([mask, 1.0 - mask])
    raise NSTError(f"a style mask takes one or two style images, got {n_styles}")


def guided_gram(features: tf.Tensor, guides: tf.Tensor) -> tf.Tensor:
    """Return (batch, R, C, C) Gram matrices of features weighted by each (R, H, W) guide squared, over its mass."""
    return STATISTICS["gram"].describe(features, tf.square(guides))


class GuidedObjective(Objective):
    """Spatial control (Gatys et al. 2016): an Objective whose style term matches one style per mask region.

    Region r's statistic is taken with the positions weighted by its guide squared; the regions weigh by area.
    """

    def set_guides(self, guides: np.ndarray) -> None:
        """Store the (R, H, W) guidance channels downsampled (area average) to each style layer's resolution."""
        h, w = guides.shape[1:]
        g = tf.convert_to_tensor(guides[..., None], tf.float32)
        self.guides, self.region_weights = {}, {}
        for n in self.style_layers:
            _, lh, lw, _ = layer_shapes(h, w, n)[-1]
            down = tf.image.resize(g, (lh, lw), method="area")[..., 0]
            self.guides[n] = tf.constant(down)
            self.region_weights[n] = tf.constant(tf.reduce_mean(tf.square(down), axis=[1, 2]))

    def store_style(self, described: Sequence[dict], blend: Sequence[float] | None = None) -> None:
        """Store one target per region: region r takes the statistic of style image r (blend is not used)."""
        for n in self.style_layers:
            stats = [d[n] for d in described]
            _store(
                self.style_targets, n, self.statistic.target(tf.nest.map_structure(lambda *t: tf.concat(t, 0), *stats))
            )

    def _style_distance(self, name: str, features: tf.Tensor) -> tf.Tensor:
        """Return the region-guided style term of layer `name`: each region's distance weighted by its area."""
        return self.region_distance(name, self.statistic.describe(features, tf.square(self.guides[name])))

    def region_distance(self, name: str, stats) -> tf.Tensor:
        """Return layer `name`'s style term (batch,) from its per-region statistics (batch, R, ...): each region's
        distance from its target, weighted by the region's area (shared with the tiled evaluation)."""
        target = self.style_targets[name]  # (R, ...)
        per_region = tf.stack(
            [
                self.statistic.distance(
                    tf.nest.map_structure(lambda t, r=r: t[:, r], stats),
                    tf.nest.map_structure(lambda t, r=r: t[r][None], target),
                )
                for r in range(self.guides[name].shape[0])
            ],
            -1,
        )  # (batch, R)
        return tf.reduce_sum(per_region * self.region_weights[name], -1)


def build_objective(
    config: StyleConfig,
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    blend: Sequence[float] | None = None,
    weights: str | os.PathLike | None = None,
    *,
    mask: np.ndarray | None = None,
    device: str | None = None,
) -> Objective:
    """Return the Objective for `config` with its targets computed once: guided by `mask` (style 1 where white)
    if given, built on `device` (its own VGG19 there) if given. `weights` is the VGG19 weights file."""
    with tf.device(device) if device is not None else contextlib.nullcontext():
        obj = new_objective(
            config, weights, guides=regions(mask, len(styles)) if mask is not None else None, device=device
        )
        obj.aim(config, content, styles, blend)
    return obj


def new_objective(
    config: StyleConfig,
    weights: str | os.PathLike | None = None,
    *,
    guides: np.ndarray | None = None,
    device: str | None = None,
) -> Objective:
    """Return the Objective for `config` with its weights set and no targets yet (`aim` gives them): guided by the
    (R, H, W) `guides` if given, on `device` (its own VGG19 there) if given."""
    layers = config.content_layers + config.style_layers
    with tf.device(device) if device is not None else contextlib.nullcontext():
        extractor = (
            get_extractor(layers, config.pooling, weights, config.precision, config.normalize_vgg)
            if device is None
            else FeatureExtractor(layers, weights, config.pooling, config.precision, config.normalize_vgg)
        )
        kind = Objective if guides is None else GuidedObjective
        obj = kind(
            extractor,
            config.content_layers,
            config.style_layers,
            alpha=config.alpha,
            beta=config.beta,
            tv=config.tv,
            style_layer_weights=config.layer_weights(),
            statistic=config.style_statistic,
        )
        if guides is not None:
            obj.set_guides(guides)
    return obj


def initial_image(config: StyleConfig, content: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Return the starting image: the content, uniform noise (seeded), or the style resized to the content."""
    if config.init == "content":
        return content.copy()
    if config.init == "style":
        return resize(style, content.shape[:2])
    rng = np.random.default_rng(config.seed)
    return rng.uniform(0.0, 1.0, content.shape).astype(np.float32)
