"""Markdown pages as standalone HTML for a documentation site, rendered by markdown-it-py (CommonMark and tables).

Raw HTML in the Markdown is not passed through: a plugin's description or a field's
text is shown as text, escaped, whatever it holds, and links keep markdown-it's own
check (no ``javascript:``). Headings get the ids GitHub gives them, so the pages' own
links (``#paths-jsonpath-and-jmespath``) work on the site too.
"""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore

_STYLE = """body{font-family:system-ui,sans-serif;line-height:1.5;max-width:72rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
code{background:#f4f4f4;padding:0 .2rem}pre{background:#f4f4f4;padding:.6rem;overflow-x:auto}pre code{padding:0}"""


def _slug(text: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def _heading_ids(state: StateCore) -> None:
    seen: dict[str, int] = {}
    tokens = state.tokens
    for index, token in enumerate(tokens):
        if token.type != "heading_open":
            continue
        slug = _slug("".join(child.content for child in tokens[index + 1].children or () if child.type in ("text", "code_inline")))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        token.attrSet("id", slug if count == 0 else f"{slug}-{count}")


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
_MARKDOWN.core.ruler.push("heading_ids", _heading_ids)


def _title(markdown: str) -> str:
    heading = re.search(r"^# (.+)$", markdown, re.M)
    return heading.group(1).replace("`", "") if heading else "actionmap"


def html_page(markdown: str) -> str:
    """One standalone HTML document of the page: its first heading as the title, everything escaped."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(_title(markdown))}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n"
        f"{_MARKDOWN.render(markdown)}</main>\n</body>\n</html>\n"
    )
