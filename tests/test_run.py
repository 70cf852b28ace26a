"""Tests of the papermill runner: discovery, parameter handling, execution, failures and the CLI.

Kernel start-up costs seconds, so only two notebooks are executed (one success, one failure).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nbformat
import pytest

from ibstudy import run as runner
from ibstudy.run import (
    NotebookFailed,
    add_run_parser,
    discover_notebooks,
    notebook_parameters,
    parse_value,
    prepare_parameters,
    resolve_notebooks,
    run_notebooks,
)

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def write_notebook(
    path: Path, *, parameters: str | None = 'a = 1\nresults_dir = "results"', body=()
) -> Path:
    """A tiny notebook: an optional `parameters`-tagged cell, then the `body` code cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells.extend(nbformat.v4.new_code_cell(src) for src in body)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


STUDY_BODY = (
    "import json, os\nfrom pathlib import Path",
    "out = Path(results_dir)\nout.mkdir(parents=True, exist_ok=True)\n"
    "(out / 'out.json').write_text(json.dumps({'a': a, 'preset': preset, 'cwd': os.getcwd()}))",
    "if a == 13:\n    raise ValueError(f'a must not be 13, got {a}')",
)
STUDY_PARAMETERS = 'a = 1\npreset = "quick"\nresults_dir = "results"'


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fake repository root holding notebooks/01_study.ipynb and notebooks/02_plain.ipynb."""
    write_notebook(
        tmp_path / "notebooks" / "01_study.ipynb", parameters=STUDY_PARAMETERS, body=STUDY_BODY
    )
    write_notebook(tmp_path / "notebooks" / "02_plain.ipynb", body=("b = a + 1",))
    return tmp_path


# ---------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("-2", -2),
        ("1e-3", 1e-3),
        ("0.5", 0.5),
        ("True", True),
        ("False", False),
        ("None", None),
        ("[1, 2, 3]", [1, 2, 3]),
        ("(1, 2)", [1, 2]),
        ("{'x': 1}", {"x": 1}),
        ("'quoted'", "quoted"),
        ("cifar10", "cifar10"),
        ("resnet18", "resnet18"),
        ("true", "true"),
        ("1j", "1j"),
        ("results/x", "results/x"),
        ("", ""),
    ],
)
def test_parse_value(text, expected):
    value = parse_value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_parse_value_rejects_non_strings():
    with pytest.raises(ValueError, match="text must be a string"):
        parse_value(3)  # type: ignore[arg-type]


def test_discover_notebooks_order_and_filter(tmp_path):
    folder = tmp_path / "notebooks"
    for name in (
        "10_last.ipynb",
        "02_b.ipynb",
        "01_a.ipynb",
        "1_short.ipynb",
        "scratch.ipynb",
        "03_notes.md",
        "100_three_digits.ipynb",
    ):
        folder.mkdir(exist_ok=True)
        (folder / name).write_text("{}")
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "00_a-checkpoint.ipynb").write_text("{}")
    found = discover_notebooks(folder)
    assert [p.name for p in found] == ["01_a.ipynb", "02_b.ipynb", "10_last.ipynb"]
    with pytest.raises(ValueError, match="not a folder"):
        discover_notebooks(tmp_path / "missing")


def test_resolve_notebooks_by_prefix_stem_and_path(repo):
    nbdir = repo / "notebooks"
    assert resolve_notebooks([], nbdir) == [nbdir / "01_study.ipynb", nbdir / "02_plain.ipynb"]
    assert resolve_notebooks(["02"], nbdir) == [nbdir / "02_plain.ipynb"]
    assert resolve_notebooks(["01_study"], nbdir) == [nbdir / "01_study.ipynb"]
    assert resolve_notebooks([str(nbdir / "02_plain.ipynb")], nbdir) == [nbdir / "02_plain.ipynb"]
    with pytest.raises(ValueError, match="ambiguous"):
        resolve_notebooks(["0"], nbdir)
    with pytest.raises(ValueError, match=r"not found; available: \['01_study.ipynb'"):
        resolve_notebooks(["07"], nbdir)


def test_notebook_parameters_reads_the_parameters_cell(repo, tmp_path):
    params = notebook_parameters(repo / "notebooks" / "01_study.ipynb")
    assert set(params) == {"a", "preset", "results_dir"}
    assert params["a"]["default"] == "1"
    bare = write_notebook(tmp_path / "bare.ipynb", parameters=None, body=("x = 1",))
    assert notebook_parameters(bare) == {}
    with pytest.raises(ValueError, match="not an existing .ipynb"):
        notebook_parameters(tmp_path / "nope.ipynb")


def test_prepare_parameters_injects_only_declared_names(repo):
    study, plain = repo / "notebooks" / "01_study.ipynb", repo / "notebooks" / "02_plain.ipynb"
    results = repo / "results"
    got = prepare_parameters(
        study, parameters={"a": 5}, preset="paper", device="cpu", results_dir=results
    )
    # the kernel runs in the repo root, so results_dir is handed over relative to it
    assert got == {"a": 5, "preset": "paper", "results_dir": "results"}
    got = prepare_parameters(plain, preset="paper", device="cuda", results_dir=results)
    assert got == {"results_dir": "results"}
    outside = repo.parent / "elsewhere"
    got = prepare_parameters(plain, results_dir=outside)
    assert got == {"results_dir": str(outside.resolve())}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"parameters": {"epochs": 3}},
            r"unknown parameter\(s\) \['epochs'\].*a, preset, results_dir",
        ),
        ({"preset": "fast"}, r"preset must be one of \('quick', 'study', 'paper'\), got 'fast'"),
        ({"device": "tpu"}, "device must be one of"),
        ({"parameters": {"results_dir": "x"}}, "results_dir"),
        ({"parameters": {"preset": "quick"}, "preset": "paper"}, "preset given twice"),
        ({"parameters": {"not valid": 1}}, "identifiers"),
    ],
)
def test_prepare_parameters_rejects_bad_input(repo, kwargs, message):
    with pytest.raises(ValueError, match=message):
        prepare_parameters(repo / "notebooks" / "01_study.ipynb", **kwargs)


def test_notebook_without_parameters_cell_rejects_any_parameter(tmp_path):
    bare = write_notebook(tmp_path / "nb" / "01_bare.ipynb", parameters=None, body=("x = 1",))
    with pytest.raises(ValueError, match=r"no `parameters` cell"):
        prepare_parameters(bare, parameters={"a": 2})


def test_unknown_parameter_is_rejected_before_anything_runs(repo, monkeypatch):
    import papermill

    def forbidden(*args, **kwargs):
        raise AssertionError("papermill.execute_notebook must not be called")

    monkeypatch.setattr(papermill, "execute_notebook", forbidden)
    notebooks = discover_notebooks(repo / "notebooks")
    # "preset" exists in 01 only: passing it as a parameter must fail for 02, before 01 runs
    with pytest.raises(ValueError, match=r"02_plain.ipynb; its parameters are: a, results_dir"):
        run_notebooks(notebooks, parameters={"preset": "paper"}, results_dir=repo / "results")
    with pytest.raises(ValueError, match=r"\['zzz'\].*a, preset, results_dir"):
        run_notebooks(notebooks, parameters={"zzz": 1}, results_dir=repo / "results")
    with pytest.raises(ValueError, match="non-empty list"):
        run_notebooks([], results_dir=repo / "results")
    assert not (repo / "results").exists()


# ---------------------------------------------------------------------------------------------
# execution (two kernels in all)
# ---------------------------------------------------------------------------------------------


def test_run_notebook_executes_and_exports(repo, monkeypatch, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("caller")
    monkeypatch.chdir(elsewhere)  # the kernel's cwd must not depend on the caller's
    results = repo / "results"
    out = run_notebooks(
        [repo / "notebooks" / "01_study.ipynb"],
        parameters={"a": 7},
        preset="paper",
        device="cpu",  # not declared by the notebook: silently not injected
        results_dir=results,
        progress_bar=False,
    )
    executed = results / "notebooks" / "01_study.ipynb"
    assert out == [executed]
    written = json.loads((results / "out.json").read_text())
    assert written == {"a": 7, "preset": "paper", "cwd": str(repo.resolve())}
    nb = nbformat.read(executed, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert "a = 7" in injected[0].source and 'preset = "paper"' in injected[0].source
    assert "device" not in injected[0].source
    assert all(c.execution_count is not None for c in nb.cells if c.cell_type == "code")
    html = results / "html" / "01_study.html"
    assert html.stat().st_size > 1000
    assert "a must not be 13" in html.read_text()  # the exported source of the last cell
    # the source notebook stays clean
    source = nbformat.read(repo / "notebooks" / "01_study.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in source.cells if c.cell_type == "code")


def test_failing_notebook_names_cell_and_error_and_keeps_copy(repo):
    results = repo / "results"
    with pytest.raises(NotebookFailed) as info:
        run_notebooks(
            [repo / "notebooks" / "01_study.ipynb", repo / "notebooks" / "02_plain.ipynb"],
            parameters={"a": 13},
            results_dir=results,
            html=True,
            log_output=False,
            progress_bar=False,
        )
    failure = info.value
    message = str(failure)
    assert "01_study.ipynb" in message
    assert "if a == 13:" in message  # the failing cell's first line
    assert "ValueError: a must not be 13, got 13" in message
    assert f"In [{failure.exec_count}]" in message
    assert "traceback:" in message and "----> 2" in message  # the kernel's traceback, uncoloured
    assert "\x1b[" not in message
    # the parameters cell, the injected cell, the imports, the writer, then the failing cell
    assert failure.cell_index == 4 and failure.exec_count == 5
    assert failure.ename == "ValueError"
    copy = results / "notebooks" / "01_study.failed.ipynb"
    assert failure.output == copy and copy.is_file()
    assert not (results / "notebooks" / "01_study.ipynb").exists()  # no good copy was made
    banner = nbformat.read(copy, as_version=4).cells[0]
    assert banner.cell_type == "markdown" and "This execution failed" in banner.source
    errors = [
        o
        for c in nbformat.read(copy, as_version=4).cells
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert [e.ename for e in errors] == ["ValueError"]
    assert (results / "html" / "01_study.failed.html").is_file()
    # cells before the failure did run; the later notebook did not
    assert json.loads((results / "out.json").read_text())["a"] == 13
    assert not (results / "notebooks" / "02_plain.ipynb").exists()


# ---------------------------------------------------------------------------------------------
# command line (no kernels: run_notebooks is replaced)
# ---------------------------------------------------------------------------------------------


def test_cli_wires_arguments_to_run_notebooks(repo, monkeypatch, capsys):
    calls = []

    def fake_run(notebooks, **kwargs):
        calls.append((notebooks, kwargs))
        return [Path("results/notebooks") / Path(nb).name for nb in notebooks]

    monkeypatch.setattr(runner, "run_notebooks", fake_run)
    nbdir = repo / "notebooks"
    code = runner.main(
        [
            "run",
            "02",
            "--notebooks-dir",
            str(nbdir),
            "--preset",
            "paper",
            "-p",
            "a",
            "3",
            "-p",
            "name",
            "cifar10",
            "--device",
            "cuda",
            "--results-dir",
            "out",
            "--no-html",
        ]
    )
    assert code == 0
    ((notebooks, kwargs),) = calls
    assert notebooks == [nbdir / "02_plain.ipynb"]
    assert kwargs == {
        "parameters": {"a": 3, "name": "cifar10"},
        "preset": "paper",
        "device": "cuda",
        "results_dir": "out",
        "html": False,
        "log_output": True,
    }
    assert "executed results/notebooks/02_plain.ipynb" in capsys.readouterr().out

    calls.clear()
    assert runner.main(["run", "--notebooks-dir", str(nbdir), "--quiet"]) == 0
    ((notebooks, kwargs),) = calls
    assert notebooks == [nbdir / "01_study.ipynb", nbdir / "02_plain.ipynb"]
    assert kwargs["parameters"] == {} and kwargs["preset"] is None and kwargs["html"] is True
    assert kwargs["log_output"] is False


def test_cli_exit_codes(repo, monkeypatch, capsys):
    nbdir = str(repo / "notebooks")
    # unknown parameter: exit 2, message lists the notebook's parameters, nothing executed
    code = runner.main(
        [
            "run",
            "01",
            "--notebooks-dir",
            nbdir,
            "-p",
            "epochs",
            "2",
            "--results-dir",
            str(repo / "results"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown parameter(s) ['epochs']" in err and "a, preset, results_dir" in err
    assert not (repo / "results").exists()
    # a name given twice is bad input too
    assert runner.main(["run", "01", "--notebooks-dir", nbdir, "-p", "a", "1", "-p", "a", "2"]) == 2
    assert "given twice" in capsys.readouterr().err

    # a failing notebook: exit 1 and its message on stderr
    def failing(notebooks, **kwargs):
        raise NotebookFailed("notebook 01_study.ipynb failed in cell 4", notebook=Path("x"))

    monkeypatch.setattr(runner, "run_notebooks", failing)
    assert runner.main(["run", "01", "--notebooks-dir", nbdir]) == 1
    assert "failed in cell 4" in capsys.readouterr().err
    # argparse rejects a preset outside the choices
    with pytest.raises(SystemExit):
        runner.main(["run", "--preset", "huge"])


def test_add_run_parser_registers_a_callable():
    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", "01", "02", "-p", "x", "[1, 2]"])
    assert args.notebooks == ["01", "02"] and args.parameter == [["x", "[1, 2]"]]
    assert callable(args.func) and args.preset is None and args.results_dir == "results"


def test_failed_rerun_keeps_the_last_good_copy(repo):
    results = repo / "results"
    nb = repo / "notebooks" / "01_study.ipynb"
    kw = dict(results_dir=results, html=True, log_output=False, progress_bar=False)
    run_notebooks([nb], parameters={"a": 1}, **kw)
    good = results / "notebooks" / "01_study.ipynb"
    before = good.read_bytes()
    page = (results / "html" / "01_study.html").read_bytes()
    with pytest.raises(NotebookFailed):
        run_notebooks([nb], parameters={"a": 13}, **kw)
    assert good.read_bytes() == before  # the good copy and its page are untouched
    assert (results / "html" / "01_study.html").read_bytes() == page
    assert (results / "notebooks" / "01_study.failed.ipynb").is_file()
    assert not list((results / "notebooks").glob(".*running*"))
    run_notebooks([nb], parameters={"a": 2}, **kw)  # a later success clears the failed copy
    assert not (results / "notebooks" / "01_study.failed.ipynb").exists()
    assert not (results / "html" / "01_study.failed.html").exists()
    assert good.read_bytes() != before


def test_interrupted_run_keeps_good_copy_and_marks_partial(repo, monkeypatch, capsys):
    import papermill

    results = repo / "results"
    nb = repo / "notebooks" / "01_study.ipynb"
    run_notebooks([nb], parameters={"a": 1}, results_dir=results, html=False, log_output=False)
    good = (results / "notebooks" / "01_study.ipynb").read_bytes()

    def interrupted(src, out, **kwargs):  # papermill leaves a copy whose cells look completed
        Path(out).write_text(Path(src).read_text())
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    capsys.readouterr()  # the first run's progress bar
    code = runner.main(["run", str(nb), "--results-dir", str(results), "--no-html"])
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted:")
    assert (results / "notebooks" / "01_study.ipynb").read_bytes() == good
    partial = nbformat.read(results / "notebooks" / "01_study.failed.ipynb", as_version=4)
    assert "This execution was interrupted" in partial.cells[0].source
