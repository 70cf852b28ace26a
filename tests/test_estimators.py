"""Tests for ibstudy.estimators: the registry, the pinned ids, the shared chunked Plane, Rényi MI
in the plane, and an estimator added by one object and one register line."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import np_gaussian_gram, np_renyi_entropy, tiny_config

from ibstudy import estimators
from ibstudy.config import MeasureConfig, TrainConfig
from ibstudy.estimators import ChunkValues, Estimator, Floor, get_estimator
from ibstudy.estimators.plane import Plane, floor_permutations
from ibstudy.hsic import InfoPlane
from ibstudy.renyi import DEFAULT_ALPHA, renyi_floor, renyi_mi_from_data
from ibstudy.robustness import estimator_suite

PLANE = ["nhsic_xz", "nhsic_yz", "nhsic_xz_std", "nhsic_yz_std", "floor_xz", "floor_yz",
         "floor_xz_std", "floor_yz_std"]  # fmt: skip


def _data(n: int = 96, seed: int = 0, dependent: bool = True):
    """x (n, 3, 4), labels of 4 classes, and z that depends on both (or on neither)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (n,), generator=g)
    if dependent:
        w = torch.randn(12, 5, generator=g, dtype=torch.float64)
        z = torch.tanh(x.reshape(n, -1) @ w) + 0.5 * y[:, None]
    else:
        z = torch.randn(n, 5, generator=g, dtype=torch.float64)
    return x, y, z


# ---------------------------------------------------------------- the registry
def test_registry_lists_the_three_estimators_and_names_them_on_error():
    assert estimators.estimator_names() == ("nhsic", "nhsic_cka", "renyi")
    assert get_estimator("renyi").settings == ("alpha",) and get_estimator("nhsic").settings == ()
    with pytest.raises(ValueError, match=r"estimator must be one of \['nhsic', 'nhsic_cka', 're"):
        get_estimator("binning")
    with pytest.raises(ValueError, match="already registered"):
        estimators.register(Estimator("nhsic", "another", "nHSIC"))
    with pytest.raises(ValueError, match="must be an Estimator"):
        estimators.register("renyi")  # type: ignore[arg-type]
    assert MeasureConfig().alpha == DEFAULT_ALPHA  # config.py's default is renyi.py's


def test_nothing_branches_on_an_estimator_name():
    """An estimator's name appears in its own module, not in the code that measures (hsic.py's
    function nhsic_cka, which the estimator of that name calls, excepted)."""
    from pathlib import Path

    root = Path(estimators.__file__).resolve().parents[1]
    for path in root.rglob("*.py"):
        if path.parent.name == "estimators":
            continue
        for line in path.read_text().splitlines():
            if path.name == "hsic.py" and line.strip() == '"nhsic_cka",':  # its __all__ entry
                continue
            assert "estimator ==" not in line and "estimator !=" not in line, (path, line)
            assert '"nhsic_cka"' not in line and '"renyi"' not in line, (path, line)


# ---------------------------------------------------------------- ids pinned before the registry
#: measure ids computed before estimators became objects (caches are named by them)
PINNED: dict[str, tuple[MeasureConfig, str]] = {
    "default": (MeasureConfig(), "nhsic-fixed-m256-b9698a5ee4"),
    "median": (
        MeasureConfig(eval_size=256, chunk_size=128, bandwidth="median", floor_perms=3),
        "nhsic-median-m128-9c9a317be7",
    ),
    "cka": (
        MeasureConfig(eval_size=256, chunk_size=128, estimator="nhsic_cka", floor_perms=3),
        "nhsic_cka-fixed-m128-204b5f4148",
    ),
    "m64": (
        MeasureConfig(eval_size=256, chunk_size=64, eps=1e-3, floor_perms=2, floor_seed=4),
        "nhsic-fixed-m64-194a734122",
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_measure_ids_are_pinned(name):
    mcfg, expected = PINNED[name]
    assert mcfg.measure_id() == expected
    assert "alpha" not in mcfg.to_dict() and "alpha" not in mcfg.columns()


def test_recorded_and_suite_ids_are_pinned():
    assert (
        TrainConfig.preset("study").measure_config().measure_id() == "nhsic-fixed-m256-0062a38403"
    )
    suite = estimator_suite(512, 256, floor_perms=5, floor_seed=0)
    ids = [m.measure_id() for m in suite.values()]
    assert ids[:3] == [
        "nhsic-fixed-m256-ff0fc8c536", "nhsic-median-m256-09032fd0da",
        "nhsic_cka-fixed-m256-df081cc599",
    ]  # fmt: skip
    assert ids[3].startswith("renyi-fixed-m256-")


def test_alpha_enters_the_renyi_id_only():
    renyi = MeasureConfig(estimator="renyi")
    assert renyi.to_dict()["alpha"] == DEFAULT_ALPHA and renyi.columns()["alpha"] == DEFAULT_ALPHA
    other = MeasureConfig(estimator="renyi", alpha=2.0)
    assert other.digest() != renyi.digest() and other.measure_id().startswith("renyi-fixed-m256-")
    assert MeasureConfig.from_dict(other.to_dict()) == other
    assert MeasureConfig.from_dict(MeasureConfig().to_dict()) == MeasureConfig()


def test_config_with_an_estimator_setting_does_not_import_torch():
    code = (
        "import sys, ibstudy.config as c; d = c.MeasureConfig(estimator='renyi').to_dict(); "
        "assert d['alpha'] == 1.01; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(estimator="renyi", alpha=1.0), r"alpha must be > 0 and != 1 .*Shannon"),
        (dict(estimator="renyi", alpha=0.0), r"alpha must be a finite number in \(0, inf\]"),
        (dict(estimator="renyi", alpha=-2.0), r"alpha must be a finite number"),
        (dict(estimator="renyi", alpha=math.nan), r"alpha must be a finite number"),
        (dict(alpha=2.0), r"alpha is a setting of the estimator\(s\) \['renyi'\] only"),
        (dict(estimator="mine"), r"estimator must be one of \['nhsic', 'nhsic_cka', 'renyi'\]"),
        (dict(eps=math.inf), r"eps must be a finite number"),
        (dict(eps=math.nan, estimator="renyi"), r"eps must be a finite number"),
    ],
)
def test_bad_settings_name_the_field(settings, message):
    with pytest.raises(ValueError, match=message):
        MeasureConfig(eval_size=64, chunk_size=32, **settings).validate()


# ---------------------------------------------------------------- the shared Plane
@pytest.mark.parametrize(
    "settings", [{}, {"bandwidth": "median"}, {"estimator": "nhsic_cka", "eps": 1e-2}]
)
def test_plane_reproduces_infoplane(settings):
    """The registry's nHSIC estimators give InfoPlane's numbers (the tables before the registry)."""
    x, y, z = _data()
    mcfg = MeasureConfig(eval_size=96, chunk_size=32, floor_perms=3, floor_seed=2, eps=1e-3)
    mcfg = MeasureConfig(**{**mcfg.to_dict(), **settings})
    old = InfoPlane(
        x, y, chunk_size=32, sigma=mcfg.sigma, eps=mcfg.eps, floor_perms=3, seed=2,
        bandwidth=mcfg.bandwidth, normalized=mcfg.estimator == "nhsic_cka",
    ).measure({"z": z, "x": x})  # fmt: skip
    new = Plane(x, y, mcfg).measure({"z": z, "x": x})
    np.testing.assert_allclose(new[PLANE].to_numpy(float), old[PLANE].to_numpy(float), rtol=1e-12)
    assert list(new["layer"]) == ["z", "x"]


def test_floor_permutations_are_infoplanes():
    gen = torch.Generator().manual_seed(7)
    expected = [torch.randperm(16, generator=gen) for _ in range(3)]
    got = floor_permutations(16, 3, 7)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_plane_refuses_bad_input():
    x, y, z = _data(n=64)
    mcfg = MeasureConfig(eval_size=64, chunk_size=32)
    with pytest.raises(ValueError, match="x_eval must hold eval_size=64"):
        Plane(x[:32], y[:32], mcfg)
    with pytest.raises(ValueError, match="y_eval must be a 1-D integer tensor"):
        Plane(x, y.double(), mcfg)
    with pytest.raises(ValueError, match="mcfg must be a MeasureConfig"):
        Plane(x, y, {"eval_size": 64})  # type: ignore[arg-type]
    plane = Plane(x, y, mcfg)
    with pytest.raises(ValueError, match="expected a tensor with 32 rows"):
        plane.measure_chunk(0, {"z": z})
    bad = z[:32].clone()
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match=r"layer 'z' contains NaN or Inf values \(chunk 1\)"):
        plane.measure_chunk(1, {"z": bad})


# ---------------------------------------------------------------- Rényi MI in the plane
def _renyi(n: int = 96, m: int = 32, perms: int = 3, **settings) -> MeasureConfig:
    return MeasureConfig(
        eval_size=n, chunk_size=m, estimator="renyi", floor_perms=perms, **settings
    ).validate()


@pytest.mark.parametrize("alpha", [0.5, DEFAULT_ALPHA, 2.0])
def test_renyi_chunk_values_are_the_direct_forms(alpha):
    """Each chunk's value is renyi_mi_from_data on it, its floor renyi_floor with seed floor_seed + i."""
    x, y, z = _data()
    mcfg = _renyi(alpha=alpha, floor_seed=3)
    plane = Plane(x, y, mcfg)
    for i in range(3):
        sl = slice(32 * i, 32 * (i + 1))
        res = plane.measure_chunk(i, {"z": z[sl]})["z"]
        assert res["nhsic_xz"] == pytest.approx(
            renyi_mi_from_data(x[sl], z[sl], 5.0, alpha), rel=1e-12, abs=1e-14
        )
        assert res["nhsic_yz"] == pytest.approx(
            renyi_mi_from_data(y[sl], z[sl], 5.0, alpha, kernel_x="linear"), rel=1e-12, abs=1e-14
        )
        floor = renyi_floor(x[sl], z[sl], perms=3, seed=3 + i, sigma=5.0, alpha=alpha)
        assert res["floor_xz"] == pytest.approx(floor, rel=1e-12, abs=1e-14)
        floor_y = renyi_floor(y[sl], z[sl], 3, 3 + i, alpha=alpha, kernel_x="linear")
        assert res["floor_yz"] == pytest.approx(floor_y, rel=1e-12, abs=1e-14)


def test_renyi_plane_agrees_with_a_float64_eigendecomposition_reference():
    """The whole plane (means over chunks) against numpy: Gram sigma * sqrt(d), labels' equality."""
    x, y, z = _data()
    sigma, alpha = 1.5, 1.01
    row = Plane(x, y, _renyi(sigma=sigma, perms=0)).measure({"z": z}).iloc[0]
    xz, yz = [], []
    for i in range(3):
        sl = slice(32 * i, 32 * (i + 1))
        kx, kz = np_gaussian_gram(x[sl].numpy(), sigma), np_gaussian_gram(z[sl].numpy(), sigma)
        ky = (y[sl].numpy()[:, None] == y[sl].numpy()[None, :]).astype(float)
        sz = np_renyi_entropy(kz, alpha)
        xz.append(np_renyi_entropy(kx, alpha) + sz - np_renyi_entropy(kx * kz, alpha))
        yz.append(np_renyi_entropy(ky, alpha) + sz - np_renyi_entropy(ky * kz, alpha))
    assert row["nhsic_xz"] == pytest.approx(np.mean(xz), rel=1e-9)
    assert row["nhsic_yz"] == pytest.approx(np.mean(yz), rel=1e-9)
    assert row["nhsic_xz_std"] == pytest.approx(np.std(xz), rel=1e-6, abs=1e-12)
    assert math.isnan(row.get("floor_xz", math.nan))  # no floor asked for


def test_renyi_of_the_input_with_itself_is_its_entropy_at_a_narrow_width():
    """I(X;X) = S(X) when A o A has the entropy of A: a narrow kernel, A close to I / m."""
    x, y, _ = _data()
    row = Plane(x, y, _renyi(sigma=0.05, perms=0)).measure({"x": x}).iloc[0]
    assert row["nhsic_xz"] == pytest.approx(math.log2(32), rel=1e-6)


@pytest.mark.parametrize("bandwidth", ["fixed", "median"])
def test_renyi_plane_is_invariant_to_a_permutation_of_the_samples(bandwidth):
    """The same permutation of the samples on both sides (within each chunk) moves no value."""
    x, y, z = _data(seed=4)
    g = torch.Generator().manual_seed(1)
    perm = torch.cat([32 * i + torch.randperm(32, generator=g) for i in range(3)])
    mcfg = _renyi(bandwidth=bandwidth)
    a = Plane(x, y, mcfg).measure({"z": z}).iloc[0]
    b = Plane(x[perm], y[perm], mcfg).measure({"z": z[perm]}).iloc[0]
    for col in ("nhsic_xz", "nhsic_yz", "nhsic_xz_std", "nhsic_yz_std"):
        assert b[col] == pytest.approx(a[col], rel=1e-10, abs=1e-13)


@pytest.mark.parametrize("bandwidth", ["fixed", "median"])
def test_renyi_independent_samples_sit_at_the_floor_dependent_ones_above(bandwidth):
    x, y, z = _data(n=128, seed=5, dependent=False)
    mcfg = _renyi(n=128, m=64, perms=20, bandwidth=bandwidth, sigma=1.0)
    plane = Plane(x, y, mcfg)
    row = plane.measure({"z": z}).iloc[0]
    for side in ("xz", "yz"):
        spread = row[f"floor_{side}_std"]  # a replicate (a mean over the chunks), as the value
        assert abs(row[f"nhsic_{side}"] - row[f"floor_{side}"]) < 4 * spread
    _, _, dep = _data(n=128, seed=5)
    above = plane.measure({"z": dep}).iloc[0]
    for side in ("xz", "yz"):
        spread = above[f"floor_{side}_std"]
        assert above[f"nhsic_{side}"] > above[f"floor_{side}"] + 5 * spread


def test_renyi_median_bandwidth_ignores_the_scale_of_z():
    x, y, z = _data(seed=2)
    plane = Plane(x, y, _renyi(bandwidth="median", perms=0))
    a, b = plane.measure({"z": z}).iloc[0], plane.measure({"z": 9.0 * z}).iloc[0]
    assert b["nhsic_xz"] == pytest.approx(a["nhsic_xz"], rel=1e-9)
    assert b["nhsic_yz"] == pytest.approx(a["nhsic_yz"], rel=1e-9)


# ---------------------------------------------------------------- adding an estimator
@dataclass(frozen=True)
class _NormCorrelation(Estimator):
    """A toy: squared correlation between the samples' norms of X (or the labels) and of Z."""

    def chunk(
        self, x: torch.Tensor, y: torch.Tensor, mcfg: MeasureConfig, floor: Floor, device
    ) -> estimators.ChunkMeasurer:
        sides = [_norms(x), y.to(torch.float64)]

        def measure(reps: Mapping[str, torch.Tensor]) -> dict[str, ChunkValues]:
            out = {}
            for name, z in reps.items():
                nz = _norms(z)
                vals = [[_r2(s, nz[p]) for p in (torch.arange(len(nz)), *floor.perms)]
                        for s in sides]  # fmt: skip
                out[name] = ChunkValues(vals[0][0], vals[1][0], tuple(vals[0][1:]),
                                        tuple(vals[1][1:]))  # fmt: skip
            return out

        return measure


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).to(torch.float64).norm(dim=1)


def _r2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1] ** 2)


@pytest.fixture
def toy():
    estimator = estimators.register(_NormCorrelation("toy_r2", "norm correlation", "r^2"))
    try:
        yield estimator
    finally:
        estimators.unregister("toy_r2")


def test_an_estimator_is_one_object_and_one_register_line(toy, tmp_path):
    from ibstudy.data import eval_subset, load_dataset
    from ibstudy.measure import measure
    from ibstudy.training import train

    run = train(tiny_config(tmp_path, epochs=1, probe_epochs=()), progress=False)
    mcfg = MeasureConfig(eval_size=256, chunk_size=128, estimator="toy_r2", floor_perms=2)
    table = measure(run, mcfg)
    assert set(table["estimator"]) == {"toy_r2"} and len(table) == 2 * 5  # epochs 0, 1 x layers
    assert mcfg.measure_id().startswith("toy_r2-fixed-m128-")
    assert table[["nhsic_xz", "nhsic_yz", "floor_xz", "floor_yz"]].notna().all().all()
    # the logits row of the last epoch, computed directly
    x, y = eval_subset(load_dataset("mnist5k", split="test", root="data"), 256)
    with torch.no_grad():
        model = run.load_model(1).eval()
        logits = model(x)
    direct = np.mean([_r2(_norms(x[s : s + 128]), _norms(logits[s : s + 128])) for s in (0, 128)])
    last = table[(table["epoch"] == 1) & (table["layer"] == "logits")].iloc[0]
    assert last["nhsic_xz"] == pytest.approx(direct, rel=1e-9)
    assert estimator_suite(256, 128)["norm correlation"].estimator == "toy_r2"  # notebook 07's


def test_an_unregistered_estimator_is_refused(toy):
    estimators.unregister("toy_r2")
    with pytest.raises(ValueError, match=r"estimator must be one of \['nhsic', 'nhsic_cka', 're"):
        MeasureConfig(estimator="toy_r2").validate()


def test_an_estimator_with_the_wrong_floor_count_is_named(tmp_path):
    @dataclass(frozen=True)
    class NoFloor(Estimator):
        def chunk(self, x, y, mcfg, floor, device):
            return lambda reps: {k: ChunkValues(0.0, 0.0, (), ()) for k in reps}

    estimators.register(NoFloor("no_floor", "no floor", "none"))
    try:
        x, y, z = _data(n=64)
        plane = Plane(x, y, MeasureConfig(eval_size=64, chunk_size=32, estimator="no_floor"))
        with pytest.raises(ValueError, match="'no_floor' returned 0 floor values"):
            plane.measure({"z": z})
    finally:
        estimators.unregister("no_floor")
