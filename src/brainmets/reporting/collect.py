"""Find the runs a report needs in the results tree and read their files.

The results layout (docs/architecture.md, "Files on disk") encodes each run's
identity in its path: ``<results>/<study>/<model>/<subset>/seed<k>/``. A
:class:`RunGroup` is the set of seeds of one (study, model, subset): one row of
a table. Every reader here raises a :class:`~brainmets.errors.BrainmetsError`
naming *all* missing files of a group at once, so a half-finished study is
diagnosed in one go rather than one file per rerun.

Torch-free by design: the reporting jobs are cheap local Snakemake rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from brainmets.constants import (
    ALL_FOUR,
    ENSEMBLE_MIRRORED,
    ENSEMBLE_POSTPROCESSED,
    ENSEMBLE_UNMIRRORED,
    SELECTED,
    canonical_subset,
    subset_label,
)
from brainmets.decision import selected_subset, selection_path
from brainmets.errors import BrainmetsError
from brainmets.io import read_json, read_table

#: Model names as the paper's tables print them; unknown names print as they are.
MODEL_DISPLAY_NAMES: dict[str, str] = {
    "unet": "3D U-Net",
    "resunet": "ResUNet",
    "resunetse": "ResUNetSE",
    "vnet": "VNet",
    "segresnet": "SegResNet",
    "segresnetvae": "SegResNetVAE",
    "unetr": "UNETR",
    "swinunetr": "SwinUNETR",
    "swinunetr_v2": "SwinUNETR-V2",
    "nnformer": "nnFormer",
    "mlp_unext": "MLP-UNEXT",
    "resenc_unet": "nnU-Net ResEnc",
}

#: Study directory of the seed ensembles (``ensembles/<source>/<subset>/<variant>/``).
ENSEMBLES = "ensembles"
#: What an ensemble averages: the two-stage model's seeds, or the modality study network's seeds.
ENSEMBLE_SOURCES = ("twostage", "modality")
#: Ensemble rows per source: seeds averaged; + mirroring (inference.mirror_axes); + the tuned postprocessing.
ENSEMBLE_VARIANTS: dict[str, str] = {
    ENSEMBLE_UNMIRRORED: "seed ensemble",
    ENSEMBLE_MIRRORED: "seed ensemble + mirroring",
    ENSEMBLE_POSTPROCESSED: "seed ensemble + mirroring + postprocessing",
}
#: Model directory of the two-stage model's combined predictions and metrics
#: (``twostage/combined/<subset>/seed<k>/``), beside its ``detector/`` and ``segmentor/``.
TWOSTAGE_COMBINED = "combined"

METRIC_COLUMNS = (
    "legacy_dice", "legacy_hd95", "lesion_dice", "lesion_hd95",
    "num_tp", "num_fp", "num_fn", "gt_volume", "pred_volume",
)

_SEED_DIR = re.compile(r"^seed(\d+)$")


def model_display_name(model: str) -> str:
    return MODEL_DISPLAY_NAMES.get(model, model)


@dataclass(frozen=True)
class RunGroup:
    """All seeds of one (study, model, subset) under ``results``: one table row.

    ``subset`` is the path component (a canonical key or ``selected``);
    ``subset_resolved`` is the canonical key it stands for. An ensemble row is
    one run, ``<directory>/<run>/`` (``run`` set, ``seeds`` a single 0): its
    seeds are averaged inside the prediction.
    """

    results: Path
    study: str
    model: str
    subset: str
    seeds: tuple[int, ...]
    label: str
    subset_resolved: str
    run: str | None = None

    @property
    def directory(self) -> Path:
        return self.results / self.study / self.model / self.subset

    @property
    def key(self) -> str:
        """Identity used in CSV files: ``study/model/subset``."""
        return f"{self.study}/{self.model}/{self.subset}" + (f"/{self.run}" if self.run else "")

    def run_dir(self, seed: int) -> Path:
        return self.directory / (self.run if self.run is not None else f"seed{seed}")

    def sibling(self, model: str) -> "RunGroup":
        """The same study/subset/seeds under another model directory (two-stage parts)."""
        return RunGroup(self.results, self.study, model, self.subset, self.seeds,
                        f"{self.label} [{model}]", self.subset_resolved)


def discover_seeds(directory: Path) -> list[int]:
    """Seeds with a ``seed<k>`` directory under ``directory``, ascending."""
    if not directory.is_dir():
        return []
    found = [int(m.group(1)) for p in directory.iterdir() if p.is_dir() and (m := _SEED_DIR.match(p.name))]
    return sorted(found)


def make_group(
    results: str | Path,
    study: str,
    model: str,
    subset: str,
    label: str,
    seeds: list[int] | None = None,
    subset_resolved: str | None = None,
) -> RunGroup:
    """A run group; ``seeds=None`` means every ``seed<k>`` directory on disk.

    A configured group without any seed directory is an error: the caller
    asked for a run that was never made.
    """
    results = Path(results)
    directory = results / study / model / subset
    if seeds is None:
        seeds = discover_seeds(directory)
        if not seeds:
            raise BrainmetsError(
                f"no runs for {study}/{model}/{subset}: expected seed<k>/ directories under {directory}"
            )
    return RunGroup(results, study, model, subset, tuple(int(s) for s in seeds), label,
                    subset_resolved or subset)


def read_group_table(group: RunGroup, relpath: str, what: str) -> pd.DataFrame:
    """Concatenate ``<run>/<relpath>`` over the group's seeds, adding a ``seed`` column.

    Raises one error listing every missing file of the group.
    """
    missing = [group.run_dir(s) / relpath for s in group.seeds if not (group.run_dir(s) / relpath).is_file()]
    if missing:
        listed = "\n  ".join(str(p) for p in missing)
        raise BrainmetsError(
            f"{what} missing for {group.key} ({len(missing)} of {len(group.seeds)} seeds):\n  {listed}"
        )
    frames = []
    for seed in group.seeds:
        df = read_table(group.run_dir(seed) / relpath, what=what)
        df.insert(0, "seed", seed)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _require_columns(df: pd.DataFrame, columns: tuple[str, ...] | list[str], where: str) -> None:
    absent = [c for c in columns if c not in df.columns]
    if absent:
        raise BrainmetsError(f"{where}: missing column(s) {', '.join(absent)}; found {', '.join(map(str, df.columns))}")


def read_metrics(group: RunGroup, split: str, regions: list[str] | tuple[str, ...] | None = None) -> pd.DataFrame:
    """Case x region metric rows of every seed (``metrics/<split>.tsv``), checked.

    Every seed must hold the same cases and every requested region: a seed
    evaluated on fewer cases would bias its mean silently.
    """
    df = read_group_table(group, f"metrics/{split}.tsv", what=f"{split} metrics")
    _require_columns(df, ("case", "region", *METRIC_COLUMNS[:4]), f"{group.key} metrics/{split}.tsv")
    df["case"] = df["case"].astype(str)
    df["region"] = df["region"].astype(str)
    if regions is not None:
        for seed, part in df.groupby("seed"):
            absent = sorted(set(regions) - set(part["region"]))
            if absent:
                raise BrainmetsError(
                    f"{group.run_dir(seed) / 'metrics' / f'{split}.tsv'}: no rows for region(s) {', '.join(absent)}"
                )
        df = df[df["region"].isin(regions)]
    case_sets = {seed: frozenset(part["case"]) for seed, part in df.groupby("seed")}
    reference_seed = group.seeds[0]
    for seed, cases in case_sets.items():
        if cases != case_sets[reference_seed]:
            only_ref = sorted(case_sets[reference_seed] - cases)
            only_this = sorted(cases - case_sets[reference_seed])
            raise BrainmetsError(
                f"{group.key}: seeds evaluated on different {split} cases "
                f"(seed{seed} lacks {only_ref[:5]}, has extra {only_this[:5]} compared with seed{reference_seed}); "
                f"re-run evaluation for {group.run_dir(seed) / 'metrics' / f'{split}.tsv'}"
            )
    return df.reset_index(drop=True)


def read_lesions(group: RunGroup, split: str) -> pd.DataFrame:
    """Per-lesion rows of every seed (``metrics/<split>_lesions.tsv``).

    ``detected`` is normalised to bool; a missing ``counted`` column means
    every lesion counts.
    """
    df = read_group_table(group, f"metrics/{split}_lesions.tsv", what=f"{split} lesion metrics")
    _require_columns(df, ("case", "region", "kind", "volume", "detected"), f"{group.key} metrics/{split}_lesions.tsv")
    df["detected"] = _as_bool(df["detected"])
    df["counted"] = _as_bool(df["counted"]) if "counted" in df.columns else True
    df["region"] = df["region"].astype(str)
    df["kind"] = df["kind"].astype(str)
    return df


def _as_bool(series: pd.Series) -> pd.Series:
    if series.dtype == bool:
        return series
    text = series.astype(str).str.strip().str.lower()
    return text.isin(("true", "1", "1.0", "yes"))


def read_inference(group: RunGroup, split: str) -> pd.DataFrame:
    df = read_group_table(group, f"inference/{split}.tsv", what=f"{split} inference log")
    _require_columns(df, ("case", "seconds", "flops"), f"{group.key} inference/{split}.tsv")
    return df


def read_history(group: RunGroup) -> pd.DataFrame:
    df = read_group_table(group, "history.tsv", what="training history")
    _require_columns(df, ("iteration", "loss"), f"{group.key} history.tsv")
    return df


def read_model_info(group: RunGroup) -> dict[str, Any]:
    """``model_info.json`` of the group's first seed (architecture does not vary by seed)."""
    path = group.run_dir(group.seeds[0]) / "model_info.json"
    if not path.is_file():
        raise BrainmetsError(
            f"model info missing for {group.key}: expected {path} "
            "(written next to model.pt by training: parameters, gmac_per_window, patch)"
        )
    info = read_json(path)
    absent = [k for k in ("parameters", "gmac_per_window") if k not in info]
    if absent:
        raise BrainmetsError(f"{path}: missing key(s) {', '.join(absent)}")
    return info


# --------------------------------------------------------------------------- config


@dataclass
class ReportConfig:
    """The parts of a validated config the reporting stage reads.

    ``seeds`` are the expected seeds (so a stale ``seed5/`` from an older run
    is ignored); None (set by callers, not by a config) means every
    ``seed<k>`` directory on disk. Subsets are canonical keys (or ``selected``).
    """

    seeds: list[int] | None
    modality_model: str
    modality_subsets: list[str]
    twostage_subsets: list[str]
    baseline_models: list[str]
    baseline_subset: str
    #: Upper edges (mm^3) of the GT lesion-size bins of the detection table, ascending.
    size_bins: list[float]
    detection_regions: list[str]
    qualitative_case: str | None
    #: How Table 2 meets the page: ``single`` or ``split`` (:data:`brainmets.reporting.tables.TABLE2_LAYOUTS`).
    table2_layout: str
    #: ``(source, subset)`` of each seed ensemble in Table 2 (:func:`ensemble_members`).
    ensembles: list[tuple[str, str]]


def report_config(config: dict[str, Any]) -> ReportConfig:
    """A :class:`ReportConfig` from a validated config (:func:`brainmets.config.load_config`)."""
    reporting = config["reporting"]
    return ReportConfig(
        seeds=list(config["seeds"]),
        modality_model=config["modality_study"]["model"],
        modality_subsets=list(config["modality_study"]["subsets"]),
        twostage_subsets=list(config["twostage"]["subsets"]),
        baseline_models=list(config["baselines"]["models"]),
        baseline_subset=config["baselines"]["subset"],
        size_bins=sorted(float(b) for b in reporting["size_bins"]),
        detection_regions=list(reporting["detection_regions"]),
        qualitative_case=reporting["qualitative_case"],
        table2_layout=reporting["table2_layout"],
        ensembles=ensemble_members(config),
    )


def ensemble_members(raw: dict[str, Any], only_enabled: bool = True) -> list[tuple[str, str]]:
    """``(source, subset)`` of the configured seed ensembles (``ensembles.members``), checked against the study.

    The subset of a ``twostage`` ensemble must be one the two-stage model is
    trained with, that of a ``modality`` ensemble one of the modality study's
    (ensembles reuse trained runs, they never train). ``only_enabled``: none
    when ``ensembles.enabled`` is false (no Table 2 rows); ``segment_external``
    uses the members either way.
    """
    section = raw.get("ensembles") or {}
    if only_enabled and not section.get("enabled", False):
        return []
    # A validated config: subsets are canonical keys already (or ``selected``).
    trained = {"twostage": list(raw["twostage"]["subsets"]), "modality": list(raw["modality_study"]["subsets"])}
    members = []
    for source, subset in (section.get("members") or {}).items():
        if source not in ENSEMBLE_SOURCES:
            raise BrainmetsError(f"config key ensembles.members.{source}: unknown source; expected "
                                 f"{' or '.join(ENSEMBLE_SOURCES)}")
        if subset is None:
            continue
        key = canonical_subset(subset, aliases=True)
        if key not in trained[source]:
            where = "twostage.subsets" if source == "twostage" else "modality_study.subsets"
            raise BrainmetsError(f"config key ensembles.members.{source} is {subset!r}, which {where} does not "
                                 f"train ({', '.join(trained[source])}): ensembles reuse trained runs")
        members.append((source, key))
    return members


def load_report_config(path: str | Path) -> ReportConfig:
    from brainmets.config import load_config

    return report_config(load_config(path))


# --------------------------------------------------------------------------- groups


def modality_groups(results: str | Path, cfg: ReportConfig) -> list[RunGroup]:
    """One group per configured modality-study subset, in the configured order."""
    return [
        make_group(results, "modality", cfg.modality_model, s, subset_label(s), cfg.seeds)
        for s in cfg.modality_subsets
    ]


def comparison_groups(results: str | Path, cfg: ReportConfig) -> list[RunGroup]:
    """Rows of Table 2: the baselines in ``baselines.models`` order, then the two-stage model per configured subset.

    The modality study's model, where ``baselines.models`` names it, is its
    modality-study run on the baselines' subset (reused, not retrained: the
    paper's 3D-UNET row). Two-stage rows are labelled with the subset they
    used; the alias ``selected`` is resolved through the decision file
    (:mod:`brainmets.decision`).
    """
    groups = []
    for model in cfg.baseline_models:
        label = model_display_name(model)
        if cfg.baseline_subset != ALL_FOUR:
            label += f" ({subset_label(cfg.baseline_subset)})"
        if model == cfg.modality_model:
            subset = cfg.baseline_subset
            if subset == SELECTED:
                subset = selected_subset(selection_path(results))
            groups.append(make_group(results, "modality", model, subset, label, cfg.seeds))
        else:
            groups.append(make_group(results, "baselines", model, cfg.baseline_subset, label, cfg.seeds))
    for subset in cfg.twostage_subsets:
        if subset == SELECTED:
            resolved = selected_subset(selection_path(results))
            label = f"Two-stage ({subset_label(resolved)}, selected)"
        else:
            resolved = subset
            label = f"Two-stage ({subset_label(subset)})"
        groups.append(make_group(results, "twostage", TWOSTAGE_COMBINED, subset, label, cfg.seeds, resolved))
    return groups


def ensemble_groups(results: str | Path, cfg: ReportConfig) -> list[RunGroup]:
    """Table 2 rows of the seed ensembles: per configured member, each variant (:data:`ENSEMBLE_VARIANTS`)."""
    groups = []
    for source, subset in cfg.ensembles:
        resolved = selected_subset(selection_path(results)) if subset == SELECTED else subset
        name = "Two-stage" if source == "twostage" else model_display_name(cfg.modality_model)
        chosen = ", selected" if subset == SELECTED else ""
        for variant, what in ENSEMBLE_VARIANTS.items():
            groups.append(RunGroup(Path(results), ENSEMBLES, source, subset, (0,),
                                   f"{name} ({subset_label(resolved)}{chosen}), {what}", resolved, variant))
    return groups


def reference_group(groups: list[RunGroup]) -> RunGroup | None:
    """The model the significance tests compare against: the two-stage model with the selected subset."""
    twostage = [g for g in groups if g.study == "twostage"]
    for g in twostage:
        if g.subset == SELECTED:
            return g
    return twostage[0] if twostage else None
