"""Partial images: roi_align crops vs slicing, landmark boxes by hand, region branches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fermetric.errors import ConfigError
from fermetric.models import (
    LANDMARK_TEMPLATE,
    TEMPLATE_REGIONS,
    PartialImageBranches,
    crop_regions,
    regions_from_landmarks,
)
from fermetric.models.partial import CANONICAL_LANDMARKS_5


def test_crop_on_pixel_edges_equals_slicing_per_sample():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 16, 20)
    height, width = 16, 20
    # [x0, y0, x1, y1) in pixels, all 6x4 so that one output size fits; different per image.
    pixel_boxes = [[(2, 3, 8, 7), (10, 0, 16, 4)], [(0, 12, 6, 16), (14, 5, 20, 9)]]
    boxes = torch.tensor(pixel_boxes, dtype=torch.float32) / torch.tensor([width, height, width, height])
    crops = crop_regions(images, boxes, (4, 6), sampling_ratio=1)
    assert crops.shape == (2, 2, 3, 4, 6)
    for b in range(2):
        for r, (x0, y0, x1, y1) in enumerate(pixel_boxes[b]):
            torch.testing.assert_close(crops[b, r], images[b, :, y0:y1, x0:x1], atol=1e-6, rtol=0)


def test_shared_template_boxes_apply_to_every_image():
    images = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    crops = crop_regions(images, torch.tensor([[0.5, 0.0, 1.0, 0.5]]), 4, sampling_ratio=1)
    torch.testing.assert_close(crops[:, 0], images[:, :, 0:4, 4:8])


def test_downsampling_crop_on_a_linear_ramp_reads_bin_centres():
    # Bilinear samples placed symmetrically in each bin average to the ramp's value at the bin
    # centre, so the expected crop is known in closed form.
    height, width = 32, 32
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    image = (2.0 * xs + 3.0 * ys)[None, None]
    x0, y0, x1, y1 = 4.0, 6.0, 28.0, 22.0  # continuous pixel-edge coordinates
    crops = crop_regions(
        image, torch.tensor([[x0 / width, y0 / height, x1 / width, y1 / height]], dtype=torch.float64), (4, 6)
    )
    centre_x = x0 + (torch.arange(6, dtype=torch.float64) + 0.5) * (x1 - x0) / 6 - 0.5  # as pixel index
    centre_y = y0 + (torch.arange(4, dtype=torch.float64) + 0.5) * (y1 - y0) / 4 - 0.5
    expected = 2.0 * centre_x[None, :] + 3.0 * centre_y[:, None]
    torch.testing.assert_close(crops[0, 0, 0], expected)


def test_bad_region_shapes_raise():
    with pytest.raises(ConfigError, match=r"\[R,4\]"):
        crop_regions(torch.zeros(2, 1, 8, 8), torch.zeros(3, 2, 4), 4)
    with pytest.raises(ConfigError, match="x1 > x0"):
        PartialImageBranches("tiny", [(0.5, 0.0, 0.2, 1.0)], global_features=8)


def test_five_point_boxes_by_hand():
    # Eyes 40 px apart (d = 40) on a 100 x 100 image.
    points = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], dtype=np.float32)
    boxes = regions_from_landmarks(points, 100)
    expected = (
        np.array(
            [
                [30 - 20, 40 - 22, 70 + 20, 40 + 12],  # eyes +-0.5d, 0.55d above, 0.3d below
                [50 - 14, 40 + 6, 50 + 14, 60 + 10],  # nose +-0.35d, from 0.15d below the eyes to 0.25d below the tip
                [35 - 12, 80 - 14, 65 + 12, 80 + 14],  # mouth corners +-0.3d, +-0.35d
            ]
        )
        / 100
    )
    assert isinstance(boxes, np.ndarray) and boxes.shape == (3, 4)
    np.testing.assert_allclose(boxes, expected, atol=1e-6)
    # Non-square image: x normalised by the width, y by the height; torch in -> torch out, batched.
    wide = regions_from_landmarks(torch.tensor(points)[None].repeat(2, 1, 1), (100, 200))
    assert isinstance(wide, torch.Tensor) and wide.shape == (2, 3, 4)
    np.testing.assert_allclose(wide[1].numpy(), expected * np.array([0.5, 1, 0.5, 1]), atol=1e-6)


def make_68_points() -> np.ndarray:
    p = np.zeros((68, 2), dtype=np.float32)
    p[0:17] = np.stack([np.linspace(0, 100, 17), np.full(17, 99.0)], 1)  # jaw: ignored by every region
    p[17:27] = np.stack([np.linspace(20, 80, 10), np.full(10, 20.0)], 1)  # brows
    eye = np.array([[-5, 0], [-2, -3], [2, -3], [5, 0], [2, 3], [-2, 3]], dtype=np.float32)
    p[36:42] = eye + [35, 35]  # centre (35, 35)
    p[42:48] = eye + [65, 35]  # centre (65, 35): d = 30
    p[27:31] = np.stack([np.full(4, 50.0), np.linspace(40, 56, 4)], 1)  # nose bridge
    p[31:36] = np.stack([np.linspace(44, 56, 5), np.full(5, 60.0)], 1)  # nostrils
    p[48:68] = np.stack([np.linspace(38, 62, 20), np.tile([70.0, 82.0], 10)], 1)  # lips
    return p


def test_sixty_eight_point_boxes_by_hand():
    boxes = regions_from_landmarks(make_68_points(), 100)
    expected = (
        np.array(
            [
                [20 - 4.5, 20 - 4.5, 80 + 4.5, 38 + 4.5],  # brows + eyes, pad 0.15d
                [44 - 4.5, 40 - 4.5, 56 + 4.5, 60 + 4.5],  # nose, pad 0.15d
                [38 - 6.0, 70 - 6.0, 62 + 6.0, 82 + 6.0],  # mouth, pad 0.2d
            ]
        )
        / 100
    )
    np.testing.assert_allclose(boxes, expected, atol=1e-6)


def test_boxes_are_clipped_to_the_image_and_shapes_checked():
    points = np.array([[2, 3], [30, 3], [16, 15], [5, 28], [27, 28]], dtype=np.float32)
    boxes = regions_from_landmarks(points, 32)
    assert boxes.min() >= 0 and boxes.max() <= 1
    assert boxes[0, 1] == 0.0 and boxes[2, 3] == 1.0
    with pytest.raises(ConfigError, match="landmarks must have shape"):
        regions_from_landmarks(np.zeros((4, 2)), 32)


def test_templates_cover_the_features_they_name():
    eyes, nose, mouth = (LANDMARK_TEMPLATE[k] for k in ("eyes_brows", "nose", "mouth"))

    def inside(point, box):
        return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]

    le, re, tip, ml, mr = CANONICAL_LANDMARKS_5
    assert inside(le, eyes) and inside(re, eyes) and inside(tip, nose) and inside(ml, mouth) and inside(mr, mouth)
    assert inside(le, TEMPLATE_REGIONS["upper_face"]) and inside(ml, TEMPLATE_REGIONS["lower_face"])
    assert not inside(ml, TEMPLATE_REGIONS["upper_face"]) and not inside(le, TEMPLATE_REGIONS["lower_face"])


def test_shared_branch_features_equal_branch_on_manual_crops():
    torch.manual_seed(0)
    regions = {"top_left": (0.0, 0.0, 0.5, 0.5), "bottom_right": (0.5, 0.5, 1.0, 1.0)}
    module = PartialImageBranches("tiny", regions, shared=True, crop_size=8, global_features=4, sampling_ratio=1).eval()
    assert len(module.branches) == 1 and module.region_names == ("top_left", "bottom_right")
    images = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        feats = module.region_features(images)
        branch = module.branches[0]
        manual = torch.stack([branch(images[:, :, :8, :8]).mean((2, 3)), branch(images[:, :, 8:, 8:]).mean((2, 3))], 1)
    assert feats.shape == (2, 2, 128)
    torch.testing.assert_close(feats, manual, atol=1e-5, rtol=1e-5)


def test_separate_branches_are_independent_and_all_trained():
    torch.manual_seed(0)
    module = PartialImageBranches(
        "tiny", TEMPLATE_REGIONS, shared=False, crop_size=16, global_features=10, out_features=6
    ).train()
    assert len(module.branches) == 2
    assert module.branches[0].stages[0][0][0].weight.data_ptr() != module.branches[1].stages[0][0][0].weight.data_ptr()
    out = module(torch.randn(3, 1, 32, 32), torch.randn(3, 10))
    assert out.shape == (3, 6) and (out >= 0).all()  # ReLU after the fusion
    out.square().sum().backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_module_branch_is_copied_for_separate_regions():
    from fermetric.models import create_backbone

    branch = create_backbone("tiny", width=0.25)
    module = PartialImageBranches(
        branch, [(0, 0, 1, 0.5), (0, 0.5, 1, 1), (0.2, 0.2, 0.8, 0.8)], shared=False, global_features=4
    )
    assert module.branches[0] is branch and len(module.branches) == 3
    assert module.branches[1] is not branch and module.branch_features == 32
    torch.testing.assert_close(module.branches[2].stages[0][0][0].weight, branch.stages[0][0][0].weight)
