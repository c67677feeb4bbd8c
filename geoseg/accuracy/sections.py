"""Sections added to a finished ``report.html`` (objects, area estimates) by a later stage or command.

Why one function: each section sits between its own begin/end comments, so adding it again (a rerun)
replaces it instead of adding a copy, and the page is rewritten atomically.
"""

from __future__ import annotations

from pathlib import Path

from geoseg.io.atomic import write_text_atomic


def put_section(report: str | Path, begin: str, end: str, html: str) -> Path:
    """Put ``html`` between ``begin`` and ``end`` into ``report``: in place of an earlier copy, else
    before ``</body>``, else at the end."""
    path = Path(report)
    page = path.read_text(encoding="utf-8")
    section = f"{begin}\n{html}{end}\n"
    if begin in page and end in page:
        head, rest = page.split(begin, 1)
        page = head + section + rest.split(end, 1)[1].lstrip("\n")
    elif "</body>" in page:
        head, tail = page.rsplit("</body>", 1)
        page = head + section + "</body>" + tail
    else:
        page += section
    return write_text_atomic(path, page)
