"""What every device simulator here shares: the transport to the host (a pty or one TCP client),
the JSON-lines control socket, the select() loop with its wake-up pipe, the in-process thread
runner the tests use, and the command line. A simulator module keeps only its device: the
protocol, the state, its own control commands (docs: devices/sim/README.md).

Why it is built this way:

- A simulator stands in for a serial or network device, so the host sees what it would see of
  one. On a pty the simulator holds the slave open itself and points a symlink at it: the
  driver may close and reopen the symlink freely, and a disconnect replaces the pair (the new
  one first, so the symlink never names a dead slave) so the old side hangs up. On TCP it
  listens on 127.0.0.1 only and serves one client at a time, like a device's single socket.
- One thread runs one select() loop over the transport, the control socket and a wake-up pipe;
  all state is touched only by that thread. Other threads (Threaded, the tests' in-process
  form) hand their calls to the loop through a queue and the pipe, so a test drives exactly
  the code the program runs.
- The control socket is created last, so that its existence means ready; a test waits for the
  file, never for a log line.
- A device plugs in by overriding a few methods of Simulator (received, connection_lost,
  command, and for timed or buffered output timeout, writing, after_select); everything
  else is here once.

Run with Debian's /usr/bin/python3."""
import argparse
import json
import logging
import os
import queue
import select
import signal
import socket
import sys
import threading
import tty

LOG = logging.getLogger("simcore")
LOG.addHandler(logging.NullHandler())  # a library is silent unless its user sets up logging

# ---- defaults and limits -----------------------------------------------------------------------
READ_SIZE = 65536        # bytes read from the host at a time
CONTROL_READ = 65536     # bytes read from a control client at a time
CONTROL_SEND_TIMEOUT = 5  # seconds an answer may wait for a control client that does not read
LOOP_TICK = 0.5          # seconds select() waits when nothing happens
TCP_BACKLOG = 4
CONTROL_BACKLOG = 8


class Simulator:
    """One device on a pty (pty=LINKPATH) or a TCP port (tcp="127.0.0.1:PORT"), with an
    optional control socket (control=PATH). setup() opens everything, the control socket last;
    run() loops until stop() or a quit command; close() releases everything and removes the
    symlink and the socket. ValueError: bad arguments (both or neither of pty and tcp, an
    address other than 127.0.0.1, a LINKPATH that is not a symlink).

    A device overrides:
      received(data)       bytes from the host
      connection_lost()    the host went away (TCP close, disconnect): drop half commands
      command(req)         its control commands, then super().command(req) for the rest
      ready_note(), log_stopped()  what the ready line adds, the lines at close()
      timeout(), writing(), after_select(writable), reading()  for timed or buffered output
    and uses send(data), host(), disconnect(), transport_status(), log_control(req)."""

    read_size = READ_SIZE
    ensure_ascii = True  # how answers and logged commands are encoded (the printer: False)

    def __init__(self, pty=None, tcp=None, control=None, log=LOG):
        if (pty is None) == (tcp is None):
            raise ValueError("exactly one of pty and tcp")
        self.link, self.tcp, self.control_path, self.log = pty, tcp, control, log
        self.connections = 0         # TCP clients accepted; pty pairs opened
        self.drop_after = None       # drop_after_bytes: bytes still taken before the drop
        self.bytes_dropped = 0       # read from the host by drop_after_bytes and thrown away
        self.bytes_sent = 0          # bytes the transport took from send()
        self.master = self.slave = self.slave_name = None
        self.listener = self.client = None
        self.port = None
        self.control = None
        self.control_clients = {}    # socket -> pending input bytes
        self.calls = queue.Queue()   # (fn, reply queue) from other threads
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.stopping = False

    # -- hooks a device overrides
    def received(self, data):
        """Bytes the host sent."""

    def connection_lost(self):
        """The host went away (TCP close, or a disconnect on either transport)."""

    def ready_note(self):
        """What the log line "ready: <address>" adds (", suffix crlf")."""
        return ""

    def log_stopped(self):
        """The log lines at close(): what the device did."""
        self.log.info("stopped")

    def reading(self):
        """Whether to read the host now (False: like a full receive buffer)."""
        return True

    def writing(self):
        """Whether output waits for the host to take it (select for writing)."""
        return False

    def timeout(self):
        """Seconds select() may wait: less when timed output is due sooner."""
        return LOOP_TICK

    def after_select(self, writable):
        """Once a loop turn, after the ready sockets; writable: the host takes bytes."""

    # -- setup and teardown
    def setup(self):
        if self.link:
            self._open_pty()
        else:
            host, _, port = self.tcp.rpartition(":")
            if host != "127.0.0.1":
                raise ValueError("--tcp listens on 127.0.0.1 only")
            self.listener = socket.socket()
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, int(port)))
            self.listener.listen(TCP_BACKLOG)
            self.port = self.listener.getsockname()[1]
        if self.control_path:
            if os.path.exists(self.control_path):
                os.unlink(self.control_path)
            self.control = socket.socket(socket.AF_UNIX)
            self.control.bind(self.control_path)
            self.control.listen(CONTROL_BACKLOG)
        self.log.info("ready: %s%s", self.address(), self.ready_note())

    def address(self):
        return f"pty {self.link} -> {self.slave_name}" if self.link \
            else f"tcp 127.0.0.1:{self.port}"

    def _open_pty(self):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.slave_name = os.ttyname(self.slave)
        tmp = f"{self.link}.{os.getpid()}.tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(self.slave_name, tmp)
        if os.path.lexists(self.link) and not os.path.islink(self.link):
            os.unlink(tmp)
            raise ValueError(f"{self.link} exists and is not a symlink")
        os.replace(tmp, self.link)
        self.connections += 1

    def close(self):
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None
        if self.link:
            try:
                if os.path.islink(self.link):
                    os.unlink(self.link)
            except OSError:
                pass
        for s in [self.client, self.listener, self.control, *self.control_clients]:
            if s is not None:
                s.close()
        self.client = self.listener = self.control = None
        self.control_clients = {}
        if self.control_path and os.path.exists(self.control_path):
            os.unlink(self.control_path)
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log_stopped()

    # -- the loop
    def wake(self):
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def stop(self):
        self.stopping = True
        self.wake()

    def host(self):
        """The file descriptor or socket bytes go to, None when no host is connected."""
        return self.master if self.master is not None else self.client

    def run(self):
        while not self.stopping:
            readers, writers = [self.wake_r], []
            host = self.host()
            if host is not None:
                if self.reading():
                    readers.append(host)
                if self.writing():
                    writers.append(host)
            if self.listener is not None and self.client is None:
                readers.append(self.listener)
            if self.control is not None:
                readers.append(self.control)
            readers += list(self.control_clients)
            try:
                ready, writable, _ = select.select(readers, writers, [], self.timeout())
            except InterruptedError:
                continue
            for r in ready:
                if self.stopping:
                    break
                self._ready(r)
            self.after_select(bool(writable))
            self._do_calls()

    def _ready(self, r):
        if r == self.wake_r:
            try:
                os.read(self.wake_r, 4096)
            except BlockingIOError:
                pass
        elif r == self.master and self.master is not None:
            try:
                data = os.read(self.master, self.read_size)
            except OSError:  # EAGAIN, or EIO while no slave is open (we hold one: transient)
                return
            self._take(data)
        elif r is self.listener:
            try:
                self.client, peer = self.listener.accept()
            except OSError:
                return
            self.client.setblocking(False)
            self.connections += 1
            self.log.info("connection %d from %s:%d", self.connections, *peer)
        elif r is self.client and self.client is not None:
            try:
                data = self.client.recv(self.read_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if data:
                self._take(data)
            else:
                self.drop_client("the host closed the connection")
        elif r is self.control:
            c, _ = self.control.accept()
            self.control_clients[c] = bytearray()
        elif r in self.control_clients:
            self._control_input(r)

    def _take(self, data):
        """Bytes read from the host: to received(), unless drop_after_bytes cuts them: then the
        first ones still wanted go to received(), the rest of what was read is thrown away
        (counted in bytes_dropped) and the connection dropped as by the control disconnect,
        like a device that resets or loses its line in the middle of the host's data."""
        if self.drop_after is None or len(data) < self.drop_after:
            if self.drop_after is not None:
                self.drop_after -= len(data)
            self.received(data)
            return
        keep, rest = data[:self.drop_after], data[self.drop_after:]
        self.drop_after = None
        if keep:
            self.received(keep)
        self.bytes_dropped += len(rest)
        self.log.info("drop_after_bytes: connection dropped after %d more bytes, %d read "
                      "and thrown away", len(keep), len(rest))
        self.disconnect()

    def drop_client(self, why):
        """Close the TCP client's connection (there must be one)."""
        self.log.info("connection %d closed: %s", self.connections, why)
        self.client.close()
        self.client = None
        self.connection_lost()

    def send(self, data):
        """Bytes to the host, written at once; dropped (and logged) when it is not there or not
        reading. (Output that must wait for a slow host: writing() and after_select().)"""
        try:
            if self.master is not None:
                self.bytes_sent += os.write(self.master, data)
            elif self.client is not None:
                self.bytes_sent += self.client.send(data)
            else:
                self.log.warning("no host connected: %d bytes of answer dropped", len(data))
        except OSError as e:
            self.log.warning("answer of %d bytes dropped: %s", len(data), e)

    def disconnect(self):
        """The control command disconnect: TCP, close the client's connection; pty, replace the
        pair (the new one first, so that it never gets the old one's name)."""
        if self.link:
            old = (self.master, self.slave)
            self._open_pty()
            self.connection_lost()
            for fd in old:
                os.close(fd)
            self.log.info("pty replaced: %s", self.address())
        elif self.client is not None:
            self.drop_client("disconnect requested on the control channel")
        else:
            return {"ok": False, "error": "no connection"}
        return {"ok": True}

    # -- control
    def _control_input(self, c):
        try:
            data = c.recv(CONTROL_READ)
        except OSError:
            data = b""
        if not data:
            del self.control_clients[c]
            c.close()
            return
        buf = self.control_clients[c]
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("a command is a JSON object")
                answer = self.command(req)
            except (ValueError, KeyError, TypeError) as e:
                answer = {"ok": False, "error": str(e)}
            try:
                c.settimeout(CONTROL_SEND_TIMEOUT)
                c.sendall(json.dumps(answer, ensure_ascii=self.ensure_ascii).encode() + b"\n")
                c.setblocking(False)
            except OSError:
                self.control_clients.pop(c, None)
                c.close()
                return

    def transport_status(self):
        """The transport's part of a status answer."""
        return {"connections": self.connections, "address": self.address(),
                "port": self.port, "link": self.link, "drop_after_bytes": self.drop_after,
                "bytes_dropped": self.bytes_dropped, "bytes_sent": self.bytes_sent}

    def log_control(self, req):
        self.log.info("control: %s", json.dumps(req, ensure_ascii=self.ensure_ascii))

    def command(self, req):
        """One control command (a dict as on the control socket); returns the answer dict, with
        "ok" false for a refused one; raises ValueError, KeyError or TypeError for a malformed
        one. Here the commands every device has: disconnect, garbage (bytes to the host now),
        drop_after_bytes (drop the connection once the host has sent N more bytes),
        quit; a device handles its own first and hands the rest here."""
        cmd = req.get("cmd")
        if cmd == "disconnect":
            answer = self.disconnect()
            if not answer["ok"]:
                return answer
        elif cmd == "garbage":
            data = bytes.fromhex(req["bytes"])
            if self.host() is None:
                return {"ok": False, "error": "no connection"}
            self.send(data)
        elif cmd == "drop_after_bytes":
            n = req["n"]
            if n is not None and (not isinstance(n, int) or n < 0):
                raise ValueError("n must be a number of bytes (0 or more) or null")
            self.drop_after = n
        elif cmd == "quit":
            self.stop()
        else:
            raise ValueError(f"unknown command {cmd!r}")
        self.log_control(req)
        return {"ok": True}

    # -- calls from other threads
    def call(self, fn, timeout=10):
        """Run fn() on the loop's thread and return its result (or raise its exception)."""
        answer = queue.Queue()
        self.calls.put((fn, answer))
        self.wake()
        ok, value = answer.get(timeout=timeout)
        if not ok:
            raise value
        return value

    def _do_calls(self):
        while True:
            try:
                fn, answer = self.calls.get_nowait()
            except queue.Empty:
                return
            try:
                answer.put((True, fn()))
            except Exception as e:  # handed back to the calling thread
                answer.put((False, e))


class Threaded:
    """A Simulator on a thread of the calling process (tests), a context manager; each device's
    in-process class (Printer, Scanner, Scale, VFD, LED, ZvtTerminal) derives and adds one method per control
    command. command(dict) runs any control command on the loop's thread: a refused one answers
    ok false, a malformed one raises."""
    name = "simulator"  # the thread's name

    def __init__(self, sim):
        self.sim = sim
        self.thread = None

    def start(self):
        self.sim.setup()
        self.thread = threading.Thread(target=self.sim.run, name=self.name, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.thread is not None:
            self.sim.stop()
            self.thread.join(10)
            self.thread = None
            self.sim.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self.sim.port

    @property
    def link(self):
        return self.sim.link

    def command(self, req):
        return self.sim.call(lambda: self.sim.command(req))

    def disconnect(self):
        return self.command({"cmd": "disconnect"})

    def garbage(self, data):
        return self.command({"cmd": "garbage", "bytes": bytes(data).hex()})

    def drop_after_bytes(self, n):
        return self.command({"cmd": "drop_after_bytes", "n": n})


class CommandStream:
    """A device's input cut into commands by an incremental parser: receive(data) takes bytes
    in any chunks and calls the subclass's _one(buf, i) at each command start; _one executes
    the command at buf[i] and returns its length, or None while more bytes are needed (it must
    never look further than the command it is in, nor raise on any input). A command left
    unfinished when the host goes away is dropped and counted (connection_lost)."""

    def __init__(self):
        self.buf = bytearray()
        self.bytes_received = self.incomplete = 0

    def _one(self, b, i):
        raise NotImplementedError

    def receive(self, data):
        self.bytes_received += len(data)
        self.buf += data
        i, b = 0, self.buf
        while i < len(b):
            n = self._one(b, i)
            if n is None:
                break
            i += n
        del b[:i]

    def connection_lost(self):
        """The link went away: an unfinished command is dropped and counted."""
        if self.buf:
            self.incomplete += 1
            self.buf = bytearray()


# ---- the command line --------------------------------------------------------------------------
def parser(description, prog=None):
    """An ArgumentParser with the options every simulator takes (--pty | --tcp, --control);
    the device adds its own, then hands it to main()."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", metavar="LINKPATH",
                       help="open a pseudo-terminal and point the symlink LINKPATH at it")
    where.add_argument("--tcp", metavar="127.0.0.1:PORT",
                       help="listen on this address (port 0: any free port, see the log)")
    ap.add_argument("--control", metavar="PATH", help="unix socket for JSON control commands")
    return ap


def main(prog, ap, make_sim, log, argv=None):
    """A simulator's main(): parse the options (ap from parser(), plus --log-level), log to
    stderr as "prog: LEVEL message", make_sim(args) -> Simulator (ValueError: exit 2), set it
    up (exit 2 when it cannot), run it until SIGTERM, SIGINT or quit (exit 0), close it."""
    ap.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format=f"{prog}: %(levelname)s %(message)s")
    try:
        sim = make_sim(args)
    except ValueError as e:
        log.error("cannot start: %s", e)
        return 2

    def on_signal(signum, frame):
        sim.stop()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sim.setup()
    except (ValueError, OSError) as e:
        log.error("cannot start: %s", e)
        sim.close()
        return 2
    try:
        sim.run()
    finally:
        sim.close()
    return 0
