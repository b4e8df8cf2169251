"""Post-processing: masking outside the brain, connected-component clean-ups, parsing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ibsr_helpers.data import Subject, Volume
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.postprocessing import PostProcessing, keep_components


def _scene() -> tuple[np.ndarray, Volume]:
    """WM block with a GM rim, a stray CSF island inside the WM, a CSF speck outside."""
    seg = np.zeros((30, 30, 30), np.uint8)
    seg[5:25, 5:25, 5:25] = 2
    seg[8:22, 8:22, 8:22] = 3
    seg[12:14, 12:14, 12:14] = 1  # 8 voxels of CSF inside WM
    seg[27, 27, 27] = 1  # a speck outside the brain
    seg[2:5, 10:14, 10:14] = 1  # a real CSF piece, 48 voxels, beside the GM
    image = np.where(seg > 0, 100.0, 0.0).astype(np.float32)
    image[27, 27, 27] = 0.0  # the speck lies where the skull-stripped image is 0
    subject = Subject("IBSR_01", "val", Path("IBSR_01.nii.gz"), None, (1, 1, 1), seg.shape)
    return seg, Volume(subject, image, None, nib.Nifti1Image(image, np.eye(4)))


def test_mask_clears_what_lies_outside_the_brain():
    seg, vol = _scene()
    out = PostProcessing(mask=True)(seg, vol)
    assert out[27, 27, 27] == 0 and (out[vol.image > 0] == seg[vol.image > 0]).all()
    with pytest.raises(IBSRError, match="needs the scan"):
        PostProcessing(mask=True)(seg)


def test_largest_component_keeps_one_piece_and_fills_from_the_neighbours():
    seg, _ = _scene()
    out = PostProcessing(largest=("CSF",))(seg)
    assert (out[2:5, 10:14, 10:14] == 1).all()  # the largest CSF piece stays
    assert (out[12:14, 12:14, 12:14] == 3).all()  # the island inside WM becomes WM
    assert out[27, 27, 27] == 0  # the speck outside becomes background
    assert (out[seg == 2] == 2).all() and (out[seg == 3] == 3).all()  # others untouched


def test_min_size_drops_only_small_pieces():
    seg, _ = _scene()
    out = PostProcessing(min_size={"CSF": 20})(seg)
    assert (out[2:5, 10:14, 10:14] == 1).all() and (out[12:14, 12:14, 12:14] == 3).all()
    assert (PostProcessing(min_size={"CSF": 100})(seg) != 1).all()  # nothing that large
    np.testing.assert_array_equal(PostProcessing()(seg), seg)  # off: unchanged


def test_keep_components():
    mask = np.zeros((10, 10, 10), bool)
    mask[:3, :3, :3] = True
    mask[6:8, 6:8, 6:8] = True
    assert keep_components(mask, largest=True).sum() == 27
    assert keep_components(mask, min_size=10).sum() == 27
    assert keep_components(mask, min_size=1).sum() == 35
    assert not keep_components(np.zeros((3, 3, 3), bool), largest=True).any()


def test_parse_and_describe():
    post = PostProcessing.parse("mask,largest:WM,min:CSF=20")
    assert post == PostProcessing(True, ("WM",), {"CSF": 20}) and post.active
    assert str(post) == "mask, largest WM, CSF >= 20 voxels"
    assert not PostProcessing.parse("none").active and str(PostProcessing.parse("")) == "none"
    for bad in ("blur", "min:CSF=many", "largest:bone"):
        with pytest.raises(IBSRError):
            PostProcessing.parse(bad)
