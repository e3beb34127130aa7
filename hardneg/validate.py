"""One validation step that runs before any data is read or net is built.

``validate(cfg)`` checks the composed config against ``hardneg/schema.py``: every key is one
the node's ``_target_`` accepts (or one the shipped ``conf/`` defines), every value has the
right type, range or choice, ``_target_``s come from known namespaces. It reports *all*
problems at once as a ``ConfigError`` (exit code 2, no traceback, from ``run.py``), each naming
the key, the bad value and what is valid, with a "did you mean" for typos. It imports no torch
or Lightning and takes well under a second.

The CLI runs it from a Hydra callback (``hardneg/validate_cli.py``, registered in
``conf/config.yaml``) before Hydra creates the run directory; ``train(cfg)`` runs it again for Python callers.
What can only be known from the data (a recall K larger than the gallery, a batch asking for
more classes than the split has) is checked by ``validate_data`` right after the datamodule
has read its annotation files, before any feature is computed or net is built.
"""
from __future__ import annotations

import difflib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from hardneg.config import config_dir
from hardneg.errors import ConfigError
from hardneg.schema import (
    ALLOWED_TARGET_PREFIXES,
    INSTANTIATE_KEYS,
    MISSING,
    OPEN_PATHS,
    by_path,
    by_target,
)
from hardneg.schema_source import constructor_keywords, target_exists, top_level_names

# -- what the shipped conf/ tree defines --------------------------------------------------------


@lru_cache(maxsize=1)
def shipped_keys() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(keys by node path, keys by ``_target_``) over every shipped config file.

    A key some shipped file sets is a valid key there, even when no constructor takes it
    (``model.cache_features`` is read by builders.py, not by EmbeddingNet).
    """
    by_path_keys: dict[str, set[str]] = {}
    by_target_keys: dict[str, set[str]] = {}

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        keys = {str(k) for k in node} - {"defaults"}
        target = node.get("_target_")
        if isinstance(target, str):
            by_target_keys.setdefault(target, set()).update(keys)
        else:
            by_path_keys.setdefault(path, set()).update(keys)
        for key, value in node.items():
            walk(value, f"{path}.{key}" if path else str(key))

    root = config_dir()
    for file in sorted(root.rglob("*.yaml")):
        group = file.parent.relative_to(root).as_posix()
        if group.split("/")[0] == "hydra":  # Hydra validates its own node
            continue
        if group == "." and file.name != "config.yaml":  # another entry point's root (evaluate.yaml)
            continue
        source = file.read_text(encoding="utf-8")
        content = yaml.safe_load(source) or {}
        if isinstance(content, dict):
            content.pop("hydra", None)
        walk(content, "" if group == "." or "@package _global_" in source else group.replace("/", "."))
    groups = {p.name for p in root.iterdir() if p.is_dir() and p.name not in ("hydra", "experiment", "__pycache__")}
    by_path_keys.setdefault("", set()).update(groups)
    return by_path_keys, by_target_keys


# -- messages -------------------------------------------------------------------------------------


def did_you_mean(word: str, candidates) -> str:
    unique = list(dict.fromkeys(str(c) for c in candidates))
    close = difflib.get_close_matches(str(word), unique, n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


# -- the config walk ------------------------------------------------------------------------------


def allowed_target_prefixes() -> tuple[str, ...]:
    extra = [p.strip() for p in os.environ.get("HARDNEG_ALLOW_TARGETS", "").split(",") if p.strip()]
    return ALLOWED_TARGET_PREFIXES + tuple(p if p.endswith(".") else p + "." for p in extra)


def _target_problems(key: str, target: Any) -> list[str]:
    if not isinstance(target, str) or not target:
        return [f"{key}={target!r}: a _target_ must be a dotted class path such as 'hardneg.losses.SCTLoss'"]
    prefixes = allowed_target_prefixes()
    if not target.startswith(prefixes):
        return [
            f"{key}={target!r}: only classes from {', '.join(p.rstrip('.') for p in prefixes)} may be built "
            "from a config (a config must not run arbitrary code); to allow your own package set "
            "HARDNEG_ALLOW_TARGETS=yourpackage"
        ]
    if target.startswith("hardneg.") and target_exists(target) is False:
        module, _, name = target.rpartition(".")
        known = sorted(shipped_keys()[1])
        names = [f"{module}.{n}" for n in (top_level_names(module) or ())]
        return [f"{key}={target!r}: no such class{did_you_mean(target, known + names)}"]
    return []


def _allowed_keys(path: str, target: Any) -> set[str] | None:
    """The keys the node at ``path`` may have; None when anything goes."""
    if path in OPEN_PATHS:
        return None
    path_keys, target_keys = shipped_keys()
    if isinstance(target, str):
        accepted = constructor_keywords(target)
        if accepted is None:
            return None
        return set(accepted) | INSTANTIATE_KEYS | target_keys.get(target, set()) | set(by_target().get(target, {}))
    if path not in path_keys:
        return None
    return path_keys[path] | set(by_path().get(path, {}))


def _read(node: DictConfig, key: Any) -> tuple[Any, str | None]:
    """The resolved value of ``node[key]`` as plain Python, or the resolution error."""
    if OmegaConf.is_missing(node, key):
        return MISSING, None
    try:
        value = node[key]
        if isinstance(value, ListConfig):
            value = OmegaConf.to_container(value, resolve=True)
    except Exception as err:  # an interpolation that does not resolve
        return None, f"cannot be resolved: {err}".splitlines()[0]
    return value, None


def _walk(node: DictConfig, path: str, problems: list[str]) -> None:
    target, error = _read(node, "_target_") if "_target_" in node else (None, None)
    if error:
        problems.append(f"{_join(path, '_target_')} {error}")
    elif target is not None:
        problems += _target_problems(_join(path, "_target_"), target)
    specs = {**by_path().get(path, {}), **(by_target().get(target, {}) if isinstance(target, str) else {})}
    allowed = _allowed_keys(path, target)
    for key in node.keys():
        full = _join(path, key)
        if (path == "" and key == "hydra") or key == "_target_":  # Hydra's own / checked above
            continue
        if allowed is not None and key not in allowed:
            valid = sorted(k for k in allowed if k not in INSTANTIATE_KEYS)
            where = f" of {target}" if isinstance(target, str) else ""
            problems.append(f"{full}: unknown key{where}{did_you_mean(key, valid)}; valid keys: {valid}")
            continue
        value, error = _read(node, key)
        if error:
            problems.append(f"{full} {error}")
            continue
        if isinstance(value, DictConfig):
            _walk(value, full, problems)
            continue
        spec = specs.get(key)
        problem = spec.check(value) if spec is not None else None
        if problem:
            hint = did_you_mean(value, spec.choices) if spec.choices and isinstance(value, str) else ""
            shown = full if value == MISSING else f"{full}={value!r}"
            problems.append(f"{shown} {problem}{hint}")


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=None)
    except Exception:
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cross_key_problems(cfg: DictConfig) -> list[str]:
    """Rules that involve two keys (each key alone was checked by the walk)."""
    problems = []
    batch, k = _value(cfg, "data.batch_size"), _value(cfg, "data.samples_per_class")
    if _is_int(batch) and _is_int(k) and batch >= 1 and k >= 2:
        if batch % k:
            lower, upper = max(k, batch - batch % k), batch - batch % k + k
            problems.append(
                f"data.batch_size={batch} must be a multiple of data.samples_per_class={k} (a batch is whole "
                f"classes of {k} images each); use e.g. data.batch_size={lower} or {upper}"
            )
        else:
            devices, nodes = _value(cfg, "trainer.devices"), _value(cfg, "trainer.num_nodes")
            world = devices * (nodes if _is_int(nodes) else 1) if _is_int(devices) else 1
            if world > 1 and (batch // k) % world:
                problems.append(
                    f"data.batch_size={batch} holds {batch // k} classes, which cannot be split evenly over "
                    f"{world} processes (trainer.devices x trainer.num_nodes); use a multiple of {k * world}"
                )
    metric, ks = _value(cfg, "optimized_metric"), _value(cfg, "data.recall_ks")
    if isinstance(metric, str) and isinstance(ks, ListConfig):
        reported = [f"recall@{k}" for k in ks] + ["map@r", "r_precision"]
        reported += ["nmi"] if _value(cfg, "eval.nmi") is True else []
        if metric not in reported:
            problems.append(
                f"optimized_metric={metric!r} is not a metric this run reports{did_you_mean(metric, reported)}; "
                f"choose one of {reported}"
            )
    if _value(cfg, "model.cache_features") is True and _value(cfg, "model.freeze_backbone") is not True:
        problems.append(
            "model.cache_features=true needs model.freeze_backbone=true (cached features must not change); "
            "set model.cache_features=false to fine-tune the backbone"
        )
    return problems


def check_output_dir(path: str | Path, key: str) -> str | None:
    """A problem if ``path`` cannot be created or written, else None. Creates nothing."""
    path = Path(os.path.expanduser(str(path))).absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        reason = f"{probe} is a file, not a directory"
    elif not os.access(probe, os.W_OK | os.X_OK):
        reason = f"{probe} is not writable"
    else:
        return None
    return (
        f"{key}={str(path)!r}: cannot write the run's outputs there ({reason}). "
        f"Point {key} at a writable directory (e.g. {key}=$HOME/hardneg-runs/run1) or fix its permissions"
    )


def problems(cfg: DictConfig) -> list[str]:
    """Every problem of ``cfg`` (a composed config, with or without its ``hydra`` node)."""
    found: list[str] = []
    _walk(cfg, "", found)
    found += _cross_key_problems(cfg)
    output_dir = _value(cfg, "paths.output_dir")
    if isinstance(output_dir, str) and output_dir:
        problem = check_output_dir(output_dir, "paths.output_dir")
        if problem:
            found.append(problem)
    return found


def format_problems(found: list[str]) -> str:
    count = f"{len(found)} problem{'s' if len(found) > 1 else ''}"
    lines = "\n".join(f"  - {p}" for p in found)
    return f"invalid configuration ({count}):\n{lines}\nSet the value on the command line (key=value) or in your config file."


def validate(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` listing every problem of ``cfg``; return None when it is valid."""
    found = problems(cfg)
    if found:
        raise ConfigError(format_problems(found))


# -- after the data is read -------------------------------------------------------------------


def _world_size(cfg: DictConfig) -> int:
    devices, nodes = _value(cfg, "trainer.devices"), _value(cfg, "trainer.num_nodes")
    if not _is_int(devices):
        return 1
    return devices * (nodes if _is_int(nodes) else 1)


def validate_data(cfg: DictConfig, datamodule) -> None:
    """Checks that need the data's sizes; call right after ``datamodule.setup()``."""
    test = datamodule.splits.test
    labels = test.labels
    is_query = getattr(test, "is_query", None)
    if getattr(datamodule, "protocol", "loo") == "query_gallery" and is_query is not None:
        references = int((~is_query).sum())
        where = f"the gallery has {references} images"
    else:
        references = len(labels) - 1
        where = f"the test split has {len(labels)} images, so each query ranks {references} references (leave-one-out)"
    ks = [int(k) for k in datamodule.recall_ks]
    too_large = [k for k in ks if k > references]
    if too_large:
        keep = [k for k in ks if k <= references] or [1]
        raise ConfigError(
            f"data.recall_ks={ks}: recall@{too_large[0]} is larger than the gallery ({where}); "
            f"it would read 1.0 whatever the embedding. Use K <= {references}, e.g. "
            f"data.recall_ks=[{','.join(map(str, keep))}]"
        )
    from hardneg.data.samplers import ClassBalancedBatchSampler

    try:  # the training sampler's own checks, on the real labels, before any epoch starts
        ClassBalancedBatchSampler(
            datamodule.splits.train.labels,
            batch_size=datamodule.batch_size,
            samples_per_class=datamodule.samples_per_class,
            mode=datamodule.sampler,
            repeat=datamodule.repeat,
            num_replicas=_world_size(cfg),
            rank=0,
            seed=datamodule.seed,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
