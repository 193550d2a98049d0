"""Helpers for the Python black-box tests: a private redis-server, busd and services on free
127.0.0.1 ports in a temporary directory, posctl, redis-cli, a binary-safe Redis client, a raw
bus client, checks. Run with Debian's /usr/bin/python3.

Every process started here is stopped when the test ends, pass or fail: by Checks.finish with
SIGTERM (so that LeakSanitizer checks the services at shutdown; a sanitizer report anywhere or an
unclean exit is a failed check), otherwise killed at exit. A request that gets no reply, or a
posctl command that fails, raises Failure: the test ends with a "FAIL what" line and its
summary, not a traceback."""
import atexit
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import msgpack
import zmq

BIN = os.environ.get("POSBUS_BIN", "build/bin")
SRC = os.environ.get("POSBUS_SRC", ".")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_cert(path):
    keys = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r'\s*(public|secret)-key\s*=\s*"([^"]+)"', line)
            if m:
                keys[m.group(1)] = m.group(2).encode()
    return keys


SANITIZER_MARKS = ("ERROR: LeakSanitizer", "ERROR: AddressSanitizer", "runtime error:",
                   "SUMMARY: UndefinedBehaviorSanitizer")
REPORT_MAX = 6000  # characters of a sanitizer report echoed into the test output
STOP_TIMEOUT = 10.0  # a service must exit this soon after SIGTERM
REDIS_TIMEOUT = 30.0  # seconds a Redis reply may take before the test fails


def sanitizer_report(text):
    """The first sanitizer report in text (cut to REPORT_MAX characters), or None."""
    found = [text.find(m) for m in SANITIZER_MARKS if m in text]
    return text[min(found):min(found) + REPORT_MAX] if found else None


class Failure(Exception):
    """Something the test needed did not happen (a request got no reply, a command failed). It
    ends the test with a FAIL line and the closing summary instead of a traceback."""


_checks = None  # the Checks of this test, so that helpers can record failures on it
_stacks = []    # every Stack, stopped with SIGTERM and checked by Checks.finish


class Checks:
    """One line per check ("ok   what" or "FAIL what"), a closing "name: N passed, N failed".
    A Failure raised anywhere ends the test the same way, counted as a failed check."""

    def __init__(self, name):
        global _checks
        self.name, self.passed, self.failed = name, 0, 0
        self.finished = False
        _checks = self
        sys.excepthook = self._on_uncaught

    def check(self, cond, what, expected=None, actual=None):
        """Count cond; with expected/actual given, a failure prints both."""
        if cond:
            self.passed += 1
            print("ok  ", what, flush=True)
        else:
            self.failed += 1
            detail = "" if expected is None and actual is None else \
                f" (expected {expected!r}, got {actual!r})"
            print("FAIL", what + detail, flush=True)
        return bool(cond)

    def eq(self, actual, expected, what):
        """Check actual == expected, printing both either way."""
        return self.check(actual == expected, f"{what} (expected {expected!r}, got {actual!r})")

    def fail(self, what):
        return self.check(False, what)

    def _summary(self):
        if not self.finished:
            self.finished = True
            for stack in list(_stacks):
                stack.stop_all(self)
            print(f"{self.name}: {self.passed} passed, {self.failed} failed", flush=True)

    def finish(self):
        self._summary()
        sys.exit(0 if self.failed == 0 else 1)

    def _on_uncaught(self, kind, value, tb):
        if isinstance(value, Failure):
            self.fail(str(value))
        else:
            import traceback
            traceback.print_exception(kind, value, tb)
            self.fail(f"test aborted by {kind.__name__}: {value}")
        self._summary()
        # returning lets Python exit with status 1 and run the atexit cleanup


def record_failure(what):
    """A failed check on the running test's Checks (printed to stderr if there is none)."""
    if _checks is not None:
        _checks.fail(what)
    else:
        print("FAIL", what, file=sys.stderr, flush=True)


class Redis:
    """A small binary-safe RESP client of a test's private Redis, to plant data and read it back
    byte for byte (there is no redis module on the box; redis-cli mangles binary and cannot
    pipeline). Arguments are bytes or anything str() turns into text. Replies are str (status),
    int, bytes, None or lists of these; an error reply is returned as a RuntimeError instance,
    not raised, so that a pipeline still reads every reply and a test can check for it. A closed
    connection or a refused AUTH raises Failure."""

    def __init__(self, port, password, timeout=REDIS_TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.f = self.sock.makefile("rb")
        reply = self.call("AUTH", password)
        if isinstance(reply, RuntimeError):
            raise Failure(f"Redis on port {port} refused AUTH: {reply}")

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise Failure("Redis closed the connection in the middle of a reply")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) != n + 2:
                raise Failure("Redis closed the connection in the middle of a reply")
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise Failure(f"Redis sent an unexpected reply line {line!r}")

    def pipeline(self, commands):
        """Send every command (a sequence of arguments) at once; their replies in order."""
        self.sock.sendall(b"".join(self._encode(cmd) for cmd in commands))
        return [self._read() for _ in commands]

    def call(self, *args):
        """One command's reply."""
        return self.pipeline([args])[0]


KEY_COMMANDS = ("keygen", "node", "keys")  # posctl commands on the keys directory, not busd
OPERATOR = "cli"  # the operator key posctl and conn_args use unless told otherwise
PY_CLIENT = "py"  # the operator key of Bus, the raw Python client


class Stack:
    """redis-server + busd + services, with CURVE keys, all private to one test.

    Keys are made by posctl in TMP/keys, one per identity, the way an operator makes them:
    busd's, an operator key for posctl and conn_args ("operator-cli") and one for Bus
    ("operator-py"). start_service uses the key of the service it starts; key(role, name) makes
    any other on demand (a consumer, a register, a second operator).

    Processes are stopped with SIGTERM when the test finishes (services first, then busd, then
    Redis) so that leaks at shutdown are reported; any sanitizer report in any process's output,
    or a posbus program that does not exit 0 on SIGTERM, is a failed check. The Redis password
    is in files of mode 0600 only, never on a command line `ps` shows."""

    def __init__(self, name):
        self.tmp = tempfile.mkdtemp(prefix=f"posbus-{name}-")
        self.procs = {}
        self.logs = []  # (tag, log path, offset where this process's output starts, proc)
        _stacks.append(self)
        atexit.register(self.cleanup)
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
        self.keys = os.path.join(self.tmp, "keys")
        self.redis_port = free_port()
        self.pub, self.sub, self.req = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
        self.password = "test-" + secrets.token_hex(8)
        self.password_file = self._private_file("redis.pass", self.password + "\n")
        self.posctl("keygen", "operator", OPERATOR, PY_CLIENT, check=True)

    def _private_file(self, name, text):
        path = os.path.join(self.tmp, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def cleanup(self):
        """Last resort at exit: kill what is still running, remove the temporary directory."""
        for p in list(self.procs.values()):
            if p.poll() is None:
                p.kill()
                p.wait()
        if not os.environ.get("POSBUS_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _ours(self, proc):
        return isinstance(proc.args, list) and str(proc.args[0]).startswith(BIN + "/")

    def _scan(self, tag, path, start, checks=None):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                f.seek(start)
                report = sanitizer_report(f.read())
        except OSError:
            report = None
        if report:
            what = f"{tag}: sanitizer report in {os.path.basename(path)} (expected none):\n" \
                   + report
            (checks.fail if checks else record_failure)(what)
        return report is None

    def _stop(self, tag, checks, signalled):
        """Wait for a process sent SIGTERM (if signalled) and check how it ended. True if it
        stopped cleanly (a process that had already ended by itself counts as stopped)."""
        p = self.procs.pop(tag)
        if signalled:
            try:
                p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                checks.fail(f"{tag} did not stop within {STOP_TIMEOUT:g} s of SIGTERM")
                return False
        if signalled and self._ours(p) and p.returncode != 0:
            checks.fail(f"{tag} exited cleanly on SIGTERM (expected exit 0, got {p.returncode})")
            return False
        return True

    def stop_all(self, checks):
        """Stop every process with SIGTERM (services, then busd, then redis) and search every
        log for sanitizer reports. Called by Checks.finish."""
        if self not in _stacks:
            return
        _stacks.remove(self)
        services = [t for t in self.procs if t not in ("busd", "redis")]
        stages = [services] + [[t] for t in ("busd", "redis") if t in self.procs]
        total = stopped = 0
        for stage in stages:  # each stage stops in parallel, then waits
            signalled = {t for t in stage if self.procs[t].poll() is None}
            for t in signalled:
                self.procs[t].send_signal(signal.SIGTERM)
            total += len(stage)
            stopped += sum(1 for t in stage if self._stop(t, checks, t in signalled))
        clean = [self._scan(tag, path, start, checks) for tag, path, start, _ in self.logs]
        checks.check(stopped == total and all(clean),
                     f"{stopped} of {total} processes stopped cleanly on SIGTERM; "
                     f"{clean.count(True)} of {len(clean)} logs free of sanitizer reports")

    def spawn(self, tag, argv, stdout=None):
        """Start argv with its output (stderr always, stdout unless given) in TMP/<tag>.log."""
        path = os.path.join(self.tmp, tag + ".log")
        start = os.path.getsize(path) if os.path.exists(path) else 0
        log = open(path, "ab")
        p = subprocess.Popen(argv, stdout=log if stdout is None else stdout,
                             stderr=subprocess.STDOUT if stdout is None else log,
                             text=stdout is not None)
        log.close()
        self.procs[tag] = p
        self.logs.append((tag, path, start, p))
        return p

    def kill(self, tag, sig=signal.SIGKILL):
        """Send sig to a process and wait for it. Stopped with SIGTERM, a posbus program must
        exit 0 and leave no sanitizer report (a failed check otherwise)."""
        p = self.procs.pop(tag)
        p.send_signal(sig)
        p.wait()
        if sig == signal.SIGTERM:
            if self._ours(p) and p.returncode != 0:
                record_failure(f"{tag} exited cleanly on SIGTERM (expected exit 0, got "
                               f"{p.returncode})")
            for entry in [e for e in self.logs if e[3] is p]:
                self._scan(*entry[:3])
                self.logs.remove(entry)

    def start_redis(self, *extra):
        """A private redis-server; the password goes in through a config file of mode 0600.
        extra: more "directive value" lines for the config file."""
        conf = self._private_file("redis.conf", "\n".join([
            f"port {self.redis_port}", "bind 127.0.0.1", f"requirepass {self.password}",
            'save ""', "appendonly yes", f"dir {self.tmp}", *extra]) + "\n")
        self.spawn("redis", ["redis-server", conf])
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise Failure("redis-server did not start within 10 s")

    def redis(self):
        """A Redis client (see class Redis) of the private Redis, authenticated with the
        password. Call start_redis first."""
        return Redis(self.redis_port, self.password)

    def redis_cli(self, *args, check=True, timeout=30):
        """Run redis-cli against the private Redis with the password in REDISCLI_AUTH (never on
        its command line). Returns the CompletedProcess (text); check=True raises Failure when
        it fails or Redis answers an error."""
        env = dict(os.environ, REDISCLI_AUTH=self.password)
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_port),
                            *map(str, args)], capture_output=True, text=True,
                           errors="replace", env=env, timeout=timeout)
        if check and (r.returncode != 0 or r.stdout.startswith(("ERR", "(error)"))):
            raise Failure(f"redis-cli {' '.join(map(str, args))}: {r.stdout}{r.stderr}")
        return r

    def redis_json(self, *args):
        """A Redis command's reply decoded from redis-cli --quoted-json (RESP3: maps are dicts;
        binary strings arrive with \\x escapes)."""
        r = self.redis_cli("--quoted-json", *args)
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise Failure(f"redis-cli --quoted-json {' '.join(map(str, args))}: not JSON: "
                          f"{r.stdout[:REPORT_MAX]!r}")

    def start_busd(self):
        """Start busd. A port free_port() handed out may be taken by a test running beside this
        one before busd binds it: busd then exits at once, and the first start tries again on
        new ports (no client knows them yet); a restart keeps its ports."""
        first = not getattr(self, "busd_started", False)
        for attempt in range(5):
            p = self.spawn("busd", [f"{BIN}/busd", "--pub-bind", self.pub, "--sub-bind",
                                    self.sub, "--req-bind", self.req, "--cert",
                                    os.path.join(self.keys, "busd.cert_secret"), "--clients-dir",
                                    os.path.join(self.keys, "clients"), "--heartbeat-ms", "250",
                                    "--heartbeat-timeout-ms", "1500"])
            if not first or attempt == 4:
                break
            try:
                p.wait(0.3)
            except subprocess.TimeoutExpired:
                break
            print(f"     (busd exited at start ({p.returncode}): trying other ports)", flush=True)
            self.procs.pop("busd", None)
            self.logs = [e for e in self.logs if e[3] is not p]
            self.pub, self.sub, self.req = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
        self.busd_started = True

    @staticmethod
    def key_file(role, name):
        """The base file name of an identity's certificates ("service-sales"); a register's name
        is "STORE.REGISTER" ("register-S1-R01")."""
        return f"{role}-{name.replace('.', '-')}" if role == "register" else f"{role}-{name}"

    def key(self, role, name):
        """The secret certificate path of the key of role ("service", "operator", "consumer",
        "register") and name, made and enrolled with posctl when it does not exist yet. A
        register's name is "STORE.REGISTER" (made with posctl node enroll)."""
        path = os.path.join(self.keys, self.key_file(role, name) + ".cert_secret")
        if not os.path.exists(path):
            if role == "register":
                self.posctl("node", "enroll", *name.split(".", 1), check=True)
            else:
                self.posctl("keygen", role, name, check=True)
        return path

    def server_cert(self):
        """busd's public certificate, which every client needs."""
        return os.path.join(self.keys, "busd.cert")

    def conn_args(self, cert=None):
        """posctl's and the services' connection options; cert is a secret certificate path
        (default: the operator key of posctl, see key())."""
        return ["--pub-endpoint", self.pub, "--sub-endpoint", self.sub, "--req-endpoint",
                self.req, "--cert", cert or self.key("operator", OPERATOR),
                "--server-cert", self.server_cert()]

    def start_service(self, tag, program, *extra):
        """Start a service program with the key of the service it registers as: its
        --service-name when extra gives one, else the program's name ("service-sales")."""
        args = list(extra)
        name = args[args.index("--service-name") + 1] if "--service-name" in args else program
        cert = self.key("service", name)
        return self.spawn(tag, [f"{BIN}/{program}", *self.conn_args(cert), "--redis-port",
                                str(self.redis_port), "--redis-password-file",
                                self.password_file, "--heartbeat-ms", "250",
                                "--heartbeat-timeout-ms", "1500", *extra])

    def posctl(self, *args, check=False, timeout=300):
        """Run posctl to completion (text output). A sanitizer report on its stderr is a failed
        check whatever the exit code; check=True raises Failure on a non-zero exit."""
        argv = [f"{BIN}/posctl"]
        if args[0] in KEY_COMMANDS and args[:2] != ("node", "list"):
            argv += ["--keys-dir", self.keys]
        else:
            argv += self.conn_args()
        r = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout)
        report = sanitizer_report(r.stderr)
        if report:
            record_failure(f"posctl {' '.join(args)}: sanitizer report (expected none):\n"
                           + report)
        if check and r.returncode != 0:
            raise Failure(f"posctl {' '.join(args)} exited {r.returncode}: "
                          f"{(r.stderr or r.stdout).strip()[:REPORT_MAX]}")
        return r

    def posctl_popen(self, tag, *args):
        """Start posctl in the background with its stdout piped back (text) and its stderr in
        TMP/<tag>.log, searched for sanitizer reports when the test finishes."""
        return self.spawn(tag, [f"{BIN}/posctl", *self.conn_args(), *args],
                          stdout=subprocess.PIPE)

    def posctl_json(self, *args):
        r = self.posctl(*args, "--format", "json", check=True)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise Failure(f"posctl {' '.join(args)}: no JSON in its output: {r.stdout!r}")

    def wait_healthy(self, services, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.posctl("--expect", ",".join(services), "ping").returncode == 0:
                return True
            time.sleep(0.2)
        return False


    def start_posnode(self, tag, store, reg, *extra, cert=None):
        """Start posnode for register store.reg with its own enrolled key (or cert), its state in
        TMP/<tag>/ and its line interface on TMP/<tag>.sock; returns a Till connected to it."""
        state = os.path.join(self.tmp, tag)
        os.makedirs(state, exist_ok=True)
        sock = os.path.join(self.tmp, tag + ".sock")
        if os.path.exists(sock):
            os.unlink(sock)
        cert = cert or self.key("register", f"{store}.{reg}")
        self.spawn(tag, [f"{BIN}/posnode", *self.conn_args(cert), "--store", store,
                         "--register", reg, "--state-dir", state, "--socket", sock,
                         "--stdin", "false", "--node-heartbeat-ms", "300",
                         "--backoff-max-ms", "1000", *extra])
        deadline = time.time() + 20
        while time.time() < deadline:
            if os.path.exists(sock):
                return Till(sock, state)
            if self.procs[tag].poll() is not None:
                raise Failure(f"posnode {tag} exited {self.procs[tag].returncode} at start")
            time.sleep(0.05)
        raise Failure(f"posnode {tag} did not open its socket within 20 s")


class Till:
    """posnode's line interface (docs/posnode.md): one command line in, one JSON line out."""

    def __init__(self, sock_path, state_dir):
        self.state = state_dir
        self.journal = os.path.join(state_dir, "journal")
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sock_path)
        self.file = self.sock.makefile("rw", encoding="utf-8")

    def cmd(self, line):
        self.file.write(line + "\n")
        self.file.flush()
        answer = self.file.readline()
        if not answer:
            raise Failure(f"posnode closed the line interface on {line.split()[0]!r}")
        return json.loads(answer)

    def close(self):
        self.file.close()
        self.sock.close()


def journal_records(path):
    """A register journal's records as (seq, kind, ts, payload bytes), read by the layout of
    docs/journal.md (no checks: posctl journal verify does those)."""
    data = open(path, "rb").read()
    out, off = [], 0
    while off + 60 <= len(data):
        length = int.from_bytes(data[off + 8:off + 12], "big")
        out.append((int.from_bytes(data[off + 12:off + 20], "big"), data[off + 5],
                    int.from_bytes(data[off + 20:off + 28], "big", signed=True),
                    data[off + 60:off + 60 + length]))
        off += 124 + length
    return out


class Bus:
    """A raw client of busd's request protocol (BUS1C), to send what posctl never would."""

    def __init__(self, stack, cert=None):
        """cert: a secret certificate path (default: the operator key "operator-py"; another
        role's key comes from stack.key(role, name))."""
        me = load_cert(cert or stack.key("operator", PY_CLIENT))
        server = load_cert(stack.server_cert())
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.curve_publickey, self.sock.curve_secretkey = me["public"], me["secret"]
        self.sock.curve_serverkey = server["public"]
        self.sock.connect(stack.req)
        self.seq = 0

    def call_raw(self, service, payload, timeout=5.0):
        """Send payload (bytes) to service; the decoded reply envelope, or None if none came
        within timeout seconds (at this level a missing reply may be what a test wants)."""
        corr = secrets.token_bytes(8)
        self.sock.send_multipart([b"BUS1C", b"REQ", service.encode(), corr, payload])
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.sock.poll(int((deadline - time.time()) * 1000) + 1):
                reply = self.sock.recv_multipart()
                if len(reply) == 4 and reply[2] == corr:
                    return msgpack.unpackb(reply[3], raw=False)
        return None

    def call(self, service, method, body, timeout=5.0, request_id=None, allow_timeout=False):
        """Call method on service; the reply envelope ("type" is "reply" or "error"). No reply
        within timeout seconds raises Failure ("service method: no reply within N s"), which
        ends the test with a FAIL line, unless allow_timeout (then None). request_id resends a
        request under the id of an earlier one, as a client retry does."""
        self.seq += 1
        env = {"v": 1, "type": method, "id": request_id or secrets.token_hex(16),
               "src": "pytest", "seq": self.seq, "ts": int(time.time() * 1000), "body": body}
        reply = self.call_raw(service, msgpack.packb(env), timeout)
        if reply is None and not allow_timeout:
            raise Failure(f"{service} {method}: no reply within {timeout:g} s")
        return reply


def journal_sales(path):
    """The sale documents in a register's journal, in order."""
    return [msgpack.unpackb(p) for (_, kind, _, p) in journal_records(path) if kind == 1]


def journal_audits(path, kind):
    """The audit records of type kind in a register's journal, in order, each with its record
    number as _seq."""
    out = []
    for (seq, k, _, p) in journal_records(path):
        d = msgpack.unpackb(p) if k == 2 else {}
        if d.get("type") == kind:
            out.append(dict(d, _seq=seq))
    return out


def rsa_key_files(directory, name):
    """A new RSA-2048 key pair written as DIR/NAME.key (PKCS#8 PEM) and DIR/NAME.pub (public
    key PEM): a merchant's or an app's key for the payment provider emulators. Returns (key,
    key file, public key file)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file, pub_file = (os.path.join(directory, f"{name}.{x}") for x in ("key", "pub"))
    with open(key_file, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(pub_file, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, key_file, pub_file


def alipay_trade_no(intent):
    """The out_trade_no Alipay (and its emulator) knows intent by: its wire form (pos/tradeno.h,
    docs/payments.md): '-' as "__", '_' as "_u", letters and digits as they are."""
    return "".join("__" if ch == "-" else "_u" if ch == "_" else ch for ch in intent)


class PaymentEmulators:
    """The WeChat Pay and Alipay emulators (devices/sim/wechatpay.py, alipay.py) started for a
    stack, with the merchant's and the app's keys in its TMP, and `args`: the payments service's
    options that point at them. Stopped with stop(). Attributes: wx, ali, args, merchant_key
    (the RSA key object), merchant_key_file, apiv3_file, wechat_dir, alipay_dir."""
    MCHID, APPID, SERIAL = "1900000001", "wx0000000000000001", "3775B6A45ACD588826D15E583A95F5DD"
    APP_ID = "2021000000000001"
    APIV3_KEY = "0123456789abcdef0123456789ABCDEF"

    def __init__(self, stack, wechat=True, alipay=True):
        sys.path.insert(0, os.path.join(SRC, "devices", "sim"))
        self.wx = self.ali = None
        self.args = []
        try:
            if wechat:
                from wechatpay import WechatPay
                self.merchant_key, self.merchant_key_file, pub_file = rsa_key_files(stack.tmp,
                                                                                   "merchant")
                self.apiv3_file = os.path.join(stack.tmp, "apiv3.key")
                with open(self.apiv3_file, "w") as f:
                    f.write(self.APIV3_KEY)
                self.wechat_dir = wdir = os.path.join(stack.tmp, "wechat")
                self.wx = WechatPay(wdir, self.MCHID, self.APPID, self.SERIAL, pub_file,
                                    self.apiv3_file)
                self.wx.start()
                self.args += ["--wechat-base-url", f"https://127.0.0.1:{self.wx.port}",
                              "--wechat-mchid", self.MCHID, "--wechat-appid", self.APPID,
                              "--wechat-serial", self.SERIAL, "--wechat-key-file",
                              self.merchant_key_file, "--wechat-platform-keys",
                              f"PUB_KEY_ID_0000000000000001={wdir}/platform-1.pem,"
                              f"5157F09EFDC096DE15EBE81A47057A7232F1B8E1={wdir}/platform-2.pem",
                              "--wechat-apiv3-key-file", self.apiv3_file, "--wechat-ca-file",
                              self.wx.ca_file, "--wechat-timeout-ms", "2000"]
            if alipay:
                from alipay import Alipay
                _, app_key_file, app_pub_file = rsa_key_files(stack.tmp, "app")
                self.alipay_dir = adir = os.path.join(stack.tmp, "alipay")
                self.ali = Alipay(adir, self.APP_ID, app_pub_file)
                self.ali.start()
                self.args += ["--alipay-gateway", f"https://127.0.0.1:{self.ali.port}/gateway.do",
                              "--alipay-app-id", self.APP_ID, "--alipay-key-file", app_key_file,
                              "--alipay-public-key-file", os.path.join(adir, "alipay.pem"),
                              "--alipay-ca-file", self.ali.ca_file, "--alipay-timeout-ms",
                              "2000"]
        except BaseException:
            self.stop()
            raise

    def stop(self):
        for emu in (self.wx, self.ali):
            if emu:
                emu.stop()
        self.wx = self.ali = None


def sim_finished(c, stack, sim, tickets, refusal):
    """Wait for a `posctl sim` started with stack.posctl_popen("sim", ...) and check its JSON
    summary: exit 0, every one of `tickets` acknowledged, none refused (`refusal` says why none
    may be), none given up. Prints its retries and duplicates; returns the summary."""
    out, _ = sim.communicate(timeout=900)
    stack.procs.pop("sim", None)
    c.eq(sim.returncode, 0, "posctl sim exit code")
    try:
        summary = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        summary = {}
        c.fail(f"posctl sim printed no JSON summary: {out[-500:]!r}")
    c.eq(summary.get("unacknowledged"), [], "sales the simulator never got acknowledged")
    c.eq(summary.get("refused"), 0, f"sales refused ({refusal})")
    c.eq(summary.get("acknowledged"), tickets, "sales acknowledged")
    print(f"simulator: {summary.get('retries')} retries, {summary.get('duplicates')} duplicate "
          f"answers, {summary.get('elapsed_ms')} ms", flush=True)
    return summary


def sim_control(path, cmd, **kw):
    """One command on a simulator's JSON-lines control socket (devices/sim: {"cmd": cmd, ...kw}
    in, one JSON object out); returns the answer as a dict."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)  # a hung simulator fails the test with a message, not a hang
        s.connect(path)
        f = s.makefile("rw")
        f.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        f.flush()
        return json.loads(f.readline())


def wait_for(cond, timeout, what=None, step=0.1):
    """Poll cond every step seconds until it returns something true or timeout seconds have
    passed; returns its last value (falsy on a timeout, after saying what was not reached)."""
    deadline = time.time() + timeout
    value = cond()
    while not value and time.time() < deadline:
        time.sleep(step)
        value = cond()
    if not value and what:
        print(f"     (gave up waiting for {what} after {timeout} s)", flush=True)
    return value


def receive_opening_stock(stack, bus, store, pieces, grams):
    """Receive opening stock of every catalog item at store (pieces, or grams for items sold by
    weight), each under its own move id; returns SKU -> quantity received."""
    snap = bus.call("inventory", "catalog.snapshot", {"count": 1000})["body"]
    initial = {}
    for it in snap["items"]:
        qty = grams if it["unit"] == "kg" else pieces
        stack.posctl("stock", "receive", "--store", store, it["sku"], str(qty), "--ref", "INIT",
                     "--move-id", "init-" + it["sku"], check=True)
        initial[it["sku"]] = qty
    return initial


def check_books(checks, stack, bus, tickets, sim_summary, initial, store="S1", timeout=120):
    """After a simulated day (posctl sim's JSON summary): every sale the simulator rang up is in
    the sales stream once, the committed totals add up to the simulator's own sum, and the day
    report and the stock (initial: SKU -> quantity received) agree with the sums computed from
    the sale documents, to the fen and the piece, with no dead letter. Returns the stream's
    sale documents."""
    docs, after = [], "0"
    while True:
        page = bus.call("sales", "sale.replay", {"after": after, "count": 1000})["body"]
        docs += page["sales"]
        after = page["last"]
        if not page["more"]:
            break
    ids = [d["sale_id"] for d in docs]
    checks.eq(len(ids), tickets, "sales in the stream")
    checks.eq(len(set(ids)), tickets, "distinct sale ids in the stream (no sale twice)")
    total = sum(d["total"] for d in docs)
    sold = {}
    for d in docs:
        for line in d["lines"]:
            if not line.get("voided"):
                sold[line["sku"]] = sold.get(line["sku"], 0) + line["qty"]
    checks.eq(total, sim_summary.get("total_fen"),
              "sum of committed totals vs the simulator's own sum")

    def report():
        r = bus.call("reporting", "report.day", {"store": store}, allow_timeout=True)
        return r["body"]["totals"] if r and r["type"] == "reply" else {}
    wait_for(lambda: report().get("total") == total, timeout, "report total reaches the sum")
    got = report()
    checks.eq(got.get("total"), total,
              "report.day total (fen) vs the sum of the committed sale documents")

    def stock():
        r = bus.call("inventory", "stock.get", {"store": store}, allow_timeout=True)
        return r["body"]["stock"] if r and r["type"] == "reply" else {}
    want = {sku: initial[sku] - sold.get(sku, 0) for sku in initial}
    wait_for(lambda: stock() == want, timeout, "stock reaches initial - sold")
    have = stock()
    checks.eq({k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}, {},
              "SKUs whose stock is not initial - sold (got, want)")
    dead = sum(int(stack.redis_cli("XLEN", f"dead:{{{g}}}").stdout.strip() or 0)
               for g in ("inventory", "reporting"))
    checks.eq(dead, 0, "sales parked as dead letters by inventory and reporting")
    return docs


def extract_doc_block(marker, path):
    """The python block after <!-- marker --> in a doc file, written to path."""
    text = open(os.path.join(SRC, "docs", "protocol.md"), encoding="utf-8").read()
    after = text.split(f"<!-- {marker} -->", 1)[1]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    with open(path, "w", encoding="utf-8") as f:
        f.write(code)
    return path
