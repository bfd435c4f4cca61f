"""Model-selection protocols: which split a run selects its checkpoint (and a search its winner)
on, and what it trains on.

====================  =====================================================================
``carved``            a ``val_fraction`` of the (sub-sampled) training pool, seeded by the run
                      seed, is carved off for selection; the rest trains; the reported split
                      (GLUE/SuperGLUE dev) is never seen. Standard for tasks whose test labels
                      are hidden.
``validation``        selection on the public ``validation`` split; all of the training pool
                      trains; ``test`` is reported. Standard for tasks with public validation
                      and test labels (CoNLL-2003), as the official P-tuning-v2 NER code does
                      (it evaluates ``eval_dataset`` each epoch and reports ``predict_dataset``).
``official-dev``      opt-in, to reproduce published numbers only: selection on the reported dev
                      split itself (the official P-tuning-v2 SuperGLUE code's best-epoch-on-dev),
                      all of the training pool trains. Runs have their own keys; tables say so.
====================  =====================================================================

A task's standard protocol follows from its spec: a labelled evaluation split that is not
reported (CoNLL-2003's ``validation`` beside a reported ``test``) means ``validation``, otherwise
``carved``. ``TrainConfig.protocol`` is None for the standard ``carved`` (so that the keys of
records written before protocols existed stay valid) and names any other protocol; planning
resolves it (:func:`resolve`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.errors import UserError

if TYPE_CHECKING:
    from datasets import Dataset

    from bench.config import TrainConfig
    from tasks import TaskSpec

PROTOCOLS = ("carved", "validation", "official-dev")
VALIDATION_SPLIT = "validation"


def standard(spec: TaskSpec) -> str:
    """The protocol a task uses unless a suite or flag asks for another."""
    unreported = [s for s in spec.eval_splits if s not in spec.report_splits]
    return "validation" if VALIDATION_SPLIT in unreported else "carved"


def resolve(requested: str | None, spec: TaskSpec) -> str | None:
    """The value stored in a run's TrainConfig: None for ``carved`` (the unkeyed default),
    otherwise the protocol's name. ``official-dev`` on a task whose standard is already
    ``validation`` is that protocol (the official NER code selects on validation too)."""
    name = requested or standard(spec)
    if name not in PROTOCOLS:
        raise UserError(f"protocol {name!r} is not one of {list(PROTOCOLS)}")
    if name != "carved" and VALIDATION_SPLIT not in spec.eval_splits:
        raise UserError(
            f"task '{spec.name}' has no '{VALIDATION_SPLIT}' split to select on "
            f"(its evaluation splits: {list(spec.eval_splits)}); protocol {name!r} needs one"
        )
    if name == "official-dev" and standard(spec) == "validation":
        name = "validation"
    return None if name == "carved" else name


def name_of(train: TrainConfig) -> str:
    return train.protocol or "carved"


def describe(train: TrainConfig) -> str:
    """The record's ``protocol.selection_split`` text."""
    name = name_of(train)
    if name == "carved":
        return f"carved from train (val_fraction {train.val_fraction}, seeded by the run seed)"
    if name == "validation":
        return "validation split (all of the training pool trains; test is reported)"
    return "official-dev: the reported dev split itself (paper reproduction; not held out)"


@dataclass(frozen=True)
class RunSplits:
    """What one run trains on and evaluates: ``evaluated`` maps split name → examples, with
    ``selection`` first; ``aliases`` maps a reported split name to the evaluated split it is
    (under ``validation``/``official-dev`` the validation split *is* the selection split, so it
    is evaluated once and its metrics are copied)."""

    train: Dataset
    evaluated: dict[str, Dataset]
    sizes: Any
    aliases: dict[str, str]

    def with_aliases(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {**metrics, **{alias: metrics[target] for alias, target in self.aliases.items()}}


def _capped(split: Dataset, cap: int | None) -> Dataset:
    return split.select(range(cap)) if cap and len(split) > cap else split


def make_splits(tokenized: Any, spec: TaskSpec, cfg: TrainConfig, seed: int) -> RunSplits:
    """The train, selection and evaluation splits of one run under its protocol."""
    import numpy as np

    from bench.data import SplitSizes, carve_selection_split

    if name_of(cfg) == "carved":
        train, selection, sizes = carve_selection_split(tokenized["train"], cfg, seed)
        evaluated = {"selection": selection}
        aliases: dict[str, str] = {}
    else:
        full = tokenized["train"]
        if len(full) == 0:
            raise UserError("the training split is empty")
        order = np.random.default_rng(seed).permutation(len(full))
        pool = order[: cfg.max_train_samples] if cfg.max_train_samples else order
        train = full.select(sorted(pool.tolist()))
        selection = _capped(tokenized[VALIDATION_SPLIT], cfg.max_eval_samples)
        sizes = SplitSizes(train_pool=len(pool), train=len(pool), selection=len(selection))
        evaluated = {"selection": selection}
        aliases = {VALIDATION_SPLIT: "selection"}
    for name in spec.eval_splits:
        if name not in aliases:
            evaluated[name] = _capped(tokenized[name], cfg.max_eval_samples)
    return RunSplits(train=train, evaluated=evaluated, sizes=sizes, aliases=aliases)
