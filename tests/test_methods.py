"""Training methods as registered objects (ibstudy.methods): the registry, the compile contract and
a throwaway method that trains through the command line with nothing but its registration."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import outcome_config as tiny
from torch import Tensor

from ibstudy.losses import cross_entropy
from ibstudy.methods import (
    REGISTRY,
    Method,
    get_method,
    headless_methods,
    layerwise_methods,
    method_names,
    register,
    unregister,
)
from ibstudy.methods.base import no_grad_blocks
from ibstudy.training import Trainer


def test_registry_keeps_todays_order_and_derives_the_families() -> None:
    assert method_names()[:5] == (
        "e2e", "layerwise", "layerwise_sequential", "forward_forward", "signal_propagation",
    )  # fmt: skip
    assert layerwise_methods() == ("layerwise", "layerwise_sequential")
    assert headless_methods()[:3] == ("e2e", "forward_forward", "signal_propagation")
    assert all(REGISTRY[n].name == n for n in method_names())


def test_an_unknown_method_names_the_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"method must be one of \['e2e', 'layerwise'"):
        get_method("greedy")
    with pytest.raises(ValueError, match=r"method must be one of \['e2e'"):
        tiny(tmp_path, method="greedy")


def test_register_refuses_a_nameless_or_clashing_method() -> None:
    with pytest.raises(ValueError, match="Method subclass with a name"):
        register(Method)
    clash = type("Clash", (Method,), {"name": "e2e"})
    with pytest.raises(ValueError, match="already registered"):
        register(clash)


class _Recorder:
    """A stub compiler: wraps each module in a function that counts its calls."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}
        self.compiled: list[torch.nn.Module] = []

    def __call__(self, module: torch.nn.Module):
        self.compiled.append(module)
        key = id(module)
        self.calls[key] = 0

        def run(*args, **kwargs):
            self.calls[key] += 1
            return module(*args, **kwargs)

        return run


@pytest.mark.parametrize("name", list(REGISTRY)[:5])
def test_compile_covers_every_part_the_method_runs(tmp_path: Path, name: str) -> None:
    """compile=True compiles what each method declares, the trainer reports exactly those parts,
    and one epoch of training calls every one of them (the defect: only E2E and layer-wise used
    their compiled parts). Without CUDA the stub stands in for torch.compile."""
    extra = {"head": "linear"} if get_method(name).uses_heads else {}
    cfg = tiny(tmp_path, method=name, train_size=64, probe_size=64, epochs=1, compile=True, **extra)
    stub = _Recorder()
    tr = Trainer(cfg, progress=False, compiler=stub)
    declared = tr.method.compilable()
    assert tr.compiled == sorted(declared) and declared
    assert [id(m) for m in stub.compiled] == [id(m) for m in declared.values()]
    tr.train_epoch(1)
    assert all(n > 0 for n in stub.calls.values()), stub.calls


def test_compile_without_cuda_and_without_a_stub_warns_and_reports_nothing(tmp_path) -> None:
    cfg = dataclasses.replace(tiny(tmp_path, train_size=64, probe_size=64), compile=True)
    with pytest.warns(UserWarning, match="compile=True is used on CUDA only"):
        tr = Trainer(cfg, progress=False)
    assert tr.compiled == []


def test_a_part_that_cannot_compile_is_named_and_runs_eagerly(tmp_path) -> None:
    def refuse(module):
        raise RuntimeError("no backend")

    cfg = tiny(
        tmp_path, method="layerwise", head="linear", train_size=64, probe_size=64, compile=True
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = Trainer(cfg, progress=False, compiler=refuse)
    named = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    assert [m.split("'")[1] for m in named] == [f"blocks.{k}" for k in range(4)]
    assert all("layerwise part" in m and "(no backend)" in m for m in named)
    assert tr.compiled == []


class _ClassifierOnly(Method):
    """A throwaway method: frozen random blocks, only the classifier learns."""

    name = "classifier_only"

    def loss(self, x: Tensor, y: Tensor, stage: int) -> tuple[Tensor, Tensor]:
        logits = self.model.classifier(no_grad_blocks(self.blocks(), x))
        return cross_entropy(logits, y), logits


def test_a_method_registered_in_a_test_trains_through_the_command_line(tmp_path, capsys) -> None:
    """One class and one registration: the CLI trains it, the run is stored and re-loaded, only
    the classifier moved, and it beats chance."""
    from ibstudy.__main__ import main
    from ibstudy.store import Run, load_checkpoint

    register(_ClassifierOnly)
    try:
        runs = tmp_path / "runs"
        code = main([
            "train", "--preset", "quick", "--method", "classifier_only", "--epochs", "2", "--lr", "0.02",
            "--train-size", "512", "--eval-size", "256", "--chunk-size", "128",
            "--probe-size", "256", "--probe-steps", "5", "--device", "cpu",
            "--results-dir", str(runs), "--no-progress",
        ])  # fmt: skip
        assert code in (0, None)
        (folder,) = [p for p in runs.iterdir() if p.is_dir()]
        assert folder.name.startswith("lenet5-classifier_only-none-mnist5k-s0-")
        assert json.loads((folder / "config.json").read_text())["config"]["method"] == (
            "classifier_only"
        )
        run = Run.load(folder)
        assert run.complete and run.epochs["test_acc"].iloc[-1] > 0.2
        before = torch.load(folder / "weights" / "epoch_0000.pt", weights_only=True)
        after = load_checkpoint(folder)["model"]
        moved = {k for k in before if not torch.equal(before[k], after[k])}
        assert moved and all(k.startswith("classifier") for k in moved), moved
    finally:
        unregister("classifier_only")
    assert "classifier_only" not in method_names()
