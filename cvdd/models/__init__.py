"""Model zoo: registry (`create_model`, `list_models`, `is_known_model`, ...) and the families.

Importing this package registers every family, so `list_models()` sees them all.
"""

from . import (  # noqa: F401  (register)
    convnet,
    densenet,
    mobilenet,
    pretrained,
    resnet,
    shufflenet,
    tiny,
)
from ._registry import (
    create_model,
    is_known_model,
    list_models,
    register_model,
    register_prefix,
)
from .base import Classifier, scale_width

__all__ = [
    "Classifier",
    "create_model",
    "is_known_model",
    "list_models",
    "register_model",
    "register_prefix",
    "scale_width",
]
