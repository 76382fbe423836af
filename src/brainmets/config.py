"""Load and validate the workflow configuration (config.yaml, configs/*.yaml).

One validator serves the Snakemake workflow (``workflow/rules/common.smk``
calls :func:`validate_config` on Snakemake's merged ``config``) and the CLI
(:func:`load_config` for ``--config FILE``), so a bad config fails with the
same message in both places, before any job starts.

Validation has two layers:

1. the JSON schema ``brainmets/schemas/config.schema.yaml`` (also reachable as
   ``workflow/schemas/config.schema.yaml``) covers every section, the models'
   per-architecture keys included: types, allowed values, unknown keys;
   defaults written there fill keys the config leaves out;
2. rules a schema cannot express: split fractions summing to 1, model names
   that must exist under ``models:``, modality subsets (``t1c+t1n+t2f``,
   ``[t1c, t1n, t2f]``, ``all``, ``selected``) rewritten to canonical keys,
   [low, high] ranges in order, choosing on the test split only when
   ``selection.allow_test`` says so, an ``inference.window`` that suits every
   network predicting with it (:func:`brainmets.models.inference_window`;
   imports torch, only when a window is set).

The readers of the validated config (:func:`brainmets.training.training_settings`,
:class:`brainmets.inference.InferenceSettings`, :mod:`brainmets.reporting.collect`,
:func:`brainmets.models.build_model`) check nothing again.
:func:`validate_section` and :func:`validate_model` validate one section or one
registry entry on its own (tests, benchmarks, a model file's stored entry).

Every problem found is reported in one :class:`ConfigError` whose lines name
the key (``data.split.fractions``, ``models.unet.filterz``), the value and what
is allowed, with a did-you-mean hint for a misspelt key or value. Why not
``snakemake.utils.validate``: it stops at the first error and prints the raw
jsonschema report (the whole sub-schema), and it shares default objects
between the schema and the config; the CLI needs the same check anyway.

After validation the config is *resolved*: every section present, subsets
canonical, ``resources`` complete. The workflow writes this resolved config to
``<results>/config.resolved.yaml`` and hands that file to every job
(``brainmets train --config ...``), so jobs never see an unvalidated config.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainmets.constants import ALL, SELECTED, all_subsets, canonical_subset
from brainmets.errors import BrainmetsError

#: The JSON schema shipped inside the package.
SCHEMA_PATH = Path(__file__).with_name("schemas") / "config.schema.yaml"

_FRACTION_TOLERANCE = 1e-6


class ConfigError(BrainmetsError):
    """The configuration is invalid; ``problems`` holds one readable line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({source}):\n{lines}")


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config, merge ``overrides`` over it, validate it and fill defaults.

    Raises :class:`ConfigError` listing every problem, or :class:`BrainmetsError`
    when the file is missing or is not YAML.
    """
    path = Path(path)
    config = read_yaml(path, what="config file")
    if overrides:
        config = merge_config(config, overrides)
    return validate_config(config, source=str(path))


def read_yaml(path: str | Path, what: str = "YAML file") -> dict[str, Any]:
    """A YAML mapping from ``path`` (an empty file is an empty mapping)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise BrainmetsError(f"{what} not found: {path}") from exc
    except OSError as exc:
        raise BrainmetsError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BrainmetsError(f"{what} {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BrainmetsError(f"{what} {path} must hold a mapping (key: value), got {type(data).__name__}")
    return data


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in ``override`` replaces ``base``.

    The same rule Snakemake applies to ``--configfile`` over the Snakefile's ``configfile:``.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_resolved_config(config: Mapping[str, Any], path: str | Path) -> bool:
    """Write ``config`` as YAML to ``path`` unless the file already holds exactly that.

    Leaving an identical file alone keeps its modification time, so parallel
    Snakemake processes (cluster jobs re-read the workflow) do not rewrite it.
    Returns whether the file was written.
    """
    import yaml

    from brainmets.io import write_text

    path = Path(path)
    text = (
        "# Resolved brainmets configuration written by the workflow (defaults filled,\n"
        "# subsets canonical). Jobs read this file; edit config.yaml instead.\n"
        + yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=None)
    )
    if path.is_file() and path.read_text() == text:
        return False
    write_text(path, text)
    return True


# --------------------------------------------------------------------------- validation


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The configuration schema as a dict (cached; callers must not modify it)."""
    return read_yaml(SCHEMA_PATH, what="configuration schema")


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate ``config`` in place, fill defaults, canonicalise subsets; return it.

    ``source`` names the config in error messages (a path, or "config" for
    Snakemake's merged config).
    """
    if not isinstance(config, dict):
        raise ConfigError(source, [f"the configuration must be a mapping, got {type(config).__name__}"])
    problems = _schema_problems(config, _validator())
    if problems:
        # Cross-field checks assume the types the schema guarantees.
        raise ConfigError(source, problems)
    problems = _semantic_problems(config)
    if problems:
        raise ConfigError(source, problems)
    return config


def validate_section(name: str, value: Any = None, source: str = "config") -> Any:
    """A copy of one top-level section (``training``, ``inference``, ...) validated, defaults filled.

    ``None`` stands for a section the config leaves out (all defaults).
    Only the schema applies: the cross-section rules need the whole config.
    """
    schema = load_schema()
    if name not in schema["properties"]:
        raise ConfigError(source, [f"unknown config section {name!r}; sections: {', '.join(schema['properties'])}"])
    wrapper = {} if value is None else {name: copy.deepcopy(value)}
    problems = _schema_problems(wrapper, _validator(name))
    if problems:
        raise ConfigError(source, problems)
    return wrapper[name]


def validate_model(name: str, spec: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """A copy of registry entry ``models.<name>`` validated against its architecture, defaults filled."""
    return validate_section("models", {name: dict(spec) if isinstance(spec, Mapping) else spec}, source)[name]


@functools.lru_cache(maxsize=None)
def _validator(section: str | None = None):
    """The schema's validator (of one top-level section when ``section`` is given) that fills defaults.

    Two keywords are extended. ``properties`` fills a missing key from its
    ``default`` before validating, so nested defaults apply too ({} -> its
    keys); deep copies, so the schema's default objects never end up shared
    with a config. ``oneOf`` finds the one branch the instance matches (checked
    without filling anything) and validates it with filling, so only the chosen
    architecture's or optimiser's defaults land in the config; when none or
    several match, the plain ``oneOf`` reports them.
    """
    from jsonschema import Draft202012Validator, validators

    schema = load_schema()
    if section is not None:
        schema = {"$defs": schema["$defs"], "type": "object",
                  "properties": {section: schema["properties"][section]}}
    plain = Draft202012Validator(schema)
    base_properties = Draft202012Validator.VALIDATORS["properties"]
    base_one_of = Draft202012Validator.VALIDATORS["oneOf"]

    def properties_with_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                if "default" in prop and name not in instance:
                    instance[name] = copy.deepcopy(prop["default"])
        yield from base_properties(validator, properties, instance, subschema)

    def one_of_with_defaults(validator, one_of, instance, subschema):
        matching = [i for i, branch in enumerate(one_of) if plain.evolve(schema=branch).is_valid(instance)]
        if len(matching) == 1:
            yield from validator.descend(instance, one_of[matching[0]], schema_path=matching[0])
        else:
            yield from base_one_of(plain.evolve(schema=subschema), one_of, instance, subschema)

    cls = validators.extend(Draft202012Validator,
                            {"properties": properties_with_defaults, "oneOf": one_of_with_defaults})
    return cls(schema)


def _schema_problems(config: dict[str, Any], validator) -> list[str]:
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    problems: list[str] = []
    for error in errors:
        for line in _describe_schema_error(error):
            if line not in problems:
                problems.append(line)
    return problems


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _did_you_mean(value: Any, allowed: list[Any], prefix: str = "") -> str:
    """A hint naming allowed values that contain ``value`` as a ``_``-separated word
    (``unet`` -> ``monai_unet``), then the closest spelling."""
    names = [str(a) for a in allowed]
    hints = [n for n in names if str(value) in n.split("_") and n != str(value)]
    hints += [h for h in difflib.get_close_matches(str(value), names, n=1) if h not in hints]
    return f" (did you mean {' or '.join(prefix + h for h in hints[:2])}?)" if hints else ""


def _describe_schema_error(error) -> list[str]:
    where = _key_path(error.absolute_path)
    value = error.instance
    kind = error.validator
    schema = error.schema
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed))
        prefix = "" if where == "(top level)" else f"{where}."
        parts = [f"unknown config key {prefix}{key}" + _did_you_mean(key, allowed, prefix) for key in extra]
        return ["; ".join(parts) + f"; allowed keys here: {', '.join(allowed)}"]
    if kind == "enum":
        allowed = error.validator_value
        return [f"config key {where} is {value!r}; allowed: {', '.join(map(str, allowed))}"
                + _did_you_mean(value, allowed)]
    if kind == "oneOf" and error.context:
        return _describe_one_of(error)
    description = schema.get("description")
    if kind in ("anyOf", "oneOf", "const"):
        parent = error.parent.schema.get("description") if error.parent is not None else None
        return [f"config key {where} is {value!r}; expected {description or parent or error.message}"]
    if kind == "required":
        return [f"config key {where}: {error.message}"]
    if kind == "pattern" and "A-Za-z" in str(error.validator_value):
        return [f"config key {where}: the name {value!r} must start with a letter and hold only "
                "letters, digits, '_' and '-'"]
    if kind == "pattern" and description:
        # the description lists the allowed values; the regular expression would only repeat them
        return [f"config key {where} is {value!r}; expected {description}"]
    return [f"config key {where}: {error.message}" + (f" (expected {description})" if description else "")]


def _describe_one_of(error) -> list[str]:
    """A discriminated union (a model's ``arch``, an optimiser's ``name``): the meant branch's errors.

    The discriminator is the key whose ``const``/``enum`` fails in the most
    branches; a branch failing on it is not the one meant. When exactly one
    branch is left, its errors are the problems; when none is, the
    discriminator's value is the problem and the allowed values are listed.
    """
    branches: dict[int, list] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)

    def fails_on(sub) -> str | None:
        """The key of the instance whose const/enum ``sub`` reports, if it is one."""
        if sub.validator in ("const", "enum") and len(sub.relative_path) == 1:
            return sub.relative_path[0]
        return None

    counts = Counter(key for subs in branches.values() for key in {fails_on(s) for s in subs} if key is not None)
    key = counts.most_common(1)[0][0] if counts else None
    meant = [subs for subs in branches.values() if key is None or all(fails_on(s) != key for s in subs)]
    if len(meant) == 1:
        return [line for sub in meant[0] for line in _describe_schema_error(sub)]
    if meant:
        # e.g. the discriminator itself is missing: every branch says so
        described = [[line for sub in subs for line in _describe_schema_error(sub)] for subs in meant]
        common = [line for line in described[0] if all(line in other for other in described[1:])]
        if common:
            return common
    if key is not None and not meant:
        allowed: list[Any] = []
        for sub in error.context:
            if fails_on(sub) == key:
                values = [sub.validator_value] if sub.validator == "const" else sub.validator_value
                allowed += [v for v in values if v not in allowed]
        value = error.instance[key]
        return [f"config key {_key_path([*error.absolute_path, key])} is {value!r}; "
                f"allowed: {', '.join(map(str, allowed))}" + _did_you_mean(value, allowed)]
    description = error.schema.get("description")
    return [f"config key {_key_path(error.absolute_path)} is {error.instance!r}; "
            f"expected {description or error.message}"]


def _semantic_problems(config: dict[str, Any]) -> list[str]:
    problems: list[str] = []

    data = config["data"]
    fractions = data["split"]["fractions"]
    total = math.fsum(fractions)
    if data["split"]["file"] is None:
        if abs(total - 1.0) > _FRACTION_TOLERANCE:
            problems.append(
                f"config key data.split.fractions is {fractions}, which sums to {total:g}; "
                "expected train, val and test fractions summing to 1 (e.g. [0.6, 0.2, 0.2])"
            )
        elif fractions[0] <= 0:
            problems.append(f"config key data.split.fractions is {fractions}; the train fraction must be > 0")
    if not data["synthetic"]["enabled"] and data["root"] is None:
        problems.append(
            "config key data.root is not set; give the BraTS-MET root directory "
            "(<root>/<case>/<case>-t1n.nii.gz ...) or set data.synthetic.enabled: true"
        )

    # Modality subsets -> canonical keys (in place).
    study = config["modality_study"]
    if study["subsets"] == ALL:
        study["subsets"] = all_subsets()
    else:
        study["subsets"] = _canonical_list(study["subsets"], "modality_study.subsets", problems, aliases=False)
    two = config["twostage"]
    two["subsets"] = _canonical_list(two["subsets"], "twostage.subsets", problems, aliases=True)
    base = config["baselines"]
    base["subset"] = _canonical(base["subset"], "baselines.subset", problems, aliases=True)
    sel = config["selection"]
    if sel["override"] is not None:
        sel["override"] = _canonical(sel["override"], "selection.override", problems, aliases=False)

    # Every model the study names must be defined under models:.
    models = config["models"]
    references = [("modality_study.model", study["model"]), ("twostage.detector", two["detector"]),
                  ("twostage.segmentor", two["segmentor"])]
    references += [(f"baselines.models[{i}]", name) for i, name in enumerate(base["models"])]
    references += [(f"training.precision_by_model.{name}", name) for name in config["training"]["precision_by_model"]]
    references += [(f"training.pos_fraction_by_model.{name}", name)
                   for name in config["training"]["pos_fraction_by_model"]]
    for where, name in references:
        if name not in models:
            hint = difflib.get_close_matches(name, list(models), n=1)
            problems.append(
                f"config key {where} names model {name!r}, which the models section does not define"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; defined models: {', '.join(sorted(models)) or '(none)'}"
            )

    if (study["model"] in base["models"] and base["subset"] not in (None, SELECTED)
            and base["subset"] not in study["subsets"]):
        problems.append(
            f"config key baselines.models names the modality study's model {study['model']!r}, whose Table 2 "
            f"row is its modality-study run on baselines.subset {base['subset']}; modality_study.subsets "
            "does not include that subset: add it there, or leave the model out of baselines.models"
        )

    problems += _window_problems(config)

    for key, value in config["training"]["augmentation"].items():
        if isinstance(value, list) and value[0] > value[1]:
            problems.append(f"config key training.augmentation.{key} is {value}; expected [low, high] with low <= high")
    augmentation = config["training"]["augmentation"]
    if augmentation["affine"] == "joint" and augmentation["scale_prob"] != augmentation["rotate_prob"]:
        problems.append(
            f"config key training.augmentation.scale_prob is {augmentation['scale_prob']} with affine: joint, whose "
            f"one transform rotates and scales with rotate_prob ({augmentation['rotate_prob']}); set both equal"
        )

    if sel["split"] == "test" and not sel["allow_test"]:
        problems.append(
            "config key selection.split is 'test': choosing the subset on the test split leaks the "
            "test set into model choice; use 'val', or set selection.allow_test: true to do it on purpose"
        )
    if (sel["split"] == "val" and sel["override"] is None and data["split"]["file"] is None
            and fractions[1] <= 0):
        problems.append(
            "config key selection.split is 'val' but data.split.fractions gives the validation "
            "split no cases; give val a fraction > 0, or set selection.override"
        )
    return problems


def modality_job_groups(config: Mapping[str, Any]) -> list[list[str]] | None:
    """The modality study's subsets in the groups one training job runs (modality_study.subsets_per_job,
    in the study's order), or None for one job per subset, and always with seeds_per_job 1 (one run
    per job), of a validated config."""
    size = config["modality_study"]["subsets_per_job"]
    if size == 1 or config["seeds_per_job"] != "all":
        return None
    subsets = study_subsets(config)
    return [subsets[i:i + size] for i in range(0, len(subsets), size)]


def _window_problems(config: dict[str, Any]) -> list[str]:
    """``inference.window`` against every network that predicts single-pass (or validates so in training)."""
    window = config["inference"]["window"]
    if window is None:
        return []  # the patch: nothing to check, and no need to import torch for the registry
    from brainmets.models.registry import inference_window

    models = config["models"]
    names = [config["modality_study"]["model"], *trained_baselines(config), config["twostage"]["segmentor"]]
    problems = []
    for name in dict.fromkeys(names):
        if name not in models:
            continue  # reported above
        try:
            inference_window(name, models[name], window)
        except BrainmetsError as exc:
            problems.append(f"config key {exc}")
    return problems


def _canonical(value: Any, where: str, problems: list[str], aliases: bool) -> str | None:
    """Canonical subset key of a config value (``all``/``selected`` when ``aliases``), or None and a problem."""
    try:
        return canonical_subset(value, aliases=aliases)
    except BrainmetsError as exc:
        aliases_hint = f"; {SELECTED!r} and {ALL!r} (all four) are accepted too" if aliases else ""
        problems.append(f"config key {where} is {value!r}: {exc}{aliases_hint}")
        return None


def _canonical_list(values: list[Any], where: str, problems: list[str], aliases: bool) -> list[str]:
    keys: list[str] = []
    for i, value in enumerate(values):
        key = _canonical(value, f"{where}[{i}]", problems, aliases)
        if key is None:
            continue
        if key in keys:
            problems.append(f"config key {where}[{i}] is {value!r}, which repeats subset {key!r}")
            continue
        keys.append(key)
    return keys


def _plain(obj: Any) -> Any:
    """Plain YAML-safe copy (Snakemake's config may hold its own mapping/list subclasses)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- queries


def study_subsets(config: Mapping[str, Any]) -> list[str]:
    """Canonical subset keys of the modality study (of a validated config)."""
    return list(config["modality_study"]["subsets"])


def twostage_subsets(config: Mapping[str, Any]) -> list[str]:
    """Subsets of the two-stage model: canonical keys and/or ``selected``."""
    return list(config["twostage"]["subsets"])


def trained_baselines(config: Mapping[str, Any]) -> list[str]:
    """The baselines the workflow trains: ``baselines.models`` less the modality study's model.

    Named there, the modality study's model is a Table 2 row read from its
    run on ``baselines.subset`` (the paper's 3D-UNET row), not trained again.
    """
    reused = config["modality_study"]["model"]
    return [m for m in config["baselines"]["models"] if m != reused]


def cohort_root(config: Mapping[str, Any]) -> str:
    """The BraTS-MET root the workflow reads: the synthetic root or ``data.root``."""
    data = config["data"]
    return data["synthetic"]["root"] if data["synthetic"]["enabled"] else data["root"]
