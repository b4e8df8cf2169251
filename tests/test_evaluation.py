"""Grading: folders of predictions, trained runs and their ensembles, the result tables."""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from test_metrics import SPACING, _perturb, _synthetic_labels

from ibsr_helpers import data
from ibsr_helpers import evaluation as E
from ibsr_helpers import submissions as S
from ibsr_helpers.errors import IBSRError
from ibsr_helpers.io import save_segmentation
from ibsr_helpers.metrics import METRICS, evaluate_segmentation

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
    result = S.evaluate_folders(pred_dir, gt_dir, progress=False)
    assert result.missing == [] and result.extra == [] and result.bad == {}
    df = result.scores
    assert list(df.columns) == ["subject", "tissue", "dice", "hd", "hd95", "avd", "status"]
    assert (df["status"] == "scored").all()
    assert list(df["subject"]) == ["DEMO_01"] * 3 + ["DEMO_02"] * 3
    assert list(df["tissue"]) == list(data.TISSUES) * 2
    assert (df.loc[df.subject == "DEMO_01", ["dice"]] == 1.0).all().all()
    expected = evaluate_segmentation(pred2, gts["DEMO_02"], SPACING)
    got = df[df.subject == "DEMO_02"].set_index("tissue")
    for tissue in data.TISSUES:
        for metric in METRICS:
            assert got.loc[tissue, metric] == pytest.approx(expected[tissue][metric])
    assert got.loc["CSF", "hd"] > 0
    assert not df[list(METRICS)].isna().any().any()


def test_evaluate_folders_through_linked_folders(folders, tmp_path):
    """Ground truth picked as a folder of links to subject folders is found (and graded)."""
    gt_dir, pred_dir, _, _ = folders
    picked = tmp_path / "picked"
    picked.mkdir()
    for sid in ("DEMO_01", "DEMO_02"):
        source = gt_dir / "TrainingValidationTestSets" / "Validation_Set" / sid
        (picked / sid).symlink_to(source, target_is_directory=True)
    df = S.evaluate_folders(pred_dir, picked, progress=False).scores
    assert list(df["subject"].unique()) == ["DEMO_01", "DEMO_02"]


def _diagonal() -> float:
    """The largest distance in the volume (mm): a missing subject's HD and HD95."""
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(SHAPE, SPACING, strict=True)))


def test_predictions_without_ground_truth_are_listed_not_scored(folders):
    gt_dir, pred_dir, gts, _ = folders
    save_segmentation(gts["DEMO_01"], _reference_image(), pred_dir / "DEMO_03.nii.gz")
    save_segmentation(gts["DEMO_01"], _reference_image(), pred_dir / "sub" / "final.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said in the result, not as a warning
        result = S.evaluate_folders(pred_dir, gt_dir, progress=False)
    assert result.extra == [Path("DEMO_03.nii.gz"), Path("sub/final.nii.gz")]
    assert set(result.scores["subject"]) == {"DEMO_01", "DEMO_02"}
    assert (
        "DEMO_03.nii.gz, sub/final.nii.gz (2 file(s)" in result.summary_lines()["extra predictions"]
    )


def test_missing_prediction_counts_as_dice_0_in_every_mean(folders):
    gt_dir, pred_dir, _, _ = folders
    shutil.rmtree(pred_dir / "run")  # DEMO_02's prediction
    result = S.evaluate_folders(pred_dir, gt_dir, progress=False)
    assert result.missing == ["DEMO_02"]
    df = result.scores
    assert list(df["subject"]) == ["DEMO_01"] * 3 + ["DEMO_02"] * 3
    gone = df[df["subject"] == "DEMO_02"]
    assert (gone["status"] == "missing").all() and (gone["dice"] == 0).all()
    assert gone["hd"].to_numpy() == pytest.approx([_diagonal()] * 3)
    assert gone["hd95"].to_numpy() == pytest.approx([_diagonal()] * 3)
    assert (gone["avd"] == 100).all()
    assert E.summary_table(df).loc["mean", "dice_mean"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert "(2 subjects, 1 without a usable prediction scored Dice 0" in E.format_summary(df)
    assert result.summary_lines()["missing predictions"].startswith("DEMO_02 (1 of 2")
    table = E.results_table(df.assign(name="p"))
    assert table.loc["p", "mean Dice"] == pytest.approx(0.5) and table.loc["p", "subjects"] == 2


def test_strict_refuses_missing_or_extra_predictions(folders):
    gt_dir, pred_dir, gts, _ = folders
    assert S.evaluate_folders(pred_dir, gt_dir, progress=False, strict=True).missing == []
    extra = pred_dir / "DEMO_07_seg.nii.gz"
    save_segmentation(gts["DEMO_01"], _reference_image(), extra)
    with pytest.raises(IBSRError, match=r"0 of 2 .*1 prediction file\(s\) .*DEMO_07_seg"):
        S.evaluate_folders(pred_dir, gt_dir, progress=False, strict=True)
    extra.unlink()
    (pred_dir / "DEMO_01_seg.nii.gz").unlink()
    with pytest.raises(IBSRError, match=r"1 of 2 ground-truth subjects .*\(DEMO_01\)") as info:
        S.evaluate_folders(pred_dir, gt_dir, progress=False, strict=True)
    assert str(pred_dir) in str(info.value)


def test_keep_going_records_bad_predictions_as_dice_0(folders):
    """Grading a class: a bad file is recorded for its subject, not raised."""
    gt_dir, pred_dir, gts, _ = folders
    wrong = np.diag([*SPACING, 1.0])  # another origin
    save_segmentation(gts["DEMO_01"], _reference_image(wrong), pred_dir / "DEMO_01_seg.nii.gz")
    save_segmentation(gts["DEMO_02"], _reference_image(), pred_dir / "DEMO_02_seg.nii.gz")
    result = S.evaluate_folders(pred_dir, gt_dir, progress=False, keep_going=True)
    assert list(result.bad) == ["DEMO_01", "DEMO_02"]
    assert result.bad["DEMO_01"].startswith("DEMO_01_seg.nii.gz: prediction affine")
    assert result.bad["DEMO_02"] == (
        "two files for subject DEMO_02: DEMO_02_seg.nii.gz and run/best/DEMO_02.nii (keep one)"
    )
    assert (result.scores["status"] == "bad").all() and (result.scores["dice"] == 0).all()
    assert result.missing == []
    bad_labels = gts["DEMO_01"].copy()
    bad_labels[5, 5, 5] = 5
    save_segmentation(bad_labels, _reference_image(), pred_dir / "DEMO_01_seg.nii.gz")
    result = S.evaluate_folders(pred_dir, gt_dir, progress=False, keep_going=True)
    assert "label values [5] outside 0-3" in result.bad["DEMO_01"]


def test_postprocessing_mask_reads_each_subjects_image_beside_its_labels(folders):
    from ibsr_helpers.postprocessing import PostProcessing

    gt_dir, pred_dir, gts, _ = folders
    image = gt_dir / "TrainingValidationTestSets" / "Validation_Set" / "DEMO_01" / "DEMO_01.nii.gz"
    ref = _reference_image()
    half = np.asarray(ref.dataobj).copy()
    half[: SHAPE[0] // 2] = 0  # no brain there: the mask clears DEMO_01's (perfect) labels
    nib.save(nib.Nifti1Image(half, ref.affine), str(image))
    mask = PostProcessing(mask=True)
    df = S.evaluate_folders(pred_dir, gt_dir, progress=False, postprocess=mask).scores
    masked = gts["DEMO_01"].copy()
    masked[: SHAPE[0] // 2] = 0
    expected = evaluate_segmentation(masked, gts["DEMO_01"], SPACING)
    got = df[df.subject == "DEMO_01"].set_index("tissue")
    for tissue in data.TISSUES:
        assert got.loc[tissue, "dice"] == pytest.approx(expected[tissue]["dice"])
    assert (got["dice"] < 1).all() and (df["status"] == "scored").all()
    image.unlink()  # a missing image is the grader's problem: raised even with keep_going
    with pytest.raises(IBSRError, match="'mask' needs the image DEMO_01.nii.gz"):
        S.evaluate_folders(pred_dir, gt_dir, progress=False, postprocess=mask, keep_going=True)


def test_keep_going_grades_an_empty_folder_as_all_missing(folders, tmp_path):
    gt_dir, _, _, _ = folders
    (tmp_path / "empty").mkdir()
    result = S.evaluate_folders(tmp_path / "empty", gt_dir, progress=False, keep_going=True)
    assert result.missing == ["DEMO_01", "DEMO_02"] and (result.scores["dice"] == 0).all()
    with pytest.raises(IBSRError, match="no prediction"):
        S.evaluate_folders(tmp_path / "empty", gt_dir, progress=False)


def test_evaluate_folders_geometry_mismatch_names_the_file(folders):
    gt_dir, pred_dir, gts, _ = folders
    shifted = np.diag([*SPACING, 1.0])
    bad = pred_dir / "DEMO_01_seg.nii.gz"
    save_segmentation(gts["DEMO_01"], _reference_image(shifted), bad)
    with pytest.raises(IBSRError, match="affine") as info:
        S.evaluate_folders(pred_dir, gt_dir, progress=False)
    assert str(bad) in str(info.value)
    small = nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), _reference_image().affine)
    nib.save(small, str(bad))
    with pytest.raises(IBSRError, match="shape") as info:
        S.evaluate_folders(pred_dir, gt_dir, progress=False)
    assert str(bad) in str(info.value)


def test_evaluate_folders_rejects_label_values_outside_range(folders):
    gt_dir, pred_dir, gts, _ = folders
    bad_labels = gts["DEMO_01"].copy()
    bad_labels[5, 5, 5] = 5
    bad = pred_dir / "DEMO_01_seg.nii.gz"
    save_segmentation(bad_labels, _reference_image(), bad)
    with pytest.raises(IBSRError, match=r"label values \[5\] outside 0-3") as info:
        S.evaluate_folders(pred_dir, gt_dir, progress=False)
    assert str(bad) in str(info.value)


def test_evaluate_folders_without_any_match_names_pred_dir(tmp_path, folders):
    gt_dir, _, gts, _ = folders
    empty = tmp_path / "nothing_here"
    save_segmentation(gts["DEMO_01"], _reference_image(), empty / "IBSR_99_seg.nii.gz")
    save_segmentation(gts["DEMO_01"], _reference_image(), empty / "prediction.nii.gz")
    with pytest.raises(IBSRError, match="2 NIfTI file") as info:
        S.evaluate_folders(empty, gt_dir, progress=False)
    assert str(empty) in str(info.value)
    with pytest.raises(IBSRError, match="not found"):
        S.evaluate_folders(tmp_path / "missing", gt_dir, progress=False)


def test_two_predictions_for_one_subject_are_refused(folders):
    gt_dir, pred_dir, gts, _ = folders
    save_segmentation(gts["DEMO_01"], _reference_image(), pred_dir / "DEMO_01.nii.gz")
    with pytest.raises(IBSRError) as info:
        S.evaluate_folders(pred_dir, gt_dir, progress=False)
    assert str(info.value) == (
        f"{pred_dir}: two files for subject DEMO_01: DEMO_01.nii.gz and DEMO_01_seg.nii.gz "
        "(keep one)"
    )


def test_report_header_records_provenance_and_the_ground_truth(folders, tmp_path):
    from ibsr_helpers.provenance import fingerprint_files

    gt_dir, _, _, _ = folders
    shutil.rmtree(gt_dir / "TrainingValidationTestSets" / "Validation_Set" / "DEMO_03")
    header = S.report_header(gt_dir, command="ibsr-seg evaluate")
    assert list(header)[:2] == ["command", "date"]
    for key in ("commit", "packages", "hardware", "data", "ground truth"):
        assert header[key], key
    assert "nibabel" in header["packages"] and "fingerprint" in header["data"]
    labels = sorted(gt_dir.rglob("*_seg.nii.gz"))
    assert header["ground truth"] == (
        f"{gt_dir}: 2 label file(s) (DEMO_01, DEMO_02); fingerprint "
        f"{fingerprint_files(labels, root=gt_dir)}"
    )
    plain = tmp_path / "labels"  # not a data folder: no data record, still the truth's print
    plain.mkdir()
    shutil.copy(labels[0], plain / labels[0].name)
    header = S.report_header(plain)
    assert "data" not in header and "1 label file(s) (DEMO_01)" in header["ground truth"]


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
    table = E.summary_table(_table())
    assert list(table.index) == ["CSF", "GM", "WM", "mean"]
    assert (table["n"] == 2).all()
    assert table.loc["GM", "dice_mean"] == pytest.approx(0.86)
    assert table.loc["GM", "dice_sd"] == pytest.approx(0.1 / math.sqrt(2))
    assert table.loc["WM", "avd_mean"] == pytest.approx(15.0)
    assert table.loc["WM", "avd_sd"] == 0.0
    assert table.loc["mean", "dice_mean"] == pytest.approx(0.86)
    assert table.loc["mean", "hd95_sd"] == pytest.approx(2 / math.sqrt(2))
    assert table.loc["mean", "avd_mean"] == pytest.approx(10.0)
    single = E.summary_table(_table().query("subject == 'S_1'"))
    assert (single.filter(like="_sd") == 0.0).all().all()


def test_format_summary_is_readable():
    text = E.format_summary(_table())
    lines = text.splitlines()
    for heading in ("Dice", "HD (mm)", "HD95 (mm)", "AVD (%)"):
        assert heading in lines[0]
    assert [line.split()[0] for line in lines[2:6]] == ["CSF", "GM", "WM", "mean"]
    assert "0.860 ± 0.071" in lines[3]  # GM Dice
    assert "15.00 ± 0.00" in lines[4]  # WM AVD
    assert "2 subjects" in lines[-1]


def test_write_metrics_csv_round_trips(tmp_path):
    df = _table()
    path = E.write_metrics_csv(df, tmp_path / "new" / "dir" / "metrics.csv")
    assert path.is_file()
    pd.testing.assert_frame_equal(pd.read_csv(path), df)
    summary = E.write_metrics_csv(E.summary_table(df), tmp_path / "summary.csv")
    assert pd.read_csv(summary)["tissue"].tolist() == ["CSF", "GM", "WM", "mean"]


# --------------------------------------------------------------------------- evaluate_runs


def _brain_run(hit: int):
    """A Run whose 'network' labels every brain voxel (non-zero after z-scoring) ``hit``."""
    from ibsr_helpers.config import load_config
    from ibsr_helpers.inference import Run

    class Brain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            brain = (x[:, :1] != 0).float()
            logits = [10 - 20 * brain] + [
                20 * brain - 10 if k == hit else brain * 0 - 10 for k in (1, 2, 3)
            ]
            return torch.cat(logits, 1)

    cfg = load_config(
        {
            "model": {"name": "unet3d"},
            "data": {"mode": "volume", "roi": [16, 16, 16], "spacing": [1, 1, 1]},
            "train": {"precision": "fp32"},
        },
        None,
    )
    return Run(Brain().eval(), cfg)


def _labelled_volume(sid: str) -> data.Volume:
    img = np.zeros((20, 18, 22), np.float32)
    img[4:16, 3:15, 5:17] = 1.0 + np.arange(12)[:, None, None]
    label = np.where(img > 0, 3, 0).astype(np.uint8)
    label[4:6] = np.where(img[4:6] > 0, 1, 0)
    subject = data.Subject(sid, "val", None, None, (1.0, 1.0, 1.0), img.shape)
    return data.Volume(subject, img, label, nib.Nifti1Image(img, np.eye(4)))


def test_evaluate_runs_scores_runs_and_ensembles_once_per_volume():
    wm, csf = _brain_run(3), _brain_run(1)
    vols = [_labelled_volume("IBSR_90"), _labelled_volume("IBSR_91")]
    df = E.evaluate_runs({"wm": wm, "csf": csf, "both": [wm, csf]}, vols)
    assert list(df.columns) == ["name", "subject", "tissue", "dice", "avd", "seconds"]
    assert len(df) == 3 * 2 * 3
    assert wm.model.calls == csf.model.calls == 2  # each run once per volume, ensemble reused
    # "wm" labels all brain WM: WM Dice 2*10/(12+10) per volume, GM empty in both (1), CSF 0.
    row = df[(df["name"] == "wm") & (df["subject"] == "IBSR_90")].set_index("tissue")["dice"]
    assert row["WM"] == pytest.approx(2 * 10 / 22) and row["GM"] == 1.0 and row["CSF"] == 0.0
    # The ensemble equals predict_volume on the list (probabilities averaged).
    from ibsr_helpers.inference import predict_volume

    seg, _ = predict_volume([wm, csf], vols[0])
    expected = evaluate_segmentation(seg, vols[0].label, vols[0].spacing, hd=False)
    got = df[(df["name"] == "both") & (df["subject"] == "IBSR_90")].set_index("tissue")["dice"]
    assert got.to_dict() == {t: expected[t]["dice"] for t in data.TISSUES}
    both = df[df["name"] == "both"]["seconds"].iloc[0]
    parts = df[df["subject"] == "IBSR_90"].groupby("name")["seconds"].first()
    assert both == pytest.approx(parts["wm"] + parts["csf"])


def test_an_ensemble_with_and_without_tta_shares_its_members_plain_passes():
    from ibsr_helpers.inference import predict_volume, tta_flips

    wm, csf = _brain_run(3), _brain_run(1)
    assert len(tta_flips(wm, True)) == 2  # a volume run mirrors: TTA is a second pass
    vol = _labelled_volume("IBSR_90")
    runs = {"both": [wm, csf], "both + TTA": [wm, csf]}
    segs: dict = {}
    df = E.evaluate_runs(runs, [vol], tta=["both + TTA"], segmentations=segs)
    assert wm.model.calls == csf.model.calls == 2  # plain + mirrored, not plain twice
    alone = {
        "both": predict_volume([wm, csf], vol)[0],
        "both + TTA": predict_volume([wm, csf], vol, True)[0],
    }
    for name, seg in alone.items():
        np.testing.assert_array_equal(segs[name]["IBSR_90"], seg)
    seconds = df.groupby("name")["seconds"].first()
    assert (seconds > 0).all()
    with pytest.raises(IBSRError, match="lacks"):
        E.evaluate_runs(runs, [vol], tta=["both, TTA"])


def test_dice_table_means_in_first_seen_order():
    df = pd.DataFrame(
        [
            {"name": n, "subject": s, "tissue": t, "dice": d}
            for n, base in (("b", 0.5), ("a", 0.8))
            for s, off in (("S1", 0), ("S2", 0.1))
            for t, d in zip(data.TISSUES, (base + off, base, base - off), strict=True)
        ]
    )
    table = E.dice_table(df)
    assert list(table.index) == ["b", "a"] and list(table.columns) == [*data.TISSUES, "mean"]
    assert table.loc["b", "CSF"] == pytest.approx(0.55)
    assert table.loc["a", "mean"] == pytest.approx(0.8)


def test_evaluate_runs_needs_labels_and_runs():
    vol = _labelled_volume("IBSR_90")
    with pytest.raises(IBSRError, match="at least one run"):
        E.evaluate_runs({"empty": []}, [vol])
    unlabelled = data.Volume(vol.subject, vol.image, None, None)
    with pytest.raises(IBSRError, match="no label"):
        E.evaluate_runs({"wm": _brain_run(3)}, [unlabelled])


# --------------------------------------------------------------------------- the report


def _scores(name: str, base: float) -> pd.DataFrame:
    rows = []
    for i, sid in enumerate(["S_1", "S_2"]):
        for j, tissue in enumerate(data.TISSUES):
            d = base + 0.1 * i + 0.01 * j
            rows.append(
                {
                    "name": name,
                    "subject": sid,
                    "tissue": tissue,
                    "dice": d,
                    "hd": 10.0 + i,
                    "hd95": 3.0 + 2 * i,
                    "avd": 5.0 * (j + 1),
                }
            )
    return pd.DataFrame(rows)


def test_results_table_one_row_per_predictor(tmp_path):
    scores = pd.concat([_scores("b", 0.7), _scores("a", 0.8)], ignore_index=True)
    table = E.results_table(scores)
    assert list(table.index) == ["b", "a"]
    assert table.loc["a", "Dice GM"] == pytest.approx(0.86)
    assert table.loc["a", "mean Dice"] == pytest.approx(0.86)
    assert table.loc["a", "sd"] == pytest.approx(0.1 / math.sqrt(2))
    assert table.loc["a", "HD95 CSF"] == pytest.approx(4.0) and table.loc["b", "AVD WM"] == 15
    assert (table["subjects"] == 2).all()
    csv, md = E.write_results(
        table, tmp_path / "reports", {"date": "2026-11-25", "hardware": "cpu"}
    )
    back = pd.read_csv(csv, index_col=0)
    assert list(back.index) == ["b", "a"] and back.loc["a", "mean Dice"] == pytest.approx(0.86)
    text = md.read_text()
    assert "- **date**: 2026-11-25" in text and "| a " in text and "**0.860** ± 0.071" in text
    assert "4.0 / 4.0 / 4.0" in text  # HD95 CSF / GM / WM


def test_postprocessing_is_chosen_tissue_by_tissue():
    from ibsr_helpers.postprocessing import PostProcessing

    truth = np.zeros((20, 20, 20), np.uint8)
    truth[4:16, 4:16, 4:16] = 3
    truth[2:4, 4:16, 4:16] = 1  # CSF: one slab ...
    truth[16:18, 4:16, 4:16] = 1  # ... and another: two pieces
    seg = truth.copy()
    seg[8:10, 8:10, 8:10] = 1  # a false CSF island inside WM
    subject = data.Subject("S_1", "val", None, None, (1, 1, 1), truth.shape)
    img = np.where(truth > 0, 50.0, 0.0).astype(np.float32)
    vol = data.Volume(subject, img, truth, nib.Nifti1Image(img, np.eye(4)))
    candidates = {
        "none": PostProcessing(),
        "largest CSF": PostProcessing(largest=("CSF",)),
        "CSF >= 20": PostProcessing(min_size={"CSF": 20}),
        "largest WM": PostProcessing(largest=("WM",)),
    }
    scores = E.evaluate_postprocessing({"S_1": seg}, [vol], candidates, hd=False)
    table = E.dice_table(scores)
    # keeping the largest CSF piece loses a real slab; dropping small pieces removes the island
    assert (
        table.loc["largest CSF", "CSF"] < table.loc["none", "CSF"] < table.loc["CSF >= 20", "CSF"]
    )
    chosen = E.choose_postprocessing(scores, candidates)
    assert chosen == PostProcessing(min_size={"CSF": 20})


def test_check_predictions_compares_each_file_with_its_image(tmp_path):
    images, preds = tmp_path / "images", tmp_path / "preds"
    ref = _reference_image()
    (images / "DEMO_05").mkdir(parents=True)
    nib.save(ref, str(images / "DEMO_05" / "DEMO_05.nii.gz"))
    save_segmentation(_small_labels(5), ref, preds / "DEMO_05_seg.nii.gz")
    check = S.check_predictions(preds, images)
    assert check.drop(columns="subject").all().all()
    nib.save(nib.Nifti1Image(_small_labels(5), np.eye(4)), str(preds / "DEMO_05_seg.nii.gz"))
    check = S.check_predictions(preds, images)
    assert not check.loc[0, "affine"] and not check.loc[0, "shape"]
    with pytest.raises(IBSRError, match="no image"):
        save_segmentation(_small_labels(6), ref, preds / "DEMO_06_seg.nii.gz")
        S.check_predictions(preds, images)


def test_grid_ceiling_is_perfect_on_the_scans_grid_and_costs_on_a_coarser_one(demo_root):
    from ibsr_helpers.config import load_config

    volumes = data.load_split(demo_root, "train")
    config = load_config(Path(__file__).parents[1] / "configs" / "unet3d_volume.yaml", "quick")
    native = E.grid_ceiling({**config, "data": {**config["data"], "spacing": "native"}}, volumes)
    assert (native.dice == 1.0).all(), native
    coarse = E.dice_table(E.grid_ceiling(config, volumes))  # the quick profile's 2 mm grid
    assert list(coarse.index) == ["labels on the grid"]
    assert ((coarse < 1.0) & (coarse > 0.5)).all(axis=None), coarse
    assert coarse["CSF"].item() < coarse["WM"].item(), coarse  # the thinnest tissue pays most


def test_grid_ceiling_needs_labels(demo_root):
    from ibsr_helpers.config import load_config

    unlabelled = data.load_split(demo_root, "test")
    config = load_config(Path(__file__).parents[1] / "configs" / "unet3d_volume.yaml", "quick")
    with pytest.raises(IBSRError, match="has no label"):
        E.grid_ceiling(config, unlabelled)
