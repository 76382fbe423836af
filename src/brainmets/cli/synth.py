"""`brainmets synth`: write the synthetic BraTS-MET 2023 cohort (the embedded default data)."""

from __future__ import annotations

import argparse

HELP = "write a synthetic cohort in the BraTS-MET 2023 layout"
DESCRIPTION = (
    "Write cases BraTS-MET-00001-000 .. N as <out-dir>/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz: "
    "MNI152 anatomy warped per patient, sequence-specific contrast, bias field and noise, and "
    "metastases (ET rim, NETC core, SNFH edema) at the grey-white junction. Deterministic for a "
    "seed; resumable (complete cases are kept, missing ones generated)."
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", required=True, help="cohort root to write the case folders into")
    parser.add_argument("--n-cases", required=True, type=_positive_int, help="number of cases (ids 1..N)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed (default 0); case i depends only on (seed, i)")
    parser.add_argument("--workers", type=_positive_int, default=1, help="processes generating cases (default 1)")
    parser.add_argument(
        "--shape", type=_positive_int, nargs=3, metavar=("X", "Y", "Z"), default=[240, 240, 155],
        help="grid size in voxels (default 240 240 155, the BraTS grid)",
    )
    parser.add_argument(
        "--spacing", type=_positive_float, default=1.0, metavar="MM",
        help="isotropic voxel size in mm (default 1.0); lesion sizes stay in mm",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from brainmets.data.synthetic import synthesize_cohort

    cases = synthesize_cohort(
        args.out_dir,
        args.n_cases,
        seed=args.seed,
        workers=args.workers,
        shape=tuple(args.shape),
        spacing=args.spacing,
        progress=not args.no_progress,
    )
    print(f"{len(cases)} cases in {args.out_dir} ({cases[0]} .. {cases[-1]})")
    return 0
