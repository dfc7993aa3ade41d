"""nst_utils: neural style transfer (Gatys, Ecker & Bethge 2015) with TensorFlow/Keras and VGG19."""

from .quiet import import_tensorflow

import_tensorflow()

# isort: split
from .config import CONTENT_LAYERS, SEED_STYLE_LAYERS, STYLE_LAYERS, StyleConfig
from .errors import NSTError
from .images import deprocess, load_image, preprocess, save_image
from .losses import Objective, content_loss, gram_matrix, style_loss, total_variation
from .model import LAYERS, FeatureExtractor, build_vgg19
from .optimize import Result, stylize

__all__ = [
    "CONTENT_LAYERS", "LAYERS", "SEED_STYLE_LAYERS", "STYLE_LAYERS", "FeatureExtractor", "NSTError", "Objective",
    "Result", "StyleConfig", "build_vgg19", "content_loss", "deprocess", "gram_matrix", "load_image", "preprocess",
    "save_image", "style_loss", "stylize", "total_variation",
]
