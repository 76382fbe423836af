"""Segment new patients: unlabelled cases in, BraTS label maps on each case's own grid out.

:func:`segment` is the stage's API (``brainmets segment`` only parses arguments).

Model. One or more *members*, each a trained run directory (single-pass
sliding window) or a detector + segmentor pair (the two-stage model). Several
members form an ensemble: their region probabilities are averaged. Each run
contributes the weights ``inference.checkpoint`` names (best.pt or model.pt,
as in the study's predictions). Each run's model card
(:mod:`brainmets.inference.card`) says which sequences it needs and how its
cases were preprocessed; members must agree on both.

Per case:

1. the sequences go through the training preprocessing in memory
   (:func:`brainmets.data.preprocess.preprocess_unlabelled`: RAS, brain crop,
   optional resampling, z-score), no cache written;
2. each member predicts WT/TC/ET probabilities on that grid with the engine
   the study uses (:func:`~brainmets.inference.engine.predict_single_pass`,
   :func:`~brainmets.inference.engine.predict_two_stage`); with mirroring
   (test-time augmentation) it also predicts the mirror images of the
   volume (every combination of the flipped axes ``inference.mirror_axes``,
   7 for all three), flips each result back and averages them with the
   unflipped one (the plain prediction, so
   ``segment(..., unmirrored_dir=...)`` writes both from the same passes);
3. each member's probabilities go back to the case's original grid
   (:func:`~brainmets.data.preprocess.probabilities_to_original_grid`), where
   they are averaged over members and thresholded into labels
   (:func:`~brainmets.inference.labels.regions_to_labels`); the optional
   uncertainty map is the members' standard deviation there;
4. when the model's card carries a postprocessing decision (minimum
   component volumes per region, chosen on the validation split:
   :mod:`brainmets.inference.postprocess`), small components are removed
   from the labels (``postprocessing=False`` in :func:`load_model` turns it off).

Outputs (``<out>/``): ``<case>.nii.gz`` (uint8 BraTS labels 1 NETC, 2 SNFH,
3 ET, the case's affine and header codes: the file name the BraTS challenge
expects), optionally ``<case>_uncertainty.nii.gz`` (float32, 4-D: the standard
deviation of WT, TC and ET as three volumes), ``model.json`` (the card of
what ran, with the inference settings) and ``brats_labels.ctbl`` (a 3D Slicer
colour table). Outputs are written into a hidden staging folder inside
``<out>`` and moved into place only once every case succeeded, so a bad
input found at the tenth case leaves ``<out>`` as it was.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from brainmets.constants import LABELS, MODALITIES, TRAIN_REGIONS
from brainmets.errors import BrainmetsError
from brainmets.inference.card import CARD_NAME, check_members, combined_card, describe, read_run_card
from brainmets.io import write_json, write_text

if TYPE_CHECKING:
    from brainmets.inference.engine import InferenceSettings, Network, Runtime

log = logging.getLogger(__name__)

COLOUR_TABLE = "brats_labels.ctbl"
UNCERTAINTY_SUFFIX = "_uncertainty"
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
#: Label colours (RGB): NETC red, SNFH (oedema) green, ET yellow, as BraTS figures usually draw them.
LABEL_COLOURS: dict[int, tuple[int, int, int]] = {1: (220, 40, 40), 2: (40, 190, 60), 3: (250, 215, 30)}


def mirror_images(axes: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """The non-trivial mirror images of a (channels, X, Y, Z) volume flipping spatial ``axes``
    (0 x, 1 y, 2 z; ``inference.mirror_axes``): every non-empty combination of them, as tensor
    dimensions, fewest flips first (all three axes: the 7 images beside the plain one)."""
    dims = sorted(int(a) + 1 for a in axes)
    return tuple(combo for r in range(1, len(dims) + 1) for combo in itertools.combinations(dims, r))


# --------------------------------------------------------------------------- inputs


def find_cases(source: str | Path) -> dict[str, dict[str, Path]]:
    """``{case: {modality: path}}`` of the sequences found for one case folder or a folder of case folders.

    A folder holding a sequence named after itself (``<folder>/<folder>-t1c.nii.gz``) is
    one case; otherwise each sub-folder is a case
    (:func:`brainmets.data.layout.discover_cases`). Files follow the BraTS naming
    ``<case>/<case>-<t1n|t1c|t2w|t2f>.nii.gz`` (or ``.nii``); absent ones are not
    listed (which are required is the model's business, :func:`check_inputs`).
    """
    from brainmets.data.layout import discover_cases

    source = Path(source)
    if any((source / f"{source.name}-{m}{ext}").is_file() for m in MODALITIES for ext in NIFTI_EXTENSIONS):
        root, cases = source.parent, [source.name]
    else:
        root, cases = source, discover_cases(source)
    found = {}
    for case in cases:
        found[case] = {}
        for modality in MODALITIES:
            for extension in NIFTI_EXTENSIONS:
                path = root / case / f"{case}-{modality}{extension}"
                if path.is_file():
                    found[case][modality] = path
                    break
    return found


def explicit_case(files: Mapping[str, str | Path | None], case: str | None = None) -> dict[str, dict[str, Path]]:
    """One case from explicit files (``{modality: path or None}``); its name from ``case`` or the file names."""
    given = {m: Path(p) for m, p in files.items() if p is not None}
    if not given:
        raise BrainmetsError("no input: give a folder of cases, one case folder, or the files (--t1c ...)")
    if case is None:
        modality, path = next(iter(given.items()))
        name = path.name
        for extension in NIFTI_EXTENSIONS:
            name = name.removesuffix(extension)
        case = name.removesuffix(f"-{modality}")
    return {case: given}


def cases_of_splits(cases: Mapping[str, Mapping[str, Path]], splits_table: str | Path, splits: Sequence[str],
                    source: str | Path) -> dict[str, dict[str, Mapping[str, Path]]]:
    """``{split: {case: files}}``: the cases of each split of ``splits_table`` (case, split), all in ``source``."""
    from brainmets.data.splits import cases_in_split

    selected = {}
    for split in dict.fromkeys(splits):
        wanted = cases_in_split(splits_table, split)
        absent = [c for c in wanted if c not in cases]
        if absent:
            raise BrainmetsError(f"{len(absent)} {split} case(s) of {splits_table} not found in "
                                 f"{source}: {', '.join(absent[:5])}")
        selected[split] = {c: cases[c] for c in wanted}
    return selected


def check_inputs(cases: Mapping[str, Mapping[str, Path]], channels: Sequence[str], source: str | Path) -> None:
    """Every case has every sequence the model needs: else one error listing each missing file."""
    from brainmets.data.layout import _misnamed_hint

    if not cases:
        raise BrainmetsError(f"no cases in {source}")
    problems = []
    for case, files in cases.items():
        for modality in channels:
            path = files.get(modality)
            if path is not None and Path(path).is_file():
                continue
            folder = next(iter(files.values())).parent if files else Path(source) / case
            expected = path or folder / f"{case}-{modality}.nii.gz"
            if path is None and expected.parent.is_dir():
                present = sorted(p.name for p in expected.parent.iterdir())
                hint = _misnamed_hint(case, modality, present)
            else:
                hint = ""
            problems.append(f"{case}: {modality} missing (expected {expected}){'; ' + hint if hint else ''}")
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise BrainmetsError(
            f"the model needs {', '.join(channels)}; {len(problems)} file(s) missing:\n{listing}"
        )


# --------------------------------------------------------------------------- the model


@dataclass
class Member:
    """One model of an ensemble: a single-pass network or a detector + segmentor pair."""

    segmentor: Network
    detector: Network | None = None


@dataclass
class SegmentationModel:
    """Loaded members, their combined card and how to run them."""

    members: list[Member]
    card: dict[str, Any]
    settings: InferenceSettings
    runtime: Runtime
    mirror: bool
    postprocessing: dict[str, Any] | None = None

    @property
    def channels(self) -> list[str]:
        return list(self.card["channels"])

    @property
    def spacing(self) -> list[float] | None:
        return self.card["preprocessing"]["spacing_mm"]


def load_model(
    runs: Sequence[str | Path],
    detectors: Sequence[str | Path] = (),
    settings: InferenceSettings | None = None,
    mirror: bool = True,
    postprocessing: Mapping[str, Any] | bool = True,
) -> SegmentationModel:
    """Read the run cards, check they form one model, load the networks.

    ``runs``: segmentation run directories (one = one model, several = an ensemble);
    ``detectors``: none, or one detector run per run in ``runs`` (paired in order:
    two-stage members). Each run's weights are the file ``settings.checkpoint``
    names (:func:`brainmets.inference.card.weights_path`). ``postprocessing``: ``True`` applies the decision the
    segmentor cards carry (all the same, or none), ``False`` none, a decision
    (:func:`brainmets.inference.postprocess.read_decision`) that one; the card
    written with the outputs records what was applied.
    """
    from brainmets.inference.engine import InferenceSettings, inference_runtime, load_network

    if not runs:
        raise BrainmetsError("no model given: name at least one run directory (a finished training run)")
    if detectors and len(detectors) != len(runs):
        raise BrainmetsError(
            f"{len(detectors)} detector run(s) for {len(runs)} segmentor run(s): a two-stage member "
            "pairs one detector with one segmentor, in the order given"
        )
    settings = settings or InferenceSettings.from_config(None)
    cards = []
    for i, run in enumerate(runs):
        segmentor = read_run_card(run, settings.checkpoint)
        _expect_task(segmentor, "segmentation")
        detector = None
        if detectors:
            detector = read_run_card(detectors[i], settings.checkpoint)
            _expect_task(detector, "detection")
            check_members([segmentor, detector], "two-stage pair")
            if detector["patch"] != segmentor["patch"]:
                raise BrainmetsError(
                    f"two-stage pair: detector {detector['run_dir']} patch {detector['patch']} differs from "
                    f"segmentor {segmentor['run_dir']} patch {segmentor['patch']}"
                )
        cards.append({"segmentor": segmentor, "detector": detector})
    check_members([c["segmentor"] for c in cards], "ensemble")
    inference = {
        "checkpoint": settings.checkpoint, "mirror": bool(mirror),
        **({"mirror_axes": list(settings.mirror_axes)} if mirror else {}),
        "overlap": settings.overlap, "blend": settings.blend,
        "average": settings.average, "threshold": settings.threshold, "label_export": settings.label_export,
        **({"detector_threshold": settings.detector_threshold} if detectors else {"window": settings.window}),
    }
    decision = _postprocessing_decision([c["segmentor"] for c in cards], postprocessing)
    card = {**combined_card(cards, inference), "postprocessing": decision}
    runtime = inference_runtime(settings)
    members = []
    for c in cards:
        segmentor = load_network(_weights(c["segmentor"]), runtime, task="segmentation")
        detector = None
        if c["detector"] is not None:
            detector = load_network(_weights(c["detector"]), runtime, task="detection")
        members.append(Member(segmentor, detector))
    return SegmentationModel(members, card, settings, runtime, bool(mirror), decision)


def _postprocessing_decision(cards: Sequence[Mapping[str, Any]], choice: Mapping[str, Any] | bool
                             ) -> dict[str, Any] | None:
    from brainmets.inference.postprocess import check_decision

    if choice is False:
        return None
    if choice is not True:
        return check_decision(dict(choice), "the postprocessing decision given")
    decisions = [c.get("postprocessing") for c in cards]
    if any(d != decisions[0] for d in decisions[1:]):
        raise BrainmetsError(
            "the members' model cards record different postprocessing decisions; give one explicitly "
            "(--postprocessing FILE) or turn it off (--no-postprocessing)"
        )
    return None if decisions[0] is None else check_decision(decisions[0], f"{cards[0]['run_dir']}/{CARD_NAME}")


def _weights(card: Mapping[str, Any]) -> Path:
    """The weights file a run card read by :func:`read_run_card` was checked against."""
    return Path(card["run_dir"]) / card["checkpoint"]["file"]


def _expect_task(card: Mapping[str, Any], task: str) -> None:
    if card["task"] != task:
        raise BrainmetsError(
            f"{card['run_dir']} holds a {card['task']} model ({card['network']['name']}); expected a {task} model"
            + ("; pass detector runs with --detector" if card["task"] == "detection" else "")
        )


# --------------------------------------------------------------------------- one case


@dataclass
class CaseSegmentation:
    """A segmented case on its original grid."""

    case: str
    labels: np.ndarray  # uint8 (X, Y, Z)
    probabilities: np.ndarray  # float32 (3, X, Y, Z): mean over members of WT, TC, ET
    member_probabilities: np.ndarray  # float32 (members, 3, X, Y, Z)
    meta: dict[str, Any]  # the preprocessing record (original grid, affine, ...)

    @property
    def uncertainty(self) -> np.ndarray:
        """Standard deviation of the members' probabilities, (3, X, Y, Z) float32."""
        return self.member_probabilities.std(axis=0).astype(np.float32)


def member_passes(member: Member, volume: Any, model: SegmentationModel) -> dict[bool, Any]:
    """A member's WT/TC/ET probabilities on the cache grid: ``{False: plain}`` and, with mirroring,
    ``{True: the mirror images averaged}`` (``inference.mirror_axes``: all 8 by default).

    The plain prediction is the mirror average's identity image, so both come from one set of
    passes; the average adds the flipped images to a copy of it in the order of
    :func:`mirror_images`, the same floats as when the plain prediction is not kept.
    """
    import torch

    from brainmets.inference.engine import predict_single_pass, predict_two_stage

    def run(image: torch.Tensor) -> torch.Tensor:
        if member.detector is None:
            return predict_single_pass(member.segmentor, image, model.settings, model.runtime).probabilities
        return predict_two_stage(member.detector, member.segmentor, image, model.settings,
                                 model.runtime).probabilities

    with torch.inference_mode():
        plain = run(volume)
        passes = {False: plain}
        if model.mirror:
            total = plain.clone()
            images = mirror_images(model.settings.mirror_axes)
            for dims in images:
                total += torch.flip(run(torch.flip(volume, dims)), dims)
            total /= 1 + len(images)
            passes[True] = total
    return passes


def member_probabilities(member: Member, volume: Any, model: SegmentationModel) -> Any:
    """A member's WT/TC/ET probabilities on the cache grid, averaged over mirror images when mirroring."""
    return member_passes(member, volume, model)[model.mirror]


def segment_case(case: str, files: Mapping[str, Path], model: SegmentationModel) -> CaseSegmentation:
    """Preprocess one case in memory, run every member, return labels and probabilities on its grid."""
    return segment_case_variants(case, files, model, (model.mirror,))[model.mirror]


def segment_case_variants(case: str, files: Mapping[str, Path], model: SegmentationModel,
                          mirrors: Sequence[bool] = (False, True)) -> dict[bool, CaseSegmentation]:
    """:func:`segment_case` without and/or with mirroring (``mirrors``) from one set of passes
    (:func:`member_passes`): ``{mirror: result}``; with mirroring needs a model that mirrors."""
    import torch

    from brainmets.data.preprocess import preprocess_unlabelled, probabilities_to_original_grid
    from brainmets.inference.labels import regions_to_labels

    if True in mirrors and not model.mirror:
        raise BrainmetsError("a segmentation with mirroring needs a model loaded with mirror=True")
    image, meta = preprocess_unlabelled(case, files, model.spacing)
    volume = torch.from_numpy(image)
    passes = [member_passes(member, volume, model) for member in model.members]
    results = {}
    for mirror in mirrors:
        members = np.stack([
            probabilities_to_original_grid(member[mirror].numpy(), meta, fill=0.0)[0] for member in passes
        ])
        probabilities = members.mean(axis=0, dtype=np.float64).astype(np.float32)
        labels = regions_to_labels(probabilities, model.settings.threshold, model.settings.label_export)
        if model.postprocessing is not None:
            from brainmets.inference.postprocess import remove_small_components

            labels = remove_small_components(labels, model.postprocessing["min_volume_mm3"],
                                             meta["original_spacing"])
        results[mirror] = CaseSegmentation(case, labels, probabilities, members, meta)
    return results


# --------------------------------------------------------------------------- outputs


def label_path(out_dir: str | Path, case: str) -> Path:
    return Path(out_dir) / f"{case}.nii.gz"


def uncertainty_path(out_dir: str | Path, case: str) -> Path:
    return Path(out_dir) / f"{case}{UNCERTAINTY_SUFFIX}.nii.gz"


def write_uncertainty_nifti(std: np.ndarray, meta: Mapping[str, Any], out_path: str | Path) -> Path:
    """Write ``(3, X, Y, Z)`` standard deviations as a float32 4-D NIfTI (WT, TC, ET volumes), atomic."""
    from brainmets.data.preprocess import write_original_nifti

    return write_original_nifti(np.moveaxis(std, 0, -1), meta, out_path, np.float32,
                                f"std over members: {' '.join(TRAIN_REGIONS)}")


def colour_table() -> str:
    """The BraTS labels as a 3D Slicer colour table (``# Color table file`` text format)."""
    lines = [f"# Color table file {COLOUR_TABLE}", f"# {len(LABELS) + 1} values", "0 Background 0 0 0 0"]
    lines += [f"{value} {name} {r} {g} {b} 255" for value, name in sorted(LABELS.items())
              for r, g, b in [LABEL_COLOURS[value]]]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A hidden folder in ``out_dir`` whose files move into ``out_dir`` only if the block succeeds."""
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".segment-", dir=out_dir))
    except OSError as exc:
        raise BrainmetsError(f"cannot write to {out_dir}: {exc.strerror or exc}") from exc
    try:
        yield staging
        for path in sorted(staging.iterdir()):
            os.replace(path, out_dir / path.name)
        staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise


def segment(
    cases: Mapping[str, Mapping[str, Path]],
    model: SegmentationModel,
    out_dir: str | Path,
    uncertainty: bool = False,
    source: str | Path = "",
    progress: bool = True,
    unmirrored_dir: str | Path | None = None,
) -> list[Path]:
    """Segment ``cases`` (from :func:`find_cases` / :func:`explicit_case`) into ``out_dir``; returns the label files.

    ``unmirrored_dir`` (a model that mirrors): also write the segmentation without mirroring there,
    from the same passes (:func:`segment_case_variants`), what ``mirror=False`` would write.
    """
    from tqdm.auto import tqdm

    from brainmets.data.preprocess import write_original_label_nifti

    if uncertainty and len(model.members) < 2:
        raise BrainmetsError("an uncertainty map is the spread of an ensemble's members: give several runs")
    check_inputs(cases, model.channels, source)
    outs = {model.mirror: Path(out_dir)}
    if unmirrored_dir is not None:
        if not model.mirror or Path(unmirrored_dir).resolve() == Path(out_dir).resolve():
            raise BrainmetsError("the segmentation without mirroring goes beside one with mirroring: a model "
                                 "that mirrors, and another output folder")
        outs[False] = Path(unmirrored_dir)
    collisions = [case for case in cases if case in (Path(COLOUR_TABLE).stem, Path(CARD_NAME).stem)]
    if collisions:
        raise BrainmetsError(f"case name(s) {', '.join(collisions)} would collide with the outputs' own files")
    log.info("segmenting %d case(s) into %s with %s; mirroring %s; postprocessing %s; device %s", len(cases),
             " and ".join(map(str, outs.values())), describe(model.card),
             " and ".join("on" if mirror else "off" for mirror in outs),
             "off" if model.postprocessing is None else model.postprocessing["min_volume_mm3"],
             model.runtime.device)
    unused = sorted({m for files in cases.values() for m in files} - set(model.channels))
    if unused:
        log.info("sequences %s are read for the brain mask only (the model does not use them)", ", ".join(unused))
    written = []
    with contextlib.ExitStack() as stack:
        staging = {mirror: stack.enter_context(_staging(out)) for mirror, out in outs.items()}
        for case, files in tqdm(cases.items(), desc="segment", unit="case", disable=not progress):
            for mirror, result in segment_case_variants(case, files, model, tuple(outs)).items():
                write_original_label_nifti(result.labels, result.meta, label_path(staging[mirror], case))
                if uncertainty:
                    write_uncertainty_nifti(result.uncertainty, result.meta, uncertainty_path(staging[mirror], case))
                counts = np.bincount(result.labels.ravel(), minlength=4)
                log.info("%s%s: %s", case, "" if len(outs) == 1 else f" (mirroring {'on' if mirror else 'off'})",
                         ", ".join(f"{LABELS[v]} {int(counts[v])} voxels" for v in sorted(LABELS)))
            written.append(label_path(out_dir, case))
        for mirror, folder in staging.items():
            inference = {**model.card["inference"], "mirror": mirror}
            if not mirror:
                inference.pop("mirror_axes", None)
            write_json(folder / CARD_NAME, {**model.card, "inference": inference})
            write_text(folder / COLOUR_TABLE, colour_table())
    return written


__all__ = [
    "COLOUR_TABLE",
    "CaseSegmentation",
    "Member",
    "SegmentationModel",
    "cases_of_splits",
    "check_inputs",
    "colour_table",
    "explicit_case",
    "find_cases",
    "label_path",
    "load_model",
    "member_passes",
    "member_probabilities",
    "segment",
    "segment_case",
    "segment_case_variants",
    "uncertainty_path",
    "write_uncertainty_nifti",
]
