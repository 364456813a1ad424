"""The documentation site's checks beyond the strict build itself (`hatch run checks:docs`):
the hook maps the READMEs' links onto the site's pages, and a broken link or anchor in a
README fails the strict build, naming it (so the build in ./dev test does check them).

Run by `hatch run checks:docs-test` (mkdocs and the plugins installed)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dispy_docs_hooks", ROOT / "docs" / "hooks.py")
assert _spec is not None and _spec.loader is not None
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)


@pytest.mark.parametrize("page, link, expected", [
    # another README, with and without a section of it
    ("index.md", "../packages/dispy-node/README.md#options", "daemons/dispynode.md#options"),
    ("guide/clients.md", "../../README.md", "../index.md"),
    # a section of the root README that has a page of its own: its top
    ("daemons/dispynode.md", "../../README.md#manage-nodes-from-a-browser-dispyadmin", "dispyadmin.md"),
    ("guide/nodes.md", "../../SECURITY.md#making-a-secret", "../security.md#making-a-secret"),
    # a section of the same README that landed on another page
    ("guide/shared.md", "#watch-the-cluster-in-a-browser", "monitor.md"),
])
def test_links_to_readmes_go_to_the_pages_that_show_them(page, link, expected):
    assert hooks._target(page, link, set()) == expected


@pytest.mark.parametrize("page, link", [
    ("guide/monitor.md", "../img/monitor.png"),            # in docs/ already
    ("index.md", "https://dispy.org"),                     # a URL
    ("guide/shared.md", "#watch-the-cluster-in-a-browser"),  # a heading of this page (below)
    ("index.md", "../examples/demo.py"),                   # not in the table: strict fails on it
])
def test_other_links_are_left_alone(page, link):
    assert hooks._target(page, link, {"watch-the-cluster-in-a-browser"}) is None


def test_sphinx_roles_are_dropped_from_the_api_pages():
    assert hooks.on_page_content("see :meth:<code>submit</code> and :class:<code>DispyJob</code>") == \
        "see <code>submit</code> and <code>DispyJob</code>"


def test_a_broken_readme_link_fails_the_strict_build(tmp_path):
    """The same build as `checks:docs`, on a copy of the sources whose node README links
    to a section that does not exist and to a file outside the site."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "docs", tree / "docs")
    for name in ("mkdocs.yml", "README.md", "SECURITY.md"):
        shutil.copy(ROOT / name, tree / name)
    for package in (ROOT / "packages").iterdir():
        if (package / "README.md").exists():
            shutil.copytree(package, tree / "packages" / package.name,
                            ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info"))
    readme = tree / "packages" / "dispy-node" / "README.md"
    readme.write_text(readme.read_text() + "\nSee [the options](#no-such-section) and [a file](../../hatch.toml).\n")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=tree, capture_output=True, text=True, timeout=170, env=env)
    assert p.returncode != 0
    assert "'daemons/dispynode.md' contains a link '#no-such-section'" in p.stderr, p.stderr
    assert "'../../hatch.toml'" in p.stderr, p.stderr


def test_hash_colon_comments_document_attributes_in_the_reference():
    import griffe

    extensions = griffe.load_extensions(str(ROOT / "docs" / "griffe_comments.py"))
    config = griffe.load("dispy_core.config", search_paths=[str(ROOT / "packages" / "dispy-core" / "src")],
                         extensions=extensions)
    doc = config["DispyPort"].docstring
    assert doc is not None and doc.value.startswith("Base of the port family")
    # a name documented by its own docstring keeps it
    assert config["node_port"].docstring.value.startswith("The node's port")
