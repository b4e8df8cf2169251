from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import write_scan

from ibsr_helpers.config import load_config
from ibsr_helpers.data import Subject, Volume
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.inference import (
    Run,
    _check_fixed_size,
    _segment,
    predict_probabilities,
    predict_volume,
    sliding_window,
    window_slices,
)


class Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize("shape", [(1, 2, 50, 37, 29), (2, 1, 64, 64, 64), (1, 1, 20, 20, 20)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_sliding_window_identity_returns_input_exactly(shape, overlap):
    """Gaussian-weighted aggregation of an identity network's patches gives the input back,
    at the borders too (patches not dividing the volume, volume smaller than a patch)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    y = sliding_window(Identity(), x, patch_size=(24, 16, 32), overlap=overlap, sw_batch_size=3)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)


class BrainIsWM(torch.nn.Module):
    """Logits: WM (3) on every brain voxel (non-zero once prepared), background elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        brain = (x[:, :1] != 0).float()
        low = torch.full_like(brain, -10.0)
        return torch.cat([10 - 20 * brain, low, low, 20 * brain - 10], 1)


def _run(mode: str, model: torch.nn.Module | None = None, **data) -> Run:
    cfg = load_config(
        {
            "model": {"name": "unet2d" if mode == "slices" else "unet3d"},
            "data": {
                "mode": mode,
                "roi": [32, 32, 32],
                "patch_size": [16, 16, 16],
                "spacing": [1, 1, 1],
                **data,
            },
            "train": {"precision": "fp32"},
        },
        None,
    )
    return Run((model or BrainIsWM()).eval(), cfg)


def _volume(img: np.ndarray) -> Volume:
    subject = Subject("X_1", "test", Path("X_1.nii.gz"), None, (1, 1, 1), img.shape)
    return Volume(subject, img, None, nib.Nifti1Image(img, np.eye(4)))


@pytest.mark.parametrize("mode", ["slices", "volume", "patches"])
@pytest.mark.parametrize("tta", [False, True])
def test_predict_probabilities_every_mode(mode, tta):
    img = np.zeros((40, 36, 44), np.float32)
    img[10:30, 8:28, 12:34] = np.random.default_rng(0).uniform(1, 5, size=(20, 20, 22))
    probs = predict_probabilities(_run(mode), _volume(img), tta=tta).numpy()
    assert probs.shape == (4, 40, 36, 44)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(0), np.where(img > 0, 3, 0))


def test_ensemble_averages_probabilities():
    img = np.zeros((40, 36, 44), np.float32)
    img[10:30, 8:28, 12:34] = np.random.default_rng(1).uniform(1, 5, size=(20, 20, 22))

    class Halfway(BrainIsWM):
        def forward(self, x):
            return super().forward(x) / 8  # softer: the average is not a one-hot

    vol = _volume(img)
    a, b = _run("volume"), _run("volume", Halfway())
    _, pa = predict_volume(a, vol)
    _, pb = predict_volume(b, vol)
    _, pab = predict_volume([a, b], vol)
    torch.testing.assert_close(pab, (pa + pb) / 2)


def test_labels_are_the_first_most_probable_class():
    rng = np.random.default_rng(2)
    probs = torch.from_numpy(rng.dirichlet(np.ones(4), size=(9, 8, 7)).astype(np.float32))
    probs = torch.movedim(probs, -1, 0).contiguous()
    probs[:, 0, 0, 0] = 0.25  # a four-way tie: background, as argmax says
    probs[:, 1, 0, 0] = torch.tensor([0.1, 0.1, 0.4, 0.4])  # GM and WM tie: GM
    seg = _segment(probs, None, None)
    assert seg.dtype == np.uint8
    np.testing.assert_array_equal(seg, probs.numpy().argmax(0))
    assert seg[0, 0, 0] == 0 and seg[1, 0, 0] == 2


@pytest.mark.parametrize(
    ("shape", "patch", "overlap"),
    [
        ((192, 128, 192), (64, 64, 64), 0.5),
        ((50, 37, 29), (24, 16, 32), 0.25),
        ((20, 20, 20), (24, 16, 32), 0.5),
    ],
)
def test_window_slices_are_monais_own(shape, patch, overlap):
    """The windows listed are those MONAI's dense_patch_slices gives for its own scan
    interval, and they cover the (padded) volume."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    padded = [max(n, p) for n, p in zip(shape, patch, strict=True)]
    interval = _get_scan_interval(padded, patch, 3, (overlap,) * 3)
    expected = [tuple(s) for s in dense_patch_slices(padded, patch, interval)]
    got = window_slices(shape, patch, overlap)
    assert sorted((w[0].start, w[1].start, w[2].start) for w in got) == sorted(
        (w[0].start, w[1].start, w[2].start) for w in expected
    )
    covered = np.zeros(padded, bool)
    for w in got:
        covered[w] = True
    assert covered.all()


class Lopsided(BrainIsWM):
    """Not mirror-symmetric: CSF on the first half of the input's first spatial axis and,
    for 2.5D input, where the first neighbour is brighter than the last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        half = x.shape[2] // 2
        logits[:, 1, :half], logits[:, 3, :half] = 10.0, -10.0
        if x.dim() == 4:  # 2D (B, 2k+1, H, W)
            logits[:, 1] += 50 * (x[:, 0] - x[:, -1])
        return logits


@pytest.mark.parametrize(
    ("mode", "plane", "mirrored"),
    [("patches", "coronal", True), ("slices", "coronal", True), ("slices", "sagittal", False)],
)
def test_tta_mirrors_only_runs_trained_on_mirrors(mode, plane, mirrored):
    img = np.zeros((40, 36, 44), np.float32)
    ramp = np.linspace(1, 3, 20, dtype=np.float32)[:, None, None]  # brighter to the right
    img[10:30, 8:28, 12:34] = ramp
    run = _run(mode, Lopsided(), plane=plane, context=1)
    plain = predict_probabilities(run, _volume(img), tta=False)
    tta = predict_probabilities(run, _volume(img), tta=True)
    # the mirror changes what this model says, unless TTA leaves the run alone: a sagittal
    # 2D run, whose 2.5D neighbours would come in reversed order
    assert torch.equal(plain, tta) is not mirrored


# --- predict_folder: scans under any names, outputs mirroring the inputs ------------------


def test_predict_folder_takes_files_and_folders_and_mirrors_their_layout(
    tiny_run, tmp_path, capsys
):
    """A BIDS folder (derivatives' dseg skipped, and said), a course folder and a file given
    by name: <stem>_seg.nii.gz at the path under the input folder, each on its own grid."""
    from ibsr_helpers.inference import predict_folder

    bids, course = tmp_path / "bids", tmp_path / "Test_Set"
    images = [
        write_scan(bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"),
        write_scan(bids / "sub-02" / "anat" / "sub-02_T1w.nii"),
        write_scan(course / "IBSR_02" / "IBSR_02.nii.gz", _scan_4d_singleton()),
        write_scan(tmp_path / "brain.nii.gz"),
    ]
    dseg = bids / "derivatives" / "t" / "sub-01" / "anat" / "sub-01_desc-t_dseg.nii.gz"
    write_scan(dseg, np.zeros((20, 20, 20), np.uint8))
    out = tmp_path / "out"
    written = predict_folder([tiny_run], [bids, course, images[-1]], out, progress=False)
    assert [p.relative_to(out).as_posix() for p in written] == [
        "sub-01/anat/sub-01_T1w_seg.nii.gz",
        "sub-02/anat/sub-02_T1w_seg.nii.gz",
        "IBSR_02/IBSR_02_seg.nii.gz",
        "brain_seg.nii.gz",
    ]
    for image, seg in zip(images, written, strict=True):
        src, got = nib.load(str(image)), nib.load(str(seg))
        assert got.shape == src.shape and got.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(got.affine, src.affine)
    assert "skipped 1 file(s) named like label maps" in capsys.readouterr().out


def _scan_4d_singleton() -> np.ndarray:
    """IBSR18's own layout: (X, Y, Z, 1)."""
    data = np.zeros((20, 20, 20, 1), np.int16)
    data[5:15, 4:16, 6:14, 0] = np.random.default_rng(7).integers(1, 900, (10, 12, 8))
    return data


@pytest.mark.parametrize("bad", ["series", "collision"])
def test_predict_folder_checks_every_input_before_predicting(tiny_run, tmp_path, bad):
    """A 4-D series or two inputs with one output, given after a good scan: refused before
    anything is predicted, so nothing is half done."""
    from ibsr_helpers.inference import predict_folder

    good = write_scan(tmp_path / "a" / "brain.nii.gz")
    if bad == "series":
        other = write_scan(tmp_path / "bold.nii.gz", np.repeat(_scan_4d_singleton(), 3, axis=3))
        message = r"bold\.nii\.gz: holds a series of 3 volumes \(shape \(20, 20, 20, 3\)\)"
    else:
        other = write_scan(tmp_path / "b" / "brain.nii.gz")
        message = "would both be written to <out>/brain_seg.nii.gz"
    with pytest.raises(IBSRError, match=message) as err:
        predict_folder([tiny_run], [good, other], tmp_path / "out", progress=False)
    assert str(other) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_label_map_given_as_a_scan_stops_there_and_keeps_what_was_written(tiny_run, tmp_path):
    from ibsr_helpers.inference import predict_folder

    write_scan(tmp_path / "in" / "IBSR_10" / "IBSR_10.nii.gz")
    labels = np.random.default_rng(0).integers(0, 4, (20, 20, 20)).astype(np.uint8)
    write_scan(tmp_path / "in" / "IBSR_11" / "IBSR_11.nii.gz", labels)  # IBSR_11_seg, renamed
    with pytest.raises(
        IBSRError, match=r"IBSR_11\.nii\.gz: looks like a label map.*\{0, 1, 2, 3\}"
    ):
        predict_folder([tiny_run], tmp_path / "in", tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "IBSR_10" / "IBSR_10_seg.nii.gz").is_file()
    assert not (tmp_path / "out" / "IBSR_11").exists()


@pytest.mark.parametrize(
    ("name", "mode", "shape", "refused"),
    [
        ("unetr", "volume", (96, 64, 96), False),  # exactly img_size
        ("unetr", "volume", (112, 64, 96), True),  # a brain box larger than img_size
        ("unetr", "patches", (112, 64, 96), False),  # fed in patches of the size it takes
        ("unet3d", "volume", (112, 64, 96), False),  # any size divisible by its divisor
    ],
)
def test_a_fixed_size_network_refuses_a_larger_brain_box(name, mode, shape, refused):
    from types import SimpleNamespace

    from ibsr_helpers.config import load_config
    from ibsr_helpers.plan import specs

    model = {"name": name, **({"img_size": [96, 64, 96]} if name == "unetr" else {})}
    config = load_config({"model": model, "data": {"mode": mode, "roi": [96, 64, 96]}}, None)
    run = SimpleNamespace(specs=specs(config))
    if refused:
        with pytest.raises(
            IBSRError, match=r"needs a box of \(112, 64, 96\).*exactly \(96, 64, 96\)"
        ):
            _check_fixed_size(run, shape)
    else:
        _check_fixed_size(run, shape)
