#!/usr/bin/python3
"""A barcode scanner simulator for a serial (RS-232 / USB-CDC) or TCP scanner: each code goes out
as ASCII followed by CR, LF or CR LF, as a real scanner in that mode sends it (section 5 of
docs/protocols.md). Tests drive the scanner driver with it (docs: devices/sim/README.md).

Why it is built this way:

- A scanner only talks; it never waits for the host. So the simulator has no protocol state:
  the control channel says what to "scan" and the bytes go out. What tests need from it is
  control over how the bytes arrive, because that is what a driver gets wrong: many codes in
  one write (burst), one code in two writes with a pause between (split, also in the middle of
  a CR LF), bytes that are not a code (garbage), the line going away (disconnect).
- Output goes through one buffer written when the transport takes it (select for writing), so
  a host that does not read never blocks the loop or the control channel; bytes_sent counts
  what the transport took, the number a driver's bytes_in must match.
- On a pty the simulator keeps the slave open itself, so a driver may close and reopen the
  symlink freely and codes scanned meanwhile wait in the pty, as in a USB-CDC port's buffer.
  On TCP the scanner is the server (one client at a time); a code scanned while no client is
  connected is refused (ok false), not queued: a network scanner drops it too.
- The transport, the control socket, the loop and the thread runner are simcore.py's (one
  thread, one select() loop; Scanner, the in-process form, hands its calls to that loop, so
  tests get the program's behaviour).

Run with Debian's /usr/bin/python3."""
import heapq
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simcore  # noqa: E402

LOG = logging.getLogger("scanner")
LOG.addHandler(logging.NullHandler())  # a library is silent unless its user sets up logging

# ---- defaults and limits (one table; the CLI help reads from it) ------------------------------
SUFFIXES = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "none": b""}
DEFAULT_SUFFIX = "crlf"
SPLIT_DELAY_MS = 50      # pause between the two writes of a split code
OUT_LIMIT = 16 << 20     # bytes waiting for the host beyond which a scan is refused


class Simulator(simcore.Simulator):
    """One scanner on a pty or a TCP port, with an optional control socket (simcore.Simulator):
    output goes through one buffer the loop writes as the host takes it."""

    def __init__(self, pty=None, tcp=None, control=None, suffix=DEFAULT_SUFFIX):
        if (pty is None) == (tcp is None):
            raise ValueError("exactly one of pty and tcp")
        if suffix not in SUFFIXES:
            raise ValueError(f"suffix must be one of {', '.join(SUFFIXES)}")
        super().__init__(pty, tcp, control, LOG)
        self.suffix = suffix
        self.out = bytearray()       # bytes waiting for the transport to take them
        self.later = []              # heap of (when, seq, bytes): the second half of a split
        self.seq = 0
        self.sent = 0                # codes scanned
        self.bytes_sent = 0          # bytes the transport took
        self.bytes_received = 0      # bytes the host sent (a scanner ignores them)

    def ready_note(self):
        return f", suffix {self.suffix}"

    def log_stopped(self):
        LOG.info("stopped: %d codes, %d bytes sent", self.sent, self.bytes_sent)

    # -- output as fast as the host takes it
    def received(self, data):
        self.bytes_received += len(data)

    def writing(self):
        return bool(self.out)

    def timeout(self):
        if self.later:
            return max(0.0, min(simcore.LOOP_TICK, self.later[0][0] - time.monotonic()))
        return simcore.LOOP_TICK

    def after_select(self, writable):
        if writable:
            self._flush()
        self._due()

    def connection_lost(self):
        self.out.clear()  # what the closed connection had not taken is lost with it
        self.later.clear()

    def send(self, data):
        """Queue bytes for the host and write as much as it takes now."""
        self.out += data
        self._flush()

    def _flush(self):
        host = self.host()
        while self.out and host is not None:
            try:
                if host is self.client:
                    n = self.client.send(self.out)
                else:
                    n = os.write(self.master, self.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                LOG.warning("write: %s", e)
                if host is self.client:
                    self.drop_client(str(e))
                return
            self.bytes_sent += n
            del self.out[:n]

    def _due(self):
        now = time.monotonic()
        while self.later and self.later[0][0] <= now:
            _, _, data = heapq.heappop(self.later)
            if self.host() is not None:
                self.send(data)

    # -- control
    def status(self):
        return {"ok": True, "sent": self.sent, "bytes_sent": self.bytes_sent,
                "bytes_waiting": len(self.out) + sum(len(d) for _, _, d in self.later),
                "bytes_received": self.bytes_received, "connections": self.connections,
                "bytes_dropped": self.bytes_dropped, "drop_after_bytes": self.drop_after,
                "connected": self.host() is not None, "suffix": self.suffix,
                "address": self.address(), "port": self.port, "link": self.link}

    def _code(self, req, code=None):
        """A code's bytes with its suffix (the request's, else the default)."""
        code = req["code"] if code is None else code
        if not isinstance(code, str) or not code.isascii():
            raise ValueError("a code is an ASCII string (use garbage for other bytes)")
        suffix = req.get("suffix", self.suffix)
        if suffix not in SUFFIXES:
            raise ValueError(f"suffix must be one of {', '.join(SUFFIXES)}")
        return code.encode("ascii") + SUFFIXES[suffix]

    def command(self, req):
        """One control command (a dict as on the control socket); returns the answer dict."""
        cmd = req.get("cmd")
        if cmd == "status":
            return self.status()
        if cmd == "quit":
            self.stop()
            return {"ok": True}
        if cmd not in ("scan", "burst", "split", "garbage", "disconnect"):
            raise ValueError(f"unknown command {cmd!r}")
        if cmd == "disconnect":
            return self.disconnect()
        if cmd == "scan":
            data, codes = self._code(req), 1
        elif cmd == "burst":
            if not isinstance(req["codes"], list):
                raise ValueError("codes is a list of strings")
            data = b"".join(self._code(req, c) for c in req["codes"])
            codes = len(req["codes"])
        elif cmd == "split":
            data, codes = self._code(req), 1
        else:
            data, codes = bytes.fromhex(req["bytes"]), 0
        if self.host() is None:
            return {"ok": False, "error": "no connection"}
        if len(self.out) + len(data) > OUT_LIMIT:
            return {"ok": False, "error": "the host is not reading"}
        if cmd == "split":
            at = int(req.get("at", len(data) // 2))
            delay = float(req.get("delay_ms", SPLIT_DELAY_MS)) / 1000
            if not 0 < at < len(data) or delay < 0:
                raise ValueError("at must cut the bytes in two, delay_ms must be 0 or more")
            self.send(data[:at])
            self.seq += 1
            heapq.heappush(self.later, (time.monotonic() + delay, self.seq, data[at:]))
        else:
            self.send(data)
        self.sent += codes
        LOG.debug("control: %s: %d bytes", cmd, len(data))
        return {"ok": True, "bytes": len(data)}


class Scanner(simcore.Threaded):
    """The simulator on a thread of the calling process (tests):

        s = Scanner(tcp="127.0.0.1:0")   # or pty="/tmp/x/scanner"; control=, suffix=
        s.start(); ...s.port... s.scan("6901234500011"); s.status(); s.stop()

    Every control command is a method: status(), scan(code, suffix), burst(codes, suffix),
    split(code, suffix, at, delay_ms), garbage(data), disconnect(); command(dict) takes the
    control channel's JSON form. A refused command answers ok false; a malformed one raises."""
    name = "scanner"

    def __init__(self, pty=None, tcp=None, control=None, suffix=DEFAULT_SUFFIX):
        super().__init__(Simulator(pty, tcp, control, suffix))

    def status(self):
        return self.command({"cmd": "status"})

    @staticmethod
    def _with(req, **extra):
        req.update({k: v for k, v in extra.items() if v is not None})
        return req

    def scan(self, code, suffix=None):
        return self.command(self._with({"cmd": "scan", "code": code}, suffix=suffix))

    def burst(self, codes, suffix=None):
        return self.command(self._with({"cmd": "burst", "codes": list(codes)}, suffix=suffix))

    def split(self, code, suffix=None, at=None, delay_ms=None):
        return self.command(self._with({"cmd": "split", "code": code}, suffix=suffix, at=at,
                                       delay_ms=delay_ms))


def main(argv=None):
    ap = simcore.parser("barcode scanner simulator, serial or TCP (devices/sim/README.md)")
    ap.add_argument("--suffix", choices=sorted(SUFFIXES), default=DEFAULT_SUFFIX,
                    help=f"what follows each code unless a command says (default "
                         f"{DEFAULT_SUFFIX})")
    return simcore.main("scanner", ap, lambda args: Simulator(args.pty, args.tcp, args.control,
                                                              args.suffix), LOG, argv)


if __name__ == "__main__":
    sys.exit(main())
