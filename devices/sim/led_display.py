#!/usr/bin/python3
"""A customer display simulator: the common Chinese LED price display (8 seven-segment digits
and the labels 单价 unit price, 总计 total, 收款 received, 找零 change). Tests use it in place of
a display and the "led_price" driver is tested against it (docs: devices/sim/README.md;
protocol summary: section 5 of protocols.md).

Why it is built this way:

- The display never answers; what it keeps is the number shown and the lit label. Commands:
  1B 51 41 + digits with at most one '.' + 0D shows a number (at most DIGITS digits; the '.'
  lights a segment's dot and takes no digit), 1B 73 n lights a label (n 0 none, 1 price,
  2 total, 3 received, 4 change; as the ASCII digit '0'..'4', as the units document it, or as
  the byte 0..4, which some drivers send), 1B 40 initialise (number 0, no label).
- The parser is incremental and never looks further ahead than the command it is in: a command
  split across reads waits for its remaining bytes, one cut by a disconnect is dropped and
  counted (incomplete). Anything else (a stray byte, an unknown ESC sequence, a number with a
  character that is not a digit, a second '.', or too many digits) is counted (unknown) and
  skipped, and parsing goes on at the next byte that can start a command. Nothing a driver
  sends may raise out of the parser.
- The transport, the control socket, garbage injection and disconnects are simcore.py's,
  through vfd_display.py's display Simulator, shared by both display simulators.

Run with Debian's /usr/bin/python3."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simcore  # noqa: E402
from vfd_display import Simulator, Threaded, serve  # noqa: E402

DIGITS = 8
LABELS = ("none", "price", "total", "received", "change")
ESC = 0x1B


class Display(simcore.CommandStream):
    """The LED display without transport: receive(chunk) takes bytes in any chunks."""

    def __init__(self):
        super().__init__()
        self.number, self.label = "0", "none"
        self.updates = self.labels = self.unknown = 0

    def _one(self, b, i):
        """Execute the command at b[i]; its length, or None when more bytes are needed."""
        if b[i] != ESC:
            self.unknown += 1
            return 1
        if len(b) < i + 2:
            return None
        c = b[i + 1]
        if c == 0x40:
            self.number, self.label = "0", "none"
            return 2
        if c == 0x73:
            if len(b) < i + 3:
                return None
            n = b[i + 2] - 0x30 if b[i + 2] >= 0x30 else b[i + 2]
            if not 0 <= n < len(LABELS):
                self.unknown += 1
                return 2
            self.label = LABELS[n]
            self.labels += 1
            return 3
        if c == 0x51:
            return self._number(b, i)
        self.unknown += 1
        return 1

    def _number(self, b, i):
        if len(b) < i + 3:
            return None
        if b[i + 2] != 0x41:
            self.unknown += 1
            return 2
        j = i + 3
        while j < len(b) and b[j] != 0x0D:
            text = bytes(b[i + 3:j + 1]).decode("latin-1")
            if not all(ch in "0123456789." for ch in text) or text.count(".") > 1 or \
                    len(text) - text.count(".") > DIGITS:
                self.unknown += 1
                return j - i  # the bad byte may start the next command
            j += 1
        if j == len(b):
            return None
        self.number = bytes(b[i + 3:j]).decode("ascii")
        self.updates += 1
        return j + 1 - i

    def state(self):
        return {"ok": True, "number": self.number, "label": self.label,
                "updates": self.updates, "labels": self.labels,
                "bytes_received": self.bytes_received, "unknown": self.unknown,
                "incomplete": self.incomplete}


class LED(Threaded):
    """The LED display simulator on a thread (tests):

        d = LED(pty="/tmp/x/led")     # or tcp="127.0.0.1:0"; control=PATH
        d.start(); d.state()["number"]; d.garbage(b"\\xff"); d.disconnect(); d.stop()"""
    name = "led_display"

    def __init__(self, pty=None, tcp=None, control=None):
        super().__init__(Simulator(Display(), "state", pty, tcp, control))

    def state(self):
        return self.command({"cmd": "state"})


def main(argv=None):
    return serve("led_display", "Chinese LED price customer display simulator "
                 "(devices/sim/README.md)", Display, "state", argv)


if __name__ == "__main__":
    sys.exit(main())
