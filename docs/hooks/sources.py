"""MkDocs hook: source pages for purenet's files, and checked links to them.

Every `purenet/**/*.py` becomes a page `code/purenet/.../file.py.md` (highlighted, numbered lines, an
anchor per line `L-12` and per function or class by its qualified name: `#Dense`, `#Dense.vjp.pullback`,
`#_conv_input_grad`). A Markdown link from a page to a repository file, written as it reads on GitHub
(`[conv.py](../../purenet/layers/conv.py#_conv_input_grad)`), is rewritten to that page; a link to a
file that does not exist, or to a function the file does not define, is a warning, so strict mode fails.
"""

from __future__ import annotations

import ast
import functools
import html
import logging
import posixpath
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("purenet",)
log = logging.getLogger("mkdocs.hooks.sources")
LINK = re.compile(r"\]\((?P<target>[^)\s#]+\.py)(?:#(?P<anchor>[\w.-]+))?\)")


@functools.cache  # by the source text: a file is parsed once per build, not once per link to it
def definitions(source: str) -> dict[str, int]:
    """qualified name -> line, for every function and class of a module (nested ones dotted); the dict is
    cached, not to be changed."""
    out = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                out.setdefault(name, child.lineno)
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


PLACEHOLDER = "PURENET-SOURCE-LISTING"
_listings: dict[str, str] = {}  # src_uri of a source page -> its file's path, highlighted in on_page_content


def _highlight(source: str) -> tuple[str, set[str]]:
    """The file as numbered, highlighted HTML, and its anchors (`L-12`, and functions by qualname)."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    body = highlight(source, PythonLexer(), HtmlFormatter(linenos="inline", linespans="L", wrapcode=True))
    anchors = {f"L-{i}" for i in range(1, source.count("\n") + 2)}
    for name, line in definitions(source).items():
        marker = f'<span id="L-{line}">'
        body = body.replace(marker, f'<span id="{html.escape(name)}"></span>' + marker, 1)
        anchors.add(name)
    return body.replace('<div class="highlight">', '<div class="highlight source-file">', 1), anchors


def on_files(files, config):
    from mkdocs.structure.files import File

    _listings.clear()
    for top in SOURCE_ROOTS:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            names = sorted(definitions(path.read_text()).items(), key=lambda kv: kv[1])
            index = ", ".join(f"[`{n}`](#{n})" for n, _ in names if "." not in n)
            # The listing bypasses Markdown (its parser is slow on this much HTML): on_page_content puts it in.
            content = (f"---\nsearch:\n  exclude: true\nhide:\n  - toc\n---\n\n# `{rel}`\n\nDefines: {index or 'nothing'}.\n\n"
                       f"{PLACEHOLDER}\n")
            src_uri = f"code/{rel}.md"
            _listings[src_uri] = str(path)
            files.append(File.generated(config, src_uri, content=content))
    return files


def on_page_content(content, page, config, files):
    path = _listings.get(page.file.src_uri)
    if path is None:
        return content
    body, anchors = _highlight(Path(path).read_text())
    page.present_anchor_ids = (page.present_anchor_ids or set()) | anchors  # for MkDocs' anchor validation
    return content.replace(f"<p>{PLACEHOLDER}</p>", body)


def on_page_markdown(markdown, page, config, files):
    src_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(match):
        target, anchor = match["target"], match["anchor"]
        if "://" in target:
            return match[0]
        # The link as it reads on GitHub: relative to the page's folder inside docs/.
        docs_rel = posixpath.normpath(posixpath.join("docs", src_dir, target))
        repo_path = ROOT / docs_rel
        if docs_rel.startswith("..") or not repo_path.is_file():
            log.warning(f"{page.file.src_uri}: link to {target} ({docs_rel}), which does not exist")
            return match[0]
        if not docs_rel.startswith(SOURCE_ROOTS):
            return match[0]
        if anchor and not re.fullmatch(r"L-\d+", anchor) and anchor not in definitions(repo_path.read_text()):
            log.warning(f"{page.file.src_uri}: link to {docs_rel}#{anchor}, which defines no '{anchor}'")
        page_path = posixpath.relpath(f"code/{docs_rel}.md", src_dir or ".")
        return f"]({page_path}{'#' + anchor if anchor else ''})"

    return LINK.sub(rewrite, markdown)
