"""The documentation's links resolve: every relative link in the README, DEVELOPERS.md, experiments/README.md
and docs/*.md names a file that exists and, with `#anchor`, a heading of that file (GitHub's slugs). Also: the
README stays short, and every page in docs/ is linked from it."""

from __future__ import annotations

import pathlib
import re
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
README_MAX_LINES = 320

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+).*?\1")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def documents() -> list[pathlib.Path]:
    names = ["README.md", "DEVELOPERS.md", "experiments/README.md"]
    return [ROOT / name for name in names] + sorted((ROOT / "docs").glob("*.md"))


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans removed."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(_CODE_SPAN.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    """Every heading's anchor in `path`, repeated headings numbered as GitHub does (`name`, `name-1`, ...)."""
    seen: dict[str, int] = {}
    result = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(path: pathlib.Path) -> list[str]:
    """The link targets in `path`'s prose (images included), in order."""
    return [match.group(1) for line in prose_lines(path.read_text(encoding="utf-8")) for match in _LINK.finditer(line)]


def broken_links(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """`path`'s relative links whose file or anchor does not exist, each as 'FILE: TARGET (why)', FILE relative
    to `root`."""
    problems = []
    for target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / urllib.parse.unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(root)}: {target}"
        if not destination.exists():
            problems.append(f"{where} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{where} (no heading #{anchor} in {destination.name})")
    return problems


def test_every_relative_link_resolves():
    problems = [problem for path in documents() for problem in broken_links(path)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/ (at most {README_MAX_LINES})"


def test_every_docs_page_is_linked_from_the_readme():
    readme = ROOT / "README.md"
    linked = {(readme.parent / target.partition("#")[0]).resolve() for target in links(readme)}
    missing = [page.name for page in sorted((ROOT / "docs").glob("*.md")) if page.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


def test_the_checker_finds_broken_files_and_anchors(tmp_path):
    other = "# Other page\n\n## Summary: parameters, MACs & `shapes`\n\n## Repeat\n## Repeat\n"
    (tmp_path / "other.md").write_text(other)
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n"
        "[ok](other.md) [ok](other.md#summary-parameters-macs--shapes) [ok](other.md#repeat-1) [ok](#page)\n"
        "[web](https://example.com/missing) `[code](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) ![image](missing.png) [here](#nowhere)\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "page.md: missing.md (no such file)",
        "page.md: other.md#nowhere (no heading #nowhere in other.md)",
        "page.md: missing.png (no such file)",
        "page.md: #nowhere (no heading #nowhere in page.md)",
    ]
