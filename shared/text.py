"""Text that came from elsewhere (a node's facts, a rank's output) made safe to show.

A terminal obeys escape sequences wherever they appear: a chip name holding `ESC ] 0 ; ... BEL`
retitles the window, `ESC [ 2 J` clears the screen, `ESC ] 8 ; ; URL ESC \\` turns text into a
hidden hyperlink. Rich adds its own layer: `[link=...]` in a string it renders is markup. So text
from nodes is shown through `plain` (no control characters, no escape sequences) and never as
markup (`cell`, `markup`).
"""

from __future__ import annotations

import re

# Bidirectional embeddings, overrides and isolates: they reorder what is shown ("Trojan Source").
BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
# Every C0 control, DEL, every C1 control (0x9b is an 8-bit CSI) and the bidi controls.
CONTROL_CHARS = f"\x00-\x1f\x7f-\x9f{BIDI_CONTROLS}"
CONTROL_RE = re.compile(f"[{CONTROL_CHARS}]")

# Escape sequences as terminals parse them, 7-bit (ESC ...) and 8-bit (C1) forms:
#   CSI  ESC [ / 0x9b, parameters, intermediates, a final byte (cursor moves, clears, colours)
#   OSC  ESC ] / 0x9d ... ended by BEL or ST (ESC \ or 0x9c), or by the end of the text
#   DCS, SOS, PM, APC  ESC P X ^ _ / 0x90 0x98 0x9e 0x9f ... ended by ST
#   anything else: ESC and the one character after it (ESC c resets the terminal)
_CSI = r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
_STRING = r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
_ESCAPE_RE = re.compile(f"{_CSI}|{_STRING}|\x1b[ -~]?")
# Select Graphic Rendition only (colours, bold): what a rank's coloured output legitimately holds.
_SGR_RE = re.compile(r"\x1b\[[0-9;:]*m")


def plain(text: object, *, multiline: bool = False, keep_colour: bool = False) -> str:
    """`text` with every escape sequence and control character removed.

    Tabs and line breaks become spaces, or are kept (tab and newline) with `multiline`.
    `keep_colour` keeps SGR sequences (`ESC [ 31 m`), for rank output shown with `ansi`.
    """
    text = "" if text is None else str(text)
    if not CONTROL_RE.search(text):
        return text

    def drop(m: re.Match) -> str:
        return m.group(0) if keep_colour and _SGR_RE.fullmatch(m.group(0)) else ""

    text = _ESCAPE_RE.sub(drop, text)
    if multiline:
        text = text.replace("\r\n", "\n")
        keep = "\t\n"
    else:
        text = re.sub(r"[\t\n\r\v\f]+", " ", text)
        keep = ""
    sgr = _SGR_RE.findall(text) if keep_colour else []
    if sgr:  # protect the kept sequences' ESC from the sweep below
        parts = _SGR_RE.split(text)
        out = [CONTROL_RE.sub(lambda m: m.group(0) if m.group(0) in keep else "", p) for p in parts]
        return "".join(p + (sgr[i] if i < len(sgr) else "") for i, p in enumerate(out))
    return CONTROL_RE.sub(lambda m: m.group(0) if m.group(0) in keep else "", text)


def control_char(text: str) -> str | None:
    """The first control character in `text` as `U+` and four hex digits (`U+001B`), or None: for error messages."""
    m = CONTROL_RE.search(text)
    return f"U+{ord(m.group(0)):04X}" if m else None


def markup(text: object, *, multiline: bool = False) -> str:
    """`text` made plain and escaped, to splice into a Rich markup string."""
    from rich.markup import escape

    return escape(plain(text, multiline=multiline))


def cell(text: object, *, empty: str = "-"):
    """A Rich Text of `text` made plain (never parsed as markup), `empty` when there is none."""
    from rich.text import Text

    value = plain(text)
    return Text(value if value else empty)


def ansi(line: str):
    """A rank's output line as Rich Text: its colours kept, every other sequence dropped, no markup."""
    from rich.text import Text

    return Text.from_ansi(plain(line, keep_colour=True))


def shown(line: str) -> str:
    """What a terminal finally shows of one output line: the text after its last carriage return
    (a progress bar redraws itself with them), without escape sequences or control characters
    other than tabs. Never longer than `line`, and empty when nothing would show."""
    if "\r" in line:
        line = line.rstrip("\r\n")
        line = line[line.rfind("\r") + 1:]
    if not CONTROL_RE.search(line):
        return line
    return plain(line, multiline=True).replace("\n", " ")
