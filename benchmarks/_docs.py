"""What the benchmark scripts share for their docs: rewrite one marked section of a Markdown file."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(doc: Path, begin: str, end: str, body: str, heading: str | None = None) -> None:
    """Replace what stands between the markers ``begin`` and ``end`` in ``doc`` with ``body``.

    Without the markers, the block is appended under ``heading`` (an error when there is none).
    """
    text = doc.read_text() if doc.exists() else ""
    block = f"{begin}\n{body}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    elif heading is not None:
        text += f"\n{heading}\n\n{block}\n"
    else:
        raise SystemExit(f"{doc}: no {begin} … {end} section to rewrite")
    doc.write_text(text)
