"""Benchmark of ibstudy.hsic against the naive and the fastest peer forms of the nHSIC computation.

Usage: ``python benchmarks/bench_hsic.py [--device cpu|cuda] [--quick] [--repeats N] [--threads N]
[--sections 1 2 ...]``

Every ratio is measured side by side in one run, on the same inputs and device:

1. ours vs the *naive* form of the paper's public code: ``m x m x d`` broadcast distances, explicit
   centring matrix ``H``, float32 ``torch.inverse`` (the defects of docs/method.md §11, except that
   the distance is squared here so that both forms compute the same quantity);
2. ours vs the fastest *peer* form (HSIC-bottleneck style): norm-trick distances in float32, ``K @ H``
   products, float32 ``torch.inverse`` of the non-symmetric ``K H + eps m I``; relative errors of both
   against a float64 reference (explicit ``H``, float64 Gram and solve);
3. the cached ``InfoPlane`` evaluator on LeNet5-shaped layers vs the peer form called twice per layer;
4. exact vs approximate (``nhsic_approx``) nHSIC at m = 4,096;
5. ours vs its bound: one ``nhsic`` call (d_X = 3,072, d_Z = 256) against the two float32 Gram
   matmuls it cannot avoid (``X @ X.T`` and ``Z @ Z.T``), beside the peer form of 2., with the share
   of a call spent on its input checks;
6. the matrix-based Rényi mutual information (``ibstudy.renyi.renyi_mi_from_data``, alpha = 1.01)
   beside ``nhsic`` on the inputs of 5.

``--sections`` runs a subset (e.g. ``--sections 5 6``).

Both re-implemented forms are written here from their description; they are not imported from the
peers' code. Peak memory on the CPU is measured in a fresh subprocess per (form, m), with glibc told
to map every allocation of 64 KiB or more afresh (``MALLOC_MMAP_THRESHOLD_=65536``, so that memory
freed earlier is not silently reused): after a warm-up call on a tiny input the kernel's peak-RSS
counter is reset (``/proc/self/clear_refs``, value 5), the form runs once, and
peak = VmHWM - VmRSS before the call (inputs excluded). On CUDA it is
``torch.cuda.max_memory_allocated`` above the allocation before the call. Where the naive form's
``m x m x d`` tensor would not fit in 60 % of the available memory, its time is measured on an
emulation that builds the same broadcast in row blocks (the same arithmetic, friendlier to caches, so
the naive time is if anything underestimated) and its peak memory is the analytic size of that
tensor; such entries are marked ``*``. Times are the best of at least ``--repeats`` runs (short ones
are repeated until each form has run for 1 s, at most 40 times), interleaved between forms, after a
warm-up; on a shared machine the best time is the least disturbed one, and ratios measured side by
side are more stable than absolute times.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ibstudy.hsic import InfoPlane, _check_pair, nhsic, nhsic_approx  # noqa: E402
from ibstudy.renyi import renyi_mi_from_data  # noqa: E402

SIGMA = 5.0
EPS = 1e-5
IMAGE = (3, 32, 32)  # d = 3,072 (CIFAR-shaped)
LENET5 = {"block0": (6, 14, 14), "block1": (16, 5, 5), "block2": (120,), "block3": (84,)}
LENET5["logits"] = (10,)
Z_BOUND = (16, 4, 4)  # d_Z = 256: the feature map of sections 5 and 6
RENYI_ALPHA = 1.01


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def make_data(
    m: int, device: torch.device, seed: int = 0, z_shape: tuple[int, ...] = (16, 5, 5)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth CIFAR-shaped float32 images X and a ReLU feature map Z = (m, *z_shape) of them."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.randn(m, 3, 8, 8, generator=g), size=32, mode="bilinear")
    x = x + 0.1 * torch.randn(m, *IMAGE, generator=g)
    w = torch.randn(math.prod(IMAGE), math.prod(z_shape), generator=g) / math.sqrt(math.prod(IMAGE))
    z = torch.relu(x.reshape(m, -1) @ w).reshape(m, *z_shape)
    return x.to(device), z.to(device)


def make_layers(x: torch.Tensor, seed: int = 1) -> dict[str, torch.Tensor]:
    """LeNet5-shaped representations: random ReLU maps of X with the blocks' output shapes."""
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    reps = {}
    for name, shape in LENET5.items():
        w = torch.randn(flat.shape[1], math.prod(shape), generator=g).to(x.device)
        reps[name] = torch.relu(flat @ w / math.sqrt(flat.shape[1])).reshape(n, *shape)
    return reps


# ----------------------------------------------------------------------------------------------
# the forms compared (re-implemented from their description)
# ----------------------------------------------------------------------------------------------
def naive_nhsic(
    a: torch.Tensor, b: torch.Tensor, sigma: float = SIGMA, eps: float = EPS, block: int = 0
) -> float:
    """Paper-code form: m x m x d broadcast distances, explicit H, float32 torch.inverse."""
    m = a.shape[0]
    eye = torch.eye(m, device=a.device)
    h = eye - torch.ones(m, m, device=a.device) / m

    def kernel(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(m, -1).float()
        if block:  # emulation for sizes that do not fit: the same broadcast, row block by block
            dist = torch.cat(
                [torch.norm(x[i : i + block, None] - x[None], dim=2) for i in range(0, m, block)]
            )
        else:
            dist = torch.norm(x[:, None, :] - x[None, :, :], dim=2)
        return torch.exp(-(dist**2) / (2 * sigma**2 * x.shape[1]))

    rs = []
    for x in (a, b):
        g = h @ kernel(x) @ h
        rs.append(g @ torch.inverse(g + eps * m * eye))
    return float(torch.trace(rs[0] @ rs[1]))


def peer_nhsic(
    a: torch.Tensor,
    b: torch.Tensor,
    sigma: float = SIGMA,
    eps: float = EPS,
    labels_a: bool = False,
) -> float:
    """HSIC-bottleneck style: norm-trick float32 Gram, K @ H, float32 inverse of K H + eps m I."""
    m = a.shape[0]
    eye = torch.eye(m, device=a.device)
    h = eye - 1.0 / m

    def kernel(x: torch.Tensor, labels: bool) -> torch.Tensor:
        if labels:
            onehot = F.one_hot(x).float()
            return onehot @ onehot.T
        x = x.reshape(m, -1).float()
        sq = torch.sum(x * x, 1, keepdim=True)
        dist = sq - 2 * x @ x.T + sq.T
        return torch.exp(-dist / (2 * sigma**2 * x.shape[1]))

    rs = []
    for x, labels in ((a, labels_a), (b, False)):
        kh = kernel(x, labels) @ h
        rs.append(kh @ torch.inverse(kh + eps * m * eye))
    return float(torch.trace(rs[0] @ rs[1]))


def reference_nhsic(
    a: torch.Tensor, b: torch.Tensor, sigma: float = SIGMA, eps: float = EPS
) -> float:
    """float64 throughout: float64 Gram, explicit H, linear solve."""
    m = a.shape[0]
    eye = torch.eye(m, dtype=torch.float64, device=a.device)
    h = eye - 1.0 / m
    rs = []
    for x in (a, b):
        x = x.reshape(m, -1).double()
        dist = torch.cdist(x, x).square()
        g = h @ torch.exp(-dist / (2 * sigma**2 * x.shape[1])) @ h
        rs.append(torch.linalg.solve(g + eps * m * eye, g))
    return float(torch.trace(rs[0] @ rs[1]))


def ours_nhsic(a: torch.Tensor, b: torch.Tensor) -> float:
    """ibstudy.hsic.nhsic with the study's defaults."""
    return nhsic(a, b, sigma=SIGMA, eps=EPS)


FORMS: dict[str, Callable[..., float]] = {
    "naive": naive_nhsic,
    "peer": peer_nhsic,
    "ours": ours_nhsic,
}


# ----------------------------------------------------------------------------------------------
# measurement helpers
# ----------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def best_times(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    min_total_s: float = 1.0,
    max_runs: int = 40,
) -> dict[str, float]:
    """Best seconds per function after one warm-up each; runs interleaved, at least ``repeats``
    of each and more (up to ``max_runs``) while a form has spent under ``min_total_s`` in total, so
    that short timings get enough tries to find a quiet moment on a shared machine."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, math.inf)
    spent = dict.fromkeys(fns, 0.0)
    for run in range(max_runs):
        if run >= repeats and all(v >= min_total_s for v in spent.values()):
            break
        for name, fn in fns.items():
            t = timed(fn, device)
            best[name] = min(best[name], t)
            spent[name] += t
    return best


def mem_available() -> int:
    """Bytes the OS reports available (Linux /proc/meminfo); 0 when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def naive_bytes(m: int, d: int) -> int:
    """Size of the naive form's float32 m x m x d difference tensor."""
    return m * m * d * 4


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_child(form: str, m: int) -> None:
    """Subprocess entry: print the peak bytes one call of ``form`` adds above its inputs (CPU)."""
    device = torch.device("cpu")
    fn = FORMS[form]
    xs, zs = make_data(8, device)
    fn(xs, zs)  # warm-up: thread pools, LAPACK workspaces
    x, z = make_data(m, device)
    rss = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    fn(x, z)
    print(json.dumps({"peak": (_status_kb("VmHWM") - rss) * 1024}))


def peak_bytes(form: str, m: int, device: torch.device) -> float:
    """Peak memory of one call (bytes) above the inputs; NaN where it cannot be measured."""
    if device.type == "cuda":
        x, z = make_data(m, device)
        FORMS[form](x[:8], z[:8])
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        FORMS[form](x, z)
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    out = subprocess.run(
        [sys.executable, __file__, "--_peak", form, str(m)],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {"PYTHONWARNINGS": "ignore", "MALLOC_MMAP_THRESHOLD_": "65536"},
    )
    try:
        return float(json.loads(out.stdout.strip().splitlines()[-1])["peak"])
    except (IndexError, ValueError, KeyError):
        print(f"  (peak memory of {form} at m={m} not measured: {out.stderr.strip()[-200:]})")
        return math.nan


def fmt_bytes(n: float) -> str:
    if math.isnan(n):
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print(f"\n## {title}")
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------
def bench_naive(ms: list[int], device: torch.device, repeats: int, checks: dict) -> None:
    d = math.prod(IMAGE)
    rows = []
    xs, zs = make_data(8, device)
    naive_nhsic(xs, zs)  # warm-up on a tiny input only: the big naive runs are expensive
    for m in ms:
        x, z = make_data(m, device)
        budget = mem_available() if device.type == "cpu" else torch.cuda.mem_get_info(device)[0]
        fits = naive_bytes(m, d) <= 0.6 * budget
        block = 0 if fits else max(1, int(0.3 * budget // (m * d * 4)))
        t_ours = best_times({"ours": lambda x=x, z=z: ours_nhsic(x, z)}, device, repeats)["ours"]
        t_naive = min(
            timed(lambda x=x, z=z, b=block: naive_nhsic(x, z, block=b), device)
            for _ in range(1 if m >= 1024 else min(repeats, 2))
        )
        p_ours = peak_bytes("ours", m, device)
        p_naive = peak_bytes("naive", m, device) if fits else float(naive_bytes(m, d))
        star = "" if fits else "*"
        rows.append(
            [
                str(m),
                f"{t_naive:.3f}{star}",
                f"{t_ours:.4f}",
                f"{t_naive / t_ours:.0f}x{star}",
                fmt_bytes(p_naive) + star,
                fmt_bytes(p_ours),
                f"{p_naive / p_ours:.0f}x{star}",
            ]
        )
        if m == 1024:
            checks["naive: >= 100x faster at m=1024"] = t_naive / t_ours >= 100
            checks["naive: >= 20x less peak memory at m=1024"] = p_naive / p_ours >= 20
    print_table(
        f"1. ours vs naive paper-code form, nHSIC(X;Z), d_X = {d}, d_Z = 400",
        ["m", "naive s", "ours s", "time ratio", "naive peak", "ours peak", "mem ratio"],
        rows,
    )


def bench_peer(ms: list[int], device: torch.device, repeats: int, checks: dict) -> None:
    rows = []
    for m in ms:
        x, z = make_data(m, device)
        ref = reference_nhsic(x, z)
        v_ours, v_peer = ours_nhsic(x, z), peer_nhsic(x, z)
        e_ours, e_peer = abs(v_ours / ref - 1), abs(v_peer / ref - 1)
        t = best_times(
            {"peer": lambda x=x, z=z: peer_nhsic(x, z), "ours": lambda x=x, z=z: ours_nhsic(x, z)},
            device,
            repeats,
        )
        speed = t["peer"] / t["ours"]
        acc = e_peer / max(e_ours, 1e-16)
        rows.append(
            [
                str(m),
                f"{ref:.4f}",
                f"{t['peer']:.4f}",
                f"{t['ours']:.4f}",
                f"{speed:.2f}x",
                f"{e_peer:.1e}",
                f"{e_ours:.1e}",
                f"{acc:.0f}x",
            ]
        )
        checks[f"peer: not slower at m={m}"] = speed >= 1.0
        checks[f"peer: >= 100x more accurate at m={m}"] = acc >= 100
        if m == 1024:
            checks["peer: >= 1.4x faster at m=1024"] = speed >= 1.4
    print_table(
        "2. ours vs fastest peer form (norm trick, K@H, float32 inverse); errors vs float64 ref",
        ["m", "nHSIC ref", "peer s", "ours s", "speedup", "peer err", "ours err", "acc ratio"],
        rows,
    )


def bench_evaluator(
    n: int, ms: list[int], device: torch.device, repeats: int, checks: dict
) -> None:
    x, _ = make_data(n, device, seed=2)
    y = (torch.arange(n) % 10).to(device)
    reps = make_layers(x)
    k = len(reps)
    rows = []
    for m in ms:
        t0 = time.perf_counter()
        ip = InfoPlane(x, y, chunk_size=m, sigma=SIGMA, eps=EPS, device=device)
        sync(device)
        t_init = time.perf_counter() - t0

        def peer_twice(m: int = m) -> None:
            for i in range(0, n, m):
                for z in reps.values():
                    peer_nhsic(x[i : i + m], z[i : i + m])
                    peer_nhsic(y[i : i + m], z[i : i + m], labels_a=True)

        def ours_twice(m: int = m) -> None:
            for i in range(0, n, m):
                for z in reps.values():
                    nhsic(x[i : i + m], z[i : i + m], sigma=SIGMA, eps=EPS)
                    nhsic(y[i : i + m], z[i : i + m], kernel_a="linear", sigma=SIGMA, eps=EPS)

        t = best_times(
            {"peer": peer_twice, "ours": ours_twice, "cached": lambda ip=ip: ip.measure(reps)},
            device,
            repeats,
            min_total_s=3.0,  # whole-set passes of ~0.03-0.6 s: more tries to find a quiet moment
            max_runs=100,
        )
        rows.append(
            [
                str(m),
                f"{1e3 * t['peer'] / k:.2f}",
                f"{1e3 * t['ours'] / k:.2f}",
                f"{1e3 * t['cached'] / k:.2f}",
                f"{t['peer'] / t['ours']:.1f}x",
                f"{t['peer'] / t['cached']:.1f}x",
                f"{1e3 * t_init:.0f}",
            ]
        )
        checks[f"evaluator: cached >= 8x faster per layer than peer twice (m={m})"] = (
            t["peer"] / t["cached"] >= 8
        )
    print_table(
        f"3. evaluator on LeNet5-shaped layers {[tuple(v.shape[1:]) for v in reps.values()]}, "
        f"N = {n} in chunks of m; ms per layer over all chunks",
        ["m", "peer x2", "ours x2", "InfoPlane", "ours x2 speedup", "InfoPlane speedup",
         "set-up ms (once)"],
        rows,
    )  # fmt: skip


def bench_approx(m: int, device: torch.device, checks: dict) -> None:
    x, z = make_data(m, device, seed=3)
    t0 = time.perf_counter()
    exact = ours_nhsic(x, z)
    sync(device)
    t_exact = time.perf_counter() - t0
    rows = [["exact (Cholesky)", "-", f"{t_exact:.3f}", f"{exact:.3f}", "0", "1.0x"]]
    for method, rank in (("nystrom", 256), ("nystrom", 512), ("nystrom", 1024), ("rff", 2048)):
        t0 = time.perf_counter()
        v = nhsic_approx(x, z, rank=rank, method=method, sigma=SIGMA, eps=EPS)
        sync(device)
        t = time.perf_counter() - t0
        err = abs(v / exact - 1)
        rows.append(
            [method, str(rank), f"{t:.3f}", f"{v:.3f}", f"{err:.1e}", f"{t_exact / t:.1f}x"]
        )
    print_table(
        f"4. exact vs approximate nHSIC(X;Z) at m = {m} (single runs)",
        ["method", "rank", "seconds", "nHSIC", "rel. error", "speedup"],
        rows,
    )


def bench_bound(ms: list[int], device: torch.device, repeats: int, checks: dict) -> None:
    rows = []
    for m in ms:
        x, z = make_data(m, device, z_shape=Z_BOUND)
        fx, fz = x.reshape(m, -1), z.reshape(m, -1)
        ref = reference_nhsic(x, z)
        err = abs(ours_nhsic(x, z) / ref - 1)
        t = best_times(
            {
                "grams": lambda fx=fx, fz=fz: (fx @ fx.T, fz @ fz.T),
                "ours": lambda x=x, z=z: ours_nhsic(x, z),
                "peer": lambda x=x, z=z: peer_nhsic(x, z),
                "checks": lambda x=x, z=z: _check_pair(x, z, "gaussian", "gaussian", SIGMA),
            },
            device,
            repeats,
            min_total_s=1.5,  # short calls: more tries to find a quiet moment
            max_runs=60,
        )
        bound, speed, share = t["ours"] / t["grams"], t["peer"] / t["ours"], t["checks"] / t["ours"]
        rows.append(
            [
                str(m),
                f"{1e3 * t['grams']:.1f}",
                f"{1e3 * t['ours']:.1f}",
                f"{bound:.2f}x",
                f"{1e3 * t['peer']:.1f}",
                f"{speed:.2f}x",
                f"{1e3 * t['checks']:.2f}",
                f"{100 * share:.1f} %",
                f"{err:.1e}",
            ]
        )
        if m == 1024:
            checks["bound: nhsic within 2.5x of the two float32 Gram matmuls at m=1024"] = (
                bound <= 2.5
            )
            checks["bound: >= 1.4x faster than the peer form at m=1024 (d_Z = 256)"] = speed >= 1.4
            checks["bound: input checks <= 3 % of a call at m=1024"] = share <= 0.03
    print_table(
        f"5. one nhsic call vs the float32 Grams X@X.T + Z@Z.T it cannot avoid, d_X = "
        f"{math.prod(IMAGE)}, d_Z = {math.prod(Z_BOUND)}; ms",
        ["m", "Grams", "ours", "ours/Grams", "peer", "peer/ours", "checks", "checks share",
         "ours err"],
        rows,
    )  # fmt: skip


def bench_renyi(ms: list[int], device: torch.device, repeats: int, checks: dict) -> None:
    rows = []
    for m in ms:
        x, z = make_data(m, device, z_shape=Z_BOUND)
        t = best_times(
            {
                "nhsic": lambda x=x, z=z: ours_nhsic(x, z),
                "renyi": lambda x=x, z=z: renyi_mi_from_data(x, z, SIGMA, RENYI_ALPHA),
            },
            device,
            repeats,
        )
        ratio = t["renyi"] / t["nhsic"]
        value = renyi_mi_from_data(x, z, SIGMA, RENYI_ALPHA)
        rows.append(
            [
                str(m),
                f"{1e3 * t['nhsic']:.1f}",
                f"{1e3 * t['renyi']:.1f}",
                f"{ratio:.2f}x",
                f"{value:.4f}",
            ]
        )
        if m == 512:
            checks["renyi: within 3x of nhsic at m=512"] = ratio <= 3.0
    print_table(
        f"6. Rényi MI (alpha = {RENYI_ALPHA}; float32 distances, float64 kernel and eigenvalues) "
        f"beside nhsic, "
        f"same inputs as 5.; ms",
        ["m", "nhsic", "renyi", "renyi/nhsic", "I (bits)"],
        rows,
    )


SECTIONS = ("1", "2", "3", "4", "5", "6")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--repeats", type=int, default=0, help="timed runs per form (best kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run"
    )
    parser.add_argument("--_peak", nargs=2, metavar=("FORM", "M"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._peak:
        peak_child(args._peak[0], int(args._peak[1]))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU available")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (2 if args.quick else 5)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"# bench_hsic: device {device} ({name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, best of {repeats}, sigma={SIGMA}, eps={EPS}"
    )
    checks: dict[str, bool] = {}
    run = set(args.sections)
    if "1" in run:
        bench_naive([256, 512] if args.quick else [256, 512, 1024], device, repeats, checks)
    if "2" in run:
        ms = [256, 512, 1024] if args.quick else [256, 512, 1024, 2048]
        bench_peer(ms, device, repeats, checks)
    if "3" in run:
        bench_evaluator(1024, [256] if args.quick else [256, 512], device, repeats, checks)
    if "4" in run:
        bench_approx(2048 if args.quick else 4096, device, checks)
    if "5" in run:
        bench_bound([256, 512, 1024], device, repeats, checks)
    if "6" in run:
        bench_renyi([256, 512, 1024], device, repeats, checks)
    print("\n## targets")
    for k, ok in checks.items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {k}")
    print("  (* = naive time from the row-blocked emulation, peak memory analytic)")


if __name__ == "__main__":
    main()
