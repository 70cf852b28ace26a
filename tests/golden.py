"""The golden baseline: what every training method produces, pinned before a refactor moves code.

``python tests/golden.py --write`` trains the golden variants (every variant notebook 08 trains,
plus sub-epoch record points) for one epoch at a tiny size and writes their tables and a fingerprint
of their final weights to ``tests/golden/``; it also writes two run folders stopped half-way
(``tests/golden/checkpoints/``) that later code must still resume. ``python tests/golden.py --hash``
prints one SHA-256 over the same outputs, bit for bit: equal before and after a refactor on one
machine means that nothing moved. ``tests/test_golden.py`` compares the accuracies within 1e-6
relative and every other value within the tolerance that holds across CPUs (their floating-point
kernels differ: up to 7.7e-4 relative between an Intel CPU and an AMD EPYC).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent
GOLDEN = ROOT / "golden"
TIMING = ("seconds",)  # columns that measure time, not results

_LW: dict[str, Any] = {"method": "layerwise", "head": "linear"}
#: name -> TrainConfig fields: notebook 08's variants (lambdas 0.01 and 0.1) and record fractions
VARIANTS: dict[str, dict[str, Any]] = {
    "e2e": {"method": "e2e"},
    "layerwise": _LW,
    "layerwise_sequential": {"method": "layerwise_sequential", "head": "linear"},
    "supcon": {**_LW, "local_loss": "supcon", "augment": True},
    "similarity_matching": {**_LW, "local_loss": "similarity_matching"},
    "reg_global_0.01": {**_LW, "nhsic_reg": "global", "nhsic_lambda": 0.01},
    "reg_global_0.1": {**_LW, "nhsic_reg": "global", "nhsic_lambda": 0.1},
    "reg_local_0.01": {**_LW, "nhsic_reg": "local", "nhsic_lambda": 0.01},
    "reg_local_0.1": {**_LW, "nhsic_reg": "local", "nhsic_lambda": 0.1},
    "forward_forward": {"method": "forward_forward"},
    "signal_propagation": {"method": "signal_propagation"},
    "e2e_fractions": {"method": "e2e", "record_fractions": (0.25, 0.5)},
    "mlp_heads": {"method": "layerwise", "head": "mlp"},
}
#: run folders stopped after epoch 1 of 2 by the code before the refactor (they must resume)
CHECKPOINTED: tuple[str, ...] = ("layerwise_sequential", "signal_propagation")


def tiny(results_dir: Path, **overrides: Any) -> Any:
    """The golden size: the quick preset on 256 digits, 1 epoch (per stage), plane on 128 images."""
    from ibstudy.config import TrainConfig

    base: dict[str, Any] = dict(
        train_size=256, batch_size=32, lr=2e-3, eval_size=128, chunk_size=64, probe_size=128,
        probe_steps=10, epochs=1, device="cpu", results_dir=str(results_dir), probe_epochs=(1,),
        width=0.5,
    )  # fmt: skip
    base.update(overrides)
    return TrainConfig.preset("quick", **base)


def checkpoint_config(name: str, results_dir: Path) -> Any:
    """The config of a half-way run folder: 2 epochs (sequential: 1 per stage, 5 stages)."""
    epochs = 1 if name == "layerwise_sequential" else 2
    return tiny(results_dir, **{**VARIANTS[name], "epochs": epochs})


def train_variant(name: str, results_dir: Path) -> dict[str, Any]:
    """Train one golden variant; its tables (timing columns dropped) and final state dicts."""
    from ibstudy.store import load_checkpoint
    from ibstudy.training import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same reduction order on every run of this machine
    try:
        run = train(tiny(results_dir, **VARIANTS[name]), progress=False)
    finally:
        torch.set_num_threads(threads)
    state = load_checkpoint(run.path)
    return {
        "epochs": run.epochs.drop(columns=list(TIMING)),
        "layers": run.layers,
        "model": state["model"],
        "heads": state["heads"],
    }


def fingerprint(state: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """Per tensor: [numel, sum, sum of squares, dot with a fixed pseudo-random vector], float64."""
    out = {}
    for key, value in state.items():
        t = value.detach().double().flatten()
        gen = torch.Generator().manual_seed(len(key) * 7919 + t.numel())
        w = torch.rand(t.numel(), generator=gen, dtype=torch.float64) - 0.5
        out[key] = [float(t.numel()), t.sum().item(), t.square().sum().item(), (t @ w).item()]
    return out


def _tables(outputs: dict[str, dict[str, Any]], which: str) -> pd.DataFrame:
    return pd.concat(
        [o[which].assign(variant=name) for name, o in outputs.items()], ignore_index=True
    )


def train_all(results_dir: Path, names: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """Every golden variant (or ``names``), trained under ``results_dir``."""
    return {n: train_variant(n, results_dir) for n in (names or tuple(VARIANTS))}


def write(outputs: dict[str, dict[str, Any]]) -> None:
    """Write the golden tables and weight fingerprints, then the half-way run folders."""
    GOLDEN.mkdir(exist_ok=True)
    _tables(outputs, "epochs").to_csv(GOLDEN / "epochs.csv", index=False)
    _tables(outputs, "layers").to_csv(GOLDEN / "layers.csv", index=False)
    prints = {
        name: {"model": fingerprint(o["model"]), "heads": fingerprint(o["heads"])}
        for name, o in outputs.items()
    }
    (GOLDEN / "weights.json").write_text(json.dumps(prints, indent=1) + "\n")
    from ibstudy.training import train

    folder = GOLDEN / "checkpoints"
    shutil.rmtree(folder, ignore_errors=True)
    for name in CHECKPOINTED:
        cfg = checkpoint_config(name, folder)
        train(cfg, stop_after=cfg.total_epochs() // 2, progress=False)


def digest(outputs: dict[str, dict[str, Any]]) -> str:
    """SHA-256 over every table value (full precision) and every weight's bytes."""
    h = hashlib.sha256()
    for name in sorted(outputs):
        o = outputs[name]
        for which in ("epochs", "layers"):
            h.update(o[which].to_csv(index=False, float_format="%.17g").encode())
        for which in ("model", "heads"):
            for key, value in o[which].items():
                h.update(key.encode())
                h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """``--write`` the golden files, or ``--hash`` the outputs of this checkout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="(re)write tests/golden/")
    parser.add_argument("--hash", action="store_true", help="print the bit-level digest")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        outputs = train_all(Path(tmp))
    if args.write:
        write(outputs)
    if args.hash or not args.write:
        print(digest(outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
