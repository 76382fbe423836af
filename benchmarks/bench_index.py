"""Cost of `brainmets index` validation on one BraTS-size case, against plain decoding.

Method: write one synthetic case at the BraTS-MET 2023 grid (240x240x155, 1 mm;
modalities int16, segmentation uint8 with ~12 lesions) to a temporary directory,
then time, in the same process and best of N:
  baseline   nibabel.load + np.asanyarray(dataobj) of the five files (what any reader pays)
  validate   brainmets.data.layout.validate_case (full gzip decode with CRC check,
             grid/intensity/label checks, 26-connected lesion counts, volumes)
and report validate / baseline. Writes benchmarks/results/bench_index.{json,md}.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from brainmets.data.layout import validate_case

SHAPE = (240, 240, 155)
REPEATS = 5
CASE = "BraTS-MET-00001-000"


def write_case(root: Path) -> None:
    rng = np.random.default_rng(0)
    case_dir = root / CASE
    case_dir.mkdir(parents=True)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    brain = np.zeros(SHAPE, bool)
    brain[40:200, 30:210, 20:140] = True
    seg = np.zeros(SHAPE, np.uint8)
    for _ in range(12):
        c = rng.integers((60, 60, 40), (180, 180, 120))
        r = int(rng.integers(2, 10))
        sl = tuple(slice(int(ci - r), int(ci + r)) for ci in c)
        seg[sl] = 2
        inner = tuple(slice(s.start + r // 2, s.stop - r // 2) for s in sl)
        seg[inner] = 3
    for suffix in ("t1n", "t1c", "t2w", "t2f"):
        image = np.where(brain, rng.normal(500, 80, SHAPE), 0).astype(np.int16)
        nib.save(nib.Nifti1Image(image, affine), str(case_dir / f"{CASE}-{suffix}.nii.gz"))
    nib.save(nib.Nifti1Image(seg, affine), str(case_dir / f"{CASE}-seg.nii.gz"))


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_case(root)
        files = sorted((root / CASE).glob("*.nii.gz"))

        def baseline() -> None:
            for path in files:
                np.asanyarray(nib.load(str(path)).dataobj)

        baseline_s = best_of(baseline, REPEATS)
        validate_s = best_of(lambda: validate_case(root, CASE), REPEATS)
        row = validate_case(root, CASE)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), "
        f"Python {platform.python_version()}, numpy {np.__version__}, nibabel {nib.__version__}",
        "method": f"best of {REPEATS}, one {'x'.join(map(str, SHAPE))} case, same process",
        "baseline_decode_s": round(baseline_s, 3),
        "validate_case_s": round(validate_s, 3),
        "ratio_validate_over_decode": round(validate_s / baseline_s, 2),
        "n_lesions": int(row["n_lesions"]),
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_index.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "bench_index.md").write_text(
        "# brainmets index: validation cost per case\n\n"
        f"- machine: {result['machine']}\n- method: {result['method']}\n\n"
        "| step | seconds |\n|---|---|\n"
        f"| decode 5 files (nibabel, baseline) | {baseline_s:.3f} |\n"
        f"| validate_case | {validate_s:.3f} |\n"
        f"| ratio | {validate_s / baseline_s:.2f}x |\n"
    )


if __name__ == "__main__":
    main()
