"""Spatial control (Gatys et al. 2016): a mask chooses which style applies where, via guided Gram matrices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from .errors import NSTError
from .model import get_extractor
from .losses import Objective, content_loss, gram_matrix, style_loss, total_variation


def regions(mask: np.ndarray, n_styles: int) -> np.ndarray:
    """Return (R, H, W) guidance channels: style 1 where the mask is white, style 2 (if given) where it is black."""
    if n_styles == 1:
        return mask[None]
    if n_styles == 2:
        return np.stack([mask, 1.0 - mask])
    raise NSTError(f"a style mask takes one or two style images, got {n_styles}")


def guided_gram(features: tf.Tensor, guides: tf.Tensor) -> tf.Tensor:
    """Return (batch, R, C, C) Gram matrices of features weighted by each (R, H, W) guide squared, normalised by its mass."""
    g2 = tf.square(guides)
    mass = tf.reduce_sum(g2, axis=[1, 2]) + 1e-8
    return tf.einsum("bhwc,rhw,bhwd->brcd", features, g2, features) / mass[None, :, None, None]


class GuidedObjective(Objective):
    """An Objective whose style term matches one style per mask region (guided Grams, regions weighted by area)."""

    def set_guides(self, guides: np.ndarray) -> None:
        """Store the (R, H, W) guidance channels downsampled (area average) to each style layer's resolution."""
        h, w = guides.shape[1:]
        feats = self.extractor(tf.zeros((1, h, w, 3)))
        g = tf.convert_to_tensor(guides[..., None], tf.float32)
        self.guides, self.region_weights = {}, {}
        for n in self.style_layers:
            lh, lw = feats[n].shape[1:3]
            down = tf.image.resize(g, (lh, lw), method="area")[..., 0]
            self.guides[n] = tf.constant(down)
            self.region_weights[n] = tf.constant(tf.reduce_mean(tf.square(down), axis=[1, 2]))

    def set_style(self, images: Sequence, blend: Sequence[float] | None = None) -> None:
        """Store one target Gram per region: region r takes the Gram of style image r (blend is not used)."""
        grams = [self.extractor(img) for img in images]
        for n in self.style_layers:
            self.style_targets[n] = tf.Variable(tf.concat([gram_matrix(f[n]) for f in grams], 0), trainable=False)

    def _loss_terms(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        """Return the weighted terms {content, style, tv, total} with the region-guided style term."""
        feats = self.extractor(image)
        content = tf.add_n([content_loss(feats[n], self.content_targets[n]) for n in self.content_layers])
        content = content / len(self.content_layers)
        w = self.style_layer_weights
        style = 0.0
        for i, n in enumerate(self.style_layers):
            g = guided_gram(feats[n], self.guides[n])  # (batch, R, C, C)
            per_region = tf.stack([style_loss(g[:, r], self.style_targets[n][r][None])
                                   for r in range(g.shape[1])], -1)  # (batch, R)
            style = style + w[..., i] * tf.reduce_sum(per_region * self.region_weights[n], -1)
        terms = {"content": self.alpha * content, "style": self.beta * style, "tv": self.tv * total_variation(image)}
        terms["total"] = terms["content"] + terms["style"] + terms["tv"]
        return terms


def build_guided_objective(config, content: np.ndarray, styles: Sequence[np.ndarray], mask: np.ndarray,
                           weights=None) -> GuidedObjective:
    """Return a GuidedObjective for `config` with content, guides (from `mask`) and per-region style targets set."""
    extractor = get_extractor(config.content_layers + config.style_layers, config.pooling, weights, config.precision,
                              config.normalize_vgg)
    obj = GuidedObjective(extractor, config.content_layers, config.style_layers, alpha=config.alpha, beta=config.beta,
                          tv=config.tv, style_layer_weights=config.layer_weights())
    obj.set_content(content[None])
    obj.set_guides(regions(mask, len(styles)))
    obj.set_style([s[None] for s in styles])
    return obj
