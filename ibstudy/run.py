"""Papermill runner behind `make study` and `python -m ibstudy run`.

Each notebook runs in a fresh `python3` kernel (ipykernel's spec runs the current interpreter),
with the repository root (the notebooks folder's parent) as working directory. The executed
copy goes to `<results_dir>/notebooks/<name>.ipynb`, an HTML export to
`<results_dir>/html/<name>.html`. Parameter names are checked against every notebook's
`parameters` cell before anything runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ibstudy.cli_values import parse_literal as parse_value
from ibstudy.config import PRESETS
from ibstudy.store import atomic_write_text

__all__ = [
    "PRESETS",
    "DEVICES",
    "NotebookFailed",
    "discover_notebooks",
    "resolve_notebooks",
    "notebook_parameters",
    "parse_value",
    "prepare_parameters",
    "run_notebooks",
    "add_run_parser",
    "main",
]

DEVICES = ("auto", "cpu", "cuda", "mps")
KERNEL_NAME = "python3"
NOTEBOOK_PATTERN = re.compile(r"^\d{2}_.+\.ipynb$")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_INJECTED = ("preset", "device", "results_dir")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TRACEBACK_LINES = 30


class NotebookFailed(RuntimeError):
    """A notebook raised while executing; the message names the notebook, the cell and the error."""

    def __init__(
        self,
        message: str,
        *,
        notebook: Path,
        output: Path | None = None,
        cell_index: int | None = None,
        exec_count: int | None = None,
        ename: str | None = None,
        evalue: str | None = None,
    ) -> None:
        super().__init__(message)
        self.notebook = notebook
        self.output = output
        self.cell_index = cell_index
        self.exec_count = exec_count
        self.ename = ename
        self.evalue = evalue


def discover_notebooks(notebooks_dir: str | os.PathLike[str] = "notebooks") -> list[Path]:
    """The numbered notebooks `NN_*.ipynb` (two digits) of `notebooks_dir`, sorted by name."""
    folder = Path(notebooks_dir)
    if not folder.is_dir():
        raise ValueError(f"notebooks_dir {str(folder)!r} is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and NOTEBOOK_PATTERN.match(p.name))


def resolve_notebooks(
    names: Sequence[str | os.PathLike[str]], notebooks_dir: str | os.PathLike[str] = "notebooks"
) -> list[Path]:
    """Notebook paths for command-line names: a path, a file name in `notebooks_dir`, a stem,
    or a unique prefix such as "02"; no names means every discovered notebook."""
    if not names:
        found = discover_notebooks(notebooks_dir)
        if not found:
            raise ValueError(f"no NN_*.ipynb notebooks in {str(notebooks_dir)!r}")
        return found
    folder = Path(notebooks_dir)
    resolved = []
    for name in names:
        path = Path(name)
        candidates = [path, folder / path, folder / f"{path}.ipynb"]
        hit = next((c for c in candidates if c.is_file() and c.suffix == ".ipynb"), None)
        if hit is None and folder.is_dir():
            matches = [p for p in discover_notebooks(folder) if p.name.startswith(str(name))]
            if len(matches) == 1:
                hit = matches[0]
            elif len(matches) > 1:
                raise ValueError(
                    f"notebook {str(name)!r} is ambiguous: {[p.name for p in matches]}"
                )
        if hit is None:
            available = [p.name for p in discover_notebooks(folder)] if folder.is_dir() else []
            raise ValueError(f"notebook {str(name)!r} not found; available: {available}")
        resolved.append(hit)
    return resolved


def notebook_parameters(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The parameters declared in the notebook's `parameters` cell, as papermill infers them
    (name -> {name, inferred_type_name, default, help}); empty when there is no such cell."""
    import papermill

    path = Path(path)
    if not path.is_file() or path.suffix != ".ipynb":
        raise ValueError(f"notebook {str(path)!r} is not an existing .ipynb file")
    return dict(papermill.inspect_notebook(str(path)))


def _check_options(preset: str | None, device: str | None) -> None:
    """Raise ValueError for a preset or device outside the allowed values."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    if device is not None and (not isinstance(device, str) or not _DEVICE_PATTERN.match(device)):
        raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'), got {device!r}")


def _kernel_cwd(notebook: Path) -> Path:
    """The working directory of a notebook's kernel: the parent of the notebook's folder."""
    return notebook.resolve().parent.parent


def _results_dir_for(results_dir: Path, cwd: Path) -> str:
    """`results_dir` as the kernel should see it: relative to its cwd when inside it."""
    absolute = results_dir.resolve()
    try:
        return absolute.relative_to(cwd).as_posix() or "."
    except ValueError:
        return str(absolute)


def prepare_parameters(
    notebook: str | os.PathLike[str],
    *,
    parameters: Mapping[str, Any] | None = None,
    preset: str | None = None,
    device: str | None = None,
    results_dir: str | os.PathLike[str] = "results",
    declared: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The parameters papermill will inject into `notebook`; raises ValueError for a name the
    notebook does not declare. preset / device / results_dir go only where they are declared."""
    _check_options(preset, device)
    notebook = Path(notebook)
    declared = notebook_parameters(notebook) if declared is None else declared
    parameters = dict(parameters or {})
    for name in parameters:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"parameter names must be identifiers, got {name!r}")
    if "results_dir" in parameters:
        raise ValueError("give results_dir through results_dir (--results-dir), not as a parameter")
    for name, value in (("preset", preset), ("device", device)):
        if value is not None and name in parameters and parameters[name] != value:
            raise ValueError(
                f"{name} given twice with different values: {parameters[name]!r} and {value!r}"
            )
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        listed = ", ".join(sorted(declared)) if declared else "none (no `parameters` cell)"
        raise ValueError(
            f"unknown parameter(s) {unknown} for notebook {notebook.name}; "
            f"its parameters are: {listed}"
        )
    injected = dict(parameters)
    if preset is not None and "preset" in declared:
        injected["preset"] = preset
    if device is not None and "device" in declared:
        injected["device"] = device
    if "results_dir" in declared:
        injected["results_dir"] = _results_dir_for(Path(results_dir), _kernel_cwd(notebook))
    return injected


def _export_html(executed: Path, target: Path) -> Path:
    """Export an executed notebook to HTML with nbconvert."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    atomic_write_text(target, body)
    return target


def _keep_failed(running: Path, failed: Path, error: BaseException) -> None:
    """Move a partial executed copy to ``failed`` with a banner cell saying why it is incomplete."""
    if not running.is_file():
        return
    import nbformat

    try:
        nb = nbformat.read(running, as_version=4)
        what = "was interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        reason = f"{type(error).__name__}: {error}".strip().rstrip(":")
        banner = nbformat.v4.new_markdown_cell(
            f"**This execution {what}** ({reason}); the cells below ran only up to that point. "
            f"The last complete run, if any, is `{failed.name.replace('.failed', '')}`."
        )
        banner.metadata["tags"] = ["ibstudy-failure-banner"]
        nb.cells.insert(0, banner)
        atomic_write_text(failed, nbformat.writes(nb))
    except Exception:  # an unreadable partial copy is still worth keeping as it is
        os.replace(running, failed)
    finally:
        running.unlink(missing_ok=True)


def _first_line(source: str | None) -> str:
    """The first non-blank line of a cell's source (shortened), for messages."""
    for line in (source or "").splitlines():
        if line.strip():
            return line.strip() if len(line.strip()) <= 80 else line.strip()[:77] + "..."
    return "<empty cell>"


def _failure(notebook: Path, output: Path, error: BaseException) -> NotebookFailed:
    """A NotebookFailed describing papermill's execution error (or any other exception)."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        evalue = "\n".join(line for line in (error.evalue or "").splitlines() if line.strip())
        trace = _ANSI.sub("", "\n".join(error.traceback or [])).splitlines()
        if len(trace) > _TRACEBACK_LINES:
            trace = ["..."] + trace[-_TRACEBACK_LINES:]
        message = (
            f"notebook {notebook.name} failed in cell {error.cell_index} "
            f"(In [{error.exec_count}]: {_first_line(error.source)})\n"
            f"{error.ename}: {evalue}\n"
            f"executed copy: {output}"
        )
        if trace:
            message += "\ntraceback:\n" + "\n".join(trace)
        return NotebookFailed(
            message,
            notebook=notebook,
            output=output,
            cell_index=error.cell_index,
            exec_count=error.exec_count,
            ename=error.ename,
            evalue=error.evalue,
        )
    message = (
        f"notebook {notebook.name} could not be executed: {type(error).__name__}: {error}\n"
        f"executed copy (if any): {output}"
    )
    return NotebookFailed(
        message, notebook=notebook, output=output, ename=type(error).__name__, evalue=str(error)
    )


def run_notebooks(
    notebooks: Sequence[str | os.PathLike[str]],
    *,
    parameters: Mapping[str, Any] | None = None,
    preset: str | None = None,
    device: str | None = None,
    results_dir: str | os.PathLike[str] = "results",
    html: bool = True,
    log_output: bool = True,
    progress_bar: bool = True,
) -> list[Path]:
    """Execute notebooks one after another, each in a fresh kernel; return the executed copies.

    Every notebook's parameters are validated before the first one runs. Each notebook executes into
    a temporary copy that replaces ``results/notebooks/<name>.ipynb`` only on success. A failing (or
    interrupted) notebook leaves the last good copy untouched, keeps its partial copy as
    ``<stem>.failed.ipynb`` (and HTML) with a banner cell, and raises NotebookFailed (or re-raises the
    interrupt); later notebooks do not run.
    """
    import papermill

    if isinstance(notebooks, str | os.PathLike) or not notebooks:
        raise ValueError(f"notebooks must be a non-empty list of paths, got {notebooks!r}")
    paths = [Path(nb) for nb in notebooks]
    for path in paths:
        if not path.is_file() or path.suffix != ".ipynb":
            raise ValueError(f"notebook {str(path)!r} is not an existing .ipynb file")
    _check_options(preset, device)
    results = Path(results_dir)
    plans = [
        prepare_parameters(
            path, parameters=parameters, preset=preset, device=device, results_dir=results
        )
        for path in paths
    ]

    executed = []
    for path, injected in zip(paths, plans, strict=True):
        output = results / "notebooks" / path.name
        failed = output.with_name(f"{path.stem}.failed.ipynb")
        running = output.with_name(f".{path.stem}.running.ipynb")
        page, failed_page = (results / "html" / f"{path.stem}{s}.html" for s in ("", ".failed"))
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            papermill.execute_notebook(
                str(path),
                str(running),
                parameters=injected,
                kernel_name=KERNEL_NAME,
                progress_bar=progress_bar,
                log_output=log_output,
                cwd=str(_kernel_cwd(path)),
            )
        except BaseException as error:  # the last good copy stays; the partial one is kept aside
            _keep_failed(running, failed, error)
            if html and failed.is_file():
                try:
                    _export_html(failed, failed_page)
                except Exception:  # the notebook's own error is the one worth reporting
                    pass
            if isinstance(error, Exception):
                raise _failure(path, failed, error) from error
            raise
        os.replace(running, output)
        failed.unlink(missing_ok=True)
        failed_page.unlink(missing_ok=True)
        if html:
            _export_html(output, page)
        executed.append(output)
    return executed


def _parameters_from_pairs(pairs: Sequence[Sequence[str]] | None) -> dict[str, Any]:
    """`-p NAME VALUE` pairs as a dict of parsed values; a name given twice raises ValueError."""
    parameters: dict[str, Any] = {}
    for name, value in pairs or []:
        if name in parameters:
            raise ValueError(f"parameter {name!r} given twice (-p {name} ...)")
        parameters[name] = parse_value(value)
    return parameters


def _run_command(args: argparse.Namespace) -> int:
    """The `run` sub-command: 0 on success, 1 when a notebook fails, 2 for bad input."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        notebooks = resolve_notebooks(args.notebooks, args.notebooks_dir)
        executed = run_notebooks(
            notebooks,
            parameters=_parameters_from_pairs(args.parameter),
            preset=args.preset,
            device=args.device,
            results_dir=args.results_dir,
            html=not args.no_html,
            log_output=not args.quiet,
        )
    except NotebookFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: executed copies of finished notebooks are kept; the interrupted one is "
            f"in {args.results_dir}/notebooks/<name>.failed.ipynb (its last good copy is untouched)",
            file=sys.stderr,
        )
        return 130
    for path in executed:
        print(f"executed {path}")
    return 0


def add_run_parser(subparsers: Any) -> None:
    """Add the `run` sub-command (notebook execution through papermill) to argparse subparsers."""
    parser = subparsers.add_parser(
        "run",
        help="execute the study notebooks with papermill",
        description=(
            "Execute numbered notebooks (all of them when none is named) in fresh kernels; "
            "executed copies go to RESULTS_DIR/notebooks, HTML exports to RESULTS_DIR/html."
        ),
    )
    parser.add_argument(
        "notebooks",
        nargs="*",
        metavar="NOTEBOOK",
        help="notebook path, file name, stem or unique prefix such as 02 (default: all)",
    )
    parser.add_argument("--preset", choices=PRESETS, default=None, help="training preset")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        default=[],
        help="set a notebook parameter (VALUE parsed as a Python literal, else a string)",
    )
    parser.add_argument("--device", choices=DEVICES, default=None, help="torch device")
    parser.add_argument("--results-dir", default="results", help="output root (default: results)")
    parser.add_argument(
        "--notebooks-dir", default="notebooks", help="where NN_*.ipynb live (default: notebooks)"
    )
    parser.add_argument("--no-html", action="store_true", help="skip the HTML exports")
    parser.add_argument(
        "--quiet", action="store_true", help="do not log the cells' output while they run"
    )
    parser.set_defaults(func=_run_command)


def main(argv: Sequence[str] | None = None) -> int:
    """A parser with only the `run` sub-command (handy in tests); returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m ibstudy")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_run_parser(subparsers)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
