"""Where a streaming answer may be frozen into a finished display block, for every format.

The renderer shows an answer as a column of append-only displays: finished blocks that are never
sent again, and one live tail that is updated as text arrives. A *clean* cut is one where rendering
the two sides separately gives the same result as rendering the whole (Markdown: a blank line outside
a code fence that no list item or indented text continues, around an ATX heading, after a closing
fence; text: a line break between two non-empty lines). When a block grows past `hard` characters
with no clean cut, a *dirty* cut (a line break, inside a fence too, else a space) keeps traffic
linear; the renderer then replaces the blocks with one final render when the answer ends.
"""
from __future__ import annotations

import re

from .records import record

SOFT = 400     # freeze at the last clean cut once the live tail is this long
HARD = 1000    # past this, freeze at a dirty cut when there is no clean one

_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_LIST_OR_INDENT = re.compile(r"^(?:[ \t]|[-*+][ \t]|\d{1,9}[.)][ \t]|>)")
_HEADING = re.compile(r"^#{1,6}(?:[ \t]|$)")
_LIST_ITEM = re.compile(r"^ {0,3}(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)")
_SHALLOW = re.compile(r"^ {1,3}(?![ \t]|[-*+][ \t]|\d{1,9}[.)][ \t]|>)\S")  # a paragraph indented 1-3 spaces


@record
class Cut:
    offset: int          # absolute offset in the answer where the next block starts
    clean: bool
    fence: str | None    # the fence line open at the cut (the next block renders it first), or None
    list_open: bool = False  # a list may still be open at the cut (an indented next line may belong to it)


class Segmenter:
    """Tracks code fences from the start of the live tail and finds freezing points in it.

    `fmt`: "markdown" (also used for code) finds Markdown-clean cuts; "text" cuts between lines;
    "lines" (json, html: shown inside a fence while live) only ever cuts dirty at line breaks.
    """

    def __init__(self, fmt: str = "markdown", *, soft: int = SOFT, hard: int = HARD):
        self.fmt = fmt
        self.soft = soft
        self.hard = hard
        self.start = 0            # offset where the live tail starts
        self.fence: str | None = None   # the fence open at `start` (markdown)
        self.list_open = False          # a list item was seen and nothing since has closed the list

    def find(self, text: str, upto: int | None = None) -> Cut | None:
        """A cut in text[start:upto] when the tail is long enough, else None. Does not move `start`."""
        upto = len(text) if upto is None else upto
        size = upto - self.start
        if size < self.soft:
            return None
        if self.fmt == "text":
            return self._text_cut(text, upto, size)
        if self.fmt == "lines":
            return self._dirty(text, upto) if size >= self.hard else None
        return self._markdown_cut(text, upto, size)

    def advance(self, cut: Cut) -> None:
        """The caller drops text[:cut.offset] (the tail restarts at 0); remember the fence open there."""
        self.fence = cut.fence
        self.list_open = cut.list_open

    # ---- text: between two non-empty lines, so neither side starts or ends with a blank line ----
    def _text_cut(self, text: str, upto: int, size: int) -> Cut | None:
        i = text.rfind("\n", self.start + 1, upto - 1)
        while i > self.start:
            if text[i - 1] != "\n" and text[i + 1] != "\n":
                return Cut(i + 1, True, None)
            i = text.rfind("\n", self.start + 1, i)
        return self._dirty(text, upto) if size >= self.hard else None

    # ---- markdown ----
    def _markdown_cut(self, text: str, upto: int, size: int) -> Cut | None:
        fence = self.fence
        best: Cut | None = None
        last_line_cut: Cut | None = None
        pos = self.start
        in_list = self.list_open
        prev_blank = False
        while True:
            nl = text.find("\n", pos, upto)
            if nl < 0:
                break
            line = text[pos:nl]
            next_pos = nl + 1
            # the line after this one must have begun for a cut before it to be judged
            nxt_end = text.find("\n", next_pos, upto)
            nxt = text[next_pos:upto if nxt_end < 0 else nxt_end]
            if nxt_end < 0 and len(nxt) < 12:
                nxt = ""   # too little of the next line to tell a list item or indent from a paragraph
            if fence is not None:
                m = _FENCE_OPEN.match(line)
                if m and m.group(1)[0] == fence.lstrip()[0] and len(m.group(1)) >= _fence_len(fence) \
                        and not m.group(2).strip():
                    fence = None
                    if nxt and next_pos > self.start:
                        best = Cut(next_pos, True, None, in_list)
                elif nxt or nxt_end >= 0:
                    last_line_cut = Cut(next_pos, False, fence, in_list)
            else:
                m = _FENCE_OPEN.match(line)
                blank = not line.strip()
                heading = bool(_HEADING.match(line))
                if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                    fence = line.strip()
                    pos = next_pos
                    continue
                if _LIST_ITEM.match(line):
                    in_list = True
                elif not blank and prev_blank and not line[:1].isspace():
                    in_list = False   # a paragraph at column 0 after a blank line: any list has ended
                prev_blank = blank
                # outside a list, a line indented 1-3 spaces starts a paragraph like one at column 0
                fresh = nxt and (not _LIST_OR_INDENT.match(nxt) or (_SHALLOW.match(nxt) and not in_list))
                if fresh and (blank or heading or _HEADING.match(nxt)):
                    best = Cut(next_pos, True, None, False)
                if nxt or nxt_end >= 0:
                    last_line_cut = Cut(next_pos, False, None, in_list)
            pos = next_pos
        if best is not None and best.offset > self.start:
            return best
        if size < self.hard:
            return None
        if last_line_cut is not None and last_line_cut.offset > self.start:
            return last_line_cut
        return self._dirty(text, upto, fence)

    def _dirty(self, text: str, upto: int, fence: str | None = None) -> Cut:
        """A line break if there is one, else the last space, else `upto` itself."""
        i = text.rfind("\n", self.start + 1, upto)
        if i < 0:
            i = text.rfind(" ", self.start + 1, upto)
        offset = upto if i < 0 else i + 1
        if self.fmt == "markdown" and fence is None:
            fence = self.fence_at(text, offset)
        return Cut(offset, False, fence, self.list_open)

    def fence_at(self, text: str, offset: int) -> str | None:
        """The fence open at `offset`, scanning whole lines from `start`."""
        fence = self.fence
        pos = self.start
        while pos < offset:
            nl = text.find("\n", pos, offset)
            if nl < 0:
                break
            line = text[pos:nl]
            m = _FENCE_OPEN.match(line)
            if fence is None and m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                fence = line.strip()
            elif fence is not None and m and m.group(1)[0] == fence[0] and not m.group(2).strip() \
                    and len(m.group(1)) >= _fence_len(fence):
                fence = None
            pos = nl + 1
        return fence


def _fence_len(fence: str) -> int:
    ch = fence[0]
    return len(fence) - len(fence.lstrip(ch))
