"""`brainmets <verb>`: thin argument parsing; each verb lives in its own module.

A verb module in this package defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Modules import only argparse-level things at import
time; heavy libraries (torch, MONAI, MLflow) are imported inside ``run`` so that
``brainmets --help`` and torch-free verbs (evaluate, tables) start fast. The
``--device`` flags, which override ``inference.device``, are typed by
:func:`config_override`, so the config schema is the one source of its allowed values.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Callable
from typing import Any

from brainmets import __version__
from brainmets.errors import BrainmetsError

# Order in `brainmets --help`: the order of the pipeline.
_ORDER = [
    "synth", "index", "split", "preprocess", "train", "predict", "evaluate",
    "select", "tables", "figures", "card", "segment", "postprocess", "ensemble", "tracking",
]


def _verb_modules() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(found, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def config_override(section: str, key: str) -> Callable[[str], Any]:
    """An argparse ``type`` for a flag that overrides config key ``<section>.<key>``.

    The value is checked by that key's definition in the config schema
    (:func:`brainmets.config.validate_section`), the one source of its allowed
    values: the flag accepts exactly what a config file does, and a bad value
    stops the verb while its arguments are parsed, before any work, with the
    key and the allowed values named.
    """

    def check(value: str) -> Any:
        from brainmets.config import ConfigError, validate_section

        try:
            return validate_section(section, {key: value})[key]
        except ConfigError as exc:
            raise argparse.ArgumentTypeError("; ".join(exc.problems)) from None

    return check


def inference_settings(config_path, device: str | None = None):
    """``(config, InferenceSettings)`` of an optional ``--config`` file, with a ``--device`` override
    (segment, ensemble); the config is None without the file."""
    import dataclasses

    from brainmets.inference import InferenceSettings

    config = None
    if config_path:
        from brainmets.config import load_config

        config = load_config(config_path)
    settings = InferenceSettings.from_config(config)
    if device:
        settings = dataclasses.replace(settings, device=device)
    return config, settings


def zipped(per: str, unique: tuple[str, ...], **lists: list | None) -> list[tuple]:
    """The values of flags given once per run (``--seed S... --out-dir D...``), zipped into one tuple per run.

    ``lists`` maps flag names (``out_dir`` for ``--out-dir``) to their values, the
    ``per`` flag first; a flag not given (None) is None in every tuple. Unequal
    lengths, or a value of a flag in ``unique`` given twice, stop the verb naming
    the flags.
    """
    given = {f"--{name.replace('_', '-')}": values for name, values in lists.items() if values is not None}
    if len({len(values) for values in given.values()}) > 1:
        counts = ", ".join(f"{len(values)} {flag}" for flag, values in given.items())
        raise BrainmetsError(f"{counts}: expected one of each per {per}, in the same order")
    for name in unique:
        values = lists[name]
        if len({str(v) for v in values}) < len(values):
            raise BrainmetsError(f"--{name.replace('_', '-')} {' '.join(map(str, values))}: "
                                 "each value once (one run each)")
    count = len(next(iter(given.values())))
    return list(zip(*[values if values is not None else [None] * count for values in lists.values()]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainmets",
        description="Brain-metastasis segmentation experiments: data, training, inference, "
        "evaluation and reporting. The Snakemake workflow calls these verbs.",
    )
    parser.add_argument("--version", action="version", version=f"brainmets {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    for name in _verb_modules():
        mod = importlib.import_module(f"{__name__}.{name}")
        verb = name.replace("_", "-")
        p = sub.add_parser(verb, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args._run(args) or 0)
    except BrainmetsError as exc:
        if args.verbose:
            raise
        print(f"brainmets {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"brainmets {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
