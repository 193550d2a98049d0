"""What the simulators' tests share: a simulator started as a program with its control socket
(Program), and the host's side of its transport, a pty opened like a serial port (PtyHost) or a
TCP client (TcpHost). Importing it puts tests/integration (harness) and devices/sim (the
simulators) on sys.path.

A test waits for the control socket to exist (the simulators create it last, once ready) and
never sleeps for a fixed time; every read has a deadline, so a simulator that does not answer
fails a check instead of hanging the test."""
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tty

SRC = os.environ.get("POSBUS_SRC", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
sys.path.insert(0, os.path.join(SRC, "devices", "sim"))

from harness import Checks  # noqa: E402

PY = "/usr/bin/python3"  # Debian's: the python3 on PATH lacks Debian's modules
WAIT = 10.0              # seconds anything may take before a check fails
ANSWER = 2.0             # seconds an answer may take
PROGRAMS = []            # every program started, for kill_all()


def sim_path(script):
    return os.path.join(SRC, "devices", "sim", script)


class Program:
    """A simulator as a program: `PY devices/sim/<script> --control DIR/control.sock ARGS`, its
    stderr in DIR/stderr.log; raises RuntimeError when it exits or is not ready within WAIT.
    query is the control command that answers its state (wait() polls it); link is the value
    of --pty, if any."""

    def __init__(self, script, directory, *args, query="status"):
        PROGRAMS.append(self)
        os.makedirs(directory, exist_ok=True)
        self.dir, self.query = directory, query
        self.control = os.path.join(directory, "control.sock")
        self.link = args[args.index("--pty") + 1] if "--pty" in args else None
        self.log = open(os.path.join(directory, "stderr.log"), "w+")
        self.proc = subprocess.Popen([PY, sim_path(script), "--control", self.control, *args],
                                     stderr=self.log)
        deadline = time.time() + WAIT
        while not os.path.exists(self.control):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{script} did not start: {self.stderr()}")
            time.sleep(0.05)

    def stderr(self):
        self.log.seek(0)
        return self.log.read()

    def ctl(self, cmd, **kw):
        """One control command on a connection of its own: the answer dict."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(WAIT)
            s.connect(self.control)
            s.sendall(json.dumps({"cmd": cmd, **kw}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return json.loads(buf)

    def wait(self, pred):
        """The state once pred(state) holds, or the last one after WAIT."""
        deadline = time.time() + WAIT
        while True:
            st = self.ctl(self.query)
            if pred(st) or time.time() > deadline:
                return st
            time.sleep(0.05)

    def terminate(self, sig=signal.SIGTERM):
        """Its exit code after sig, None when it had to be killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def kill_all():
    """Kill every program still running (a test's finally)."""
    for p in PROGRAMS:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def run(name, *tests):
    """A test program's main(): each test(c, tmp) in turn with one Checks named name and one
    temporary directory; then every program still running is killed, the directory removed,
    and the verdict printed (exit status 1 on a failed check)."""
    c = Checks(name)
    tmp = tempfile.mkdtemp(prefix=f"posbus-{name}-")
    try:
        for test in tests:
            test(c, tmp)
    finally:
        kill_all()
        shutil.rmtree(tmp, ignore_errors=True)
    c.finish()


class PtyHost:
    """The driver's side of the pty: the symlink opened like a serial port, raw."""

    def __init__(self, link):
        self.fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)

    def send(self, data):
        while data:
            data = data[os.write(self.fd, data):]

    def _chunk(self, n, deadline):
        """Up to n bytes before deadline; b"" on timeout, end of file or error."""
        left = deadline - time.time()
        if left <= 0 or not select.select([self.fd], [], [], left)[0]:
            return b""
        try:
            return os.read(self.fd, n)
        except OSError:
            return b""

    def read(self, n=1, timeout=ANSWER):
        """n bytes, or fewer when they do not come within timeout."""
        out, deadline = b"", time.time() + timeout
        while len(out) < n:
            chunk = self._chunk(n - len(out), deadline)
            if not chunk:
                break
            out += chunk
        return out

    def read_until(self, end, timeout=ANSWER):
        """Bytes up to and including end (or what came before the timeout)."""
        out, deadline = b"", time.time() + timeout
        while not out.endswith(end):
            chunk = self._chunk(1, deadline)
            if not chunk:
                break
            out += chunk
        return out

    def drain(self):
        while self.read(4096, 0.05):
            pass

    def quiet(self, timeout=0.3):
        """Whether nothing arrives within timeout."""
        return not select.select([self.fd], [], [], timeout)[0]

    def hung_up(self):
        """Whether the other side is gone: a read ends with EIO or end of file at once."""
        if not select.select([self.fd], [], [], ANSWER)[0]:
            return False
        try:
            return os.read(self.fd, 1) == b""
        except OSError:
            return True

    def close(self):
        os.close(self.fd)


class TcpHost(PtyHost):
    """The driver's side of a TCP connection to the simulator on 127.0.0.1:port."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), WAIT)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fd = self.s.fileno()

    def send(self, data):
        self.s.sendall(data)

    def close(self):
        self.s.close()


class Feed:
    """Bytes to a simulator through a host, counted: feed(data) sends them and returns the
    simulator's state once it has received every byte fed so far (its bytes_received)."""

    def __init__(self, sim, host):
        self.sim, self.host, self.sent = sim, host, 0

    def __call__(self, data):
        self.host.send(data)
        self.sent += len(data)
        return self.sim.wait(lambda st: st["bytes_received"] >= self.sent)
