"""Tests for ibsr_helpers.metrics.

Real IBSR18 labels are used when IBSR18_DIR is set, a synthetic 3-class volume otherwise.
Distances are checked to 0.01 mm against SimpleITK (ITK's Maurer distance transform and
contour filter), an implementation independent of the MONAI code the module calls.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from ibsr_helpers import data
from ibsr_helpers import metrics as M
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.io import read_volume, save_segmentation

TOL_MM = 0.01  # distances are exact voxel-centre distances; 0.01 mm leaves float32 slack only
SPACING = (0.9375, 1.5, 0.9375)


def _synthetic_labels(shape=(80, 56, 80), seed=0) -> np.ndarray:
    """Nested irregular shells: WM inside GM inside CSF, with a background margin."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    bumps = ndi.gaussian_filter(rng.standard_normal(shape), sigma=4)
    radius = radius + 2.0 * bumps
    labels = np.zeros(shape, np.uint8)
    labels[radius < 0.8] = 1
    labels[radius < 0.7] = 2
    labels[radius < 0.45] = 3
    return labels


@pytest.fixture(scope="module")
def labels() -> tuple[np.ndarray, tuple[float, float, float], str]:
    """One subject's label volume, its spacing and its name."""
    root = os.environ.get("IBSR18_DIR")
    if root:
        subject = data.discover(root, splits=["val"])[0]
        label, _ = read_volume(subject.label, np.uint8)
        return label, subject.spacing, subject.id
    return _synthetic_labels(), SPACING, "synthetic"


def _perturb(gt: np.ndarray, kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    pred = gt.copy()
    if kind == "dilate":  # grow WM into GM by one voxel, CSF into background by two
        pred[ndi.binary_dilation(gt == 3)] = 3
        pred[ndi.binary_dilation(gt == 1, iterations=2) & (gt == 0)] = 1
    elif kind == "shift":  # 2 voxels along the 1.5 mm axis, 1 along the first
        pred = np.roll(gt, (1, 2, 0), axis=(0, 1, 2))
    elif kind == "erode":  # random holes, a stray CSF blob far out, a mislabelled patch
        pred[(rng.random(gt.shape) < 0.05) & (gt > 0)] = 0
        pred[2:5, 2:5, 2:5] = 1  # background in IBSR and in the synthetic volume
        centre = np.argwhere(gt > 0).mean(0).astype(int)
        pred[tuple(slice(c, c + 6) for c in centre)] = 2
    return pred


def _to_sitk(mask: np.ndarray, spacing) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.astype(np.uint8).transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def _contour(mask: np.ndarray, spacing) -> sitk.Image:
    """Boundary voxels: mask voxels with a face neighbour outside the mask (ITK's filter)."""
    return sitk.BinaryContour(
        _to_sitk(mask, spacing), fullyConnected=False, backgroundValue=0, foregroundValue=1
    )


def _reference_hd(pred: np.ndarray, gt: np.ndarray, spacing) -> tuple[float, float]:
    """HD from SimpleITK's Hausdorff filter on the boundaries; HD95 from Maurer distance maps.

    Both masks are first cropped to their union's bounding box plus a 3-voxel margin: the
    distances between boundary voxels do not change, and ITK has 4x fewer voxels to visit.
    """
    found = np.argwhere(pred | gt)
    lo, hi = np.maximum(found.min(0) - 3, 0), found.max(0) + 4
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    cp, cg = _contour(pred[crop], spacing), _contour(gt[crop], spacing)
    hd_filter = sitk.HausdorffDistanceImageFilter()
    hd_filter.Execute(cp, cg)
    hd95 = 0.0
    for source, target in ((cp, cg), (cg, cp)):
        dist = sitk.SignedMaurerDistanceMap(
            target, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
        )
        on_source = sitk.GetArrayFromImage(source).astype(bool)
        d = np.maximum(sitk.GetArrayFromImage(dist)[on_source], 0.0).astype(np.float64)
        hd95 = max(hd95, float(np.percentile(d, 95)))
    return hd_filter.GetHausdorffDistance(), hd95


# --- per-mask metrics -------------------------------------------------------------------


def test_identical_labels_score_perfectly(labels):
    gt, spacing, _ = labels
    scores = M.evaluate_segmentation(gt.copy(), gt, spacing)
    for tissue in data.TISSUES:
        assert scores[tissue] == {"dice": 1.0, "hd": 0.0, "hd95": 0.0, "avd": 0.0}
    assert M.mean_dice(scores) == 1.0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_cube_shifted_along_anisotropic_axis(k):
    spacing, n = (1.0, 1.5, 1.0), 10
    gt = np.zeros((30, 30, 30), bool)
    gt[10:20, 10:20, 10:20] = True
    pred = np.roll(gt, k, axis=1)
    assert M.hausdorff(pred, gt, spacing) == pytest.approx(1.5 * k, abs=1e-6)
    assert M.hausdorff(np.roll(gt, k, axis=0), gt, spacing) == pytest.approx(1.0 * k, abs=1e-6)
    assert M.dice(pred, gt) == pytest.approx((n - k) / n)
    assert M.avd(pred, gt) == 0.0
    hd95 = M.hausdorff(pred, gt, spacing, percentile=95)
    assert 0 < hd95 <= 1.5 * k + 1e-6


def test_boundary_distance_counts_holes():
    """A hole is boundary: HD is its distance to the outer face, not the set distance 1."""
    gt = np.zeros((21, 21, 21), bool)
    gt[3:18, 3:18, 3:18] = True  # centre (10, 10, 10), faces at 3 and 17
    pred = gt.copy()
    pred[10, 10, 10] = False
    spacing = (1.0, 1.5, 1.0)
    # the hole's face neighbours lie 6 voxels from the nearest outer face; for (10, 9, 10)
    # that face is along y (6 * 1.5 mm = 9 mm), so the x and z faces, 7 mm away, are nearer
    assert M.hausdorff(pred, gt, spacing) == pytest.approx(7.0, abs=1e-6)
    set_hd = sitk.HausdorffDistanceImageFilter()
    set_hd.Execute(_to_sitk(pred, spacing), _to_sitk(gt, spacing))
    assert set_hd.GetHausdorffDistance() == pytest.approx(1.0)  # the definition we do not use


@pytest.mark.parametrize("kind", ["dilate", "shift", "erode"])
def test_hausdorff_matches_simpleitk_on_perturbed_labels(labels, kind):
    gt, spacing, _ = labels
    pred = _perturb(gt, kind)
    scores = M.evaluate_segmentation(pred, gt, spacing)
    for volume in (gt, pred):  # so that ITK and MONAI need not agree on the volume's edge
        inner = volume[1:-1, 1:-1, 1:-1]
        assert np.count_nonzero(volume) == np.count_nonzero(inner)
    for tissue, value in (("CSF", 1), ("GM", 2), ("WM", 3)):
        p, g = pred == value, gt == value
        assert scores[tissue]["hd"] > 0  # the perturbation moved this tissue's boundary
        ref_hd, ref_hd95 = _reference_hd(p, g, spacing)
        assert scores[tissue]["hd"] == pytest.approx(ref_hd, abs=TOL_MM), tissue
        assert scores[tissue]["hd95"] == pytest.approx(ref_hd95, abs=TOL_MM), tissue
        assert scores[tissue]["dice"] == pytest.approx(
            2 * (p & g).sum() / (p.sum() + g.sum()), abs=1e-12
        )
        assert scores[tissue]["avd"] == pytest.approx(abs(p.sum() - g.sum()) / g.sum() * 100)
    assert M.hausdorff(pred == 2, gt == 2, spacing, 95) == pytest.approx(scores["GM"]["hd95"])


def test_evaluate_segmentation_timing_on_one_subject(labels, record_property):
    gt, spacing, name = labels
    pred = _perturb(gt, "shift")
    M.hausdorff(gt == 1, gt == 1, spacing)  # import MONAI outside the timed part
    start = time.perf_counter()
    scores = M.evaluate_segmentation(pred, gt, spacing)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    fast = M.evaluate_segmentation(pred, gt, spacing, hd=False)
    fast_seconds = time.perf_counter() - start
    record_property("evaluate_segmentation_s", seconds)
    print(f"\n{name} {gt.shape}: with HD {seconds:.2f} s, Dice/AVD only {fast_seconds:.3f} s")
    assert set(fast["GM"]) == {"dice", "avd"}
    assert all(fast[t]["dice"] == scores[t]["dice"] for t in data.TISSUES)
    assert all(math.isfinite(v) for row in scores.values() for v in row.values())


def test_empty_mask_policy():
    shape, spacing = (8, 6, 10), (1.0, 1.5, 2.0)
    diagonal = math.sqrt(8**2 + 9**2 + 20**2)
    empty = np.zeros(shape, bool)
    some = empty.copy()
    some[2:4, 2:4, 2:4] = True
    assert (M.dice(empty, empty), M.avd(empty, empty)) == (1.0, 0.0)
    assert M.hausdorff(empty, empty, spacing) == 0.0
    assert M.hausdorff(empty, empty, spacing, 95) == 0.0
    for pred, gt in ((empty, some), (some, empty)):
        assert M.dice(pred, gt) == 0.0
        assert M.avd(pred, gt) == 100.0
        assert M.hausdorff(pred, gt, spacing) == pytest.approx(diagonal)
        assert M.hausdorff(pred, gt, spacing, 95) == pytest.approx(diagonal)


def test_missing_tissues_never_give_nan():
    gt = np.zeros((12, 10, 12), np.uint8)
    gt[3:9, 3:7, 3:9] = 3  # WM only
    pred = np.zeros_like(gt)
    pred[3:9, 3:7, 3:9] = 2  # GM only
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = M.evaluate_segmentation(pred, gt, (1.0, 1.0, 1.0))
    assert not [w for w in caught if "all 0" in str(w.message)]  # no MONAI empty-mask warning
    assert scores["CSF"] == {"dice": 1.0, "hd": 0.0, "hd95": 0.0, "avd": 0.0}
    assert scores["GM"]["dice"] == 0.0 and scores["GM"]["avd"] == 100.0
    assert scores["WM"]["hd"] == pytest.approx(math.sqrt(12**2 + 10**2 + 12**2))
    assert not np.isnan([v for row in scores.values() for v in row.values()]).any()


def test_dice_avd_values_and_bad_arguments():
    gt = np.zeros(200, bool)
    gt[:100] = True
    pred = np.zeros(200, bool)
    pred[50:160] = True
    assert M.dice(pred, gt) == pytest.approx(2 * 50 / 210)
    assert M.avd(pred, gt) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="shapes"):
        M.dice(pred, gt[:100])
    cube = np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError, match="spacing"):
        M.hausdorff(cube, cube, (1.0, 1.0))
    with pytest.raises(ValueError, match="percentile"):
        M.hausdorff(cube, cube, (1.0, 1.0, 1.0), percentile=150)
    assert M.mean_dice({"CSF": {"dice": 0.5}, "GM": {"dice": 0.7}, "WM": {"dice": 0.9}}) == (
        pytest.approx(0.7)
    )


# --- folders ----------------------------------------------------------------------------

SHAPE = (24, 16, 20)


def _reference_image(affine: np.ndarray | None = None) -> nib.Nifti1Image:
    """A 4-D singleton int16 T1 like IBSR's, with intensities that are not labels."""
    if affine is None:
        affine = np.diag([*SPACING, 1.0])
        affine[:3, 3] = (-10.0, 20.0, -5.0)
    intensities = np.full((*SHAPE, 1), 100, np.int16)
    img = nib.Nifti1Image(intensities, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return img


def _small_labels(seed: int) -> np.ndarray:
    return _synthetic_labels(SHAPE, seed)


def _write_gt(root, sid: str, labels: np.ndarray, with_label: bool = True):
    folder = root / "TrainingValidationTestSets" / "Validation_Set" / sid
    ref = _reference_image()
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(ref, str(folder / f"{sid}.nii.gz"))
    if with_label:
        save_segmentation(labels, ref, folder / f"{sid}_seg.nii.gz")


@pytest.fixture()
def folders(tmp_path):
    gt_dir, pred_dir = tmp_path / "data", tmp_path / "preds"
    gts = {"DEMO_01": _small_labels(1), "DEMO_02": _small_labels(2)}
    for sid, lab in gts.items():
        _write_gt(gt_dir, sid, lab)
    _write_gt(gt_dir, "DEMO_03", gts["DEMO_01"], with_label=False)  # test subject: image only
    pred2 = _perturb(gts["DEMO_02"], "shift")
    save_segmentation(gts["DEMO_01"], _reference_image(), pred_dir / "DEMO_01_seg.nii.gz")
    deep = pred_dir / "run" / "best" / "DEMO_02.nii.gz"
    save_segmentation(pred2, _reference_image(), deep)
    nib.save(nib.load(str(deep)), str(deep.with_suffix("")))  # uncompressed DEMO_02.nii
    deep.unlink()
    return gt_dir, pred_dir, gts, pred2


def test_evaluate_folders_matches_by_id_at_any_depth(folders):
    gt_dir, pred_dir, gts, pred2 = folders
    df = M.evaluate_folders(pred_dir, gt_dir, progress=False)
    assert list(df.columns) == ["subject", "tissue", "dice", "hd", "hd95", "avd"]
    assert list(df["subject"]) == ["DEMO_01"] * 3 + ["DEMO_02"] * 3
    assert list(df["tissue"]) == list(data.TISSUES) * 2
    assert (df.loc[df.subject == "DEMO_01", ["dice"]] == 1.0).all().all()
    expected = M.evaluate_segmentation(pred2, gts["DEMO_02"], SPACING)
    got = df[df.subject == "DEMO_02"].set_index("tissue")
    for tissue in data.TISSUES:
        for metric in M.METRICS:
            assert got.loc[tissue, metric] == pytest.approx(expected[tissue][metric])
    assert got.loc["CSF", "hd"] > 0
    assert not df[list(M.METRICS)].isna().any().any()


def test_evaluate_folders_skips_prediction_without_ground_truth(folders):
    gt_dir, pred_dir, gts, _ = folders
    save_segmentation(gts["DEMO_01"], _reference_image(), pred_dir / "DEMO_03.nii.gz")
    with pytest.warns(UserWarning, match="DEMO_03"):
        df = M.evaluate_folders(pred_dir, gt_dir, progress=False)
    assert set(df["subject"]) == {"DEMO_01", "DEMO_02"}


def test_evaluate_folders_geometry_mismatch_names_the_file(folders):
    gt_dir, pred_dir, gts, _ = folders
    shifted = np.diag([*SPACING, 1.0])
    bad = pred_dir / "DEMO_01_seg.nii.gz"
    save_segmentation(gts["DEMO_01"], _reference_image(shifted), bad)
    with pytest.raises(IBSRError, match="affine") as info:
        M.evaluate_folders(pred_dir, gt_dir, progress=False)
    assert str(bad) in str(info.value)
    small = nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), _reference_image().affine)
    nib.save(small, str(bad))
    with pytest.raises(IBSRError, match="shape") as info:
        M.evaluate_folders(pred_dir, gt_dir, progress=False)
    assert str(bad) in str(info.value)


def test_evaluate_folders_rejects_label_values_outside_range(folders):
    gt_dir, pred_dir, gts, _ = folders
    bad_labels = gts["DEMO_01"].copy()
    bad_labels[5, 5, 5] = 5
    bad = pred_dir / "DEMO_01_seg.nii.gz"
    save_segmentation(bad_labels, _reference_image(), bad)
    with pytest.raises(IBSRError, match="outside 0..3.*5") as info:
        M.evaluate_folders(pred_dir, gt_dir, progress=False)
    assert str(bad) in str(info.value)


def test_evaluate_folders_without_any_match_names_pred_dir(tmp_path, folders):
    gt_dir, _, gts, _ = folders
    empty = tmp_path / "nothing_here"
    save_segmentation(gts["DEMO_01"], _reference_image(), empty / "IBSR_99_seg.nii.gz")
    save_segmentation(gts["DEMO_01"], _reference_image(), empty / "prediction.nii.gz")
    with pytest.warns(UserWarning, match="IBSR_99"), pytest.raises(IBSRError) as info:
        M.evaluate_folders(empty, gt_dir, progress=False)
    assert str(empty) in str(info.value)
    with pytest.raises(IBSRError, match="not found"):
        M.evaluate_folders(tmp_path / "missing", gt_dir, progress=False)


def test_two_predictions_for_one_subject_are_refused(folders):
    gt_dir, pred_dir, gts, _ = folders
    save_segmentation(gts["DEMO_01"], _reference_image(), pred_dir / "DEMO_01.nii.gz")
    with pytest.raises(IBSRError, match="two files for subject DEMO_01"):
        M.evaluate_folders(pred_dir, gt_dir, progress=False)


# --- tables -----------------------------------------------------------------------------


def _table() -> pd.DataFrame:
    rows = []
    for i, sid in enumerate(["S_1", "S_2"]):
        for j, tissue in enumerate(data.TISSUES):
            rows.append(
                {
                    "subject": sid,
                    "tissue": tissue,
                    "dice": 0.8 + 0.1 * i + 0.01 * j,
                    "hd": 10.0 + i,
                    "hd95": 3.0 + 2 * i,
                    "avd": 5.0 * (j + 1),
                }
            )
    return pd.DataFrame(rows)


def test_summary_table_means_and_sds():
    table = M.summary_table(_table())
    assert list(table.index) == ["CSF", "GM", "WM", "mean"]
    assert (table["n"] == 2).all()
    assert table.loc["GM", "dice_mean"] == pytest.approx(0.86)
    assert table.loc["GM", "dice_sd"] == pytest.approx(0.1 / math.sqrt(2))
    assert table.loc["WM", "avd_mean"] == pytest.approx(15.0)
    assert table.loc["WM", "avd_sd"] == 0.0
    assert table.loc["mean", "dice_mean"] == pytest.approx(0.86)
    assert table.loc["mean", "hd95_sd"] == pytest.approx(2 / math.sqrt(2))
    assert table.loc["mean", "avd_mean"] == pytest.approx(10.0)
    single = M.summary_table(_table().query("subject == 'S_1'"))
    assert (single.filter(like="_sd") == 0.0).all().all()


def test_format_summary_is_readable():
    text = M.format_summary(_table())
    lines = text.splitlines()
    for heading in ("Dice", "HD (mm)", "HD95 (mm)", "AVD (%)"):
        assert heading in lines[0]
    assert [line.split()[0] for line in lines[2:6]] == ["CSF", "GM", "WM", "mean"]
    assert "0.860 ± 0.071" in lines[3]  # GM Dice
    assert "15.00 ± 0.00" in lines[4]  # WM AVD
    assert "2 subjects" in lines[-1]


def test_write_metrics_csv_round_trips(tmp_path):
    df = _table()
    path = M.write_metrics_csv(df, tmp_path / "new" / "dir" / "metrics.csv")
    assert path.is_file()
    pd.testing.assert_frame_equal(pd.read_csv(path), df)
    summary = M.write_metrics_csv(M.summary_table(df), tmp_path / "summary.csv")
    assert pd.read_csv(summary)["tissue"].tolist() == ["CSF", "GM", "WM", "mean"]


# --------------------------------------------------------------------------- evaluate_runs


def _sign_run(flip: bool = False):
    """A Run whose 'network' labels positive voxels WM (3), or CSF (1) when ``flip``."""
    import torch

    from ibsr_helpers.config import load_config
    from ibsr_helpers.inference import Run

    class Sign(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            c, hit = x[:, :1], 1 if flip else 3
            low = torch.zeros_like(c) - 10
            logits = [-10 * c] + [10 * c if k == hit else low for k in (1, 2, 3)]
            return torch.cat(logits, 1)

    cfg = load_config(
        {
            "model": {"name": "unet3d"},
            "data": {"mode": "volume", "roi": [16, 16, 16], "normalize": "zscore"},
        },
        None,
    )
    return Run(Sign().eval(), cfg)


def _labelled_volume(sid: str) -> data.Volume:
    img = np.zeros((20, 18, 22), np.float32)
    img[4:16, 3:15, 5:17] = 1.0 + np.arange(12)[:, None, None]
    label = np.where(img > 0, 3, 0).astype(np.uint8)
    label[4:6] = np.where(img[4:6] > 0, 1, 0)
    subject = data.Subject(sid, "val", None, None, (1.0, 1.0, 1.0), img.shape)
    return data.Volume(subject, img, label, None)


def test_evaluate_runs_scores_runs_and_ensembles_once_per_volume():
    wm, csf = _sign_run(), _sign_run(flip=True)
    vols = [_labelled_volume("IBSR_90"), _labelled_volume("IBSR_91")]
    df = M.evaluate_runs({"wm": wm, "csf": csf, "both": [wm, csf]}, vols, raw=False)
    assert list(df.columns) == ["name", "subject", "tissue", "dice", "avd", "seconds"]
    assert len(df) == 3 * 2 * 3
    assert wm.model.calls == csf.model.calls == 2  # each run once per volume, ensemble reused
    # "wm" labels all brain WM: WM Dice 2*10/(12+10) per volume, GM empty in both (1), CSF 0.
    row = df[(df["name"] == "wm") & (df["subject"] == "IBSR_90")].set_index("tissue")["dice"]
    assert row["WM"] == pytest.approx(2 * 10 / 22) and row["GM"] == 1.0 and row["CSF"] == 0.0
    # The ensemble equals predict_volume on the list (probabilities averaged).
    from ibsr_helpers.inference import predict_volume

    seg, _ = predict_volume([wm, csf], vols[0], raw=False)
    expected = M.evaluate_segmentation(seg, vols[0].label, vols[0].spacing, hd=False)
    got = df[(df["name"] == "both") & (df["subject"] == "IBSR_90")].set_index("tissue")["dice"]
    assert got.to_dict() == {t: expected[t]["dice"] for t in data.TISSUES}
    both = df[df["name"] == "both"]["seconds"].iloc[0]
    parts = df[df["subject"] == "IBSR_90"].groupby("name")["seconds"].first()
    assert both == pytest.approx(parts["wm"] + parts["csf"])


def test_dice_table_means_in_first_seen_order():
    df = pd.DataFrame(
        [
            {"name": n, "subject": s, "tissue": t, "dice": d}
            for n, base in (("b", 0.5), ("a", 0.8))
            for s, off in (("S1", 0), ("S2", 0.1))
            for t, d in zip(data.TISSUES, (base + off, base, base - off), strict=True)
        ]
    )
    table = M.dice_table(df)
    assert list(table.index) == ["b", "a"] and list(table.columns) == [*data.TISSUES, "mean"]
    assert table.loc["b", "CSF"] == pytest.approx(0.55)
    assert table.loc["a", "mean"] == pytest.approx(0.8)


def test_evaluate_runs_needs_labels_and_runs():
    vol = _labelled_volume("IBSR_90")
    with pytest.raises(IBSRError, match="at least one run"):
        M.evaluate_runs({"empty": []}, [vol])
    unlabelled = data.Volume(vol.subject, vol.image, None, None)
    with pytest.raises(IBSRError, match="no label"):
        M.evaluate_runs({"wm": _sign_run()}, [unlabelled])
