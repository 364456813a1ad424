"""griffe extension for the API reference: ``#:`` comments document attributes.

The sources document module attributes the Sphinx way, with ``#:`` comment lines just
above the assignment (``dispy_core.config``). griffe reads only docstrings, so without
this the reference would list those names with no text."""

from __future__ import annotations

from typing import Any

from griffe import Attribute, Docstring, Extension


class HashColonComments(Extension):
    def on_attribute_instance(self, *, attr: Attribute, **_: Any) -> None:
        if attr.docstring is not None or attr.lineno is None or isinstance(attr.filepath, list):
            return
        filepath = attr.filepath
        lines = attr.lines_collection[filepath] if filepath in attr.lines_collection else []
        comment: list[str] = []
        i = attr.lineno - 2  # the line above the assignment (lineno is 1-based)
        while i >= 0 and lines[i].lstrip().startswith("#:"):
            comment.insert(0, lines[i].lstrip()[2:].strip())
            i -= 1
        if comment:
            attr.docstring = Docstring("\n".join(comment), parent=attr)
