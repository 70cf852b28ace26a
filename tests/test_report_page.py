"""Tests of ibstudy.report_page on a tiny results folder: every run and notebook is listed, every link
is relative and resolves, images are embedded, nothing names this machine's paths or the network."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import tiny_config
from PIL import Image
from test_animate import record_points, study_tables
from test_report import accuracy, stable_effects, write_results

from ibstudy import plots, report_page
from ibstudy.__main__ import main
from ibstudy.study import write_tables

NOTEBOOKS = ("00_data_tour", "02_lenet5_information_plane", "06_summary")


class Refs(HTMLParser):
    """Every href and src of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "href":
                self.hrefs.append(value)
            elif name == "src":
                self.srcs.append(value)


def refs(page: str) -> Refs:
    parser = Refs()
    parser.feed(page)
    return parser


@pytest.fixture
def results(tmp_path) -> Path:
    """A results folder as make study leaves it, in small: 06's tables, 02's tables, a figure,
    executed notebooks and their HTML (one failed), and three run folders with real configs."""
    folder = write_results(tmp_path / "results", stable_effects(), accuracy())
    epochs, layers = study_tables(n_epochs=2)
    write_tables("02_lenet5", epochs, layers, results_dir=str(folder),
                 scale="mnist5k, lenet5 (width 1), 4 epochs, study preset")  # fmt: skip
    plots.save_figure(plots.plot_accuracy(epochs), "02_lenet5_accuracy", folder / "figures")
    for name in NOTEBOOKS:
        (folder / "notebooks").mkdir(exist_ok=True)
        (folder / "notebooks" / f"{name}.ipynb").write_text("{}")
        (folder / "html").mkdir(exist_ok=True)
        (folder / "html" / f"{name}.html").write_text("<html></html>")
    (folder / "html" / "07_estimator_robustness.failed.html").write_text("<html></html>")
    for seed, method in ((0, "e2e"), (1, "e2e"), (0, "layerwise")):
        cfg = tiny_config(tmp_path, seed=seed, method=method)  # results_dir: an absolute path
        run = folder / "runs" / cfg.run_id()
        run.mkdir(parents=True)
        meta = {"config": cfg.to_dict(), "run_id": cfg.run_id(), "complete": seed == 0}
        (run / "config.json").write_text(json.dumps(meta))
        epochs[epochs["run"] == epochs["run"].iloc[0]].to_csv(run / "epochs.csv", index=False)
    return folder


def test_page_lists_every_run_and_notebook_with_relative_links_only(results):
    report_page.write_animations(results)
    path = report_page.write_report_page(results, animations=False)
    assert path == results / "index.html"
    page = path.read_text(encoding="utf-8")
    runs = sorted(p.name for p in (results / "runs").iterdir())
    assert len(runs) == 3 and all(run in page for run in runs)
    assert all(f"html/{name}.html" in page for name in NOTEBOOKS)
    assert "07_estimator_robustness" in page and "failed" in page
    # self-contained: no absolute path of this machine, no URL that leaves it
    assert str(results.parent) not in page and "file:" not in page
    text = re.sub(r"data:image/\w+;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"https?:|ftp:|url\(|@import", text)
    found = refs(page)
    assert not any(r.startswith("//") for r in found.hrefs + found.srcs)
    assert found.srcs and all(s.startswith("data:image/") for s in found.srcs)
    for href in found.hrefs:
        if href.startswith("#"):
            assert f'id="{href[1:]}"' in page
            continue
        assert not os.path.isabs(href) and ".." not in href
        assert (results / unquote(href)).is_file(), href
    # the claims and the accuracy, from the tables
    assert '1.23 [0.735, 1.73], <b style="color:#555">inconclusive</b>' in page
    assert "fragile: 1 of 5 seeds flips it" in page
    assert "0.9702" in page and "± 0.0015" in page
    assert "(a local path)" in page  # the configs' absolute results_dir, hidden


def test_the_animation_is_rendered_once_and_embedded(results):
    report_page.write_report_page(results)
    gif = results / "figures" / "02_lenet5_plane.gif"
    with Image.open(gif) as image:
        assert image.n_frames == len(record_points(2))
    page = (results / "index.html").read_text()
    assert page.count("data:image/gif;base64,") == 1
    assert page.count("data:image/png;base64,") == 1  # the one key figure present
    stamp = gif.stat().st_mtime_ns
    assert report_page.write_animations(results) == []  # up to date: not rendered again
    assert gif.stat().st_mtime_ns == stamp
    later = gif.stat().st_mtime + 10
    os.utime(results / "tables" / "02_lenet5_layers.csv", (later, later))
    assert report_page.write_animations(results) == [gif]  # the tables changed


def test_the_report_command_writes_the_page(results, capsys):
    assert main(["report", "--results-dir", str(results)]) == 0
    assert f"wrote {results / 'index.html'}" in capsys.readouterr().out
    page = (results / "index.html").read_text()
    assert "Provenance: commit" in page  # the findings the command collected
    assert "Provenance: commit" in report_page.build_page(results)  # read back from findings.json


def test_a_bare_results_folder_gives_a_page_saying_what_is_missing(tmp_path):
    page = report_page.build_page(tmp_path)
    for text in ("notebook 06 has not run", "No executed notebook", "No runs yet",
                 "No animation"):  # fmt: skip
        assert text in page
    with pytest.raises(ValueError, match="results_dir .* is not a folder"):
        report_page.write_report_page(tmp_path / "missing")
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_regimes_of_notebook_09_are_on_the_page(tmp_path):
    """findings with regimes: one row per cell with its gap, readout verdict and claim verdicts,
    and the across-cell test; without them the section says notebook 09 has not run."""
    cell = {"cell": "vgg8b/cluttered", "n_seeds": 3, "e2e_acc_mean": 0.908,
            "layerwise_acc_mean": 0.8437, "gap_mean": 0.0643, "gap_ci_low": 0.0355,
            "gap_ci_high": 0.0931, "gap_k_of_n": "3 of 3", "head_gap_mean": 0.0507,
            "readout_verdict": "gap", "C1_estimate": -0.171, "C1_verdict": "contradicted",
            "C1_z": -14.7, "C2_estimate": 0.029, "C2_verdict": "supported",
            "C3_estimate": None, "C3_verdict": "not measured", "C4a_estimate": 0.0643,
            "C4a_verdict": "supported", "role_gap": 0.1007}  # fmt: skip
    across = [{"statistic": "C1_estimate", "rho": 0.886, "n_cells": 6, "p_greater_holm": 0.0333,
               "verdict": "holds"}]  # fmt: skip
    page = report_page.build_page(tmp_path, {"studies": [], "regimes": {"cells": [cell],
                                                                       "across": across}})  # fmt: skip
    assert "<td>vgg8b/cluttered</td>" in page and "3 of 3" in page
    assert "0.0643 [0.0355, 0.0931]" in page
    assert "contradicted" in page and "(z -14.7)" in page and "<b>holds</b>" in page
    assert "No regimes: notebook 09 has not run." in report_page.build_page(tmp_path, {})
