"""The training methods, one registered object each (docs/method.md §7, "How to add a method").

The registry keeps today's order; ``TrainConfig.method`` names one of them, and every other module
reads a method's attributes (``uses_heads``, ``staged``, ``argmax_prediction``) instead of its name.
"""

from __future__ import annotations

from ibstudy.methods.base import STAGELESS, Method
from ibstudy.methods.e2e import E2E
from ibstudy.methods.forward_forward import ForwardForward
from ibstudy.methods.layerwise import Layerwise, LayerwiseSequential
from ibstudy.methods.signal_propagation import SignalPropagation

__all__ = [
    "REGISTRY", "STAGELESS", "Method", "get_method", "headless_methods", "layerwise_methods",
    "method_names", "register", "unregister",
]  # fmt: skip

#: name -> method class, in registration order
REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Add a method class under its ``name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Method)) or not cls.name:
        raise ValueError(f"a method must be a Method subclass with a name, got {cls!r}")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"method {cls.name!r} is already registered")
    REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a method (tests that register a throwaway one)."""
    REGISTRY.pop(name, None)


def method_names() -> tuple[str, ...]:
    """The registered methods' names, in order."""
    return tuple(REGISTRY)


def layerwise_methods() -> tuple[str, ...]:
    """The methods that train blocks through auxiliary heads."""
    return tuple(n for n, m in REGISTRY.items() if m.uses_heads)


def headless_methods() -> tuple[str, ...]:
    """The methods without auxiliary heads (head must be "none")."""
    return tuple(n for n, m in REGISTRY.items() if not m.uses_heads)


def get_method(name: str) -> type[Method]:
    """The registered method ``name``; ValueError naming the registered ones otherwise."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"method must be one of {list(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


for _cls in (E2E, Layerwise, LayerwiseSequential, ForwardForward, SignalPropagation):
    register(_cls)
