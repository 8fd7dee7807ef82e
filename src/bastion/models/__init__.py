"""Model zoo: a registry of architectures with one surface (features -> head), normalization inside."""

from bastion.models.base import ImageClassifier, Normalize
from bastion.models.registry import MODELS, Architecture, build_model

__all__ = ["MODELS", "Architecture", "ImageClassifier", "Normalize", "build_model"]
