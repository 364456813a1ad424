"""mkdocs hook: links in the included READMEs that point at files outside docs/.

The site's pages include the READMEs and SECURITY.md (mkdocs-include-markdown-plugin),
which rewrites their relative links to be relative to the including page. A link to a
file that is itself part of docs/ (an image, a design note) then just works; a link to
another README (``packages/dispy-node/README.md#options``) points outside docs/, and is
rewritten here to the page that includes that README. A link to a section that lives on
another page than its file's default (the root README is split over several pages) is
looked up with its anchor first and then goes to the top of that page.

A link to a file outside docs/ that is not in the table is left alone, so
``mkdocs build --strict`` fails on it: add the file here, or link to a page.

The docstrings cross-reference with Sphinx roles (``:class:`DispyJob```), which the API
reference (mkdocstrings, Markdown) renders as ``:class:`` before the name in code: the
role is dropped from the page (:func:`on_page_content`), leaving the name in code.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

# repo path (or "repo path#anchor") -> the page that shows it
PAGES: dict[str, str] = {
    "README.md": "index.md",
    "README.md#running-nodes": "guide/nodes.md",
    "README.md#watch-the-cluster-in-a-browser": "guide/monitor.md",
    "README.md#manage-nodes-from-a-browser-dispyadmin": "daemons/dispyadmin.md",
    "README.md#sharing-nodes-between-programs-dispyscheduler-and-sharedjobcluster": "guide/shared.md",
    "README.md#nodes-on-another-network": "guide/networks.md",
    "README.md#development": "development.md",
    # the site's own source, as the README names it: the page that says how to build it
    "mkdocs.yml": "development.md#documentation-site",
    "docs": "development.md#documentation-site",
    "README.md#documentation-site": "development.md#documentation-site",
    "SECURITY.md": "security.md",
    "packages/dispy-client/README.md": "guide/clients.md",
    "packages/dispy-node/README.md": "daemons/dispynode.md",
    "packages/dispy-scheduler/README.md": "daemons/dispyscheduler.md",
    "packages/dispy-relay/README.md": "daemons/dispynetrelay.md",
    "packages/dispy-core/README.md": "daemons/dispy-core.md",
}

_LINK = re.compile(r"(\]\()([^)\s]+)(\))")
_ROLE = re.compile(r":(?:class|meth|func|mod|data|attr|exc|obj):(?=<code)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def _slug(text: str) -> str:
    """GitHub's anchor for a heading (the site is configured with the same slugs)."""
    text = re.sub(r"[^\w\- ]", "", text.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def _target(page_src: str, link: str, own_anchors: set[str]) -> str | None:
    """The link to use instead of ``link`` on the page ``page_src`` (relative to docs/), or
    None to keep it."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", link) or link.startswith("/"):
        return None  # a URL (http:, mailto:), or absolute: not ours to map
    path, _, anchor = link.partition("#")
    if not path:
        # A section of the same README that ended up on another page.
        if anchor in own_anchors:
            return None
        page = next((p for key, p in PAGES.items() if key.endswith("#" + anchor)), None)
        return None if page is None else posixpath.relpath(page, posixpath.dirname(page_src) or ".")
    repo_path = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_src), path))
    if repo_path.startswith("docs/"):
        return None  # part of the site already
    if anchor and f"{repo_path}#{anchor}" in PAGES:
        page, anchor = PAGES[f"{repo_path}#{anchor}"], ""
    elif repo_path in PAGES:
        page = PAGES[repo_path]
    else:
        return None
    rel = posixpath.relpath(page, posixpath.dirname(page_src) or ".")
    return rel + (f"#{anchor}" if anchor else "")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    src = page.file.src_uri
    own = {_slug(h) for h in _HEADING.findall(markdown)}

    def replace(m: re.Match[str]) -> str:
        new = _target(src, m.group(2), own)
        return m.group(0) if new is None else m.group(1) + new + m.group(3)

    return _LINK.sub(replace, markdown)


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub("", html)
