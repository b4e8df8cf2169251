"""How long a Hausdorff distance takes: ``edt`` (what metrics.py uses) against scipy.

The boundary distances behind HD and HD95 need one Euclidean distance transform per
direction over the masks' joint bounding box. A barely trained model scatters its
prediction over the whole scan, so the box is the whole 256x128x256 grid; a good
prediction keeps it to the brain. This script times, on such grids:

* one distance transform with scipy's ``distance_transform_edt`` and with ``edt``
  (1 thread and every core), and the largest difference between the two;
* ``metrics.hausdorff`` (both directions, boundaries included) on a scattered mask.

It prints the hardware first. No data needed (random masks of IBSR18's grid and spacing).

Usage::

    python benchmarks/bench_metrics.py
    python benchmarks/bench_metrics.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from ibsr_helpers import metrics
from ibsr_helpers.profiling import hardware_summary

SHAPE, SPACING = (256, 128, 256), (0.9375, 1.5, 0.9375)


def _best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    hw = hardware_summary()
    print(f"{hw['cpu']}, {hw['cores']} cores, numpy {np.__version__}")
    rng = np.random.default_rng(0)
    cores = os.cpu_count() or 1
    print(f"grid {'x'.join(map(str, SHAPE))}, spacing {SPACING} mm; best of {args.repeats}")
    for fill in (0.02, 0.3):
        mask = rng.random(SHAPE) < fill
        ref = ndimage.distance_transform_edt(~mask, sampling=SPACING)
        fast = metrics.distance_to(mask, SPACING)
        t_scipy = _best_of(
            args.repeats, lambda m=mask: ndimage.distance_transform_edt(~m, sampling=SPACING)
        )
        t_one = _best_of(args.repeats, lambda m=mask: metrics.distance_to(m, SPACING, 1))
        t_all = _best_of(args.repeats, lambda m=mask: metrics.distance_to(m, SPACING, cores))
        print(
            f"one transform, {fill:.0%} of voxels set: scipy {t_scipy:.2f} s, edt {t_one:.2f} s "
            f"(1 thread), {t_all:.2f} s ({cores} threads); largest difference "
            f"{np.abs(ref - fast).max():.1e} mm"
        )
    gt = np.zeros(SHAPE, bool)
    gt[40:210, 4:124, 40:210] = True
    scattered = rng.random(SHAPE) < 0.1
    t_hd = _best_of(args.repeats, lambda: metrics.hausdorff(scattered, gt, SPACING, 95))
    print(f"metrics.hausdorff (HD95) of a scattered mask against a brain-sized box: {t_hd:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
