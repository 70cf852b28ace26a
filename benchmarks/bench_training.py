"""Training-loop overhead, measured side by side in one run (issue 4's benchmark).

LeNet5 on synthetic CIFAR-shaped images (10,000 by default):
1. an E2E epoch of ibstudy's Trainer (analysis off) vs a minimal hand-written PyTorch loop on the same
   model, optimizer and batches (target <= 1.10x);
2. a layer-wise epoch (linear heads) vs the E2E epoch (target <= 1.6x);
3. the per-epoch analysis (nHSIC of every block and the logits on 1,024 samples, with the permutation
   floor, no probes) as a fraction of one E2E epoch (target <= 0.25);
4. re-measuring one stored epoch of a LeNet5 run on mnist5k (``ibstudy.measure.measure``: reload the
   weights, every layer, floor on, cache write) as a fraction of training that epoch (target < 1:
   re-measuring a whole run takes less time than training it), for the run's own estimator and for
   the median bandwidth with 5 floor permutations;
5. the study preset's per-epoch record on mnist5k (test accuracy, plane with floor) and save, as a
   fraction of that epoch's training (target <= 0.25), and what the three sub-epoch points add to a
   40-epoch run;
6. an epoch of Forward-Forward, signal propagation and layer-wise training with the nHSIC regularizer
   (global, local) as a ratio to an E2E epoch on the same model and data (targets: FF and signal
   propagation within 4x, the regularizer within 2x).
7. throughput (on CUDA, or ``--only throughput``): ResNet18 and ResNet50 on CIFAR-shaped images held
   on the device, E2E and layer-wise, under four settings (fp32; bf16 autocast; bf16 + channels-last;
   bf16 + channels-last + torch.compile): images/s, the speed-up over fp32, and the per-epoch plane
   analysis as a fraction of the epoch; from these, the projected GPU-hours of one 400-epoch CIFAR
   run (50,000 images, the analysis every epoch). Off CUDA the switches warn and are ignored, so the
   section runs (the test suite smoke-tests it that way) but its numbers say nothing about a GPU.

8. parallel runs (``--only parallel``): notebook 02's runs (E2E and layer-wise/linear x 3 seeds,
   quick preset, mnist5k) trained one at a time (``jobs=1``, torch's default threads) and side by
   side (``jobs=auto``: one run per core for LeNet5), each from an empty results folder, ``--pairs``
   times back to back: wall times and the speed-up's geometric mean with its 95 % interval (target
   1.4x on 2 cores: met when the whole interval is at or above it).
9. re-measurement side by side (``--only measure``): notebook 07's estimator suite over notebook 02's
   runs at every stored epoch, from empty caches, in this process (``jobs=1``) and in workers
   (``jobs=auto``, ``ibstudy.study.measure_suite``): wall time and the speed-up (no target; notebook
   07 spends most of its time here).

    python benchmarks/bench_training.py [--n 10000] [--device auto] [--repeats 3]
    python benchmarks/bench_training.py --only parallel [--preset study] [--seeds 3] [--ceiling]
        [--pairs 3] [--record [CSV]]
    python benchmarks/bench_training.py --only measure [--preset study] [--seeds 3]
    python benchmarks/bench_training.py --device cuda --only throughput --n 20000 --repeats 2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import tempfile
import time
import warnings

import torch
from torch.utils.data import TensorDataset

from ibstudy.config import MeasureConfig
from ibstudy.data import make_loader
from ibstudy.device import pick_device
from ibstudy.measure import cache_path, measure
from ibstudy.training import TrainConfig, Trainer, train


def synthetic(n: int, seed: int) -> TensorDataset:
    """CIFAR-shaped random images with labels that depend on the mean of the first channel."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = (x[:, 0].mean((1, 2)) * 40).long().clamp(-5, 4) + 5
    return TensorDataset(x, y)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def hand_loop(trainer: Trainer, epoch: int) -> float:
    """The minimal loop: same model copy, same optimizer settings, same batches."""
    model = copy.deepcopy(trainer.model).train()
    opt = torch.optim.Adam(model.parameters(), lr=trainer.cfg.lr)
    loader = make_loader(
        trainer.train_set, trainer.cfg.batch_size, seed=trainer.cfg.seed, epoch=epoch
    )
    dev = trainer.device
    sync(dev)
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(dev), y.to(dev)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    sync(dev)
    return time.perf_counter() - start


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def make_trainer(model: str, method: str, data, device: str, tmp: str, **kw) -> Trainer:
    headless = method in ("e2e", "forward_forward", "signal_propagation")
    cfg = TrainConfig(
        model=model, dataset="cifar10", method=method, head="none" if headless else "linear",
        epochs=1, batch_size=128, lr=5e-4, eval_size=1024, chunk_size=256, device=device,
        results_dir=tmp, **kw,
    )  # fmt: skip
    return Trainer(cfg, progress=False, data=data)


def remeasure_section(device: torch.device, repeats: int, tmp: str) -> None:
    """Section 4: re-measuring a stored LeNet5 epoch vs training it (mnist5k, quick preset)."""
    cfg = TrainConfig.preset(
        "quick", epochs=repeats + 1, device=str(device), results_dir=tmp, probe_epochs=()
    )
    run = train(cfg, progress=False)
    t_train = statistics.median(run.epochs["seconds"].iloc[2:])  # epochs 2.. (1 warms up)
    estimators = {
        "own (fixed, m=256, 1 floor permutation)": cfg.measure_config(),
        "median bandwidth, 5 floor permutations": MeasureConfig(bandwidth="median", floor_perms=5),
    }
    print("\nRe-measuring a stored LeNet5 epoch (mnist5k, 512 eval images, 5 layers)")
    print(f"  training one epoch: {t_train:.2f} s (median of epochs 2-{repeats + 1})")
    print(f"  {'estimator':<42} {'seconds':>8} {'/ train epoch':>14}  target")
    for label, mcfg in estimators.items():
        measure(run, mcfg, [1], device=str(device))  # warm-up (data, caches)
        times = []
        for epoch in range(2, repeats + 2):
            cache_path(run, mcfg).unlink(missing_ok=True)
            times.append(
                timed(lambda e=epoch, m=mcfg: measure(run, m, [e], device=str(device)), device)
            )
        t = statistics.median(times)
        print(f"  {label:<42} {t:>8.3f} {t / t_train:>14.3f}  < 1")


def study_record_section(device: torch.device, repeats: int, tmp: str) -> None:
    """Section 5: the study preset's per-epoch record (test accuracy + plane with floor + save)
    against the training of that epoch, LeNet5 on mnist5k, probes off."""
    cfg = TrainConfig.preset(
        "study", epochs=repeats + 1, device=str(device), results_dir=tmp, probe_epochs=(),
        run_name="bench-study",
    )  # fmt: skip
    tr = Trainer(cfg, progress=False)
    tr.train_epoch(1)  # warm-up (also records the three sub-epoch points)
    t_train, t_record, t_save = [], [], []
    for epoch in range(2, repeats + 2):
        t_train.append(timed(lambda e=epoch: tr.train_epoch(e), device))
        tr.epoch = epoch
        t_record.append(timed(lambda e=epoch: tr.record(e, {"seconds": 0.0}), device))
        t_save.append(timed(lambda: tr.save(complete=False), device))
    med = statistics.median
    train_s, record_s, save_s = med(t_train), med(t_record), med(t_save)
    extra = len(tr.fraction_steps(1)) * record_s / (40 * train_s)
    print(
        "\nThe study preset's per-epoch record (LeNet5, mnist5k, 512 eval images, floor, no probes)"
    )
    print(
        f"  training one epoch {train_s:.2f} s | record {record_s:.3f} s | save (weights, "
        f"checkpoint, tables) {save_s:.3f} s"
    )
    print(f"  {'ratio':<50} {'value':>7}  target")
    print(
        f"  {'(record + save) / training epoch':<50} {(record_s + save_s) / train_s:>7.3f}  <= 0.25"
    )
    print(f"  {'3 sub-epoch points / a 40-epoch run':<50} {extra:>7.4f}  report")


def methods_section(data, device: torch.device, repeats: int, tmp: str) -> None:
    """Section 6: an epoch of each method beyond plain layer-wise training vs an E2E epoch."""
    variants = {
        "E2E": ("e2e", {}),
        "Forward-Forward": ("forward_forward", {}),
        "signal propagation": ("signal_propagation", {}),
        "layer-wise + nHSIC global": ("layerwise", {"nhsic_reg": "global"}),
        "layer-wise + nHSIC local": ("layerwise", {"nhsic_reg": "local"}),
    }
    trainers = {
        k: make_trainer("lenet5", m, data, str(device), tmp, **kw)
        for k, (m, kw) in variants.items()
    }
    for tr in trainers.values():
        tr.train_epoch(1)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for r in range(repeats):  # interleaved so drift hits every variant alike
        for k, tr in trainers.items():
            times[k].append(timed(lambda r=r, tr=tr: tr.train_epoch(r + 2), device))
    med = {k: statistics.median(v) for k, v in times.items()}
    targets = {"Forward-Forward": "<= 4", "signal propagation": "<= 4"}
    print(
        f"\nMethods beyond layer-wise, LeNet5 (median of {repeats} epochs; E2E {med['E2E']:.2f} s)"
    )
    print(f"  {'epoch / E2E epoch':<50} {'value':>7}  target")
    for k in list(trainers)[1:]:
        print(f"  {k:<50} {med[k] / med['E2E']:>7.3f}  {targets.get(k, '<= 2')}")


THROUGHPUT_VARIANTS: dict[str, dict[str, bool]] = {
    "fp32": {},
    "bf16": {"amp": True},
    "bf16+cl": {"amp": True, "channels_last": True},
    "bf16+cl+compile": {"amp": True, "channels_last": True, "compile": True},
}
PAPER_EPOCH_IMAGES, PAPER_EPOCHS = 50_000, 400  # CIFAR-10/100 training set, the paper's schedule


def throughput_section(
    device: torch.device,
    n: int,
    repeats: int,
    tmp: str,
    models: tuple[str, ...] = ("resnet18", "resnet50"),
    methods: tuple[str, ...] = ("e2e", "layerwise"),
    variants: tuple[str, ...] = tuple(THROUGHPUT_VARIANTS),
    width: float = 1.0,
) -> list[dict]:
    """Section 7: images/s of each model x method x throughput setting on device-held CIFAR-shaped
    data, the plane analysis per epoch as a fraction of the epoch, and the projected hours of one
    paper-length run; returns the rows it prints."""
    unknown = sorted(set(variants) - set(THROUGHPUT_VARIANTS))
    if unknown:
        raise ValueError(f"variants must be among {list(THROUGHPUT_VARIANTS)}, got {unknown}")
    data = (synthetic(n, 0), synthetic(1024, 1))
    rows: list[dict] = []
    if device.type != "cuda":
        print("\n(not CUDA: the settings are ignored, so the rows differ by noise alone)")
    print(f"\nThroughput on {device} ({n:,} CIFAR-shaped images held on the device, batch 128, "
          f"width {width}, median of {repeats} epochs after a warm-up epoch)")  # fmt: skip
    print(f"  {'model':<9} {'method':<10} {'setting':<16} {'epoch s':>8} {'images/s':>10} "
          f"{'x fp32':>7} {'analysis':>9} {'400-ep h':>9}  compiled")  # fmt: skip
    for model in models:
        for method in methods:
            base = None
            for variant in variants:
                switches = dict(THROUGHPUT_VARIANTS[variant])
                if device.type != "cuda":  # amp is refused off CUDA; the others warn, run eagerly
                    switches.pop("amp", None)
                with warnings.catch_warnings():
                    if device.type != "cuda":
                        warnings.simplefilter("ignore")
                    tr = make_trainer(model, method, data, str(device), tmp, width=width,
                                      device_data="on", **switches)  # fmt: skip
                tr.train_epoch(1)  # warm-up (compilation, cuDNN autotuning, allocator)
                t_epoch = statistics.median(
                    [
                        timed(lambda r=r, tr=tr: tr.train_epoch(r + 2), device)
                        for r in range(repeats)
                    ]
                )
                t_plane = statistics.median(
                    [timed(tr.measure_plane, device) for _ in range(max(1, repeats))]
                )
                ips = n / t_epoch
                base = ips if base is None else base
                paper_epoch = PAPER_EPOCH_IMAGES / ips + t_plane
                row = {
                    "model": model, "method": method, "setting": variant, "epoch_s": t_epoch,
                    "images_per_s": ips, "speedup": ips / base, "analysis_fraction": t_plane / t_epoch,
                    "paper_run_hours": PAPER_EPOCHS * paper_epoch / 3600, "compiled": bool(tr.compiled),
                    "amp_dtype": str(tr.engine.amp_dtype).removeprefix("torch.") if tr.engine.amp else "float32",
                }  # fmt: skip
                rows.append(row)
                print(f"  {model:<9} {method:<10} {variant:<16} {t_epoch:>8.2f} {ips:>10,.0f} "
                      f"{ips / base:>7.2f} {t_plane / t_epoch:>9.3f} "
                      f"{row['paper_run_hours']:>9.2f}  {bool(tr.compiled)}")  # fmt: skip
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    print("  analysis = the per-epoch plane (every block and the logits, 1,024 eval images, floor) "
          "/ the epoch; 400-ep h = 400 x (50,000 images at this rate + the analysis), one GPU")  # fmt: skip
    for model in models:
        hours = grid_hours(rows, model)
        if hours is not None:
            print(f"  the README's paper grid with {model} (2 datasets x 3 seeds x (E2E + layer-wise "
                  f"linear + MLP heads) = 18 runs) at each method's fastest setting: "
                  f"{hours:,.0f} GPU-hours")  # fmt: skip
    return rows


def grid_hours(rows: list[dict], model: str, datasets: int = 2, seeds: int = 3) -> float | None:
    """GPU-hours of the README's paper grid for ``model``: per dataset and seed one E2E run and two
    layer-wise runs (linear, MLP heads; timed with linear heads), each at its method's fastest
    setting; None unless both methods were timed."""
    best = {
        method: min(
            r["paper_run_hours"] for r in rows if r["model"] == model and r["method"] == method
        )
        for method in ("e2e", "layerwise")
        if any(r["model"] == model and r["method"] == method for r in rows)
    }
    if len(best) < 2:
        return None
    return datasets * seeds * (best["e2e"] + 2 * best["layerwise"])


def _names(text: str) -> tuple[str, ...]:
    return tuple(t for t in text.split(",") if t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="synthetic training images")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per variant (median)")
    parser.add_argument(
        "--only",
        choices=["all", "throughput", "parallel", "measure"],
        default="all",
        help="throughput: section 7 alone (it runs by default on CUDA only)",
    )
    parser.add_argument("--models", type=_names, default=("resnet18", "resnet50"))
    parser.add_argument("--methods", type=_names, default=("e2e", "layerwise"))
    parser.add_argument(
        "--variants",
        type=_names,
        default=tuple(THROUGHPUT_VARIANTS),
        help=f"comma list of {list(THROUGHPUT_VARIANTS)}",
    )
    parser.add_argument("--width", type=float, default=1.0, help="ResNet width multiplier")
    parser.add_argument("--seeds", type=int, default=3, help="parallel: seeds per variant")
    parser.add_argument(
        "--epochs", type=int, default=None, help="parallel: epochs per run (default: the preset's)"
    )
    parser.add_argument(
        "--preset",
        choices=["quick", "study"],
        default="quick",
        help="parallel: notebook 02's runs at this preset (make study trains them at 'study')",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="parallel: also train the runs one at a time with one thread each (the speed-up "
        "that perfect side-by-side scaling would give)",
    )
    parser.add_argument(
        "--pairs", type=int, default=1,
        help="parallel: jobs=1 / jobs=auto pairs timed back to back, the order alternating (the "
        "speed-up's interval needs 2 or more)",
    )  # fmt: skip
    parser.add_argument(
        "--record", nargs="?", const="docs/benchmarks/parallel.csv", default=None, metavar="CSV",
        help="parallel: append the wall times to CSV (default docs/benchmarks/parallel.csv), "
        "which the README's timing block is written from (python -m ibstudy timings --readme)",
    )  # fmt: skip
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.set_num_threads(torch.get_num_threads())
    print(f"device: {device}  threads: {torch.get_num_threads()}  images: {args.n}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only == "parallel":
            parallel_section(
                args.seeds, args.epochs, tmp, args.preset, args.ceiling, args.record, args.pairs
            )
            return
        if args.only == "measure":
            measure_section(args.seeds, args.epochs, tmp, args.preset)
            return
        if args.only == "all":
            overhead_sections(args.n, device, args.repeats, tmp)
        if args.only == "throughput" or device.type == "cuda":
            throughput_section(device, args.n, args.repeats, tmp, args.models, args.methods,
                               args.variants, args.width)  # fmt: skip


def overhead_sections(n: int, device: torch.device, repeats: int, tmp: str) -> None:
    """Sections 1-6 (LeNet5 and mnist5k: the loop's overhead, the analysis, the other methods)."""
    data = (synthetic(n, 0), synthetic(1024, 1))
    e2e = make_trainer("lenet5", "e2e", data, str(device), tmp)
    lw = make_trainer("lenet5", "layerwise", data, str(device), tmp)
    e2e.train_epoch(1)  # warm-up
    lw.train_epoch(1)
    t_hand, t_e2e, t_lw, t_an = [], [], [], []
    for r in range(repeats):  # interleaved so drift hits every variant alike
        t_hand.append(hand_loop(e2e, r + 2))
        t_e2e.append(timed(lambda r=r: e2e.train_epoch(r + 2), device))
        t_lw.append(timed(lambda r=r: lw.train_epoch(r + 2), device))
        t_an.append(timed(e2e.measure_plane, device))
    med = statistics.median
    rows = [
        ("E2E epoch (Trainer) / hand-written loop", med(t_e2e) / med(t_hand), "<= 1.10"),
        ("layer-wise epoch / E2E epoch", med(t_lw) / med(t_e2e), "<= 1.60"),
        ("analysis (5 layers, N=1024, floor) / E2E epoch", med(t_an) / med(t_e2e), "<= 0.25"),
    ]
    print(f"\nLeNet5, {n} images, batch 128 (median of {repeats} epochs)")
    print(
        f"  hand loop {med(t_hand):.2f} s | E2E {med(t_e2e):.2f} s | layer-wise {med(t_lw):.2f} s"
        f" | analysis {med(t_an):.2f} s"
    )
    print(f"  {'ratio':<50} {'value':>7}  target")
    for name, value, target in rows:
        print(f"  {name:<50} {value:>7.3f}  {target}")
    remeasure_section(device, repeats, tmp)
    study_record_section(device, repeats, tmp)
    methods_section(data, device, repeats, tmp)


def parallel_section(
    seeds: int,
    epochs: int | None,
    tmp: str,
    preset: str = "quick",
    ceiling: bool = False,
    record: str | None = None,
    pairs: int = 1,
) -> None:
    """Section 8: notebook 02's runs with jobs=1 and jobs=auto, ``pairs`` times back to back (the
    order alternating, so a drift of the machine's speed falls on both settings), each from an empty
    folder; the speed-up is the pairs' geometric mean with its interval and the target's verdict
    (ibstudy.timings.speedup_estimate). ``ceiling``: also, once, jobs=1 at one thread, whose time
    over the cores is what perfect scaling of side-by-side runs would take (the bound on jobs=auto's
    speed-up); ``record``: append the wall times to that CSV (ibstudy.timings)."""
    from ibstudy.parallel import available_cores, resolve_jobs, train_runs
    from ibstudy.study import study_config
    from ibstudy.timings import (
        PARALLEL_COLUMNS,
        SETTINGS,
        TARGET_SPEEDUP,
        append_rows,
        now_stamp,
        parallel_rows,
        speedup_estimate,
    )  # fmt: skip

    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise ValueError(f"pairs must be a positive integer, got {pairs!r}")
    stamp = now_stamp()
    variants = [{"method": "e2e"}, {"method": "layerwise", "head": "linear"}]
    extra = {} if epochs is None else {"epochs": epochs}
    # warm-up: this process's first run pays one-time costs (data, kernels) the others do not
    warm = study_config("quick", results_dir=f"{tmp}/warm-up", epochs=1, device="cpu")
    train_runs([warm], jobs=1, progress=False)
    settings: list[tuple[int, object, int | None]] = []  # (pair, jobs, threads), in timed order
    for k in range(pairs):
        both = [(k, 1, None), (k, "auto", None)]
        settings += both if k % 2 == 0 else both[::-1]
        if ceiling and k == 0:
            settings.append((k, 1, 1))
    rows = []
    for k, jobs, threads in settings:
        folder = f"{tmp}/parallel-{k}-{jobs}-{threads}"
        configs = [
            study_config(preset, results_dir=folder, seed=s, device="cpu", **extra, **v)
            for v in variants
            for s in range(seeds)
        ]
        n = resolve_jobs(jobs, configs)
        start = time.perf_counter()
        train_runs(configs, jobs=jobs, threads=threads, progress=False)
        rows.append((k, jobs, threads, n, time.perf_counter() - start))
    cores = available_cores()
    print(f"\n8. parallel runs: {len(configs)} runs of notebook 02 ({preset} preset, "
          f"{configs[0].epochs} epochs), {cores} cores, {pairs} pair(s)")  # fmt: skip
    print(f"{'pair':>5} {'jobs':>6} {'threads':>8} {'workers':>8} {'wall s':>8} {'speed-up':>9}")
    base = {k: s for k, jobs, threads, _, s in rows if (jobs, threads) == (1, None)}
    for k, jobs, threads, n, seconds in rows:
        shown = threads if threads is not None else ("default" if n == 1 else cores // n)
        print(f"{k + 1:>5} {jobs!s:>6} {shown!s:>8} {n:>8} {seconds:>8.1f} "
              f"{base[k] / seconds:>8.2f}x")  # fmt: skip
    if ceiling:
        one_thread = next(s for _, jobs, threads, _, s in rows if threads == 1)
        bound = base[0] / (one_thread / min(cores, len(configs)))
        print(
            f"  ceiling: one-thread runs shared perfectly over {cores} cores would be {bound:.2f}x"
        )
    speedups = [base[k] / s for k, jobs, _, _, s in rows if jobs == "auto"]
    est = speedup_estimate(speedups, TARGET_SPEEDUP)
    interval = "" if est["n"] < 2 else f" [{est['low']:.3f}-{est['high']:.3f}]"
    print(f"  jobs=auto over jobs=1: {est['mean']:.3f}x{interval} (geometric mean of {est['n']} "
          f"pair(s), 95 % interval); target {TARGET_SPEEDUP}x: {est['verdict']}")  # fmt: skip
    if record:
        names = dict(zip([(1, None), ("auto", None), (1, 1)], SETTINGS, strict=True))
        for k in range(pairs):
            measured = [
                (names[(jobs, threads)], n,
                 threads or (torch.get_num_threads() if n == 1 else cores // n), seconds)
                for pair, jobs, threads, n, seconds in rows
                if pair == k
            ]  # fmt: skip
            table = parallel_rows(measured, stamp=stamp if pairs == 1 else f"{stamp} (pair {k + 1})",
                                  preset=preset, epochs=configs[0].epochs, runs=len(configs))  # fmt: skip
            path = append_rows(record, table, PARALLEL_COLUMNS)
        print(f"  recorded in {path}")


def measure_section(seeds: int, epochs: int | None, tmp: str, preset: str = "quick") -> None:
    """Section 9: notebook 07's estimator suite over notebook 02's runs (every stored epoch),
    re-measured from empty caches with jobs=1 (this process) and jobs=auto, side by side."""
    import shutil
    from pathlib import Path

    from ibstudy.parallel import available_cores, resolve_jobs, train_runs
    from ibstudy.robustness import estimator_suite
    from ibstudy.store import Run
    from ibstudy.study import measure_suite, study_config

    variants = [{"method": "e2e"}, {"method": "layerwise", "head": "linear"}]
    extra = {} if epochs is None else {"epochs": epochs}
    configs = [
        study_config(preset, results_dir=f"{tmp}/runs", seed=s, device="cpu", **extra, **v)
        for v in variants
        for s in range(seeds)
    ]
    runs = train_runs(configs, jobs="auto", progress=False)
    suite = estimator_suite(configs[0].eval_size, configs[0].chunk_size, floor_perms=5)
    # warm-up: this process's first measurement pays one-time costs (data, kernels)
    warm = dataclasses.replace(next(iter(suite.values())), eps=1e-3)
    measure_suite(runs[:1], {"warm": warm}, [0], jobs=1)
    rows = []
    for jobs in (1, "auto"):
        folder = Path(tmp) / f"measure-{jobs}"
        shutil.copytree(runs[0].path.parent, folder)
        for cache in folder.glob("*/measures"):
            shutil.rmtree(cache)
        copies = [Run.load(folder / run.path.name) for run in runs]
        start = time.perf_counter()
        measure_suite(copies, suite, jobs=jobs)
        rows.append((jobs, resolve_jobs(jobs, configs), time.perf_counter() - start))
    pairs, stored = len(runs) * len(suite), len(runs[0].stored_epochs())
    print(f"\n9. re-measurement: {len(suite)} estimators x {len(runs)} runs = {pairs} pairs, "
          f"{stored} epochs each ({preset} preset), {available_cores()} cores")  # fmt: skip
    print(f"{'jobs':>6} {'workers':>8} {'wall s':>8} {'speed-up':>9}")
    for jobs, n, seconds in rows:
        print(f"{jobs!s:>6} {n:>8} {seconds:>8.1f} {rows[0][2] / seconds:>8.2f}x")


if __name__ == "__main__":
    main()
