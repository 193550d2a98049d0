#!/usr/bin/python3
"""The barcode scanner simulator (devices/sim/scanner.py) read as a driver reads it: the pty's
symlink opened like a serial port (raw), and a TCP client, checked byte for byte.

The program with --pty and --control: a scan comes out as the code and its suffix (CR LF by
default, CR, LF or nothing on request), a burst as all its codes in one piece, a split code in
two pieces at least the pause apart, garbage as exactly its bytes; status counts codes and
bytes; a disconnect hangs up the old pty and points the symlink at a new one; bad commands are
refused; SIGTERM exits 0 and removes the symlink and the control socket. The module over TCP:
the scanner is the server, a disconnect closes the client's connection, a scan with no client
is refused, the next client gets the next code."""
import json
import os
import select
import socket
import tempfile
import termios
import time
import tty

from simtest import WAIT, Program  # noqa: E402 (sys.path too)
from harness import Checks, wait_for  # noqa: E402
from scanner import Scanner  # noqa: E402

c = Checks("sim.test_scanner")
tmp = tempfile.mkdtemp(prefix="posbus-scanner-")


def read_exact(fd, n, timeout=WAIT):
    """n bytes from fd (fewer on a timeout or the end), with the time each chunk came."""
    got, times, deadline = b"", [], time.time() + timeout
    while len(got) < n and time.time() < deadline:
        r, _, _ = select.select([fd], [], [], max(0, deadline - time.time()))
        if not r:
            break
        try:
            chunk = os.read(fd, n - len(got)) if isinstance(fd, int) else fd.recv(n - len(got))
        except OSError:
            break
        if not chunk:
            break
        got += chunk
        times.append(time.monotonic())
    return got, times


def quiet(fd, secs=0.3):
    """Whether nothing more arrives on fd within secs."""
    r, _, _ = select.select([fd], [], [], secs)
    return not r


class Control:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("r")

    def __call__(self, **req):
        self.s.sendall(json.dumps(req).encode() + b"\n")
        return json.loads(self.f.readline())


# ---- the program on a pty ------------------------------------------------------------------
link = os.path.join(tmp, "scanner.tty")
prog = Program("scanner.py", tmp, "--pty", link)  # waits for the control socket (ready)
ctl = prog.control
c.check(os.path.exists(ctl), "the control socket appears (ready)")
c.check(os.path.islink(link) and os.readlink(link).startswith("/dev/pts/"),
        "the symlink points at a pty slave")
cmd = Control(ctl)
fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
tty.setraw(fd)

EAN = "6901234500011"
c.eq(cmd(cmd="scan", code=EAN), {"ok": True, "bytes": 15}, "scan answers ok with its size")
c.eq(read_exact(fd, 15)[0], EAN.encode() + b"\r\n", "a scan is the code and CR LF")
for suffix, tail in (("cr", b"\r"), ("lf", b"\n"), ("none", b"")):
    cmd(cmd="scan", code="RICE5", suffix=suffix)
    c.eq(read_exact(fd, 5 + len(tail))[0], b"RICE5" + tail, f"suffix {suffix}")
c.check(quiet(fd), "nothing more than was scanned")

codes = [f"{i:08d}" for i in range(50)]
cmd(cmd="burst", codes=codes)
want = b"".join(x.encode() + b"\r\n" for x in codes)
c.eq(read_exact(fd, len(want))[0], want, "a burst is its codes in order")

r = cmd(cmd="split", code=EAN)
got, times = read_exact(fd, 15)
c.eq(got, EAN.encode() + b"\r\n", "a split code arrives whole in the end")
c.check(len(times) == 2 and times[1] - times[0] >= 0.04,
        "in two pieces at least 40 ms apart", ">= 0.04 s", times and times[-1] - times[0])
cmd(cmd="split", code=EAN, at=14, delay_ms=100)
got, times = read_exact(fd, 15)
c.check(got == EAN.encode() + b"\r\n" and len(times) == 2 and times[1] - times[0] >= 0.09,
        "split at 14 cuts the CR LF, 100 ms apart", None, (got, times))

cmd(cmd="garbage", bytes="00ff1b0d")
c.eq(read_exact(fd, 4)[0], b"\x00\xff\x1b\r", "garbage is exactly its bytes")
c.check(quiet(fd), "and nothing else")

st = cmd(cmd="status")
sent_bytes = 15 + 3 * 5 + 2 + len(want) + 2 * 15 + 4
c.check(st["ok"] and st["sent"] == 1 + 3 + 50 + 2 and st["bytes_sent"] == sent_bytes
        and st["connections"] == 1, "status counts codes and bytes",
        {"sent": 56, "bytes_sent": sent_bytes, "connections": 1}, st)

for bad in ({"cmd": "scan"}, {"cmd": "scan", "code": "é"}, {"cmd": "scan", "code": "1",
            "suffix": "tab"}, {"cmd": "split", "code": "12", "at": 9}, {"cmd": "fly"},
            {"cmd": "garbage", "bytes": "zz"}, {"cmd": "burst", "codes": "123"}):
    c.check(cmd(**bad)["ok"] is False, f"refused: {bad}")
c.eq(cmd(cmd="status")["sent"], 56, "refused commands send nothing")

old_slave = os.readlink(link)
c.eq(cmd(cmd="disconnect"), {"ok": True}, "disconnect")
r, _, _ = select.select([fd], [], [], WAIT)
try:
    hung_up = bool(r) and os.read(fd, 100) == b""
except OSError:
    hung_up = True
c.check(hung_up, "the old pty hangs up")
os.close(fd)
c.check(os.readlink(link) != old_slave, "the symlink points at a new pty")
cmd(cmd="scan", code="96385074")  # before anyone opened it: waits in the pty
fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
tty.setraw(fd, termios.TCSANOW)  # TCSAFLUSH would throw away what waits
c.eq(read_exact(fd, 10)[0], b"96385074\r\n", "a code scanned meanwhile waits for the host")
c.eq(cmd(cmd="status")["connections"], 2, "connections counts pty pairs")
os.close(fd)

c.eq(prog.terminate(), 0, "SIGTERM exits 0")
c.check(not os.path.lexists(link) and not os.path.exists(ctl),
        "symlink and control socket removed")
err = prog.stderr()
c.check("ready: pty" in err and "Traceback" not in err, "its log says ready, no traceback",
        None, err[-500:])

# ---- the module over TCP -------------------------------------------------------------------
with Scanner(tcp="127.0.0.1:0", suffix="cr") as s:
    c.eq(s.scan("RICE5"), {"ok": False, "error": "no connection"}, "no client: a scan is refused")
    conn = socket.create_connection(("127.0.0.1", s.port), timeout=WAIT)
    c.check(wait_for(lambda: s.status()["connected"], WAIT), "the client is accepted")
    s.scan("RICE5")
    c.eq(read_exact(conn, 6)[0], b"RICE5\r", "over TCP, with the simulator's default suffix")
    s.burst(["1", "22"], suffix="crlf")
    c.eq(read_exact(conn, 7)[0], b"1\r\n22\r\n", "a burst over TCP")
    c.eq(s.disconnect(), {"ok": True}, "disconnect")
    c.eq(read_exact(conn, 1)[0], b"", "the client's connection is closed")
    conn.close()
    c.eq(s.disconnect()["ok"], False, "a disconnect with no client is refused")
    conn = socket.create_connection(("127.0.0.1", s.port), timeout=WAIT)
    c.check(wait_for(lambda: s.status()["connections"] == 2, WAIT), "the next client")
    s.split("036000291452", delay_ms=20)
    c.eq(read_exact(conn, 13)[0], b"036000291452\r", "gets the next code")
    st = s.status()
    c.check(st["sent"] == 4 and st["bytes_sent"] == 6 + 7 + 13, "status over TCP", None, st)
    conn.close()

c.finish()
