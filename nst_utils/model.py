"""A frozen VGG19 feature extractor that returns named layer outputs, built only as deep as needed."""

from __future__ import annotations

import functools
import io
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf

from . import assets
from .config import (
    CHANNELS,
    CONV_LAYERS,
    FLOAT32_LAYERS,
    LAYERS,
    NSTError,
    check_layers,
    check_pooling,
    check_precision,
    depth,
)
from .host import median_ratio
from .images import load_image, preprocess

# Gatys et al. normalised VGG19 on ImageNet; offline we use the registry's six images (photos and paintings) instead.
REFERENCE_IMAGES = (
    "japanese_garden.jpg",
    "picasso_selfportrait.jpg",
    "tubingen.jpg",
    "starry_night.jpg",
    "the_scream.jpg",
    "seated-nude.jpg",
)
REFERENCE_SIZE = 384  # long side the reference images are read at for the channel means


def _read_weights(path: os.PathLike, names: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return {conv layer: (kernel, bias)} read from the Keras h5 file, checking every shape."""
    out = {}
    try:
        with h5py.File(path, "r") as f:
            for name in names:
                if name not in f:
                    raise NSTError(
                        f"{path} has no layer {name}: not the VGG19 notop weights file; {assets.WEIGHTS_HOW_TO}"
                    )
                g = f[name]
                wnames = [w.decode() if isinstance(w, bytes) else w for w in g.attrs["weight_names"]]
                kernel, bias = (np.asarray(g[w], dtype=np.float32) for w in wnames)
                cin = 3 if name == "block1_conv1" else None
                if kernel.shape[:2] != (3, 3) or kernel.shape[3] != CHANNELS[name] or (cin and kernel.shape[2] != cin):
                    raise NSTError(
                        f"{path}: layer {name} has kernel shape {kernel.shape}, not VGG19's; {assets.WEIGHTS_HOW_TO}"
                    )
                out[name] = (kernel, bias)
    except (OSError, KeyError, ValueError) as exc:
        raise NSTError(f"{path} is not a readable VGG19 h5 weights file ({exc}); {assets.WEIGHTS_HOW_TO}") from exc
    return out


def _conv_probe(dtype: tf.DType) -> Callable[[], object]:
    """Return a call of one 3x3 convolution forward plus input gradient in `dtype` (a 64x64x128 probe)."""
    x = tf.cast(tf.random.stateless_uniform((1, 64, 64, 128), (1, 2)), dtype)
    k = tf.cast(tf.random.stateless_uniform((3, 3, 128, 128), (3, 4)) * 0.01, dtype)

    @tf.function(autograph=False)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(tf.cast(tf.nn.conv2d(x, k, 1, "SAME"), tf.float32) ** 2)
        return tape.gradient(y, x)

    return lambda: step(x).numpy()


@functools.cache
def _auto_precision() -> str:
    """Return "bfloat16" if the probe convolution runs >= 1.3x faster in it than in float32 here, else "float32"."""
    try:  # measured once per process, float32 and bfloat16 alternated: CPUs without native bf16 run it slower
        return "bfloat16" if median_ratio(_conv_probe(tf.float32), _conv_probe(tf.bfloat16)) >= 1.3 else "float32"
    except Exception:  # noqa: BLE001 - a device without bf16 kernels simply keeps float32
        return "float32"


def resolve_precision(precision: str = "auto") -> str:
    """Return "float32" or "bfloat16"; "auto" picks bfloat16 where a probe convolution runs >= 1.3x faster in it."""
    return _auto_precision() if check_precision(precision) == "auto" else precision


def build_vgg19(
    outputs: Sequence[str], weights: str | os.PathLike | None = None, pooling: str = "max", precision: str = "float32"
) -> tf.keras.Model:
    """Return a frozen Keras VGG19 taking preprocessed BGR input, built up to the deepest of `outputs`.

    With precision "bfloat16" every layer after block1_conv1 computes in bfloat16 (weights kept float32 and cast):
    the first convolution stays float32 so that small pixel changes are not rounded away at the input.
    """
    outputs = check_layers(outputs)
    check_pooling(pooling)
    precision = resolve_precision(precision)
    deepest = max(LAYERS.index(n) for n in outputs)
    path = assets.weights_path(weights)
    convs = [n for n in LAYERS[: deepest + 1] if "conv" in n]
    params = _read_weights(path, convs)
    x = inp = tf.keras.Input(shape=(None, None, 3), name="vgg_input")
    tensors = {}
    for name in LAYERS[: deepest + 1]:
        dtype = "float32" if precision == "float32" or name in FLOAT32_LAYERS else "mixed_bfloat16"
        if "conv" in name:
            layer = tf.keras.layers.Conv2D(CHANNELS[name], 3, padding="same", activation="relu", name=name, dtype=dtype)
        else:
            pool = tf.keras.layers.MaxPooling2D if pooling == "max" else tf.keras.layers.AveragePooling2D
            layer = pool(2, strides=2, name=name, dtype=dtype)
        x = layer(x)
        if name in params:
            layer.set_weights(list(params[name]))
        tensors[name] = x
    cast = tf.keras.layers.Activation("linear", dtype="float32")  # outputs (and so Grams, losses) in float32
    model = tf.keras.Model(inp, {n: cast(tensors[n]) for n in outputs}, name=f"vgg19_to_{LAYERS[deepest]}")
    model.trainable = False
    return model


def mean_activations(
    images: Sequence[np.ndarray], pooling: str = "max", weights: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """Return {conv layer: (C,) mean activation over positions, then over images} of the unnormalised VGG19."""
    model = build_vgg19(CONV_LAYERS, weights, pooling, "float32")
    per_image = [
        {
            n: tf.reduce_mean(f, axis=[0, 1, 2]).numpy()
            for n, f in model(preprocess(tf.constant(np.asarray(img, np.float32)[None])), training=False).items()
        }
        for img in images
    ]
    return {n: np.mean([m[n] for m in per_image], axis=0) for n in CONV_LAYERS}


def _means_path(pooling: str, weights_path: Path) -> Path:
    """Return where the channel means for this pooling and weights file are cached (keyed by the file's size)."""
    key = f"{pooling}_{REFERENCE_SIZE}px_{len(REFERENCE_IMAGES)}img_{weights_path.stat().st_size}"
    return assets.cache_dir() / f"vgg19_channel_means_{key}.npz"


def _cached_means(path: Path) -> dict[str, np.ndarray] | None:
    """Return the channel means cached at `path`, or None if there are none or they are unreadable or corrupt (a
    zero-byte file, another file's bytes, wrong shapes, non-finite or negative means, a FIFO): those are recomputed."""
    if not path.is_file():  # absent, or not a regular file (reading a FIFO would block)
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            means = {n: np.asarray(f[n], np.float32) for n in CONV_LAYERS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    ok = all(m.shape == (CHANNELS[n],) and np.isfinite(m).all() and (m >= 0).all() for n, m in means.items())
    return means if ok else None


@functools.cache
def channel_means(pooling: str = "max", weights: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Return {conv layer: (C,) mean activation} over REFERENCE_IMAGES, from the disk cache or computed once (and
    cached, replacing a corrupt entry; a cache that cannot be written leaves them in this process's memory)."""
    path = _means_path(pooling, assets.weights_path(weights))
    means = _cached_means(path)
    if means is not None:
        return means
    images = [load_image(assets.image_path(name), max_size=REFERENCE_SIZE) for name in REFERENCE_IMAGES]
    means = mean_activations(images, pooling, weights)
    buf = io.BytesIO()
    np.savez(buf, **means)
    assets.keep_in_cache(path, buf.getvalue())
    return means


def normalization_scales(
    layers: Sequence[str], pooling: str = "max", weights: str | os.PathLike | None = None
) -> dict[str, np.ndarray]:
    """Return {layer: (C,) factor 1/mean activation} that makes each channel's mean 1 (Gatys et al.'s rescaling).

    Dividing a ReLU layer's outputs by positive per-channel constants is the same network as Gatys' rescaled
    filters (ReLU and pooling commute with positive scaling), so the factors are the original network's means.
    A pooling layer takes the factors of the convolution before it; a channel that never fires keeps factor 1.
    """
    means = channel_means(pooling, weights)
    convs = {n: n if "conv" in n else LAYERS[LAYERS.index(n) - 1] for n in check_layers(layers)}
    return {
        n: np.where(means[c] > 0, 1.0 / np.maximum(means[c], 1e-30), 1.0).astype(np.float32) for n, c in convs.items()
    }


class FeatureExtractor:
    """Maps RGB images in [0, 1] (batch, H, W, 3) to a dict of VGG19 activations for the chosen layers."""

    def __init__(
        self,
        layers: Sequence[str],
        weights: str | os.PathLike | None = None,
        pooling: str = "max",
        precision: str = "float32",
        normalize: bool = False,
    ):
        self.layers = check_layers(list(dict.fromkeys(layers)))
        self.pooling = pooling
        self.precision = resolve_precision(precision)
        self.normalize = bool(normalize)
        self.model = build_vgg19(self.layers, weights, pooling, self.precision)
        self.scales = (
            {n: tf.constant(v) for n, v in normalization_scales(self.layers, pooling, weights).items()}
            if self.normalize
            else {}
        )
        # Always a graph, eager or not: targets and losses then round identically (matters in bfloat16, where
        # graph rewrites such as fused convolution + bias + ReLU round at other points than eager execution).
        self._graph = tf.function(
            self._features, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], autograph=False
        )

    def _features(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        """Return {layer name: activation} for a float32 batch of RGB images in [0, 1] (scaled if normalised)."""
        feats = self.model(preprocess(image), training=False)
        return {n: f * self.scales[n] for n, f in feats.items()} if self.normalize else feats

    def __call__(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        """Return {layer name: activation} for a batch of RGB images in [0, 1]."""
        return self._graph(tf.convert_to_tensor(image, tf.float32))

    def covers(
        self, layers: Sequence[str], pooling: str = "max", precision: str = "float32", normalize: bool = False
    ) -> bool:
        """Return True if this extractor already outputs all of `layers` with this pooling, precision, normalisation."""
        return (
            pooling == self.pooling
            and resolve_precision(precision) == self.precision
            and bool(normalize) == self.normalize
            and set(layers) <= set(self.layers)
        )


_EXTRACTORS: dict[tuple, FeatureExtractor] = {}


def get_extractor(
    layers: Sequence[str],
    pooling: str = "max",
    weights: str | os.PathLike | None = None,
    precision: str = "float32",
    normalize: bool = False,
) -> FeatureExtractor:
    """Return a cached FeatureExtractor for these layers (one VGG19 build per layer set, pooling, precision and
    normalisation)."""
    precision = resolve_precision(precision)
    for (_, _, source, _, _), ext in _EXTRACTORS.items():  # never reuse a model built from other weights
        if (
            source == str(weights)
            and ext.covers(layers, pooling, precision, normalize)
            and max(map(depth, ext.layers)) == max(map(depth, layers))
        ):
            return ext
    key = (tuple(sorted(set(layers))), pooling, str(weights), precision, bool(normalize))
    _EXTRACTORS[key] = FeatureExtractor(layers, weights, pooling, precision, normalize)
    return _EXTRACTORS[key]


def describe_devices() -> str:
    """Return "TensorFlow <version>; devices: CPU:0, GPU:0, ..." for `nst info`."""
    devices = ", ".join(f"{d.device_type}:{d.name.split(':')[-1]}" for d in tf.config.list_physical_devices())
    return f"TensorFlow {tf.__version__}; devices: {devices}"


def auto_size(cpu: int, gpu: int) -> int:
    """Return `gpu` if TensorFlow sees a GPU, else `cpu` (notebook sizes that fit the time budget on either)."""
    return gpu if tf.config.list_physical_devices("GPU") else cpu
