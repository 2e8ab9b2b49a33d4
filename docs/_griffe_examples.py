"""A griffe extension for the API reference: reads an `Example:` section as griffe's `Examples:`.

The docstrings follow the Google style guide, which titles the section `Example:`; griffe only
recognizes the plural, and would render the doctest lines as prose (their `[...]` outputs as
broken cross-references).
"""

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Renames each docstring's `Example:` section to `Examples:` before griffe parses it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrites the section title of `obj`'s docstring, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
