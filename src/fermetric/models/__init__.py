"""Models: backbones, heads, selective attention, partial-image branches and FERNet.

``create_model(recipe.model, num_classes)`` builds the network every method trains;
``create_backbone(name)`` builds a backbone from :data:`BACKBONES`.
"""

from .attention import SelectiveAttention
from .backbones import BACKBONES, create_backbone, list_backbones
from .compiled import CompiledInference
from .heads import ClassifierHead, EmbeddingHead
from .inference import fold_batchnorm, inference_model
from .network import FERNet, FERNetExport, create_model
from .partial import (
    LANDMARK_TEMPLATE,
    TEMPLATE_REGIONS,
    PartialImageBranches,
    crop_regions,
    regions_from_landmarks,
)

__all__ = [
    "BACKBONES",
    "ClassifierHead",
    "CompiledInference",
    "EmbeddingHead",
    "FERNet",
    "FERNetExport",
    "LANDMARK_TEMPLATE",
    "PartialImageBranches",
    "SelectiveAttention",
    "TEMPLATE_REGIONS",
    "create_backbone",
    "create_model",
    "crop_regions",
    "fold_batchnorm",
    "inference_model",
    "list_backbones",
    "regions_from_landmarks",
]
