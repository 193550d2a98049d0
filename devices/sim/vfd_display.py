#!/usr/bin/python3
"""A customer display simulator: an Epson-style 2x20 VFD pole display (DM-D command set). Tests
use it in place of a display and the "vfd" driver is tested against it, so it speaks the real
byte protocol (docs: devices/sim/README.md; protocol summary: section 5 of protocols.md).

Why it is built this way:

- A display never answers, so all there is to simulate is the screen: 2 lines of 20 cells, a
  cursor, a brightness, a mode. The byte stream is cut into commands by an incremental parser
  that never looks further ahead than the command it is in: a command split across reads waits
  for its remaining bytes, a command cut by a disconnect is discarded, and anything the display
  does not know (a byte outside printable ASCII, an unknown 1F sequence, a cursor position or
  brightness out of range) is skipped one byte at a time and counted (unknown). Nothing a
  driver sends may raise out of the parser.
- Commands: 0C clear (blank, cursor home), 18 cancel the cursor's line (blank, cursor to its
  start), 0B home, 1F 24 x y cursor (1-based, x 1..20, y 1..2), 1F 01/02/03 overwrite /
  vertical scroll / horizontal scroll mode, 1F 58 n brightness (1..4), 1B 40 initialise
  (clear, overwrite mode, brightness 4), 08 back, 09 right, 0A down, 0D line start. Text in
  overwrite mode wraps from the end of line 1 to line 2 and from the end of line 2 to line 1;
  vertical scroll mode scrolls up instead of going back to line 1. Horizontal scroll mode is
  taken as overwrite (no pole display driver here uses it).
- The transport, the control socket, the loop and the thread runner are simcore.py's; the
  display's Simulator on top of it is shared with led_display.py.

Run with Debian's /usr/bin/python3."""
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simcore  # noqa: E402

LOG = logging.getLogger("vfd_display")
LOG.addHandler(logging.NullHandler())  # a library is silent unless its user sets up logging

# ---- defaults and limits (one table; the CLI help reads from it) ------------------------------
COLUMNS = 20
LINES = 2
BRIGHTNESS_MAX = 4      # brightness levels 1..4; 4 after power-on and ESC @

ESC, US = 0x1B, 0x1F
MODES = {1: "overwrite", 2: "vertical", 3: "horizontal"}


class Display(simcore.CommandStream):
    """The VFD without transport: receive(chunk) takes bytes in any chunks."""

    def __init__(self):
        super().__init__()
        self.unknown = self.clears = self.commands = 0
        self._init()

    def _init(self):
        self.cells = [[" "] * COLUMNS for _ in range(LINES)]
        self.x = self.y = 0
        self.brightness = BRIGHTNESS_MAX
        self.mode = "overwrite"

    def lines(self):
        return ["".join(row) for row in self.cells]

    def _one(self, b, i):
        """Execute the command at b[i]; its length, or None when more bytes are needed."""
        c = b[i]
        if 0x20 <= c < 0x7F:
            self._put(chr(c))
            return 1
        if c == 0x0C:
            self.cells = [[" "] * COLUMNS for _ in range(LINES)]
            self.x = self.y = 0
            self.clears += 1
        elif c == 0x18:
            self.cells[self.y] = [" "] * COLUMNS
            self.x = 0
        elif c == 0x0B:
            self.x = self.y = 0
        elif c == 0x08:
            self.x = max(0, self.x - 1)
        elif c == 0x09:
            self.x = min(COLUMNS - 1, self.x + 1)
        elif c == 0x0A:
            self._down()
        elif c == 0x0D:
            self.x = 0
        elif c == ESC:
            if len(b) < i + 2:
                return None
            if b[i + 1] != 0x40:
                self.unknown += 1
                return 1
            self._init()
            self.commands += 1
            return 2
        elif c == US:
            return self._us(b, i)
        else:
            self.unknown += 1
            return 1
        self.commands += 1
        return 1

    def _us(self, b, i):
        if len(b) < i + 2:
            return None
        c = b[i + 1]
        if c in MODES:
            self.mode = MODES[c]
            self.commands += 1
            return 2
        if c == 0x24:
            if len(b) < i + 4:
                return None
            x, y = b[i + 2], b[i + 3]
            if not (1 <= x <= COLUMNS and 1 <= y <= LINES):
                self.unknown += 1
                return 1
            self.x, self.y = x - 1, y - 1
            self.commands += 1
            return 4
        if c == 0x58:
            if len(b) < i + 3:
                return None
            n = b[i + 2]
            if not 1 <= n <= BRIGHTNESS_MAX:
                self.unknown += 1
                return 1
            self.brightness = n
            self.commands += 1
            return 3
        self.unknown += 1
        return 1

    def _put(self, ch):
        self.cells[self.y][self.x] = ch
        self.x += 1
        if self.x == COLUMNS:
            self.x = 0
            self._down()

    def _down(self):
        if self.y < LINES - 1:
            self.y += 1
        elif self.mode == "vertical":
            self.cells = self.cells[1:] + [[" "] * COLUMNS]
        else:
            self.y = 0

    def state(self):
        return {"ok": True, "lines": self.lines(), "cursor": [self.x + 1, self.y + 1],
                "brightness": self.brightness, "mode": self.mode, "clears": self.clears,
                "commands": self.commands, "bytes_received": self.bytes_received,
                "unknown": self.unknown, "incomplete": self.incomplete}


# ---- the simulator: the display on simcore's transport ------------------------------------------
class Simulator(simcore.Simulator):
    """One display on a pty or a TCP port, with an optional control socket (simcore.Simulator;
    shared with led_display.py). display is the display object (receive, connection_lost,
    state); query is the control command that answers display.state() ("screen", "state")."""

    def __init__(self, display, query, pty=None, tcp=None, control=None, log=LOG):
        super().__init__(pty, tcp, control, log)
        self.display, self.query = display, query

    def received(self, data):
        self.display.receive(data)

    def connection_lost(self):
        self.display.connection_lost()

    def log_stopped(self):
        self.log.info("stopped: %d bytes received", self.display.bytes_received)

    def command(self, req):
        if req.get("cmd") == self.query:
            return dict(self.display.state(), connections=self.connections,
                        bytes_dropped=self.bytes_dropped, drop_after_bytes=self.drop_after)
        return super().command(req)


class Threaded(simcore.Threaded):
    """A display Simulator on a thread of the calling process (tests); VFD and LED derive."""
    name = "display"


class VFD(Threaded):
    """The VFD simulator on a thread (tests):

        v = VFD(pty="/tmp/x/vfd")     # or tcp="127.0.0.1:0"; control=PATH
        v.start(); v.screen()["lines"]; v.garbage(b"\\xff"); v.disconnect(); v.stop()"""
    name = "vfd_display"

    def __init__(self, pty=None, tcp=None, control=None):
        super().__init__(Simulator(Display(), "screen", pty, tcp, control))

    def screen(self):
        return self.command({"cmd": "screen"})


def serve(prog, description, make_display, query, argv=None):
    """The command line shared by the display simulators."""
    log = logging.getLogger(prog)
    return simcore.main(prog, simcore.parser(description, prog),
                        lambda args: Simulator(make_display(), query, args.pty, args.tcp,
                                               args.control, log), log, argv)


def main(argv=None):
    return serve("vfd_display", "Epson-style 2x20 VFD customer display simulator "
                 "(devices/sim/README.md)", Display, "screen", argv)


if __name__ == "__main__":
    sys.exit(main())
