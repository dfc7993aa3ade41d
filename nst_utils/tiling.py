"""An exact tiled evaluation: the Objective's loss terms and gradient computed tile by tile, for pictures larger
than memory.

Every style statistic is a position average (a Gram matrix is (1/M) sum_p f_p f_p^T, W2's mean and second moment
likewise) and the content term is a sum over positions, so tiles can give the untiled loss and gradient exactly, to
float32 rounding:

1. The image is cut into tiles aligned to the stride of the deepest used layer (16 px up to block5), the fewest of at
   most about the tile size, as even as the stride allows (the last of each row and column also takes the side's
   remainder below the stride), each read with a halo as wide as that layer's receptive field reaches past the
   positions the tile owns (none past the border).
2. Pass 1 forwards each tile, keeps the positions it owns at each layer and adds up each statistic's sums (weighted
   per mask region under a GuidedObjective) and the content term's squared differences.
3. The loss comes from the global sums as the Objective computes it, and so do dL/d(sums): small tensors.
4. Pass 2 backpropagates, per tile, <dL/d(sums), the tile's own sums> plus its content term, and adds the tile's
   input gradient (halo included) into the image's. The total variation is taken on the whole image.

Cost: two forward passes and one backward per evaluation, times the halo's overhead; memory: one tile's activations.
An image that fits in one tile is evaluated untiled (the same graph as the Objective's). The targets (the content's
features, the style images' statistics) are computed tile by tile as well, so no step needs a whole image's
activations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from .config import CHANNELS, NSTError, min_halo, reach, receptive_field, tile_bounds, tile_count, tile_stride
from .objective import IMAGE_SPEC, GuidedObjective, Objective, total_variation, total_weight

__all__ = ["TiledObjective", "min_halo", "reach", "receptive_field", "tile_stride"]  # the geometry lives in config


def _span(index, size, tile: int, halo: int, stride: int) -> tuple:
    """Return (core start, core end, read start, read end) along one axis of the tile at `index` (end exclusive)."""
    start, end = tile_bounds(index, tile_count(size, tile, stride), size, stride)
    return start, end, tf.maximum(start - halo, 0), tf.minimum(end + halo, size)


def _region_axes(t: tf.Tensor, mass: tf.Tensor) -> tf.Tensor:
    """Return (R,) `mass` shaped to multiply a (batch, R, ...) statistic tensor `t`."""
    return tf.reshape(mass, [1, -1] + [1] * (t.shape.rank - 2))


class TiledObjective:
    """An Objective evaluated tile by tile: the same terms and gradient (to float32 rounding) in a tile's memory.

    `value_and_grad(image) -> (terms, gradient)` keeps the Objective's contract, so the optimisers and the tracker
    take it unchanged; weights and targets stay the wrapped Objective's (its `aim` and `set_weights` apply).
    """

    def __init__(self, objective: Objective, tile: int, halo: int | None = None, whole_pixels: int = 0):
        """Wrap `objective`, with square tiles of `tile` px (rounded down to the stride) and `halo` px of context
        around each (default: `min_halo`, exact; a narrower halo is wrong near tile edges, for demonstration only);
        images of at most `whole_pixels` pixels (those that fit in memory untiled: coarse scales) are evaluated
        whole."""
        self.objective = objective
        self.whole_pixels = tf.Variable(int(whole_pixels), dtype=tf.int32, trainable=False)
        self.layers = tuple(dict.fromkeys(objective.content_layers + objective.style_layers))
        self.stride = tile_stride(self.layers)
        if tile < self.stride:
            raise NSTError(f"tiles of {tile} px are narrower than the network's stride; use at least {self.stride}")
        self.tile = tile // self.stride * self.stride
        self.halo = min_halo(self.layers) if halo is None else int(halo)
        if self.halo < 0 or self.halo % self.stride:
            raise ValueError(f"the halo must be a non-negative multiple of {self.stride} px, got {halo}")
        self.guided = isinstance(objective, GuidedObjective)
        self.loss_terms = tf.function(self._loss_terms, input_signature=[IMAGE_SPEC], autograph=False)
        self.value_and_grad = tf.function(self._value_and_grad, input_signature=[IMAGE_SPEC], autograph=False)

    # --- the wrapped Objective's controls --------------------------------------------------------------------------

    def set_weights(self, *args, **kwargs) -> None:
        """Change the wrapped Objective's loss weights in place (see Objective.set_weights); never retraces."""
        self.objective.set_weights(*args, **kwargs)

    def __getattr__(self, name: str):
        """Return the wrapped Objective's attribute `name` (its variables and controls, e.g. its targets)."""
        if name == "objective":  # not set yet (during __init__ or unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.objective, name)

    aim = Objective.aim  # weights, then this wrapper's set_content and set_style: the targets tile by tile too

    def set_content(self, image) -> None:
        """Compute and store the wrapped Objective's content targets, tile by tile (see Objective.set_content)."""
        image = tf.convert_to_tensor(image, tf.float32)
        b, h, w = image.shape[:3]
        if self.whole(h, w):
            self.objective.set_content(image)
            return
        full = {}
        for geo, feats in self._each_tile(image):
            for n in self.objective.content_layers:
                owned, rows, cols = self._owned(feats, n, geo)
                s = reach(n)[2]
                full.setdefault(n, np.zeros((b, h // s, w // s, CHANNELS[n]), np.float32))
                full[n][:, rows[0] : rows[1], cols[0] : cols[1]] = owned.numpy()
        self.objective.store_content(full)

    def set_style(self, images: Sequence, blend: Sequence[float] | None = None) -> None:
        """Compute and store the wrapped Objective's style targets, each image tile by tile (see
        Objective.set_style)."""
        self.objective.store_style([self.describe_image(img) for img in images], blend)

    def describe_image(self, image) -> dict:
        """Return each style layer's statistic of an RGB image batch in [0, 1], from its tiles' sums (as
        Objective.describe_image)."""
        image = tf.convert_to_tensor(image, tf.float32)
        h, w = image.shape[1:3]
        if self.whole(h, w):
            return self.objective.describe_image(image)
        sums = None
        for geo, feats in self._each_tile(image):
            part = {}
            for n in self.objective.style_layers:
                owned, rows, cols = self._owned(feats, n, geo)
                count = float((rows[1] - rows[0]) * (cols[1] - cols[0]))
                part[n] = tf.nest.map_structure(lambda t, m=count: t * m, self.objective.statistic.describe(owned))
            sums = part if sums is None else tf.nest.map_structure(tf.add, sums, part)
        units = {n: float((h // reach(n)[2]) * (w // reach(n)[2])) for n in self.objective.style_layers}
        return {n: tf.nest.map_structure(lambda t, m=units[n]: t / m, sums[n]) for n in self.objective.style_layers}

    def _each_tile(self, image: tf.Tensor):
        """Yield (geometry in ints, the network's features of its window) for each tile of an image, eagerly."""
        h, w = image.shape[1:3]
        for k in range(self.tiles(h, w)):
            geo = tuple(int(g) for g in self._geometry(tf.shape(image), tf.constant(k)))
            yield geo, self.objective.extractor(self._window(image, geo))

    def tiles(self, height: int | tf.Tensor, width: int | tf.Tensor) -> int | tf.Tensor:
        """Return how many tiles an HxW image is cut into: an int for ints, a scalar tensor for tensors (in a graph)."""
        return tile_count(height, self.tile, self.stride) * tile_count(width, self.tile, self.stride)

    def tracing_count(self) -> int:
        """Return how many times the tiled functions were traced (should stay at one each)."""
        return self.loss_terms.experimental_get_tracing_count() + self.value_and_grad.experimental_get_tracing_count()

    # --- one tile ----------------------------------------------------------------------------------------------------

    def _geometry(self, shape: tf.Tensor, k: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """Return the spans (core start, core end, read start, read end) of tile `k`'s rows and then its columns, in
        an image of `shape` (batch, H, W, 3)."""
        across = tile_count(shape[2], self.tile, self.stride)
        return _span(k // across, shape[1], self.tile, self.halo, self.stride) + _span(
            k % across, shape[2], self.tile, self.halo, self.stride
        )

    def _weights(self, name: str) -> tf.Tensor | None:
        """Return layer `name`'s (R, H, W) position weights over the whole image: the guides squared, or None."""
        return tf.square(self.objective.guides[name]) if self.guided else None

    def _owned(self, feats: dict, name: str, geo: tuple) -> tuple:
        """Return (layer `name`'s features at the units tile `geo` owns, their rows, their columns), rows and columns
        as (start, end) in the whole layer's units."""
        r0, r1, rr0, _, c0, c1, cr0, _ = geo
        s = reach(name)[2]
        rows, cols = (r0 // s, r1 // s), (c0 // s, c1 // s)
        owned = feats[name][:, rows[0] - rr0 // s : rows[1] - rr0 // s, cols[0] - cr0 // s : cols[1] - cr0 // s]
        return owned, rows, cols

    def _parts(self, window: tf.Tensor, geo: tuple[tf.Tensor, ...], image_shape: tf.Tensor):
        """Return (each style layer's statistic sums over the positions the tile owns, its content term (batch,))."""
        obj = self.objective
        feats = obj.extractor(window)
        sums, content = {}, []
        for n in self.layers:
            owned, rows, cols = self._owned(feats, n, geo)
            s = reach(n)[2]
            if n in obj.content_layers:
                target = obj.content_targets[n][:, rows[0] : rows[1], cols[0] : cols[1]]
                size = tf.cast((image_shape[1] // s) * (image_shape[2] // s) * CHANNELS[n], tf.float32)
                content.append(tf.reduce_sum(tf.square(owned - target), axis=[1, 2, 3]) / size)
            if n in obj.style_layers:  # describe is a (weighted) position average: times its mass, a sum
                whole = self._weights(n)
                if whole is None:
                    count = tf.cast((rows[1] - rows[0]) * (cols[1] - cols[0]), tf.float32)
                    sums[n] = tf.nest.map_structure(lambda t, m=count: t * m, obj.statistic.describe(owned))
                else:
                    w = whole[:, rows[0] : rows[1], cols[0] : cols[1]]
                    mass = total_weight(w)
                    sums[n] = tf.nest.map_structure(
                        lambda t, m=mass: t * _region_axes(t, m), obj.statistic.describe(owned, w)
                    )
        return sums, tf.reshape(tf.add_n(content), [-1]) / len(obj.content_layers)

    def _window(self, image: tf.Tensor, geo: tuple[tf.Tensor, ...]) -> tf.Tensor:
        """Return the pixels tile `geo` reads (its core and halo)."""
        return image[:, geo[2] : geo[3], geo[6] : geo[7]]

    # --- the two passes ----------------------------------------------------------------------------------------------

    def _zero_sums(self, image: tf.Tensor) -> dict:
        """Return zeros shaped like one tile's statistic sums (described from a zero feature map: no network run)."""
        batch, obj = tf.shape(image)[0], self.objective
        weights = {n: tf.zeros((self._weights(n).shape[0], 1, 1)) if self.guided else None for n in obj.style_layers}
        return {
            n: obj.statistic.describe(tf.zeros(tf.stack([batch, 1, 1, CHANNELS[n]])), weights[n])
            for n in obj.style_layers
        }

    def _gather(self, image: tf.Tensor) -> tuple[dict, tf.Tensor]:
        """Return pass 1's totals over all tiles: (each style layer's statistic sums, the unweighted content term)."""
        shape = tf.shape(image)

        def body(k, sums, content):
            geo = self._geometry(shape, k)
            part, c = self._parts(self._window(image, geo), geo, shape)
            return k + 1, tf.nest.map_structure(tf.add, sums, part), content + c

        start = (tf.constant(0), self._zero_sums(image), tf.zeros(shape[:1]))
        invariants = tf.nest.map_structure(lambda t: tf.TensorShape([None] * t.shape.rank), start)
        count = self.tiles(shape[1], shape[2])
        _, sums, content = tf.while_loop(
            lambda k, *_: k < count, body, start, shape_invariants=invariants, parallel_iterations=1
        )
        return tf.nest.map_structure(lambda t, z: tf.ensure_shape(t, z.shape), sums, start[1]), content

    def _style(self, sums: dict, image_shape: tf.Tensor) -> tf.Tensor:
        """Return the unweighted-by-beta style term (batch,) from the global statistic sums, as the Objective's."""
        obj = self.objective
        w = obj.style_layer_weights
        terms = []
        for i, n in enumerate(obj.style_layers):
            whole = self._weights(n)
            if whole is None:
                s = reach(n)[2]
                count = tf.cast((image_shape[1] // s) * (image_shape[2] // s), tf.float32)
                stats = tf.nest.map_structure(lambda t, m=count: t / m, sums[n])
                dist = obj.statistic.distance(stats, obj.style_targets[n])
            else:  # GuidedObjective's per-region distance, from the sums
                mass = total_weight(whole)
                stats = tf.nest.map_structure(lambda t, m=mass: t / _region_axes(t, m), sums[n])
                dist = obj.region_distance(n, stats)
            terms.append(w[..., i] * dist)
        return tf.add_n(terms)

    def _terms(self, image: tf.Tensor, style: tf.Tensor, content: tf.Tensor) -> dict[str, tf.Tensor]:
        """Return the weighted terms {content, style, tv, total}, each (batch,), from the unweighted ones."""
        obj = self.objective
        terms = {"content": obj.alpha * content, "style": obj.beta * style, "tv": obj.tv * total_variation(image)}
        terms["temporal"] = obj.temporal_term(image)  # on the whole image, as tv
        terms["total"] = terms["content"] + terms["style"] + terms["tv"] + terms["temporal"]
        return terms

    def whole(self, height: int | tf.Tensor, width: int | tf.Tensor) -> bool | tf.Tensor:
        """Return whether an HxW image is evaluated whole (it is one tile, or fits in memory untiled): a bool for
        ints, a boolean tensor for tensors (in a graph)."""
        if isinstance(height, int) and isinstance(width, int):
            return self.tiles(height, width) == 1 or height * width <= int(self.whole_pixels.numpy())
        return tf.logical_or(tf.equal(self.tiles(height, width), 1), height * width <= self.whole_pixels)

    def _whole(self, image: tf.Tensor) -> tf.Tensor:
        """Return whether the image batch is evaluated whole, by the wrapped Objective (see `whole`)."""
        return self.whole(tf.shape(image)[1], tf.shape(image)[2])

    def _loss_terms(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        """Return the Objective's weighted terms {content, style, tv, total}, each (batch,), by pass 1 alone."""
        return tf.cond(
            self._whole(image), lambda: self.objective.loss_terms(image), lambda: self._tiled_loss_terms(image)
        )

    def _tiled_loss_terms(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        """Return the weighted terms, each (batch,), from pass 1's sums over the tiles."""
        sums, content = self._gather(image)
        return self._terms(image, self._style(sums, tf.shape(image)), content)

    def _scatter(self, image: tf.Tensor, coefficients: dict) -> tf.Tensor:
        """Return pass 2's image gradient of the style and content terms: each tile's surrogate backpropagated."""
        shape = tf.shape(image)
        alpha = self.objective.alpha

        def body(k, grad):
            geo = self._geometry(shape, k)
            window = self._window(image, geo)
            with tf.GradientTape() as tape:
                tape.watch(window)
                sums, content = self._parts(window, geo, shape)
                surrogate = tf.reduce_sum(alpha * content) + tf.add_n(
                    [
                        tf.reduce_sum(tf.stop_gradient(c) * s)
                        for c, s in zip(tf.nest.flatten(coefficients), tf.nest.flatten(sums))
                    ]
                )
            g = tape.gradient(surrogate, window)
            pad = [[0, 0], [geo[2], shape[1] - geo[3]], [geo[6], shape[2] - geo[7]], [0, 0]]
            return k + 1, grad + tf.pad(g, pad)

        count = self.tiles(shape[1], shape[2])
        start = (tf.constant(0), tf.zeros_like(image))
        invariants = (tf.TensorShape([]), tf.TensorShape([None] * 4))
        _, grad = tf.while_loop(lambda k, _: k < count, body, start, shape_invariants=invariants, parallel_iterations=1)
        return tf.ensure_shape(grad, image.shape)

    def _value_and_grad(self, image: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """Return (terms, gradient of the summed total with respect to the image), as Objective.value_and_grad."""
        return tf.cond(
            self._whole(image),
            lambda: self.objective.value_and_grad(image),
            lambda: self._tiled_value_and_grad(image),
        )

    def _tiled_value_and_grad(self, image: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """Return (terms, gradient) by the two passes over the tiles."""
        sums, content = self._gather(image)
        flat = tf.nest.flatten(sums)
        with tf.GradientTape() as tape:
            tape.watch(flat)
            style = self._style(tf.nest.pack_sequence_as(sums, flat), tf.shape(image))
            weighted = tf.reduce_sum(self.objective.beta * style)
        coefficients = tape.gradient(weighted, flat, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        with tf.GradientTape() as tape:
            tape.watch(image)
            whole = tf.reduce_sum(self.objective.tv * total_variation(image) + self.objective.temporal_term(image))
        grad = self._scatter(image, coefficients) + tape.gradient(whole, image)  # tv and temporal: the whole image
        return self._terms(image, style, content), grad
