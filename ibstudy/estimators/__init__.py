"""The estimators of the information plane, one registered object each (docs/method.md §3, §10).

``MeasureConfig.estimator`` names one of them; :func:`ibstudy.measure.measure`, the plane recorder
and notebook 07 read the registry, and nothing else branches on an estimator's name. Adding an
estimator is one module (an :class:`Estimator` with a ``chunk`` method) and one :func:`register`
line below. Importing this package does not import torch (the estimators import it when they run);
the chunked evaluator every estimator runs in is :class:`ibstudy.estimators.plane.Plane`.
"""

from __future__ import annotations

from ibstudy.estimators.base import (
    BANDWIDTH_KERNELS,
    ChunkMeasurer,
    ChunkValues,
    Estimator,
    Floor,
)
from ibstudy.estimators.nhsic import NHSIC
from ibstudy.estimators.nhsic_cka import NHSIC_CKA
from ibstudy.estimators.renyi import RENYI

__all__ = [
    "BANDWIDTH_KERNELS", "REGISTRY", "ChunkMeasurer", "ChunkValues", "Estimator", "Floor",
    "estimator_names", "get_estimator", "register", "unregister",
]  # fmt: skip

#: name -> estimator, in registration order
REGISTRY: dict[str, Estimator] = {}


def register(estimator: Estimator) -> Estimator:
    """Add ``estimator`` under its ``name``; ValueError if it is not an Estimator or the name is taken."""
    if not isinstance(estimator, Estimator) or not estimator.name:
        raise ValueError(f"estimator must be an Estimator with a name, got {estimator!r}")
    if REGISTRY.get(estimator.name, estimator) is not estimator:
        raise ValueError(f"estimator {estimator.name!r} is already registered")
    REGISTRY[estimator.name] = estimator
    return estimator


def unregister(name: str) -> None:
    """Remove an estimator (tests that register a throwaway one)."""
    REGISTRY.pop(name, None)


def estimator_names() -> tuple[str, ...]:
    """The registered estimators' names, in order."""
    return tuple(REGISTRY)


def get_estimator(name: str) -> Estimator:
    """The registered estimator ``name``; ValueError naming the registered ones otherwise."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"estimator must be one of {list(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


register(NHSIC)
register(NHSIC_CKA)
register(RENYI)
