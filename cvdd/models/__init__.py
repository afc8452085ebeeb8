"""Model zoo: registry (`create_model`, `list_models`, `register_model`) and the model families.

Importing this package registers every family, so `list_models()` sees them all.
"""

from . import densenet, mobilenet, pretrained, resnet, shufflenet, tiny  # noqa: F401  (register)
from ._registry import Classifier, create_model, list_models, register_model, scale_width

__all__ = ["Classifier", "create_model", "list_models", "register_model", "scale_width"]
