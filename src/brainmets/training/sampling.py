"""Patch sampling from the memory-mapped preprocessed cache.

Each training step draws ``batch_patients`` patients and ``crops_per_patient``
crops from each. A fixed share of the batch's crops (``pos_fraction``, rounded
to whole crops) is *positive*: centred on a tumour voxel (a lesion is drawn
first, uniformly or by size, see ``positive_centre``) of the region
``positive_region`` (all tumour, or only its core and enhancing part). The others are
*negative*: centred on a random brain voxel (``negative_centre`` brain), or
on a brain voxel outside the positive region (``background``: what MONAI's
``RandCropByPosNegLabeld`` calls background, the authors' negatives); for the
detector a negative crop is redrawn (a bounded number of times) until it holds
no tumour, so the classifier sees real tumour-free patches
(``tumour_free_negatives``). A
detection patch's target comes from its label after augmentation
(:func:`brainmets.training.losses.detection_targets`).

Everything random in a step comes from generators seeded with
``(seed, iteration, stream)``: the batch of step ``t`` is a pure function of
the run's seed and ``t``. Resuming at step ``t`` therefore needs no sampler
state, and a background thread may prepare batches ahead of the training loop
without changing them.

Crops are read as spatial slices of the memory map first and only then
channel-selected, so a step reads ``batch x channels x patch`` voxels, not
whole volumes. A volume smaller than the patch along an axis is zero-padded
(the cache's background value) symmetrically.

With an augmenter of scope ``volume`` (the authors' order) a step instead
augments each chosen patient's whole volume once, reseeded from (seed,
iteration, patient slot), and draws that patient's centres on the augmented
label and cuts its crops from the result: rotated or scaled crops hold anatomy
to their corners and a patient's crops share one draw. The volume is augmented
on the augmenter's device and copied back for cropping; the lesion index is
computed afresh on each augmented label. Costlier: on 2 CPU threads a
3-channel 160 x 200 x 150 volume takes about 2.7 s with the paper's
probabilities (a GPU makes it cheap).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from brainmets.constants import REGIONS
from brainmets.errors import BrainmetsError
from brainmets.training.augment import PatchAugmenter

#: Streams of the per-step random generators (so the sampler and the augmenter never share draws).
_BATCH_STREAM, _AUG_STREAM, _VAL_STREAM = 0, 1, 2
#: Tumour voxels kept per lesion for drawing centres (a stride subsample of larger lesions).
_MAX_VOXELS_PER_LESION = 4096
#: Attempts at a brain voxel (non-zero in any sequence) before taking the volume centre.
_BRAIN_TRIES = 32
#: Attempts at a tumour-free negative detection crop before accepting one with tumour.
_NEGATIVE_TRIES = 10


def step_seed(seed: int, iteration: int, stream: int, slot: int = 0) -> int:
    """A 32-bit seed that depends only on (run seed, iteration, stream, slot)."""
    return int(np.random.SeedSequence([int(seed), int(iteration), int(stream), int(slot)]).generate_state(1)[0])


@dataclass
class _Case:
    name: str
    image: np.ndarray  # (4, X, Y, Z) view of the memory map
    label: np.ndarray  # (X, Y, Z) view of the memory map
    lesion_voxels: list[np.ndarray] | None = None  # per lesion: (n, 3) int32 coordinates (subsampled)
    lesion_sizes: np.ndarray | None = None  # per lesion: true voxel count
    channels: list[int] | None = None  # channels of image a crop takes (None: the sampler's channels)


@dataclass
class Batch:
    """One step's patches: ``image (B, C, *patch)``, ``label (B, 1, *patch)`` (values 0-3), ``positive (B,)``."""

    image: torch.Tensor
    label: torch.Tensor
    positive: torch.Tensor
    iteration: int = -1


def crop_slices(shape: Sequence[int], centre: Sequence[int], patch: Sequence[int]) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
    """Slices of a ``patch``-sized window around ``centre`` and the zero padding it needs.

    Along an axis at least as long as the patch, the window is shifted to lie
    inside the volume (the centre voxel stays inside it); along a shorter axis,
    the whole axis is taken and padded symmetrically to the patch size.
    """
    slices, pads = [], []
    for size, c, p in zip(shape, centre, patch):
        if size >= p:
            start = int(min(max(int(c) - p // 2, 0), size - p))
            slices.append(slice(start, start + p))
            pads.append((0, 0))
        else:
            before = (p - size) // 2
            slices.append(slice(0, size))
            pads.append((before, p - size - before))
    return tuple(slices), pads


class PatchSampler:
    """Draws training batches and fixed validation patches of one modality subset from the cache."""

    def __init__(self, cache_dir: str | Path, cases: Sequence[str], channels: Sequence[int],
                 patch: Sequence[int], *, batch_patients: int, crops_per_patient: int, pos_fraction: float,
                 task: str, seed: int, positive_centre: str = "lesion", positive_region: str = "wt",
                 tumour_free_negatives: bool = True, negative_centre: str = "brain",
                 augmenter: PatchAugmenter | None = None):
        from brainmets.data.preprocess import load_case

        if not cases:
            raise BrainmetsError(f"no cases to sample from in {cache_dir}")
        self.cases = []
        for name in cases:
            image, label, _meta = load_case(cache_dir, name, mmap=True)
            # plain ndarray views of the same mapped pages: indexing a np.memmap runs Python-level
            # __getitem__/__array_finalize__, a fifth of a batch's time, all of it under the GIL that
            # the training thread needs too (the background thread's batches came late: data wait)
            self.cases.append(_Case(name, np.asarray(image), np.asarray(label)))
        self.channels = list(channels)
        self.patch = tuple(int(p) for p in patch)
        self.batch_patients = int(batch_patients)
        self.crops_per_patient = int(crops_per_patient)
        self.pos_fraction = float(pos_fraction)
        self.task = task
        self.seed = int(seed)
        self.positive_centre = positive_centre
        self.positive_labels = REGIONS["WT" if positive_region == "wt" else "TC"]
        self.tumour_free_negatives = task == "detection" and tumour_free_negatives
        self.negative_centre = negative_centre
        self.augmenter = augmenter
        self._index_lock = threading.Lock()

    @property
    def batch_size(self) -> int:
        return self.batch_patients * self.crops_per_patient

    # ------------------------------------------------------------------ centres

    def _lesions(self, case: _Case) -> tuple[list[np.ndarray], np.ndarray]:
        """Voxels of the positive region grouped by lesion (26-connected components), computed once per case."""
        with self._index_lock:
            if case.lesion_voxels is None:
                import cc3d

                components = cc3d.connected_components(np.isin(case.label, self.positive_labels), connectivity=26)
                coords = np.argwhere(components > 0).astype(np.int32)
                ids = components[tuple(coords.T)]
                order = np.argsort(ids, kind="stable")
                coords, ids = coords[order], ids[order]
                starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], int)
                groups = np.split(coords, starts[1:]) if len(ids) else []
                case.lesion_sizes = np.array([len(g) for g in groups], dtype=np.int64)
                case.lesion_voxels = [g[:: max(1, -(-len(g) // _MAX_VOXELS_PER_LESION))] for g in groups]
            return case.lesion_voxels, case.lesion_sizes

    def _positive_centre(self, case: _Case, rng: np.random.Generator) -> np.ndarray | None:
        voxels, sizes = self._lesions(case)
        if not voxels:
            return None
        if self.positive_centre == "lesion":
            lesion = int(rng.integers(len(voxels)))
        else:  # "voxel": a lesion with probability proportional to its size = a uniform tumour voxel
            lesion = int(rng.choice(len(voxels), p=sizes / sizes.sum()))
        group = voxels[lesion]
        return group[int(rng.integers(len(group)))]

    def _brain_centre(self, case: _Case, rng: np.random.Generator) -> np.ndarray:
        shape = np.array(case.label.shape)
        background = self.negative_centre == "background"
        for _ in range(_BRAIN_TRIES):
            centre = rng.integers(0, shape)
            if np.any(case.image[(slice(None), *centre)] != 0) and not (
                    background and case.label[tuple(centre)] in self.positive_labels):
                return centre
        if background:
            # rejection failed (tumour fills most of the brain): draw from the exact set, still uniform
            allowed = np.any(case.image != 0, axis=0) & ~np.isin(case.label, self.positive_labels)
            voxels = np.flatnonzero(allowed)
            if len(voxels):
                return np.array(np.unravel_index(voxels[int(rng.integers(len(voxels)))], case.label.shape))
        return shape // 2

    def _negative_centre(self, case: _Case, rng: np.random.Generator) -> np.ndarray:
        centre = self._brain_centre(case, rng)
        if not self.tumour_free_negatives:
            return centre
        for _ in range(_NEGATIVE_TRIES - 1):
            slices, _ = crop_slices(case.label.shape, centre, self.patch)
            if not np.any(case.label[slices] > 0):
                break
            centre = self._brain_centre(case, rng)
        return centre

    # ------------------------------------------------------------------ crops

    def crop(self, case: _Case, centre: Sequence[int], patch: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(image (C, *patch), label (1, *patch))`` float32 copies of the window around ``centre``."""
        patch = self.patch if patch is None else tuple(patch)
        slices, pads = crop_slices(case.label.shape, centre, patch)
        channels = self.channels if case.channels is None else case.channels
        image = case.image[(slice(None), *slices)][channels].astype(np.float32, copy=False)
        label = case.label[slices][None].astype(np.float32, copy=False)
        if any(p != (0, 0) for p in pads):
            image = np.pad(image, [(0, 0), *pads])
            label = np.pad(label, [(0, 0), *pads])
        return image, label

    def _kinds(self, n: int, rng: np.random.Generator) -> np.ndarray:
        n_pos = int(round(self.pos_fraction * n))
        return rng.permutation(np.r_[np.ones(n_pos, bool), np.zeros(n - n_pos, bool)])

    def _draw(self, case: _Case, positive: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
        centre = self._positive_centre(case, rng) if positive else None
        if centre is None:  # a negative was asked for, or the case has no tumour to centre on
            return (*self.crop(case, self._negative_centre(case, rng)), False)
        return (*self.crop(case, centre), True)

    @property
    def _augments_volumes(self) -> bool:
        return self.augmenter is not None and self.augmenter.enabled and self.augmenter.scope == "volume"

    def _augmented_case(self, case: _Case) -> _Case:
        """The case's selected channels and label augmented as a whole (one draw), as a case to crop from."""
        # copies: torch refuses to wrap the read-only memory map without a warning
        image_t, label_t = self.augmenter(case.image[self.channels], np.array(case.label[None], dtype=np.float32))
        return _Case(case.name, image_t.cpu().numpy(), label_t[0].cpu().numpy(),
                     channels=list(range(len(self.channels))))

    def _finish(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augmenter is None or self._augments_volumes:
            return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(label))
        return self.augmenter(image, label)

    def batch(self, iteration: int, draws: int = 1) -> Batch:
        """The (augmented) batch of step ``iteration``; a pure function of (seed, iteration).

        With ``draws > 1`` every slot gets ``draws`` candidate crops of its kind
        (for training on detector-accepted patches): the result has batch size
        ``batch_size * draws``, slot-major (candidates of slot 0 first).
        """
        rng = np.random.default_rng([self.seed, iteration, _BATCH_STREAM])
        n_cases = len(self.cases)
        chosen = rng.choice(n_cases, size=self.batch_patients, replace=n_cases < self.batch_patients)
        kinds = self._kinds(self.batch_size, rng)
        by_volume = self._augments_volumes
        if self.augmenter is not None and not by_volume:
            self.augmenter.reseed(step_seed(self.seed, iteration, _AUG_STREAM))
        images, labels, positive = [], [], []
        for slot in range(self.batch_size):
            patient, crop_index = divmod(slot, self.crops_per_patient)
            if not by_volume:
                case = self.cases[int(chosen[patient])]
            elif crop_index == 0:  # one draw per patient and step, kept for its next crops; seeded like a batch
                self.augmenter.reseed(step_seed(self.seed, iteration, _AUG_STREAM, patient))
                case = self._augmented_case(self.cases[int(chosen[patient])])
            for draw in range(draws):
                image, label, pos = self._draw(case, bool(kinds[slot]), rng)
                image_t, label_t = self._finish(image, label)
                images.append(image_t)
                labels.append(label_t)
                positive.append(pos)
        return Batch(torch.stack(images), torch.stack(labels), torch.tensor(positive), iteration)

    def fixed_patches(self, crops_per_case: int) -> Batch:
        """Un-augmented validation patches: ``crops_per_case`` per case, same pos:neg ratio, fixed by the seed."""
        images, labels, positive = [], [], []
        for index, case in enumerate(self.cases):
            rng = np.random.default_rng([self.seed, index, _VAL_STREAM])
            for kind in self._kinds(crops_per_case, rng):
                image, label, pos = self._draw(case, bool(kind), rng)
                images.append(torch.from_numpy(np.ascontiguousarray(image)))
                labels.append(torch.from_numpy(np.ascontiguousarray(label)))
                positive.append(pos)
        return Batch(torch.stack(images), torch.stack(labels), torch.tensor(positive))


class BatchPrefetcher:
    """Prepares the batches of steps ``start..stop-1`` in a background thread, ``depth`` ahead.

    Reading crops from the memory map and augmenting them is cheap next to a
    training step but not free; one thread overlapping it with the step keeps
    the loop from waiting. ``waited`` accumulates the seconds the consumer
    spent blocked on the queue (reported as the data-wait fraction).
    ``depth = 0`` prepares each batch inline.
    """

    def __init__(self, make_batch, start: int, stop: int, depth: int = 2):
        self._make = make_batch
        self._next = start
        self._stop = stop
        self.depth = int(depth)
        self.waited = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, self.depth))
        self._halt = threading.Event()
        self._thread = None
        if self.depth > 0 and start < stop:
            self._thread = threading.Thread(target=self._work, name="brainmets-batches", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        for iteration in range(self._next, self._stop):
            if self._halt.is_set():
                return
            try:
                item = self._make(iteration)
            except BaseException as exc:  # hand the error to the consumer, which re-raises it
                item = exc
            while not self._halt.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        if self._next >= self._stop:
            raise StopIteration
        began = time.perf_counter()
        item = self._queue.get() if self._thread is not None else self._make(self._next)
        self.waited += time.perf_counter() - began
        if isinstance(item, BaseException):
            raise item
        self._next += 1
        return item

    def close(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
