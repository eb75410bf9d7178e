"""The project documents its kernel facts in docs/: every page-and-anchor citation in the code,
tests and benchmarks resolves to a page and a heading, links between the pages resolve, and
nothing cites a document outside the repository (docs/README.md, Conventions)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
CITING_DIRS = ("lvsprobe", "tests", "bench")
# This file names the forbidden citations and holds broken ones on purpose.
SELF = Path(__file__).resolve()
SKIPPED_DIRS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
# A page under docs/ named from the repository root, with an optional heading anchor.
CITATION = re.compile(r"(?<![\w./-])docs/((?:[\w-]+/)*[\w.-]+\.md)(?:#([\w-]+))?")
# A Markdown link or image target: [text](target) or [text](target "title").
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# A repository path written as inline code in a page, e.g. `lvsprobe/analyze/memory.py`.
REPO_PATH = re.compile(r"`((?:lvsprobe|tests|bench)/[\w./-]*)`")
# Documents that live outside the repository, which the code once cited.
OUTSIDE = ("KERNEL-NOTES", "LVS-BEHAVIOUR-NOTES", "LVS-BEHAVIOR-NOTES", "../shared", "work/shared")
HEADING = re.compile(r"(#{1,6})[ \t]+(.*?)[ \t#]*$")
FENCE = re.compile(r"(```|~~~)")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lower-cased, punctuation other than `-`
    and `_` dropped, each blank turned into `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def headings(markdown: str) -> list[str]:
    """ATX headings (`## Title`) outside fenced code blocks, in order."""
    out: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        stripped = line.lstrip()
        opener = FENCE.match(stripped)
        if opener:
            if fence is None:
                fence = opener.group(1)
            elif fence == opener.group(1):
                fence = None
            continue
        if fence is None and not line.startswith((" ", "\t")):
            match = HEADING.fullmatch(line)
            if match:
                out.append(match.group(2))
    return out


def anchors(markdown: str) -> list[str]:
    """Every heading's anchor; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out: list[str] = []
    for heading in headings(markdown):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.append(slug if count == 0 else f"{slug}-{count}")
    return out


def citations(text: str) -> Iterator[tuple[str, str | None]]:
    """(page under docs/, anchor or None) for every docs citation in a text."""
    for match in CITATION.finditer(text):
        yield match.group(1), match.group(2)


def check_target(docs: Path, page: Path, anchor: str | None) -> str | None:
    """Why a page-and-anchor target does not resolve, or None when it does."""
    resolved = page.resolve()
    if not resolved.is_relative_to(docs.resolve()):
        return f"{page} is outside {docs}"
    if not resolved.is_file():
        return f"no page {resolved.relative_to(docs.resolve().parent)}"
    if anchor is not None and anchor not in anchors(resolved.read_text(encoding="utf-8")):
        return f"no heading with anchor #{anchor} in {resolved.relative_to(docs.parent)}"
    return None


def broken_citations(files: Iterable[Path], docs: Path) -> list[str]:
    """`file:line: docs/page.md#anchor: reason` for every citation that does not resolve."""
    problems: list[str] = []
    for path in files:
        for line_no, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
            for page, anchor in citations(line):
                reason = check_target(docs, docs / page, anchor)
                if reason:
                    cited = f"docs/{page}" + (f"#{anchor}" if anchor else "")
                    problems.append(f"{path}:{line_no}: {cited}: {reason}")
    return problems


def source_files(root: Path, dirs: Iterable[str]) -> list[Path]:
    """Every file under the given directories, caches left out."""
    out: list[Path] = []
    for name in dirs:
        for path in sorted((root / name).rglob("*")):
            cached = SKIPPED_DIRS.intersection(path.parts) or path.suffix == ".pyc"
            if path.is_file() and not cached and path.resolve() != SELF:
                out.append(path)
    return out


def doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


# --- the slug rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("ip_vs_conn", "ip_vs_conn"),
        ("Reading the connection table", "reading-the-connection-table"),
        ("Resolving the family loads ip_vs", "resolving-the-family-loads-ip_vs"),
        ("`/proc/net/ip_vs` (services)", "procnetip_vs-services"),
        ("[Link](x.md) and *emphasis*", "link-and-emphasis"),
        ("Failover: loss, 2 s lag", "failover-loss-2-s-lag"),
    ],
)
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_anchors_number_repeats_and_skip_code_blocks() -> None:
    page = "# Title\n## Eras\n```\n# not a heading\n```\n## Eras\n    # indented code\n"
    assert anchors(page) == ["title", "eras", "eras-1"]


def test_checker_reports_missing_pages_and_anchors(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "kernel").mkdir(parents=True)
    (docs / "kernel" / "page.md").write_text("# Page\n## Real heading\n")
    code = tmp_path / "mod.py"
    code.write_text(
        '"""See docs/kernel/page.md#real-heading and docs/kernel/page.md."""\n'
        "# docs/kernel/page.md#gone, docs/kernel/other.md#x\n"
    )
    problems = broken_citations([code], docs)
    assert len(problems) == 2
    assert "#gone" in problems[0] and "no heading" in problems[0]
    assert "docs/kernel/other.md#x" in problems[1] and "no page" in problems[1]


# --- the repository ---------------------------------------------------------------------


def test_every_cited_docs_anchor_resolves() -> None:
    files = source_files(REPO, CITING_DIRS)
    cited = [c for path in files for c in citations(path.read_text(encoding="latin-1"))]
    assert cited, "no docs/ citation found at all: the scan is looking in the wrong place"
    assert broken_citations(files, DOCS) == []


def test_links_between_pages_resolve() -> None:
    problems = []
    for page in doc_pages():
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z+.-]*:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            reason = check_target(DOCS, page.parent / path if path else page, anchor or None)
            if reason:
                problems.append(f"{page.relative_to(REPO)}: ({target}): {reason}")
    assert problems == []


def test_headings_are_unique_within_a_page() -> None:
    """Citations name anchors: a repeated heading would get a position-dependent `-1`."""
    repeated = {}
    for page in doc_pages():
        slugs = [github_slug(h) for h in headings(page.read_text(encoding="utf-8"))]
        dupes = sorted({s for s in slugs if slugs.count(s) > 1})
        if dupes:
            repeated[str(page.relative_to(REPO))] = dupes
    assert repeated == {}


def test_repository_paths_named_in_pages_exist() -> None:
    missing = [
        f"{page.relative_to(REPO)}: {name}"
        for page in doc_pages()
        for name in REPO_PATH.findall(page.read_text(encoding="utf-8"))
        if not (REPO / name).exists()
    ]
    assert missing == []


def test_nothing_cites_documents_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{line_no}: {marker}"
        for path in source_files(REPO, CITING_DIRS)
        for line_no, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1)
        for marker in OUTSIDE
        if marker in line
    ]
    assert offenders == []
