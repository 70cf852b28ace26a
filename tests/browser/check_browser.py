"""The browser check behind ``make test-browser`` (not part of ``make test``): Debian's chromium, headless,
driven by Playwright.

1. The report page: opens ``results/index.html``, asserts that every image decodes and every link
   resolves, that no request leaves the machine (every request the page makes is a ``file:`` or
   ``data:`` URL), and that the page renders non-blank (screenshot ``results/index_screenshot.png``).
2. The explorer: starts JupyterLab on a free port of 127.0.0.1 in a scratch folder, opens a copy of
   notebook 02 with tiny training parameters (its explorer cell appended where the notebook has none
   yet), runs every cell, moves the epoch slider and checks that the plane redraws (the slider's
   readout and the plane image change; screenshots ``results/explorer_before.png`` / ``_after.png``).

Run as ``.venv/bin/python tests/browser/check_browser.py [--results results] [--skip-lab]``; exit 0
when every check passes, 1 when one fails, 2 when something it needs is missing.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: without the background-networking flags chromium tries Google's hosts at every start
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
#: the parameters the copy of notebook 02 trains with (a minute on two cores)
TINY = {"epochs": 1, "train_size": 256, "eval_size": 256, "chunk_size": 128, "probe_steps": 10,
        "seeds": [0, 1], "device": "cpu"}  # fmt: skip
EXPLORER_CELL = "import ibstudy\n\nibstudy.explore(study)"
LOCAL = ("file", "data", "blob", "about", "chrome-error")


class CheckFailed(AssertionError):
    """One of the browser checks failed."""


def need(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def non_blank(png: bytes) -> float:
    """The standard deviation of the screenshot's grey levels (0 for a blank page)."""
    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(png)) as image:
        return float(ImageStat.Stat(image.convert("L")).stddev[0])


def launch(playwright):  # type: ignore[no-untyped-def]
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)


# ----------------------------------------------------------------------------------------------
# 1. the report page
# ----------------------------------------------------------------------------------------------


def check_page(playwright, results: Path) -> None:  # type: ignore[no-untyped-def]
    page_file = results / "index.html"
    need(
        page_file.is_file(), f"{page_file} not found: run make study (or python -m ibstudy report)"
    )
    browser = launch(playwright)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_file.resolve().as_uri(), wait_until="load")
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.getAttribute('alt'), e.complete && e.naturalWidth > 0])"
    )
    broken = [alt for alt, ok in images if not ok]
    need(not broken, f"images that do not decode: {broken}")
    links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    dead = []
    for link in links:
        url = urlparse(link)
        if url.scheme != "file":
            dead.append(link)
        elif not Path(unquote(url.path)).exists():
            dead.append(link)
    need(not dead, f"links that do not resolve to a file of the results folder: {dead}")
    outside = [u for u in requests if urlparse(u).scheme not in LOCAL]
    need(not outside, f"requests that leave the machine: {outside}")
    shot = page.screenshot(full_page=True)
    (results / "index_screenshot.png").write_bytes(shot)
    spread = non_blank(shot)
    need(spread > 10, f"the page renders blank (grey-level std {spread:.1f})")
    browser.close()
    print(f"report page: {len(images)} image(s) decode, {len(links)} link(s) resolve, "
          f"{len(requests)} request(s), none off the machine; screenshot "
          f"{results / 'index_screenshot.png'} (grey std {spread:.0f})")  # fmt: skip


# ----------------------------------------------------------------------------------------------
# 2. the explorer in JupyterLab
# ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scratch_notebook(folder: Path) -> Path:
    """A copy of notebook 02 with the tiny parameters injected after its parameters cell and, where
    it has no explorer cell yet, one appended."""
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "02_lenet5_information_plane.ipynb", as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    lines = [f"{k} = {v!r}" for k, v in TINY.items()]
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell("\n".join(lines)))
    if not any(c.cell_type == "code" and "explore(" in c.source for c in nb.cells):
        print("notebook 02 has no explorer cell yet: the check appends one")
        nb.cells.append(nbformat.v4.new_code_cell(EXPLORER_CELL))
    path = folder / "02_explorer_check.ipynb"
    nbformat.write(nb, path)
    return path


def start_lab(folder: Path, port: int, token: str) -> subprocess.Popen:
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(folder / ".settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(folder / ".workspaces"),
           "JUPYTER_RUNTIME_DIR": str(folder / ".runtime"), "IBSTUDY_JOBS": "1",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [
        str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", f"--port={port}",
        "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
        "--ServerApp.port_retries=0", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
        "jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # a container or CI machine runs as root
    log = open(folder / "lab.log", "w")  # noqa: SIM115 (closed with the process)
    lab = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return lab
        except OSError:
            if lab.poll() is not None:
                break
            time.sleep(1)
    lab.terminate()
    raise CheckFailed(
        f"JupyterLab did not start on port {port}: {(folder / 'lab.log').read_text()[-2000:]}"
    )


ERROR_OUTPUT = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"


def wait_for_widget(page, selector: str, timeout: float):  # type: ignore[no-untyped-def]
    """The first element matching ``selector`` once a cell shows it; CheckFailed naming the error
    when a cell fails first (Run All stops there), or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = page.query_selector(selector)
        if found is not None:
            return found
        error = page.query_selector(ERROR_OUTPUT)
        if error is not None:
            raise CheckFailed(
                f"a cell failed before the explorer showed: {error.inner_text()[-1500:]}"
            )
        page.wait_for_timeout(1000)
    raise CheckFailed(
        f"no {selector!r} after {timeout:.0f} s: the explorer cell did not show widgets"
    )


def check_explorer(playwright, results: Path) -> None:  # type: ignore[no-untyped-def]
    folder = Path(tempfile.mkdtemp(prefix="ibstudy-lab-"))
    port, token = free_port(), "ibstudy-browser-check"
    try:
        notebook = scratch_notebook(folder)
        lab = start_lab(folder, port, token)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    from playwright.sync_api import Error as PlaywrightError

    browser = launch(playwright)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"http://127.0.0.1:{port}/lab/tree/{notebook.name}?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                               timeout=120_000)  # fmt: skip
        try:  # JupyterLab asks whether to fetch its news: no (and it keeps the screenshots clear)
            page.get_by_role("button", name="No", exact=True).click(timeout=5000)
        except PlaywrightError:
            pass
        page.click(".jp-Notebook")
        page.keyboard.press("Escape")
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
        slider = wait_for_widget(page, ".widget-slider .noUi-handle", timeout=600)
        readout = page.locator(".widget-slider .widget-readout").first
        plane = page.locator(".widget-image").first
        plane.wait_for(timeout=60_000)
        before_text, before_src = readout.inner_text(), plane.get_attribute("src")
        before = plane.screenshot()
        (results / "explorer_before.png").write_bytes(before)
        slider.focus()
        for _ in range(3):
            page.keyboard.press("ArrowLeft")
        page.wait_for_function(
            "([sel, old]) => { const e = document.querySelector(sel); return e && e.src !== old; }",
            arg=[".widget-image", before_src], timeout=60_000,
        )  # fmt: skip
        page.wait_for_timeout(500)
        after_text = readout.inner_text()
        after = plane.screenshot()
        (results / "explorer_after.png").write_bytes(after)
        need(after_text != before_text, f"the epoch readout did not move ({before_text!r})")
        need(after != before, "the plane did not redraw when the epoch slider moved")
        print(f"explorer: epoch slider {before_text} -> {after_text}, the plane redrew; "
              f"screenshots {results / 'explorer_before.png'}, {results / 'explorer_after.png'}")  # fmt: skip
    except PlaywrightError as exc:  # a timeout included: keep what the page showed
        page.screenshot(path=str(results / "explorer_failure.png"), full_page=True)
        raise CheckFailed(
            f"the explorer check stopped: {str(exc).splitlines()[0]}; the page as it was: "
            f"{results / 'explorer_failure.png'}"
        ) from None
    finally:
        browser.close()
        lab.terminate()
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            lab.kill()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "results"), help="the results folder")
    parser.add_argument("--skip-lab", action="store_true", help="check the report page only")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"error: no chromium at {CHROMIUM}: install Debian's (apt-get install chromium) or set "
              "CHROMIUM=/path/to/chromium", file=sys.stderr)  # fmt: skip
        return 2
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        print(f"error: {exc}: pip install -r requirements-browser.txt", file=sys.stderr)
        return 2
    results = Path(args.results)
    try:
        with sync_playwright() as playwright:
            check_page(playwright, results)
            if not args.skip_lab:
                check_explorer(playwright, results)
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    print("browser checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
