#!/usr/bin/python3
"""An ESC/POS receipt printer simulator: tests, benchmarks and `make demo` use it in place of a
printer, and the ESC/POS driver is tested against it, so it speaks the real byte protocol
(docs: devices/sim/README.md; protocol summary: section 3 of docs/protocols.md).

Why it is built this way:

- The byte stream is cut into commands by an incremental parser (Parser) that never looks ahead
  further than the command it is in: a command split across reads waits for its remaining bytes,
  a command cut by a disconnect is discarded and counted (incomplete_commands), an unknown
  ESC/GS/FS/DLE sequence is skipped (its two prefix bytes) and counted (unknown_commands). A
  declared data length above LENGTH_LIMIT is taken as garbage, never as a reason to swallow the
  rest of the stream. Nothing a driver sends may raise out of the parser.
- Parsing and printing are separate, like in a real Epson: every parsed command goes into a
  print queue that the print engine (Engine) executes while the printer is online. Paper out,
  cover open or an error stop the engine; the queue holds what was received ("recoverable paper
  end") and the engine carries on where it stopped once the paper is loaded, so a receipt
  interrupted by paper end comes out exactly as if it had not been (no line twice, none lost).
- Real-time status (DLE EOT n) is answered by the receiving side, never queued: it answers at
  once even while offline, and wherever the three bytes arrive, even inside another command
  (whose data they then are, as on an Epson; counted as status_inside_commands). Before
  answering, the engine runs as far as it can, so the answer reflects every byte received
  before the request (a real printer may answer before it has printed them; a driver must not
  depend on that lag either way).
- A receipt is what lies between two cuts. Its text is the decoded lines with the alignment
  applied to the paper width in character columns (58 mm: 32, 80 mm: 48; a CJK character takes
  2, a double-width character twice its columns); trailing blanks are dropped; styles are kept
  beside the text (the "lines" list), never inside it, so the text of a receipt is exact.
  QR codes and barcodes appear as lines "[QR:<data>]" and "[BARCODE:<data>]", never padded.
- The transport, the control socket, the loop and the thread runner are simcore.py's: one
  thread, one select() loop, all state touched only by that thread; Printer (the in-process
  form) hands its calls to the loop, so tests get the same behaviour as the program.

Run with Debian's /usr/bin/python3 (Pillow comes from python3-pil; without it receipts are not
rendered as PNG, everything else works)."""
import collections
import logging
import os
import sys
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simcore  # noqa: E402

try:
    from PIL import Image, ImageDraw, ImageFont
except ImportError:  # rendering is optional; decoding and the protocol are not
    Image = None

LOG = logging.getLogger("escpos_printer")
LOG.addHandler(logging.NullHandler())  # a library is silent unless its user sets up logging

# ---- defaults and limits (one table; the CLI help reads from it) ------------------------------
PAPER_DOTS = {58: 384, 80: 576}     # printable width in dots at 8 dots/mm
CELL_DOTS = {0: 12, 1: 9}           # character cell width of font A and font B
CELL_HEIGHT = {0: 24, 1: 17}
LINE_DOTS = 30                      # default line spacing in dots
TAB_STEP = 8                        # default horizontal tab every 8 columns
LENGTH_LIMIT = 1 << 20              # a declared data length above this is garbage, not data
HELD_LIMIT = 4 << 20                # stop reading the transport while this much waits unprinted
KEEP_RECEIPTS = 1000                # finished receipts kept in memory for the control channel
FONT_PATH = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
FONT_INDEX = 1                      # WenQuanYi Micro Hei Mono in the collection
PNG_MARGIN = 16                     # dots of blank paper above and below the print
QR_BOX = 160                        # side of the box standing for a QR code in the PNG

PAPER_STATES = ("ok", "near_end", "out")

# Status bits (Epson DLE EOT; bits 1 and 4 are fixed at 1).
ST_FIXED = 0x12
ST1_DRAWER = 0x04
ST1_OFFLINE = 0x08
ST2_COVER = 0x04
ST2_PAPER_END = 0x20
ST2_ERROR = 0x40
ST3_CUTTER = 0x08
ST3_UNRECOVERABLE = 0x20
ST3_AUTO_RECOVERABLE = 0x40
ST4_NEAR_END = 0x0C
ST4_OUT = 0x60
ERRORS = {"none": 0, "cutter": ST3_CUTTER, "unrecoverable": ST3_UNRECOVERABLE,
          "auto_recoverable": ST3_AUTO_RECOVERABLE}

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10

# ESC commands the engine acts on, with their number of parameter bytes.
ESC_HANDLED = {ord("@"): 0, ord("E"): 1, ord("G"): 1, ord("-"): 1, ord("a"): 1, ord("M"): 1,
               ord("!"): 1, ord("d"): 1, ord("J"): 1, ord("p"): 3, ord("i"): 0, ord("m"): 0}
# Commands whose length is the prefix plus a fixed number of parameter bytes, and that change
# nothing a text receipt shows. Keyed by the byte after the prefix.
ESC_IGNORED = {ord("2"): 0, ord("3"): 1, ord("t"): 1, ord("R"): 1, ord("{"): 1, ord("V"): 1,
               ord(" "): 1, ord("$"): 2, ord("\\"): 2, ord("c"): 2, ord("="): 1, ord("r"): 1,
               ord("L"): 0, ord("S"): 0, ord("T"): 1, ord("W"): 8, ord("U"): 1, ord("%"): 1,
               ord("?"): 1, ord("u"): 1, ord("v"): 0, ord("e"): 1, ord("K"): 1}
GS_IGNORED = {ord("h"): 1, ord("w"): 1, ord("H"): 1, ord("f"): 1, ord("L"): 2, ord("W"): 2,
              ord("P"): 2, ord("$"): 2, ord("\\"): 2, ord("/"): 1, ord("a"): 1, ord("I"): 1,
              ord("b"): 1, ord(":"): 0, ord("^"): 3, ord("T"): 1, ord("E"): 1, ord("j"): 1,
              ord("#"): 1, ord("c"): 0}
FS_IGNORED = {ord("!"): 1, ord("-"): 1, ord("W"): 1, ord("S"): 2, ord("C"): 1, ord("p"): 2,
              ord("2"): 74}
CUT_FULL = {0, 48, 65, 97, 103}
CUT_PARTIAL = {1, 49, 66, 98, 104}


class Parser:
    """Cuts an ESC/POS byte stream into events (kind, arg, raw). feed() takes any chunk and
    returns the events it completes; the bytes of an unfinished command (or of an unfinished
    GB18030 character) wait for the next chunk. reset() drops them and says whether there were
    any. The parser keeps only what decoding needs: whether Chinese mode is on."""

    def __init__(self):
        self.buf = bytearray()
        self.chinese = False

    def feed(self, data):
        self.buf += data
        events, i, b = [], 0, self.buf
        while i < len(b):
            got = self._one(b, i)
            if got is None:
                break
            length, kind, arg = got
            events.append((kind, arg, bytes(b[i:i + length])))
            i += length
        del b[:i]
        return events

    def reset(self):
        had = bool(self.buf)
        self.buf = bytearray()
        return had

    # Each _xxx(b, i) returns (length, kind, arg), or None when more bytes are needed.
    def _one(self, b, i):
        c = b[i]
        if c == 0x0A:
            return 1, "lf", None
        if c == ESC:
            return self._esc(b, i)
        if c == GS:
            return self._gs(b, i)
        if c == FS:
            return self._fs(b, i)
        if c == DLE:
            return self._dle(b, i)
        if c == 0x09:
            return 1, "tab", None
        if c in (0x0D, 0x00, 0x0C, 0x18):  # CR, NUL, FF and CAN mean nothing in standard mode
            return 1, "nop", None
        if c < 0x20 or c == 0x7F:
            return 1, "unknown", None
        return self._text(b, i)

    def _text(self, b, i):
        n, j, out = len(b), i, []
        if not self.chinese:
            while j < n and b[j] >= 0x20 and b[j] != 0x7F:
                j += 1
            return j - i, "text", b[i:j].decode("latin-1")
        while j < n and b[j] >= 0x20 and b[j] != 0x7F:
            c = b[j]
            if c < 0x80:
                out.append(chr(c))
                j += 1
                continue
            if not 0x81 <= c <= 0xFE:
                out.append("\ufffd")
                j += 1
                continue
            if j + 1 >= n:
                break
            t = b[j + 1]
            if 0x30 <= t <= 0x39:
                if j + 3 >= n:
                    break
                if 0x81 <= b[j + 2] <= 0xFE and 0x30 <= b[j + 3] <= 0x39:
                    out.append(bytes(b[j:j + 4]).decode("gb18030", "replace"))
                    j += 4
                else:
                    out.append("\ufffd")
                    j += 1
            elif 0x40 <= t <= 0xFE and t != 0x7F:
                out.append(bytes(b[j:j + 2]).decode("gb18030", "replace"))
                j += 2
            else:
                out.append("\ufffd")
                j += 1
        if j == i:
            return None  # the first character is not complete yet
        return j - i, "text", "".join(out)

    @staticmethod
    def _need(b, i, k):
        return len(b) >= i + k

    def _esc(self, b, i):
        if not self._need(b, i, 2):
            return None
        c = b[i + 1]
        if c in ESC_HANDLED:
            k = ESC_HANDLED[c]
            if not self._need(b, i, 2 + k):
                return None
            p = b[i + 2:i + 2 + k]
            if c == ord("@"):
                self.chinese = False
                return 2, "init", None
            if c == ord("E"):
                return 3, "style", ("bold", p[0] & 1)
            if c == ord("G"):
                return 3, "style", ("double_strike", p[0] & 1)
            if c == ord("-"):
                return 3, "style", ("underline", {0: 0, 1: 1, 2: 2, 48: 0, 49: 1, 50: 2}
                                    .get(p[0], 0))
            if c == ord("a"):
                return 3, "style", ("align", {0: 0, 1: 1, 2: 2, 48: 0, 49: 1, 50: 2}
                                    .get(p[0], 0))
            if c == ord("M"):
                return 3, "style", ("font", 1 if p[0] in (1, 49) else 0)
            if c == ord("!"):
                return 3, "mode", p[0]
            if c == ord("d"):
                return 3, "feed", p[0]
            if c == ord("J"):
                return 3, "feed_dots", p[0]
            if c == ord("p"):
                return 5, "kick", (p[0], p[1], p[2])
            return 2, "cut", "full" if c == ord("i") else "partial"
        if c in ESC_IGNORED:
            k = ESC_IGNORED[c]
            return (2 + k, "nop", None) if self._need(b, i, 2 + k) else None
        if c == ord("("):
            return self._len16(b, i)
        if c == ord("*"):  # bit image: m nL nH, then n (8-dot) or 3n (24-dot) columns
            if not self._need(b, i, 5):
                return None
            m, count = b[i + 2], b[i + 3] | b[i + 4] << 8
            if m not in (0, 1, 32, 33):
                return 2, "unknown", None
            return self._data(b, i, 5 + count * (3 if m >= 32 else 1))
        if c == ord("D"):  # tab positions, up to 32, NUL-terminated
            for j in range(i + 2, min(len(b), i + 2 + 33)):
                if b[j] == 0:
                    return j + 1 - i, "tabs", list(b[i + 2:j])
            return None if len(b) < i + 2 + 33 else (2, "unknown", None)
        if c == ord("&"):
            return self._user_chars(b, i)
        return 2, "unknown", None

    def _user_chars(self, b, i):
        """ESC & y c1 c2 [x d1...d(y*x)] for each character c1..c2: skipped."""
        if not self._need(b, i, 5):
            return None
        y, c1, c2 = b[i + 2], b[i + 3], b[i + 4]
        if not (1 <= y <= 3 and 32 <= c1 <= c2 <= 126):
            return 2, "unknown", None
        j = i + 5
        for _ in range(c2 - c1 + 1):
            if j >= len(b):
                return None
            j += 1 + y * b[j]
        return (j - i, "nop", None) if j <= len(b) else None

    def _gs(self, b, i):
        if not self._need(b, i, 2):
            return None
        c = b[i + 1]
        if c in (ord("!"), ord("B"), ord("r")):
            if not self._need(b, i, 3):
                return None
            n = b[i + 2]
            if c == ord("!"):
                return 3, "size", ((n >> 4 & 7) + 1, (n & 7) + 1)
            if c == ord("B"):
                return 3, "style", ("reverse", n & 1)
            return 3, "transmit_status", n
        if c == ord("V"):
            if not self._need(b, i, 3):
                return None
            m = b[i + 2]
            if m in (0, 48, 1, 49):
                return 3, "cut", "full" if m in CUT_FULL else "partial"
            if m in CUT_FULL or m in CUT_PARTIAL:
                if not self._need(b, i, 4):
                    return None
                return 4, "cut", "full" if m in CUT_FULL else "partial"
            return 3, "unknown", None
        if c == ord("k"):
            return self._barcode(b, i)
        if c == ord("("):
            got = self._len16(b, i)
            if got and got[1] == "nop" and b[i + 2] == ord("k"):
                return got[0], "symbol", bytes(b[i + 5:i + got[0]])
            return got
        if c == ord("*"):  # define downloaded bit image: x y, then x*y*8 bytes
            if not self._need(b, i, 4):
                return None
            return self._data(b, i, 4 + b[i + 2] * b[i + 3] * 8)
        if c == ord("v"):  # raster bit image: GS v 0 m xL xH yL yH data
            if not self._need(b, i, 8):
                return None
            if b[i + 2] != 0x30:
                return 2, "unknown", None
            x, y = b[i + 4] | b[i + 5] << 8, b[i + 6] | b[i + 7] << 8
            return self._data(b, i, 8 + x * y)
        if c == ord("8"):  # GS 8 L p1 p2 p3 p4 ...: a 32-bit length
            if not self._need(b, i, 7):
                return None
            n = int.from_bytes(b[i + 3:i + 7], "little")
            return self._data(b, i, 7 + n)
        if c in (ord("g"), ord("z")):  # GS g 0/2 m nL nH, GS z 0 t1 t2
            k = 4 if c == ord("g") else 3
            return (3 + k, "nop", None) if self._need(b, i, 3 + k) else None
        if c in GS_IGNORED:
            k = GS_IGNORED[c]
            return (2 + k, "nop", None) if self._need(b, i, 2 + k) else None
        return 2, "unknown", None

    def _barcode(self, b, i):
        if not self._need(b, i, 3):
            return None
        m = b[i + 2]
        if m <= 6:  # data up to a NUL, printable bytes only
            for j in range(i + 3, min(len(b), i + 3 + 256)):
                if b[j] == 0:
                    return j + 1 - i, "barcode", (m, bytes(b[i + 3:j]))
                if b[j] < 0x20 or b[j] > 0x7E:
                    return 3, "unknown", None
            return None if len(b) < i + 3 + 256 else (3, "unknown", None)
        if 65 <= m <= 78:
            if not self._need(b, i, 4):
                return None
            n = b[i + 3]
            if not self._need(b, i, 4 + n):
                return None
            return 4 + n, "barcode", (m, bytes(b[i + 4:i + 4 + n]))
        return 3, "unknown", None

    def _fs(self, b, i):
        if not self._need(b, i, 2):
            return None
        c = b[i + 1]
        if c == ord("&"):
            self.chinese = True
            return 2, "chinese", True
        if c == ord("."):
            self.chinese = False
            return 2, "chinese", False
        if c == ord("("):
            return self._len16(b, i)
        if c in FS_IGNORED:
            k = FS_IGNORED[c]
            return (2 + k, "nop", None) if self._need(b, i, 2 + k) else None
        return 2, "unknown", None

    def _dle(self, b, i):
        if not self._need(b, i, 2):
            return None
        c = b[i + 1]
        if c == 0x04:  # DLE EOT n: real-time status
            if not self._need(b, i, 3):
                return None
            n = b[i + 2]
            return (3, "status", n) if 1 <= n <= 4 else (3, "unknown", None)
        if c == 0x05:  # DLE ENQ n: real-time request, nothing to do here
            return (3, "nop", None) if self._need(b, i, 3) else None
        if c == 0x14:  # DLE DC4 fn ...: fn 1 is a real-time drawer pulse
            if not self._need(b, i, 3):
                return None
            k = {1: 5, 2: 5, 3: 5, 7: 4, 8: 10}.get(b[i + 2])
            if k is None:
                return 3, "unknown", None
            if not self._need(b, i, k):
                return None
            return (k, "rt_kick", None) if b[i + 2] == 1 else (k, "nop", None)
        return 1, "unknown", None  # a lone DLE: the next byte may start a command

    def _len16(self, b, i):
        """X ( x pL pH ...: the family of commands with a 16-bit little-endian length."""
        if not self._need(b, i, 5):
            return None
        return self._data(b, i, 5 + (b[i + 3] | b[i + 4] << 8))

    def _data(self, b, i, total):
        if total > LENGTH_LIMIT:
            return 2, "unknown", None
        return (total, "nop", None) if self._need(b, i, total) else None


def char_columns(ch):
    """Columns a character takes in font A at normal size: 2 for wide (CJK), else 1."""
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


class Receipt:
    """What lies between two cuts: printed lines (text plus styles), symbols, raw bytes."""

    def __init__(self):
        self.lines = []     # dicts: text, align, kind ("text"|"qr"|"barcode"), runs, height
        self.qr, self.barcodes = [], []
        self.raw = bytearray()

    def as_dict(self, cut, number=None):
        d = {"text": "".join(line["text"] + "\n" for line in self.lines),
             "lines": [line["text"] for line in self.lines],
             "qr": list(self.qr), "barcodes": list(self.barcodes), "cut": cut,
             "bytes": len(self.raw), "raw_hex": bytes(self.raw).hex()}
        if number is not None:
            d["n"] = number
        return d


def _symbol_text(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class Engine:
    """The print engine: executes queued events while online (paper not out, cover closed, no
    error), lays text out into lines and lines into receipts. on_receipt(receipt, cut) is called
    for each cut; reply(bytes) sends an answer to the host (GS r)."""

    def __init__(self, width_mm=80, on_receipt=None, reply=None):
        self.dots = PAPER_DOTS[width_mm]
        self.on_receipt = on_receipt or (lambda receipt, cut: None)
        self.reply = reply or (lambda data: None)
        self.queue = collections.deque()
        self.held_bytes = 0
        self.paper, self.cover_open, self.drawer_open, self.error = "ok", False, False, "none"
        self.out_after = None   # lines still to print before the paper runs out
        self.lines_printed = 0
        self.drawer_kicks = 0
        self.receipt = Receipt()
        self._init()

    def _init(self):
        self.style = {"bold": 0, "double_strike": 0, "underline": 0, "align": 0, "font": 0,
                      "reverse": 0, "wmul": 1, "hmul": 1}
        self.tabs = [TAB_STEP * k for k in range(1, 33)]
        self.qr_data = b""
        self._clear_line()

    def _clear_line(self):
        self.line, self.line_dots, self.line_align = [], 0, None

    @property
    def online(self):
        return self.paper != "out" and not self.cover_open and self.error == "none"

    def submit(self, event):
        self.queue.append(event)
        self.held_bytes += len(event[2])

    def run(self):
        """Execute queued events until the queue is empty or the printer goes offline."""
        while self.queue and self.online:
            kind, arg, raw = self.queue.popleft()
            self.held_bytes -= len(raw)
            self.receipt.raw += raw
            rest = self._execute(kind, arg)
            if rest:  # paper ran out inside a text run: the remainder waits at the front
                self.queue.appendleft(("text", rest, b""))

    def _execute(self, kind, arg):
        if kind == "text":
            return self._add_text(arg)
        if kind == "lf":
            self._print_line()
        elif kind == "style":
            self.style[arg[0]] = arg[1]
        elif kind == "mode":
            self.style.update(font=arg & 1, bold=arg >> 3 & 1, hmul=2 if arg & 0x10 else 1,
                              wmul=2 if arg & 0x20 else 1, underline=1 if arg & 0x80 else 0)
        elif kind == "size":
            self.style["wmul"], self.style["hmul"] = arg
        elif kind == "init":
            self._init()
        elif kind == "feed":
            if arg == 0 and self.line:
                self._print_line()
            elif arg > 0:
                self._print_line()
                if arg > 1:  # one line at a time, so that paper end can stop a feed midway
                    self.queue.appendleft(("feed", arg - 1, b""))
        elif kind == "feed_dots":
            if self.line:
                self._print_line()
        elif kind == "tab":
            self._tab()
        elif kind == "tabs":
            self.tabs = sorted(set(arg))
        elif kind == "cut":
            if self.line:
                self._print_line()
            finished, self.receipt = self.receipt, Receipt()
            self.on_receipt(finished, arg)
        elif kind == "kick":
            self.drawer_kicks += 1
        elif kind == "symbol":
            self._symbol(arg)
        elif kind == "barcode":
            self._marker_line("barcode", _symbol_text(arg[1]))
        elif kind == "marker":  # put back by _marker_line when the paper ran out
            self._marker_line(*arg)
        elif kind == "transmit_status":
            self._transmit_status(arg)
        return None

    def _symbol(self, body):
        """GS ( k: cn fn ...; only QR (cn 49) store (fn 80) and print (fn 81) matter."""
        if len(body) < 2 or body[0] != 49:
            return
        if body[1] == 80 and len(body) >= 3:
            self.qr_data = bytes(body[3:])
        elif body[1] == 81 and self.qr_data:
            self._marker_line("qr", _symbol_text(self.qr_data))

    def _transmit_status(self, n):
        if n in (1, 49):
            paper = {"ok": 0, "near_end": 0x03, "out": 0x0F}[self.paper]
            self.reply(bytes([paper]))
        elif n in (2, 50):
            self.reply(bytes([1 if self.drawer_open else 0]))

    def _cell(self, ch):
        return CELL_DOTS[self.style["font"]] * char_columns(ch) * self.style["wmul"]

    def _add_text(self, text):
        for k, ch in enumerate(text):
            w = self._cell(ch)
            if self.line and self.line_dots + w > self.dots:  # the printer wraps the line
                self._print_line()
                if not self.online:
                    return text[k:]
            if self.line_align is None:
                self.line_align = self.style["align"]
            self.line.append((ch, dict(self.style), w))
            self.line_dots += w
        return None

    def _tab(self):
        cell = CELL_DOTS[self.style["font"]]
        col = self.line_dots // cell
        nxt = next((t for t in self.tabs if t > col), None)
        if nxt is not None and nxt * cell <= self.dots:
            self._add_text(" " * (nxt - col))

    def _print_line(self):
        align = self.line_align if self.line_align is not None else self.style["align"]
        text = "".join(ch for ch, _, _ in self.line)
        pad = 0
        if align and text.strip():
            free = max(0, self.dots - self.line_dots)
            pad = (free // 2 if align == 1 else free) // CELL_DOTS[0]
        height = max([s["hmul"] for _, s, _ in self.line] or [self.style["hmul"]])
        self._emit({"text": (" " * pad + text).rstrip(), "align": align, "kind": "text",
                    "runs": [(ch, s) for ch, s, _ in self.line], "pad": pad,
                    "height": height})
        self._clear_line()

    def _marker_line(self, kind, data):
        """A QR code or barcode: the line "[QR:data]" or "[BARCODE:data]", never padded."""
        if self.line:
            self._print_line()
            if not self.online:
                self.queue.appendleft(("marker", (kind, data), b""))
                return
        (self.receipt.qr if kind == "qr" else self.receipt.barcodes).append(data)
        self._emit({"text": f"[{'QR' if kind == 'qr' else 'BARCODE'}:{data}]",
                    "align": self.style["align"], "kind": kind, "data": data, "runs": [],
                    "pad": 0, "height": 1})

    def _emit(self, line):
        self.receipt.lines.append(line)
        self.lines_printed += 1
        if self.out_after is not None:
            self.out_after -= 1
            if self.out_after <= 0:
                self.out_after = None
                self.paper = "out"
                LOG.info("paper ran out after the scripted number of lines")

    def pending(self):
        """The unfinished receipt: lines printed since the last cut plus the current line."""
        r = Receipt()
        r.lines, r.qr, r.barcodes, r.raw = list(self.receipt.lines), list(self.receipt.qr), \
            list(self.receipt.barcodes), bytearray(self.receipt.raw)
        if self.line:
            text = "".join(ch for ch, _, _ in self.line).rstrip()
            r.lines.append({"text": text, "align": 0, "kind": "text", "runs": [], "pad": 0,
                            "height": 1})
        return r


class Device:
    """The printer without its transport: bytes in (receive), answers out (reply callback),
    receipts out (on_receipt callback), and the counters the control channel reports.

    Like an Epson, it answers DLE EOT n wherever the three bytes arrive, even inside the data
    of another command, and the same bytes still go to the parser: inside a command they are
    that command's data (ESC 3 DLE EOT 1 sets the line spacing to 0x10, a QR code gets the bytes
    in its data). Such a request is counted (status_inside_commands) and logged, because it
    means the host split a command to ask for status: on paper that receipt is damaged."""

    def __init__(self, width_mm=80, on_receipt=None, reply=None):
        self.width_mm = width_mm
        self.parser = Parser()
        self.reply = reply or (lambda data: None)
        self.engine = Engine(width_mm, on_receipt, self.reply)
        self.bytes_received = 0
        self.unknown_commands = 0
        self.incomplete_commands = 0
        self.status_requests = 0
        self.status_inside_commands = 0
        self._rt = 0  # how much of DLE EOT the last bytes were: 0 none, 1 DLE, 2 DLE EOT

    def receive(self, data):
        self.bytes_received += len(data)
        start = 0
        for end, n in self._scan_status(data):
            clean = self._feed(data[start:end])
            start = end
            self.engine.run()  # the answer reflects every byte before the request
            self.status_requests += 1
            answer = self.status_byte(n)
            if clean:
                LOG.debug("status request n=%d answered 0x%02x", n, answer)
            else:
                self.status_inside_commands += 1
                LOG.warning("status request n=%d inside another command answered 0x%02x; its "
                            "bytes are that command's data, as on a real printer", n, answer)
            self.reply(bytes([answer]))
        self._feed(data[start:])
        self.engine.run()

    def _scan_status(self, data):
        """(end, n) for each DLE EOT n (n 1..4) completed in data, across chunk boundaries."""
        found, st, i = [], self._rt, 0
        while i < len(data):
            if st == 0:
                i = data.find(b"\x10", i)
                if i < 0:
                    break
                st, i = 1, i + 1
                continue
            c = data[i]
            i += 1
            if st == 2 and 1 <= c <= 4:
                found.append((i, c))
                st = 0
            elif st == 1 and c == 0x04:
                st = 2
            else:
                st = 1 if c == DLE else 0
        self._rt = st
        return found

    def _feed(self, data):
        """Parse data into the print queue; True when it ended with a DLE EOT command."""
        events = self.parser.feed(data)
        for kind, arg, raw in events:
            if kind == "unknown":
                self.unknown_commands += 1
                LOG.debug("unknown command skipped: %s", raw.hex())
            elif kind == "rt_kick":
                self.engine.drawer_kicks += 1
            if kind in ("status", "rt_kick"):  # done on receipt; the bytes stay in the receipt
                kind, arg = "nop", None
            self.engine.submit((kind, arg, raw))
        return bool(events) and events[-1][0] == "status" and not self.parser.buf

    def connection_lost(self):
        """The host went away: a command it left unfinished is dropped and counted."""
        self._rt = 0
        if self.parser.reset():
            self.incomplete_commands += 1
            LOG.info("connection lost in the middle of a command: its bytes are dropped")

    def status_byte(self, n):
        e = self.engine
        if n == 1:
            return ST_FIXED | (ST1_DRAWER if e.drawer_open else 0) | \
                (0 if e.online else ST1_OFFLINE)
        if n == 2:
            return ST_FIXED | (ST2_COVER if e.cover_open else 0) | \
                (ST2_PAPER_END if e.paper == "out" else 0) | \
                (ST2_ERROR if e.error != "none" else 0)
        if n == 3:
            return ST_FIXED | ERRORS[e.error]
        return ST_FIXED | {"ok": 0, "near_end": ST4_NEAR_END, "out": ST4_OUT}[e.paper]


def decode(raw, width=80):
    """The receipts in a captured ESC/POS byte string, as dicts (text, lines, qr, barcodes,
    cut "full"|"partial", bytes, raw_hex). width is the paper width in mm (58 or 80). Bytes
    after the last cut that print something come last, with cut None."""
    receipts = []
    dev = Device(width, lambda r, cut: receipts.append(r.as_dict(cut)))
    dev.receive(bytes(raw))
    rest = dev.engine.pending()
    if rest.lines:
        receipts.append(rest.as_dict(None))
    return receipts


# ---- rendering --------------------------------------------------------------------------------
_fonts = {}


def _font(size):
    if size not in _fonts:
        try:
            _fonts[size] = ImageFont.truetype(FONT_PATH, size, index=FONT_INDEX)
        except OSError:
            _fonts[size] = ImageFont.load_default()
    return _fonts[size]


def render_png(receipt, width_mm, path):
    """Draw the receipt on a white strip as wide as the paper's printable dots."""
    dots = PAPER_DOTS[width_mm]
    heights = [QR_BOX + LINE_DOTS if ln["kind"] == "qr" else LINE_DOTS * ln["height"]
               for ln in receipt.lines]
    img = Image.new("L", (dots, max(1, sum(heights)) + 2 * PNG_MARGIN), 255)
    draw = ImageDraw.Draw(img)
    y = PNG_MARGIN
    for ln, h in zip(receipt.lines, heights):
        if ln["kind"] == "qr":
            x0 = (dots - QR_BOX) // 2
            draw.rectangle([x0, y, x0 + QR_BOX - 1, y + QR_BOX - 1], outline=0, width=4)
            for corner in ((x0, y), (x0 + QR_BOX - 48, y), (x0, y + QR_BOX - 48)):
                draw.rectangle([corner[0] + 8, corner[1] + 8, corner[0] + 40, corner[1] + 40],
                               fill=0)
            font = _font(18)
            tw = draw.textlength(ln["data"], font=font)
            draw.text((max(0, (dots - tw) // 2), y + QR_BOX + 4), ln["data"], fill=0,
                      font=font)
        elif ln["kind"] == "barcode":
            for k in range(0, dots // 2, 6):
                draw.rectangle([dots // 4 + k, y + 2, dots // 4 + k + (k * 7 % 3) + 1,
                                y + h - 4], fill=0)
        else:
            x = ln["pad"] * CELL_DOTS[0]
            for ch, s in ln["runs"]:
                x = _draw_char(img, draw, x, y + (h - LINE_DOTS * s["hmul"]), ch, s)
        y += h
    img.save(path)


def _draw_char(img, draw, x, y, ch, s):
    cell = CELL_DOTS[s["font"]]
    w = cell * char_columns(ch) * s["wmul"]
    hgt = CELL_HEIGHT[s["font"]] * s["hmul"]
    size = int(CELL_HEIGHT[s["font"]] * 0.85) * s["hmul"]
    fg, bg = (255, 0) if s["reverse"] else (0, 255)
    if s["reverse"]:
        draw.rectangle([x, y, x + w - 1, y + hgt + 3], fill=0)
    font = _font(size)
    stroke = 1 if s["bold"] or s["double_strike"] else 0
    if s["wmul"] == s["hmul"]:
        draw.text((x, y + 2), ch, fill=fg, font=font, stroke_width=stroke, stroke_fill=fg)
    else:  # stretch one glyph to its cell
        nat = cell * char_columns(ch) * s["hmul"]
        glyph = Image.new("L", (nat, hgt + 4), bg)
        ImageDraw.Draw(glyph).text((0, 2), ch, fill=fg, font=font, stroke_width=stroke,
                                   stroke_fill=fg)
        img.paste(glyph.resize((w, hgt + 4)), (x, y))
    if s["underline"]:
        draw.rectangle([x, y + hgt + 1, x + w - 1, y + hgt + s["underline"]], fill=0)
    return x + w


# ---- the simulator: the printer on simcore's transport -------------------------------------------
class Simulator(simcore.Simulator):
    """One printer on a pty or a TCP port, with an optional control socket (simcore.Simulator)."""
    ensure_ascii = False  # receipts hold Chinese text

    def __init__(self, pty=None, tcp=None, width=80, out=None, control=None, paper="ok",
                 paper_out_after_lines=None, keep=KEEP_RECEIPTS):
        if (pty is None) == (tcp is None):
            raise ValueError("exactly one of pty and tcp")
        if width not in PAPER_DOTS:
            raise ValueError("width must be 58 or 80")
        super().__init__(pty, tcp, control, LOG)
        self.width, self.out, self.keep = width, out, keep
        self.device = Device(width, self._on_receipt, self.send)
        self.device.engine.paper = paper
        self.device.engine.out_after = paper_out_after_lines
        self.receipts = collections.deque(maxlen=keep)
        self.receipt_count = 0
        self.drop_after_receipt = False  # drop the connection once the next receipt is cut
        self.file_number = 0

    def setup(self):
        if self.out:
            os.makedirs(self.out, exist_ok=True)
            nums = [int(f[8:12]) for f in os.listdir(self.out)
                    if f.startswith("receipt-") and f[8:12].isdigit()]
            self.file_number = max(nums, default=0)
        super().setup()

    def ready_note(self):
        return f", {self.width} mm paper, paper {self.device.engine.paper}"

    def log_stopped(self):
        unfinished = self.device.engine.pending()
        if unfinished.lines:
            LOG.info("exit with an unfinished receipt of %d lines (no cut)",
                     len(unfinished.lines))
        LOG.info("stopped: %d receipts, %d bytes received", self.receipt_count,
                 self.device.bytes_received)

    def reading(self):
        return self.device.engine.held_bytes < HELD_LIMIT

    def received(self, data):
        if not self.drop_after_receipt:
            self.device.receive(data)
            return
        # byte by byte, to drop the connection right after the cut (a printer that resets once
        # the receipt is out, before the host hears that it is)
        before = self.receipt_count
        for i in range(len(data)):
            self.device.receive(data[i:i + 1])
            if self.receipt_count > before:
                self.drop_after_receipt = False
                self.bytes_dropped += len(data) - i - 1
                LOG.info("drop_after_receipt: connection dropped after receipt %d, %d bytes "
                         "read after it thrown away", self.receipt_count, len(data) - i - 1)
                self.disconnect()
                return

    def connection_lost(self):
        self.device.connection_lost()

    def _on_receipt(self, receipt, cut):
        self.receipt_count += 1
        d = receipt.as_dict(cut, self.receipt_count)
        self.receipts.append(d)
        LOG.info("receipt %d: %d lines, %s cut, %d bytes, %d QR", self.receipt_count,
                 len(receipt.lines), cut, len(receipt.raw), len(receipt.qr))
        if self.out:
            self.file_number += 1
            base = os.path.join(self.out, "%s-%04d")
            with open(base % ("receipt", self.file_number) + ".txt", "w", encoding="utf-8") as f:
                f.write(d["text"])
            with open(base % ("raw", self.file_number) + ".bin", "wb") as f:
                f.write(receipt.raw)
            if Image is not None:
                render_png(receipt, self.width, base % ("receipt", self.file_number) + ".png")

    # -- control
    def status(self):
        e, d = self.device.engine, self.device
        return {"ok": True, "paper": e.paper, "cover_open": e.cover_open,
                "drawer_open": e.drawer_open, "error": e.error, "online": e.online,
                "receipts": self.receipt_count, "lines_printed": e.lines_printed,
                "bytes_received": d.bytes_received, "unknown_commands": d.unknown_commands,
                "incomplete_commands": d.incomplete_commands,
                "status_requests": d.status_requests,
                "status_inside_commands": d.status_inside_commands,
                "drawer_kicks": e.drawer_kicks,
                "connections": self.connections, "held_bytes": e.held_bytes,
                "bytes_dropped": self.bytes_dropped, "drop_after_bytes": self.drop_after,
                "drop_after_receipt": self.drop_after_receipt,
                "paper_out_after_lines": e.out_after, "width": self.width,
                "address": self.address(), "port": self.port, "link": self.link}

    def command(self, req):
        """One control command (a dict as on the control socket); returns the answer dict."""
        cmd, e = req.get("cmd"), self.device.engine
        if cmd == "status":
            LOG.debug("control: status")
            return self.status()
        if cmd == "receipts":
            LOG.debug("control: receipts")
            return {"ok": True, "receipts": list(self.receipts)}
        if cmd == "paper":
            state = req["state"]
            if state not in PAPER_STATES:
                raise ValueError(f"paper state must be one of {', '.join(PAPER_STATES)}")
            e.paper, e.out_after = state, None
        elif cmd == "paper_out_after_lines":
            n = int(req["n"])
            if n < 0:
                raise ValueError("n must be 0 or more")
            if n == 0:
                e.paper, e.out_after = "out", None
            else:
                e.out_after = n
        elif cmd == "cover":
            e.cover_open = bool(req["open"])
        elif cmd == "drawer":
            e.drawer_open = bool(req["open"])
        elif cmd == "drop_after_receipt":
            self.drop_after_receipt = bool(req.get("on", True))
        elif cmd == "error":
            if req["kind"] not in ERRORS:
                raise ValueError(f"error kind must be one of {', '.join(ERRORS)}")
            e.error = req["kind"]
        else:
            answer = super().command(req)  # disconnect, garbage, quit
            if answer["ok"]:
                e.run()
            return answer
        self.log_control(req)
        e.run()  # back online: print what was held
        return {"ok": True}


class Printer(simcore.Threaded):
    """The simulator on a thread of the calling process (tests):

        p = Printer(tcp="127.0.0.1:0", width=80)   # or pty="/tmp/x/printer"
        p.start(); ...p.port... p.status() ...; p.stop()

    Every control command is a method: status(), receipts(), set_paper(state),
    paper_out_after_lines(n), set_cover(open), set_drawer(open), set_error(kind), disconnect(),
    garbage(data), drop_after_bytes(n), drop_after_receipt(on), and command(dict) takes the
    control channel's JSON form."""
    name = "escpos_printer"

    def __init__(self, pty=None, tcp=None, width=80, out=None, control=None, paper="ok",
                 paper_out_after_lines=None):
        super().__init__(Simulator(pty, tcp, width, out, control, paper, paper_out_after_lines))

    def status(self):
        return self.command({"cmd": "status"})

    def receipts(self):
        return self.command({"cmd": "receipts"})["receipts"]

    def set_paper(self, state):
        return self.command({"cmd": "paper", "state": state})

    def paper_out_after_lines(self, n):
        return self.command({"cmd": "paper_out_after_lines", "n": n})

    def set_cover(self, is_open):
        return self.command({"cmd": "cover", "open": is_open})

    def set_drawer(self, is_open):
        return self.command({"cmd": "drawer", "open": is_open})

    def set_error(self, kind):
        return self.command({"cmd": "error", "kind": kind})

    def drop_after_receipt(self, on=True):
        return self.command({"cmd": "drop_after_receipt", "on": on})


def main(argv=None):
    ap = simcore.parser("ESC/POS receipt printer simulator (devices/sim/README.md)")
    ap.add_argument("--width", type=int, choices=sorted(PAPER_DOTS), default=80,
                    help="paper width in mm (default 80: 48 columns; 58: 32 columns)")
    ap.add_argument("--out", metavar="DIR",
                    help="write receipt-NNNN.txt, receipt-NNNN.png and raw-NNNN.bin here")
    ap.add_argument("--paper", choices=PAPER_STATES, default="ok", help="paper at start")
    ap.add_argument("--paper-out-after-lines", type=int, metavar="N",
                    help="run out of paper after printing N lines")
    ap.add_argument("--keep", type=int, default=KEEP_RECEIPTS,
                    help=f"receipts kept for the control channel (default {KEEP_RECEIPTS})")
    return simcore.main(
        "escpos_printer", ap,
        lambda args: Simulator(args.pty, args.tcp, args.width, args.out, args.control,
                               args.paper, args.paper_out_after_lines, max(1, args.keep)),
        LOG, argv)


if __name__ == "__main__":
    sys.exit(main())
