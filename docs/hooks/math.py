"""MkDocs hook: formulas become MathML at build time, so the site needs no script and no network.

pymdownx.arithmatex (generic mode) finds `$...$`, `$$...$$` and `\\begin{align*}...` and keeps them
out of Markdown's hands; this hook turns its `<span|div class="arithmatex">` into `<math>` with
latex2mathml, which browsers render natively (MathML Core). A formula that does not convert, or
leaves a LaTeX command or an alignment `&` unconverted (latex2mathml passes unknown commands through
as text, and `\\_` inside `\\text{}` too), is a warning: `mkdocs build --strict` fails on it.
"""

from __future__ import annotations

import html
import logging
import re

log = logging.getLogger("mkdocs.hooks.math")
MATH = re.compile(r'<(?P<tag>span|div) class="arithmatex">(?P<body>.*?)</(?P=tag)>', re.S)
DELIMITERS = re.compile(r"^\s*(\\\(|\\\[)(?P<tex>.*?)(\\\)|\\\])\s*$", re.S)
COLUMNALIGN = re.compile(r'<mtd columnalign="(left|right|center)"')
LEFTOVER = re.compile(r">[^<]*(\\(?:[A-Za-z]+|_)|&(?![#\w]+;))[^<]*<")  # \_ in \text{} stays a backslash


def to_mathml(tex: str, *, display: bool) -> str:
    """LaTeX -> a `<math>` element; raises ValueError when the conversion is incomplete."""
    from latex2mathml.converter import convert

    mathml = convert(tex, display="block" if display else "inline")
    leftover = LEFTOVER.search(mathml)
    if leftover:
        raise ValueError(f"unconverted {leftover.group(1)!r}")
    # MathML Core (what browsers render) has no `columnalign`: without CSS every cell of an `align*` is
    # centred and the `=` signs do not line up. The same alignment as a style, which browsers follow.
    return COLUMNALIGN.sub(r'<mtd columnalign="\1" style="text-align: \1"', mathml)


def on_page_content(content, page, config, files):
    def replace(match):
        body = html.unescape(match["body"])
        inner = DELIMITERS.match(body)
        tex = inner["tex"] if inner else body
        display = match["tag"] == "div"
        try:
            mathml = to_mathml(tex.strip(), display=display)
        except Exception as error:  # noqa: BLE001 (latex2mathml raises several kinds)
            log.warning(f"{page.file.src_uri}: formula {tex.strip()[:60]!r} does not convert: {error}")
            return match[0]
        return f'<div class="math">{mathml}</div>' if display else mathml

    return MATH.sub(replace, content)
