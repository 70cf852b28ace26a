"""docs/method.md, the study's specification: its sections, and every reference to them.

Checks that every citation ``docs/method.md §N`` (also ``method.md §N-M`` and ``method.md §N, §M``)
in a tracked text file names a section that exists, that no tracked file points at material outside
the repository, and that the specification keeps its numbered headings and source markers.
No torch needed.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "method.md"
SELF = Path(__file__).resolve()

#: the headings other files cite, in order (docs/method.md must keep them verbatim)
HEADINGS: tuple[str, ...] = (
    "## §1 The question and the claims C1-C4",
    "## §2 The paper's figures",
    "## §3 The estimator: normalized HSIC (NOCCO)",
    "## §4 Theory: the soft-nearest-neighbour loss and HSIC(Y;Z)",
    "## §5 The toy model",
    "## §6 Models and their blocks",
    "## §7 Training methods",
    "## §8 Hyperparameters and presets",
    "## §9 Linear probes",
    "## §10 Measurement as its own stage",
    "## §11 Defects of the authors' public code that this study avoids",
    "## §12 The primary analysis: one contrast per claim, effects with intervals",
    "## §13 Reproducibility: one machine, several machines",
    "## §14 The critiques of the information plane",
)
TITLE = "# The ibstudy method"
MARKERS: tuple[str, ...] = ("[paper", "[ours]", "[authors' code]")
#: strings that point outside the repository (built in pieces so this file does not contain them)
FORBIDDEN: tuple[str, ...] = ("paper" + "_spec", ".." + "/shared")

# One cited item: "§3" or a range "§4-5" / "§4–5" / "§4-§5".
_ITEM = r"§\s*\d+(?:\s*[-–]\s*§?\s*\d+)?"
# "method.md" (optionally closed by a backtick, e.g. `docs/method.md` §3), then a list of items
# separated by commas, "and", "or", "&" or ", and".
_SEP = r"\s*(?:,\s*(?:and|or)?|and|or|&)\s*"
_CITATION = re.compile(rf"method\.md`?\s*({_ITEM}(?:{_SEP}{_ITEM})*)")
_ITEM_PARTS = re.compile(r"§\s*(\d+)(?:\s*[-–]\s*§?\s*(\d+))?")
_HEADING = re.compile(r"^## §(\d+) ", re.MULTILINE)


def parse_citations(text: str) -> list[tuple[int, int]]:
    """``(line, section)`` for every section cited after ``method.md`` in ``text`` (ranges expanded).

    JSON-escaped section signs (``\\u00a7``, as a notebook may store them) are read as ``§``.
    """
    text = text.replace("\\u00a7", "§")
    found: list[tuple[int, int]] = []
    for match in _CITATION.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        for item in _ITEM_PARTS.finditer(match.group(1)):
            first = int(item.group(1))
            last = int(item.group(2)) if item.group(2) else first
            lo, hi = min(first, last), max(first, last)
            found.extend((line, n) for n in range(lo, hi + 1))
    return found


def cited_sections(text: str) -> set[int]:
    """The set of section numbers cited in ``text``."""
    return {n for _, n in parse_citations(text)}


@cache
def tracked_text_files() -> tuple[tuple[str, str], ...]:
    """``(relative path, text)`` of every tracked file that exists and reads as UTF-8 text."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc}); tracked files unknown")
    files = []
    for raw in out.split(b"\0"):
        if not raw:
            continue
        rel = raw.decode("utf-8", errors="surrogateescape")
        path = ROOT / rel
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary
        try:
            files.append((rel, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue  # binary or another encoding: not a place for citations
    return tuple(files)


def repository_citations() -> list[tuple[str, int, int]]:
    """``(path, line, section)`` for every citation in the tracked files (method.md and this file
    excluded: the first is the cited document, the second holds parser examples)."""
    skip = {DOC.resolve(), SELF}
    return [
        (rel, line, n)
        for rel, text in tracked_text_files()
        if (ROOT / rel).resolve() not in skip
        for line, n in parse_citations(text)
    ]


def doc_text() -> str:
    assert DOC.is_file(), f"{DOC.relative_to(ROOT)} is missing"
    return DOC.read_text(encoding="utf-8")


def doc_sections() -> dict[int, str]:
    """Section number -> its text (heading line to the next numbered heading)."""
    text = doc_text()
    starts = [(int(m.group(1)), m.start()) for m in _HEADING.finditer(text)]
    ends = [s for _, s in starts[1:]] + [len(text)]
    return {n: text[s:e] for (n, s), e in zip(starts, ends, strict=True)}


# ------------------------------------------------------------------------------------------------
# the citation parser itself
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see docs/method.md §3 and method.md §6, §9", {3, 6, 9}),
        ("(docs/method.md §4-5)", {4, 5}),
        ("docs/method.md §4–6 and §8", {4, 5, 6, 8}),
        ("`docs/method.md` §10", {10}),
        ("docs/method.md §2-§3, §11.", {2, 3, 11}),
        ("docs/method.md §1, §2, and §8", {1, 2, 8}),
        ("method.md§7", {7}),
        ("docs/method.md \\u00a71", {1}),
        ("docs/method.md, section 3", set()),
        ("§3 of some other file", set()),
        ("see method.md for details; §4 elsewhere", set()),
    ],
)
def test_citation_parser(text: str, expected: set[int]) -> None:
    assert cited_sections(text) == expected


def test_citation_parser_reports_lines() -> None:
    text = "line one\nsee docs/method.md §3\nand docs/method.md\n§5, §6\n"
    assert parse_citations(text) == [(2, 3), (3, 5), (3, 6)]


# ------------------------------------------------------------------------------------------------
# the repository against the document
# ------------------------------------------------------------------------------------------------
def test_repository_cites_method_sections() -> None:
    """Guards the collector: a broken pattern would otherwise make the next test pass vacuously."""
    cites = repository_citations()
    assert cites, (
        "no tracked file cites docs/method.md §N: either the citations were removed or the "
        "collector's pattern no longer matches them"
    )


def test_every_cited_section_exists() -> None:
    existing = set(doc_sections())
    missing = [
        f"{rel}:{line}: cites docs/method.md §{n}, which has no heading '## §{n} '"
        for rel, line, n in repository_citations()
        if n not in existing
    ]
    assert not missing, "citations of missing sections:\n" + "\n".join(missing)


def test_no_reference_to_material_outside_the_repository() -> None:
    files = list(tracked_text_files())
    if DOC.is_file() and str(DOC.relative_to(ROOT)) not in {rel for rel, _ in files}:
        files.append((str(DOC.relative_to(ROOT)), DOC.read_text(encoding="utf-8")))
    hits = [
        f"{rel}:{number}: {bad!r}: {line.strip()[:120]}"
        for rel, text in files
        for number, line in enumerate(text.splitlines(), start=1)
        for bad in FORBIDDEN
        if bad in line
    ]
    assert not hits, (
        "files refer to material outside the repository (cite docs/method.md §N instead):\n"
        + "\n".join(hits)
    )


# ------------------------------------------------------------------------------------------------
# the document's own structure
# ------------------------------------------------------------------------------------------------
def test_title_comes_first() -> None:
    first = doc_text().lstrip().splitlines()[0]
    assert first == TITLE, f"docs/method.md must start with {TITLE!r}, got {first!r}"


def test_headings_in_order() -> None:
    numbers = [int(m.group(1)) for m in _HEADING.finditer(doc_text())]
    assert numbers == list(range(1, len(HEADINGS) + 1)), (
        f"numbered headings must be §1..§{len(HEADINGS)} once each, in order; got {numbers}"
    )
    found = [line.rstrip() for line in doc_text().splitlines() if _HEADING.match(line)]
    diffs = [
        f"  expected {want!r}, got {got!r}"
        for want, got in zip(HEADINGS, found, strict=True)
        if want != got
    ]
    assert not diffs, "headings differ from the ones other files cite:\n" + "\n".join(diffs)


def test_every_section_marks_its_sources() -> None:
    unmarked = [
        f"§{n}" for n, body in doc_sections().items() if not any(m in body for m in MARKERS)
    ]
    assert not unmarked, f"sections without a source marker {list(MARKERS)}: {unmarked}"


def test_the_power_table_is_what_paired_power_gives():
    from ibstudy.estimates import paired_power

    text = (ROOT / "docs" / "method.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| α = 0.05")]
    header = next(line for line in text.splitlines() if line.startswith("| d | 0.5"))
    ds = [float(v) for v in header.strip("|").split("|")[1:]]
    assert len(rows) == 2 and len(ds) == 6
    for line, alpha in zip(rows, (0.05, 0.05 / 6), strict=True):
        values = [float(v) for v in line.strip("|").split("|")[1:]]
        assert values == [round(paired_power(d, 5, alpha), 3) for d in ds]
