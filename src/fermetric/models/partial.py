"""Partial images (PI&DML, Yu & Bai 2020): crop action-unit regions, a branch per region, fuse.

Boxes are normalised ``(x0, y0, x1, y1)`` fractions of the image width/height (``0..1``), so
the same box fits a 48 px training crop and a 112 px detector crop. Two sources of boxes, one
code path (:func:`crop_regions`, ``torchvision.ops.roi_align``):

- a fixed **template** for already aligned crops (FER2013, FER+, CK+48): :data:`TEMPLATE_REGIONS`
  (upper face, lower face) or :data:`LANDMARK_TEMPLATE` (eyes+brows, nose, mouth);
- per-sample boxes from facial **landmarks** (:func:`regions_from_landmarks`, 5-point MTCNN or
  68-point iBUG/dlib), passed to ``FERNet.forward(x, regions=[B,R,4])``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.ops import roi_align

from ..errors import ConfigError
from .backbones import create_backbone

__all__ = [
    "PARTIAL_MODES",
    "TEMPLATE_REGIONS",
    "LANDMARK_REGION_NAMES",
    "CANONICAL_LANDMARKS_5",
    "LANDMARK_TEMPLATE",
    "default_regions",
    "regions_from_landmarks",
    "crop_regions",
    "PartialImageBranches",
]

PARTIAL_MODES = (None, "template", "landmarks")

# Template for aligned 48 px crops. Measured on the mean of 3000 per-image-standardised FER2013
# training faces (CK+48 agrees within 2 px): brows at y ~ 0.27, eye centres at y ~ 0.36, nose tip
# at y ~ 0.58, mouth at y ~ 0.77-0.80, cheeks/face edge at x ~ 0.1 and 0.9. The upper face
# (action units 1, 2, 4, 5, 6, 7: brows, lids, eyes) takes rows 6-26 of 48 over the full width
# (faces in these sets are loosely aligned, so the margins are generous); the lower face (AUs
# 10-27: lips, mouth corners, jaw) takes rows 26-48 and trims the outer 10% (hair/background).
TEMPLATE_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "upper_face": (0.0, 0.12, 1.0, 0.55),
    "lower_face": (0.10, 0.55, 0.90, 1.0),
}

LANDMARK_REGION_NAMES = ("eyes_brows", "nose", "mouth")

# Five MTCNN-ordered landmarks (left eye, right eye, nose tip, left and right mouth corner, as seen
# in the image) of the mean aligned FER2013 face, normalised; used where a "landmarks" model meets
# an aligned crop without landmarks.
CANONICAL_LANDMARKS_5 = np.array(
    [[0.31, 0.37], [0.69, 0.37], [0.50, 0.58], [0.36, 0.78], [0.64, 0.78]], dtype=np.float32
)

# 68-point iBUG indices (0-based) of each region; the 5-point rules are in _boxes_from_5.
_GROUPS_68 = {
    "eyes_brows": np.r_[17:27, 36:48],
    "nose": np.r_[27:36],
    "mouth": np.r_[48:68],
}
# Margin around each 68-point group, as a fraction of the inter-ocular distance.
_PAD_68 = {"eyes_brows": 0.15, "nose": 0.15, "mouth": 0.20}


def regions_from_landmarks(landmarks, image_size) -> np.ndarray | torch.Tensor:
    """Boxes ``[..., 3, 4]`` (eyes+brows, nose, mouth) from landmarks ``[..., 5|68, 2]`` in pixels.

    ``image_size`` is ``(height, width)`` or one int; the boxes come back normalised to it,
    clipped to the image, as the same type as ``landmarks`` (numpy or torch). All lengths scale
    with the inter-ocular distance ``d`` (eye centre to eye centre), which is robust to how
    tightly the face was cropped.

    - 5 points (MTCNN order: left eye, right eye, nose, left mouth corner, right mouth corner):
      eyes+brows spans the eyes +-0.5d horizontally and from 0.55d above (the brows sit about
      0.4d above the eye centres) to 0.3d below the eye line; nose spans +-0.35d around the tip,
      from 0.15d below the eye line to 0.25d below the tip; mouth spans the corners +-0.3d and
      +-0.35d vertically around their mean.
    - 68 points (iBUG/dlib order): the bounding box of brows 17-26 + eyes 36-47, of nose 27-35,
      of mouth 48-67, padded by 0.15d, 0.15d and 0.2d.

    Boxes are axis-aligned: roll should be removed by alignment upstream (detector crops).
    """
    is_numpy = not isinstance(landmarks, torch.Tensor)
    points = torch.as_tensor(np.asarray(landmarks, dtype=np.float32) if is_numpy else landmarks).float()
    if points.ndim < 2 or points.shape[-1] != 2 or points.shape[-2] not in (5, 68):
        raise ConfigError(
            f"landmarks must have shape [..., 5, 2] (MTCNN) or [..., 68, 2] (iBUG), got {tuple(points.shape)}"
        )
    height, width = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    if height <= 0 or width <= 0:
        raise ConfigError(f"image_size must be positive, got {image_size!r}")
    boxes = _boxes_from_5(points) if points.shape[-2] == 5 else _boxes_from_68(points)
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype)
    boxes = (boxes / scale).clamp(0.0, 1.0)
    return boxes.numpy() if is_numpy else boxes.to(landmarks.device)


def _boxes_from_5(p: torch.Tensor) -> torch.Tensor:
    left_eye, right_eye, nose, mouth_left, mouth_right = p.unbind(-2)
    d = (right_eye - left_eye).norm(dim=-1)
    eye_x0 = torch.minimum(left_eye[..., 0], right_eye[..., 0])
    eye_x1 = torch.maximum(left_eye[..., 0], right_eye[..., 0])
    eye_y = (left_eye[..., 1] + right_eye[..., 1]) / 2
    mouth_x0 = torch.minimum(mouth_left[..., 0], mouth_right[..., 0])
    mouth_x1 = torch.maximum(mouth_left[..., 0], mouth_right[..., 0])
    mouth_y = (mouth_left[..., 1] + mouth_right[..., 1]) / 2
    eyes = torch.stack([eye_x0 - 0.5 * d, eye_y - 0.55 * d, eye_x1 + 0.5 * d, eye_y + 0.3 * d], -1)
    nose_box = torch.stack(
        [nose[..., 0] - 0.35 * d, eye_y + 0.15 * d, nose[..., 0] + 0.35 * d, nose[..., 1] + 0.25 * d], -1
    )
    mouth = torch.stack([mouth_x0 - 0.3 * d, mouth_y - 0.35 * d, mouth_x1 + 0.3 * d, mouth_y + 0.35 * d], -1)
    return torch.stack([eyes, nose_box, mouth], -2)


def _boxes_from_68(p: torch.Tensor) -> torch.Tensor:
    d = (p[..., 42:48, :].mean(-2) - p[..., 36:42, :].mean(-2)).norm(dim=-1)
    boxes = []
    for name in LANDMARK_REGION_NAMES:
        group = p[..., torch.as_tensor(_GROUPS_68[name]), :]
        pad = (_PAD_68[name] * d)[..., None]
        boxes.append(torch.cat([group.amin(-2) - pad, group.amax(-2) + pad], -1))
    return torch.stack(boxes, -2)


LANDMARK_TEMPLATE: dict[str, tuple[float, float, float, float]] = {
    name: tuple(round(float(v), 4) for v in box)
    for name, box in zip(LANDMARK_REGION_NAMES, regions_from_landmarks(CANONICAL_LANDMARKS_5, 1))
}


def default_regions(mode: str | None) -> dict[str, tuple[float, float, float, float]]:
    """The template boxes of a ``model.partial`` mode (``template`` or ``landmarks``)."""
    if mode == "template":
        return dict(TEMPLATE_REGIONS)
    if mode == "landmarks":
        return dict(LANDMARK_TEMPLATE)
    raise ConfigError(f"model.partial must be 'template' or 'landmarks', got {mode!r}")


def crop_regions(images: torch.Tensor, boxes: torch.Tensor, size, sampling_ratio: int = 2) -> torch.Tensor:
    """Crop normalised ``boxes [B,R,4]`` (or ``[R,4]`` for every image) -> ``[B,R,C,h,w]``.

    ``torchvision.ops.roi_align`` with ``aligned=True``: box edges are continuous pixel
    coordinates (pixel ``i`` covers ``[i, i+1)``), so a box on integer edges ``[a, b)`` with
    ``size == b - a`` and ``sampling_ratio=1`` reproduces ``images[..., a:b]`` exactly; larger boxes
    are averaged over ``sampling_ratio**2`` bilinear samples per output pixel (anti-aliasing,
    default 2 as in Detectron). Points outside the image read as zero.
    """
    batch, _, height, width = images.shape
    out_h, out_w = (size, size) if isinstance(size, int) else size
    boxes = _as_batch_boxes(boxes, batch).to(device=images.device, dtype=images.dtype)
    regions = boxes.shape[1]
    scale = boxes.new_tensor([width, height, width, height])
    index = torch.arange(batch, device=images.device, dtype=images.dtype).repeat_interleave(regions)
    rois = torch.cat([index[:, None], (boxes * scale).reshape(-1, 4)], dim=1)
    crops = roi_align(
        images, rois, output_size=(out_h, out_w), spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True
    )
    return crops.reshape(batch, regions, images.shape[1], out_h, out_w)


def _as_batch_boxes(boxes: torch.Tensor, batch: int) -> torch.Tensor:
    boxes = torch.as_tensor(boxes)
    if boxes.ndim == 2:
        boxes = boxes.unsqueeze(0).expand(batch, -1, -1)
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != batch:
        raise ConfigError(
            f"regions must be [R,4] or [B={batch},R,4] normalised (x0,y0,x1,y1), got {tuple(boxes.shape)}"
        )
    return boxes


class PartialImageBranches(nn.Module):
    """Region crops -> per-region CNN branch -> pooled features, fused with the whole-face feature.

    ``forward(images, global_features [B,F], regions=None) -> fused [B,out_features]``, where
    ``fused = ReLU(BN(Linear(concat(global, region_1, ..., region_R))))`` (no bias; BN shifts).
    The ReLU/BN make the fusion a real layer (two stacked linear maps would collapse into the
    embedding head's) and keep ``features`` non-negative like pooled CNN features.
    ``out_features`` defaults to ``global_features``, so FERNet's embedding head is unchanged.

    - ``backbone``: a registry name (default in FERNet: ``tiny``, 16-128 channels, about 0.29M
      parameters, 3x3 map at 24 px) or a module. Regions are small (a third to half of a 48 px
      face), so a light branch suffices and keeps PI&DML's cost close to the plain backbone's.
    - ``shared=True`` (default): one branch sees all regions in one batched call (``B*R`` crops);
      the fusion layer still knows which region is which from its concat position.
      ``shared=False``: one branch per region (copies of the given module, or fresh ones).
    - ``crop_size``: every region is resampled to this size (int or ``(h, w)``, default 24 = half
      of 48 px), as in RoI pooling; ``regions`` (a name->box mapping, ``[R,4]``) is the template,
      stored as a buffer so a checkpoint keeps the boxes it was trained with.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "tiny",
        regions: Mapping[str, Sequence[float]] | Sequence[Sequence[float]] | torch.Tensor = TEMPLATE_REGIONS,
        shared: bool = True,
        crop_size: int | tuple[int, int] = 24,
        in_chans: int = 1,
        global_features: int = 512,
        out_features: int | None = None,
        sampling_ratio: int = 2,
    ) -> None:
        super().__init__()

        if isinstance(regions, Mapping):
            self.region_names = tuple(regions)
            regions = list(regions.values())
        else:
            self.region_names = tuple(f"region{i}" for i in range(len(regions)))
        template = torch.as_tensor(np.asarray(regions, dtype=np.float32))
        if template.ndim != 2 or template.shape[1] != 4 or len(template) == 0:
            raise ConfigError(
                f"partial regions must be a non-empty list of (x0,y0,x1,y1) boxes, got shape {tuple(template.shape)}"
            )
        if not bool(((template[:, 2] > template[:, 0]) & (template[:, 3] > template[:, 1])).all()):
            raise ConfigError(f"partial region boxes need x1 > x0 and y1 > y0: {template.tolist()}")
        self.register_buffer("template", template)
        self.shared = shared
        self.crop_size = crop_size
        self.sampling_ratio = sampling_ratio

        def make_branch() -> nn.Module:
            if isinstance(backbone, nn.Module):
                return backbone
            return create_backbone(backbone, in_chans=in_chans)

        num_regions = len(template)
        if shared:
            self.branches = nn.ModuleList([make_branch()])
        else:
            first = make_branch()
            copies = (
                [copy.deepcopy(first) for _ in range(num_regions - 1)]
                if isinstance(backbone, nn.Module)
                else [make_branch() for _ in range(num_regions - 1)]
            )
            self.branches = nn.ModuleList([first, *copies])
        self.branch_features = self.branches[0].num_features
        self.out_features = out_features or global_features
        self.fusion = nn.Sequential(
            nn.Linear(global_features + num_regions * self.branch_features, self.out_features, bias=False),
            nn.BatchNorm1d(self.out_features),
            nn.ReLU(inplace=True),
        )

    @property
    def num_regions(self) -> int:
        return self.template.shape[0]

    def region_features(self, images: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled branch features ``[B, R, branch_features]``."""
        boxes = self.template if regions is None else regions
        crops = crop_regions(images, boxes, self.crop_size, self.sampling_ratio)
        batch, num_regions = crops.shape[:2]
        if num_regions != self.num_regions:
            raise ConfigError(
                f"this model was built for {self.num_regions} regions {self.region_names}, got {num_regions}"
            )
        if self.shared:
            pooled = self.branches[0](crops.flatten(0, 1)).mean(dim=(2, 3))
            return pooled.reshape(batch, num_regions, -1)
        return torch.stack([branch(crops[:, r]).mean(dim=(2, 3)) for r, branch in enumerate(self.branches)], dim=1)

    def forward(
        self, images: torch.Tensor, global_features: torch.Tensor, regions: torch.Tensor | None = None
    ) -> torch.Tensor:
        local = self.region_features(images, regions).flatten(1)
        return self.fusion(torch.cat([global_features, local.to(global_features.dtype)], dim=1))
