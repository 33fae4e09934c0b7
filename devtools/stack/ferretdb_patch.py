"""Our patch to FerretDB's source, applied before every build of the binary.

FerretDB v1.24.2 bug: ``$group`` hands ONE iterator over the group's documents to every
accumulator in turn, so the first accumulator consumes it and every later one sees no documents
(``{"a": {"$sum": "$a"}, "n": {"$sum": 1}}`` -> ``n == 0``). MongoDB (and the compose deployment)
give each accumulator all documents; the processor's rollups rely on that. The fix: a fresh
iterator per accumulator. ``tests/integration/test_stack_mongo.py`` checks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from devtools.stack.console import say
from devtools.stack.errors import StackError

__all__ = ["FERRETDB_PACKAGE", "FERRETDB_PATCHES", "apply_patches"]

# Recorded in the binary (`ferretdb --version` -> "package: ..."); a cached binary without it is
# rebuilt. Bump it whenever FERRETDB_PATCHES changes.
FERRETDB_PACKAGE: Final = "local-stack+group-accumulators-fix"

# (path inside the module, upstream text, patched text)
FERRETDB_PATCHES: Final = (
    (
        "internal/handler/common/aggregations/stages/group.go",
        """\
		groupIter := iterator.Values(iterator.ForSlice(groupedDocument.documents))
		defer groupIter.Close()

		for _, accumulation := range g.groupBy {
			out, err := accumulation.accumulator.Accumulate(groupIter)
""",
        """\
		for _, accumulation := range g.groupBy {
			// local-stack patch: a fresh iterator per accumulator (upstream shares one).
			groupIter := iterator.Values(iterator.ForSlice(groupedDocument.documents))
			out, err := accumulation.accumulator.Accumulate(groupIter)
			groupIter.Close()
""",
    ),
)


def apply_patches(src: Path) -> None:
    """Patch the FerretDB source tree *src* in place; fail if upstream text moved."""
    for relpath, upstream, patched in FERRETDB_PATCHES:
        path = src / relpath
        text = path.read_text()
        if text.count(upstream) != 1:
            raise StackError(f"FerretDB patch does not apply: {relpath} changed upstream")
        path.write_text(text.replace(upstream, patched))
        say(f"    patched {relpath} ($group: one iterator per accumulator)")
