"""MkDocs hook: render Sphinx-style roles left in docstrings (``:class:`X```) as code.

The docstrings use Google style, but some cross-references are written the Sphinx way,
e.g. ``:meth:`velora_ens.wiring.Wiring.data```. mkdocstrings renders those as the literal
role followed by code. This hook drops the role; a fully qualified target becomes an
optional mkdocs-autorefs link (resolved if the object is documented, plain code otherwise,
never a warning). It runs at build time only and needs no network access.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(
    r":(?:py:)?(?:class|meth|func|mod|attr|obj|data|exc|const):<code>(?P<target>[^<]+)</code>"
)


def _replace(match: re.Match[str]) -> str:
    target = match.group("target").strip()
    short = target.startswith("~")
    target = target.lstrip("~")
    title = target.rsplit(".", 1)[-1] if short else target
    if "." not in target:
        return f"<code>{title}</code>"
    return f'<autoref identifier="{target}" optional><code>{title}</code></autoref>'


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(_replace, html)
