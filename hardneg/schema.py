"""What a valid configuration looks like: per config node, the type, range or choices of each value.

Read by ``hardneg/validate.py`` before anything is built. Which *keys* a node may have is not
listed here: it comes from the ``_target_``'s constructor (read from source, see
``schema_source.py``) and from the shipped ``conf/`` files, so a new constructor argument or
config key needs no schema change. This file adds what those cannot say: types, ranges, and
choices, the latter taken from the constants the code itself checks against.

Specs apply by node path (``"data"``: whatever datamodule is chosen) or by ``_target_``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from hardneg.schema_source import code_constant

MISSING = "???"


@dataclass(frozen=True)
class Value:
    """What one config value may be. ``check(value)`` returns a problem or None."""

    kinds: tuple[type, ...] = ()  # accepted Python types of the resolved value; () = any
    what: str = ""  # how the message names the type: "an integer", "a number", ...
    choices: tuple | None = None
    low: float | None = None  # inclusive bounds
    high: float | None = None
    above: float | None = None  # exclusive lower bound
    null: bool = False
    item: Value | None = None  # every element of a list
    nonempty: bool = False
    filled_later: bool = False  # ``???`` allowed: the code fills it in (loss.num_classes)
    import_path: bool = False  # a dotted "package.module.function" allowed besides the choices (mining.pos/neg)
    auto: bool = False  # the string "auto" allowed: the code chooses (data.num_workers, data.pin_memory)

    def describe(self) -> str:
        if self.choices is not None:
            text = f"one of {list(self.choices)}"
        else:
            text = self.what
            bounds = []
            if self.above is not None:
                bounds.append(f"> {self.above:g}")
            if self.low is not None:
                bounds.append(f">= {self.low:g}")
            if self.high is not None:
                bounds.append(f"<= {self.high:g}")
            if bounds:
                text += " " + " and ".join(bounds)
            if self.item is not None and self.item.what:
                text += f" whose items are each {self.item.describe()}"
        return text + (" or 'auto'" if self.auto else "") + (" or null" if self.null else "")

    def check(self, value) -> str | None:
        if value is None:
            return None if self.null else f"must be {self.describe()}, not null"
        if self.auto and value == "auto":
            return None
        if value == MISSING:
            return None if self.filled_later else f"is missing (???); it must be {self.describe()}"
        if self.kinds and (not isinstance(value, self.kinds) or (isinstance(value, bool) and bool not in self.kinds)):
            return f"must be {self.describe()}"
        if self.import_path and isinstance(value, str) and "." in value:
            return None  # resolved (and reported if absent) by the code that imports it
        if self.choices is not None and value not in self.choices:
            return f"is unknown; choose {self.describe()}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (
                (self.low is not None and value < self.low)
                or (self.high is not None and value > self.high)
                or (self.above is not None and value <= self.above)
            ):
                return f"must be {self.describe()}"
        if isinstance(value, list):
            if self.nonempty and not value:
                return f"must not be empty; it must be {self.describe()}"
            if self.item is not None:
                for element in value:
                    if self.item.check(element) is not None:
                        return f"must be {self.describe()}; {element!r} is not"
        return None


def integer(**bounds) -> Value:
    return Value(kinds=(int,), what="an integer", **bounds)


def number(**bounds) -> Value:
    return Value(kinds=(int, float), what="a number", **bounds)


def boolean(null: bool = False) -> Value:
    return Value(kinds=(bool,), what="true or false", null=null)


def text(null: bool = False) -> Value:
    return Value(kinds=(str,), what="a string", null=null)


def listing(item: Value | None = None, nonempty: bool = False, null: bool = False) -> Value:
    return Value(kinds=(list,), what="a list", item=item, nonempty=nonempty, null=null)


def choice(module: str, constant: str, null: bool = False) -> Value:
    """One of the values ``module.CONSTANT`` lists: the code's own list, read without importing it."""
    return Value(choices=code_constant(module, constant), what="a value", null=null)


def one_of(*values) -> Value:
    return Value(choices=tuple(values))


# Where a constant lives in the code: (module, name). tests/test_validate.py imports each
# module and checks the schema's choices equal the constant the code checks against.
CODE_CHOICES = {
    "nonfinite": ("hardneg.nonfinite", "POLICIES"),
    "eval.backend": ("hardneg.metrics.knn", "BACKENDS"),
    "eval.nonfinite": ("hardneg.evaluation", "NONFINITE_POLICIES"),
    "data.sampler": ("hardneg.data.samplers", "MODES"),
    "data.transform": ("hardneg.data.transforms", "TRANSFORM_KINDS"),
    "data.on_corrupt": ("hardneg.data.images", "ON_CORRUPT"),
    "data.pipeline": ("hardneg.data.fast_images", "PIPELINES"),
    "data.use_preresized": ("hardneg.data.benchmark", "USE_PRERESIZED"),
    "data.label": ("hardneg.data.hotels50k", "LABELS"),
    "data.occlusion": ("hardneg.data.hotels50k", "OCCLUSIONS"),
    "model.batchnorm": ("hardneg.models.embedding", "BATCHNORM_MODES"),
    "mining.pos": ("hardneg.mining.positives", "POSITIVE_STRATEGIES"),
    "mining.neg": ("hardneg.mining.negatives", "NEGATIVE_STRATEGIES"),
    "mining.scope": ("hardneg.mining.miner", "SCOPES"),
    "sct.hard_rule": ("hardneg.losses.sct", "HARD_RULES"),
    "sct.reduction": ("hardneg.losses.sct", "REDUCTIONS"),
    "margin.distance": ("hardneg.losses.margin", "DISTANCES"),
    "margin.reduction": ("hardneg.losses.margin", "REDUCTIONS"),
    "contrastive.reduction": ("hardneg.losses.contrastive", "REDUCTIONS"),
    "logger.mode": ("hardneg.loggers", "WANDB_MODES"),
    "collapse.action": ("hardneg.callbacks.collapse", "ACTIONS"),
    "triplet_space.keep_embeddings": ("hardneg.analysis.artifacts", "KEEP_EMBEDDINGS"),
}


def code(name: str, null: bool = False, import_path: bool = False) -> Value:
    spec = choice(*CODE_CHOICES[name], null=null)
    return Value(choices=spec.choices, what=spec.what, null=null, import_path=import_path)


# A count or fraction of batches, as Lightning's limit_* options take.
BATCH_LIMIT = Value(kinds=(int, float), what="a batch count or a fraction", low=0, null=True)
SIMILARITY = number(low=-1.0, high=1.0)


@lru_cache(maxsize=1)
def by_path() -> dict[str, dict[str, Value]]:
    """Specs for the node at a config path (``""`` is the top level)."""
    return {
        "": {
            "seed": integer(),
            "nonfinite": code("nonfinite"),
            "optimized_metric": text(),
            "matmul_precision": one_of("highest", "high", "medium"),  # torch.set_float32_matmul_precision's
            "max_consecutive_nonfinite": integer(low=0),
        },
        "eval": {"at_start": boolean(), "backend": code("eval.backend"), "nmi": boolean(),
                 "nonfinite": code("eval.nonfinite")},
        "paths": {"output_dir": text(null=True), "cache_dir": text()},
        "data": {
            "batch_size": integer(low=1),
            "samples_per_class": integer(low=2),  # a positive pair needs two images of a class
            "sampler": code("data.sampler"),
            "repeat": integer(low=1),
            "eval_batch_size": integer(low=1),
            "num_workers": integer(low=0, auto=True),
            "pin_memory": Value(kinds=(bool,), what="true or false", auto=True),
            "persistent_workers": boolean(),
            "prefetch_factor": integer(low=1, null=True),
            "pipeline": code("data.pipeline"),
            "normalize_on_device": boolean(),
            "use_preresized": code("data.use_preresized"),
            "preresized_dir": text(null=True),
            "seed": integer(),
            "recall_ks": listing(integer(low=1), nonempty=True),
            "image_size": integer(low=1),
            "transform": code("data.transform"),
            "on_corrupt": code("data.on_corrupt"),
            "label": code("data.label"),
            "occlusion": code("data.occlusion"),
            "use_bbox": boolean(),
            "root": text(null=True),
            "mean": listing(number(), nonempty=True),
            "std": listing(number(above=0), nonempty=True),
            "images_per_font": integer(low=1),
            "min_fonts": integer(low=1),
            "max_classes": integer(low=4, null=True),  # half train, half test; 2 classes each at least
            "min_distance": number(low=0),
            "split_seed": integer(),
            "extra_font_dirs": listing(text()),
        },
        "model": {
            "backbone": text(),
            "dim": integer(low=1),
            "pretrained": boolean(),
            "weights": text(null=True),
            "freeze_backbone": boolean(),
            "batchnorm": code("model.batchnorm"),
            "cache_features": boolean(),
        },
        "mining": {
            "pos": code("mining.pos", import_path=True),
            "neg": code("mining.neg", import_path=True),
            "scope": code("mining.scope"),
            "duplicate_threshold": SIMILARITY,
        },
        "optim.optimizer": {"lr": number(above=0), "momentum": number(low=0), "weight_decay": number(low=0)},
        "optim.scheduler": {"milestones": listing(integer(low=0)), "gamma": number(above=0)},
        "trainer": {
            "max_epochs": integer(low=1),
            "check_val_every_n_epoch": integer(low=1, null=True),
            "log_every_n_steps": integer(low=1),
            "num_nodes": integer(low=1),
            "num_sanity_val_steps": integer(low=-1),
            "enable_model_summary": boolean(),
            "enable_progress_bar": boolean(),
            "limit_train_batches": BATCH_LIMIT,
            "limit_val_batches": BATCH_LIMIT,
        },
        "logger": {
            "mode": code("logger.mode"),
            "project": text(),
            "entity": text(null=True),
            "name": text(null=True),
            "group": text(null=True),
            "tags": listing(text()),
        },
    }


@lru_cache(maxsize=1)
def by_target() -> dict[str, dict[str, Value]]:
    """Specs for a node with this ``_target_``, wherever it sits."""
    return {
        "hardneg.losses.SCTLoss": {
            "lam": number(low=0),
            "tau": number(above=0),
            "hard_rule": code("sct.hard_rule"),
            "threshold": SIMILARITY,
            "reduction": code("sct.reduction"),
        },
        "hardneg.losses.NCALoss": {"tau": number(above=0)},
        "hardneg.losses.MarginTripletLoss": {
            "margin": number(low=0),
            "distance": code("margin.distance"),
            "reduction": code("margin.reduction"),
        },
        "hardneg.losses.ContrastiveLoss": {
            "pos_margin": SIMILARITY,
            "neg_margin": SIMILARITY,
            "reduction": code("contrastive.reduction"),
            "duplicate_threshold": SIMILARITY,
        },
        "hardneg.losses.MultiSimilarityLoss": {
            "alpha": number(above=0),
            "beta": number(above=0),
            "base": SIMILARITY,
            "margin": number(low=0),
            "duplicate_threshold": SIMILARITY,
        },
        "hardneg.losses.ProxyAnchorLoss": {
            "num_classes": integer(low=2, filled_later=True),
            "dim": integer(low=1),
            "margin": number(low=0),
            "alpha": number(above=0),
            "lr_multiplier": number(above=0),
        },
        "hardneg.callbacks.CollapseDetector": {
            "threshold": SIMILARITY,
            "patience": integer(low=1),
            "action": code("collapse.action"),
        },
        "hardneg.callbacks.TripletSpaceCallback": {
            "bins": integer(low=2),
            "train_every_n_epochs": integer(low=1),
            "keep_embeddings": code("triplet_space.keep_embeddings"),
            "gradient_field": boolean(),
        },
        "hardneg.callbacks.RetrievalExamplesCallback": {
            "num_queries": integer(low=1),
            "top_k": integer(low=1),
            "seed": integer(),
        },
    }


# Namespaces a ``_target_`` may come from. More with HARDNEG_ALLOW_TARGETS=pkg1.,pkg2.
ALLOWED_TARGET_PREFIXES = ("hardneg.", "torch.optim.", "lightning.", "hydra_plugins.")
# Keys Hydra's instantiate reads itself.
INSTANTIATE_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
# Nodes whose keys are names the user chooses (callbacks.<name>), not fixed fields.
OPEN_PATHS = frozenset({"callbacks"})
