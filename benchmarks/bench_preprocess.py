"""Seconds per full-size case for `brainmets preprocess`, by stage, and what the cache saves.

Method: write one case at the BraTS-MET 2023 grid (240x240x155, 1 mm, LPS affine;
sequences int16 with a smooth contrast + noise inside a brain ellipsoid, zero
outside; segmentation uint8 with a dozen nested lesions) to a temporary directory.
Then, in one process, best and median of N repeats:

  stages     load (nibabel decode of the 5 files) / reorient+crop / resample /
             z-score / write (.npy + .json), without and with resampling to 2 mm,
             timed through the module's public stage functions; plus the whole
             ``preprocess_case`` end to end.
  resample   the module's separable resampler vs ``scipy.ndimage.zoom(order=1)``
             (same crop, 4 channels, same output shape) -- the baseline.
  reading    what a training job pays per case: decoding the NIfTI files (baseline)
             vs ``load_case`` (memory map) + one 4-channel 64^3 patch, and vs reading
             the whole cache into memory.

Writes benchmarks/results/preprocess.{md,json}. Run: .venv/bin/python benchmarks/bench_preprocess.py
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.ndimage as ndi

from brainmets.constants import MODALITIES
from brainmets.data import preprocess as pp

SHAPE = (240, 240, 155)
REPEATS = 5
CASE = "BraTS-MET-00001-000"
RESULTS = Path(__file__).resolve().parent / "results"


def write_case(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    case_dir = root / CASE
    case_dir.mkdir(parents=True)
    affine = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    grid = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    centre, radii = (120, 125, 75), (70, 88, 62)
    brain = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0
    seg = np.zeros(SHAPE, np.uint8)
    for _ in range(12):
        c = rng.integers((80, 80, 50), (160, 170, 100))
        r = float(rng.uniform(2, 12))
        distance = np.sqrt(sum((g - ci) ** 2 for g, ci in zip(grid, c)))
        seg[(distance <= r) & brain] = 2
        seg[distance <= 0.6 * r] = 3
        seg[distance <= 0.3 * r] = 1
    paths = {}
    for channel, modality in enumerate(MODALITIES):
        contrast = 400 + 100 * channel + 60 * np.sin(grid[channel % 3] / 17.0)
        image = np.where(brain, contrast + rng.normal(0, 40, SHAPE), 0).astype(np.int16)
        paths[modality] = case_dir / f"{CASE}-{modality}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), paths[modality])
    paths["seg"] = case_dir / f"{CASE}-seg.nii.gz"
    nib.save(nib.Nifti1Image(seg, affine), paths["seg"])
    return paths


def timed(fn, repeats: int = REPEATS) -> tuple[dict[str, float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return {"best": min(times), "median": statistics.median(times)}, result


def stage_times(paths: dict[str, Path], out_dir: Path, spacing) -> dict[str, dict[str, float]]:
    """Each stage of ``preprocess_case``, through the public stage functions."""
    out: dict[str, dict[str, float]] = {}
    out["load"], loaded = timed(lambda: pp.load_sources(CASE, paths))
    out["reorient_crop"], cropped = timed(
        lambda: pp.reorient_and_crop(loaded["images"], loaded["seg"], loaded["affine"], CASE))
    out["resample"], grid = timed(lambda: pp.to_cache_grid(cropped, spacing))

    def zscore_stage():
        work = grid["cache"][:4].copy()  # z-scoring is in place: time it on a fresh copy each time
        start = time.perf_counter()
        stats = pp.zscore_over_brain(work, grid["brain"], CASE)
        return time.perf_counter() - start, stats

    zscore_runs = [zscore_stage() for _ in range(REPEATS)]
    out["zscore"] = {"best": min(t for t, _ in zscore_runs),
                     "median": statistics.median(t for t, _ in zscore_runs)}
    sources = {k: str(v) for k, v in paths.items()}
    meta = pp.cache_metadata(CASE, sources, spacing, loaded, cropped, grid, zscore_runs[0][1])
    out["write"], _ = timed(lambda: pp.write_cache(out_dir, CASE, grid["cache"], meta))
    out["total_end_to_end"], _ = timed(
        lambda: pp.preprocess_case(CASE, paths, out_dir, spacing=spacing, overwrite=True))
    out["_shape"] = {"crop": list(cropped["seg"].shape), "cache": list(grid["shape"])}  # type: ignore[dict-item]
    return out


def resample_vs_zoom(paths: dict[str, Path]) -> dict[str, float]:
    loaded = pp.load_sources(CASE, paths)
    cropped = pp.reorient_and_crop(loaded["images"], loaded["seg"], loaded["affine"], CASE)
    shape, scale, _ = pp.cache_grid(cropped["seg"].shape, cropped["ras_spacing"], (2.0, 2.0, 2.0))
    positions = [np.arange(n) * s for n, s in zip(shape, scale)]
    ours, _ = timed(lambda: pp.resample(cropped["images"], positions, order=1))
    factors = [n / m for n, m in zip(shape, cropped["seg"].shape)]
    zoom, _ = timed(lambda: np.stack([ndi.zoom(c, factors, order=1, grid_mode=False)
                                      for c in cropped["images"]]))
    return {"separable": ours["best"], "scipy_zoom": zoom["best"], "speedup": zoom["best"] / ours["best"]}


def reading(paths: dict[str, Path], cache_dir: Path) -> dict[str, float]:
    decode, _ = timed(lambda: [np.asanyarray(nib.load(paths[k]).dataobj) for k in pp.SOURCE_KEYS])

    def patch():
        image, label, _ = pp.load_case(cache_dir, CASE)
        return np.array(image[:, 20:84, 30:94, 10:74]), np.array(label[20:84, 30:94, 10:74])

    def whole():
        image, label, _ = pp.load_case(cache_dir, CASE, mmap=False)
        return image.sum()

    mmap_patch, _ = timed(patch, 10)
    full, _ = timed(whole)
    return {"nifti_decode": decode["best"], "mmap_patch64": mmap_patch["best"], "full_read": full["best"],
            "decode_over_patch": decode["best"] / mmap_patch["best"],
            "decode_over_full": decode["best"] / full["best"]}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}, "
            f"load average at start {load:.2f}")


def report(results: dict) -> str:
    lines = [
        "# `brainmets preprocess`: seconds per full-size case",
        "",
        f"Machine: {results['machine']}. Best of {REPEATS} (median in brackets), one process, "
        "single-threaded numpy; other engineers' jobs may share the CPUs.",
        "",
        "Case: 240x240x155 at 1 mm, LPS affine, int16 sequences (brain ellipsoid, contrast + noise, "
        "zero outside), uint8 label with 12 nested lesions; written by this script "
        "(`brainmets.data.synthetic` had no case writer yet).",
        "",
        "| stage | native 1 mm | resampled to 2 mm |",
        "|---|---:|---:|",
    ]
    native, coarse = results["native"], results["2mm"]
    for stage in ("load", "reorient_crop", "resample", "zscore", "write", "total_end_to_end"):
        def cell(entry):
            return f"{entry['best']:.2f} ({entry['median']:.2f})"
        lines.append(f"| {stage} | {cell(native[stage])} | {cell(coarse[stage])} |")
    lines += [
        "",
        f"Crop {native['_shape']['crop']} -> cache {native['_shape']['cache']} (native) / "
        f"{coarse['_shape']['cache']} (2 mm). `write` = np.save + fsync + JSON, each atomic "
        "(`brainmets.io.atomic_path`); metadata (label counts) is built inside `write` in "
        "end-to-end runs, outside it here.",
        "",
        "## Baselines (same process)",
        "",
        "| comparison | baseline s | ours s | ratio |",
        "|---|---:|---:|---:|",
        f"| resample 4 channels to 2 mm: `scipy.ndimage.zoom(order=1)` vs separable linear | "
        f"{results['resample']['scipy_zoom']:.2f} | {results['resample']['separable']:.2f} | "
        f"{results['resample']['speedup']:.1f}x faster |",
        f"| a training job reading one case: decode 5 NIfTI vs mmap + one 4x64^3 patch | "
        f"{results['reading']['nifti_decode']:.2f} | {results['reading']['mmap_patch64']:.4f} | "
        f"{results['reading']['decode_over_patch']:.0f}x faster |",
        f"| decode 5 NIfTI (baseline) vs the whole `preprocess_case`, native / 2 mm | "
        f"{results['reading']['nifti_decode']:.2f} | {native['total_end_to_end']['best']:.2f} / "
        f"{coarse['total_end_to_end']['best']:.2f} | "
        f"{native['total_end_to_end']['best'] / results['reading']['nifti_decode']:.1f}x / "
        f"{coarse['total_end_to_end']['best'] / results['reading']['nifti_decode']:.1f}x the decode |",
        f"| decode 5 NIfTI vs read the whole native cache into memory | "
        f"{results['reading']['nifti_decode']:.2f} | {results['reading']['full_read']:.2f} | "
        f"{results['reading']['decode_over_full']:.1f}x faster |",
        "",
        "Reading times depend on the page cache: the file was just written, so these are "
        "warm-cache figures (a cold read of the native cache is bounded by disk bandwidth).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    results: dict = {"machine": machine(), "repeats": REPEATS, "shape": list(SHAPE)}
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        root = Path(tmp)
        print("writing a 240x240x155 case ...", flush=True)
        paths = write_case(root / "cohort")
        for name, spacing in (("native", None), ("2mm", (2.0, 2.0, 2.0))):
            print(f"stages, {name} ...", flush=True)
            results[name] = stage_times(paths, root / f"cache_{name}", spacing)
        print("resample vs scipy.ndimage.zoom ...", flush=True)
        results["resample"] = resample_vs_zoom(paths)
        print("reading ...", flush=True)
        results["reading"] = reading(paths, root / "cache_native")
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = report(results)
    (RESULTS / "preprocess.md").write_text(text)
    (RESULTS / "preprocess.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(text)


if __name__ == "__main__":
    main()
