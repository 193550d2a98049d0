"""What the payment-provider emulators (wechatpay.py, alipay.py) share: the files they keep in
their directory (written atomically), the CA and the server certificate, the threaded HTTPS
server, the JSON-lines control socket, the start/stop life (threads, the port file, open
connections), the one-shot scenario and counted faults, and the command line. A provider
module keeps only its protocol: how a request is answered, how an answer is signed, its books
and its own control commands (docs: devices/sim/README.md).

Why it is built this way:

- A provider is a subclass of Provider and an HTTPS handler subclass of Handler. The handler
  reads a request (Content-Length only, at most MAX_BODY) and hands (method, path, headers,
  body) to the provider's handle(), which returns a Reply; the handler delivers it: late
  (`delay`), not at all (`drop`: the connection is shut), or rendered by the provider's
  render(). So every fault is a property of a Reply, in both providers the same way.
- The certificate directory outlives a run, so a client may keep trusting DIR/ca.pem: files
  already there are kept. The one exception is a server certificate that does not name every
  host asked for (--cert-host, e.g. the compose service name): it is made again from the same
  CA, so a client trusting ca.pem trusts it too.
- Threads: ThreadingHTTPServer (one thread per connection, the TLS handshake on that thread,
  not the accepting one), the control socket server, and whatever the provider spawns (its
  threads are joined at stop too). All state sits behind one lock; nothing sleeps holding it.

Run with Debian's /usr/bin/python3 (python3-cryptography)."""
import argparse
import base64
import datetime
import http.server
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# ---- defaults and limits ------------------------------------------------------------------
HANDSHAKE_TIMEOUT = 10.0     # seconds a client may take for the TLS handshake
IDLE_TIMEOUT = 60.0          # seconds a keep-alive connection may stay idle
MAX_BODY = 1 << 20           # bytes a request body may have
SLOW_SECONDS = 10.0          # the fault slow: seconds an answer waits
CERT_DAYS = 3650             # the CA's and the server certificate's lifetime
STOP_JOIN = 2.0              # seconds stop() waits for each thread
BASE_HOSTS = ("127.0.0.1", "localhost")   # always in the server certificate
DNS_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*")


# ---- small helpers ------------------------------------------------------------------------
def jdump(obj):
    """Compact JSON bytes, UTF-8 unescaped (as both providers write it)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def yuan(fen):
    """Integer fen as yuan with two decimals, without floating point."""
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def is_int(v):
    """Whether v is a JSON integer (not a float, not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool)


def write_atomic(path, data, mode=0o644):
    """Write data to path so that a reader sees the old file or the whole new one."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_pub(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def rsa_sign(key, message):
    """Base64 SHA256withRSA (PKCS#1 v1.5) of message."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(pub, signature_b64, message):
    """Whether signature_b64 is a valid SHA256withRSA signature of message."""
    try:
        pub.verify(base64.b64decode(signature_b64, validate=True), message,
                   padding.PKCS1v15(), hashes.SHA256())
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def load_public_key(path):
    """The client's RSA public key from a PEM public key or certificate (ValueError if not)."""
    with open(path, "rb") as f:
        data = f.read()
    if b"BEGIN CERTIFICATE" in data:
        pub = x509.load_pem_x509_certificate(data).public_key()
    else:
        pub = serialization.load_pem_public_key(data)
    if not isinstance(pub, rsa.RSAPublicKey):
        raise ValueError(f"{path}: not an RSA public key")
    return pub


# ---- the files in DIR ---------------------------------------------------------------------
def ensure_rsa_key(d, key_name, pub_name):
    """The RSA key in d/key_name, made (2048 bits) when missing; d/pub_name, its public key, is
    written when missing. Kept across runs, so a client may keep trusting the public key."""
    kpath, ppath = os.path.join(d, key_name), os.path.join(d, pub_name)
    if os.path.exists(kpath):
        with open(kpath, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_atomic(kpath, pem_key(key), 0o600)
    if not os.path.exists(ppath):
        write_atomic(ppath, pem_pub(key))
    return key


def general_name(host):
    """host as a subjectAltName entry: an IP address, else a DNS name (lower case).
    ValueError: neither."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if len(host) > 253 or not DNS_NAME.fullmatch(host):
        raise ValueError(f"--cert-host {host!r}: neither an IP address nor a DNS name")
    return x509.DNSName(host.lower())


def _server_names(path):
    """The subjectAltName entries of the certificate at path (empty when unreadable)."""
    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()


def _validity(builder):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (builder.serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS)))


def _make_ca(d, ca_name):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca = (_validity(x509.CertificateBuilder().subject_name(name).issuer_name(name)
                    .public_key(key.public_key()))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                         critical=False)
          .sign(key, hashes.SHA256()))
    write_atomic(os.path.join(d, "ca.key"), pem_key(key), 0o600)
    write_atomic(os.path.join(d, "ca.pem"), ca.public_bytes(serialization.Encoding.PEM))


def _make_server_cert(d, names):
    with open(os.path.join(d, "ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(os.path.join(d, "ca.pem"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_validity(x509.CertificateBuilder()
                      .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                  BASE_HOSTS[0])]))
                      .issuer_name(ca.subject).public_key(key.public_key()))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                         False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_atomic(os.path.join(d, "server.key"), pem_key(key), 0o600)
    write_atomic(os.path.join(d, "server.pem"), cert.public_bytes(serialization.Encoding.PEM))


def ensure_tls(d, ca_name, hosts=()):
    """Create in d what is missing: the CA (ca.pem, ca.key; common name ca_name) and the server
    certificate (server.pem, server.key) for 127.0.0.1, localhost and hosts (an IP address
    becomes an IP entry, anything else a DNS one). Files already there are kept, so a client
    may keep trusting ca.pem across runs; a server certificate that does not name all of
    hosts is made again from the same CA. ValueError: a host that is no valid name."""
    os.makedirs(d, exist_ok=True)
    p = lambda name: os.path.join(d, name)  # noqa: E731
    names = list(dict.fromkeys(general_name(h) for h in (*BASE_HOSTS, *hosts)))
    fresh_ca = not (os.path.exists(p("ca.pem")) and os.path.exists(p("ca.key")))
    if fresh_ca:
        _make_ca(d, ca_name)
    if fresh_ca or not os.path.exists(p("server.key")) or \
            not set(names) <= _server_names(p("server.pem")):
        _make_server_cert(d, names)


# ---- what goes back -----------------------------------------------------------------------
class Delivery:
    """How an answer is delivered: with its signed bytes changed after signing (`tamper`,
    the provider's render() does that), after `delay` seconds, or not at all (`drop`: the
    connection closes). A provider's Reply adds what it answers."""

    def __init__(self):
        self.tamper = self.drop = False
        self.delay = 0.0

    def fault(self, kind, kw):
        """Apply a delivery fault: drop, slow (kw seconds) or tampered_signature."""
        if kind == "drop":
            self.drop = True
        elif kind == "slow":
            self.delay = float(kw.get("seconds", SLOW_SECONDS))
        elif kind == "tampered_signature":
            self.tamper = True
        return self


# ---- the HTTPS side -----------------------------------------------------------------------
class Handler(http.server.BaseHTTPRequestHandler):
    """One keep-alive HTTPS connection: requests to the provider's handle(), its Replies
    delivered. A provider gives refusal(status, text) -> Reply (a body this refuses to read)
    and render(reply) -> (status, [(header, value)], body) (Content-Length is added here)."""
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT

    def setup(self):
        emu = self.server.emu
        self.request.settimeout(HANDSHAKE_TIMEOUT)
        # headers and body go out in separate sends: without this the body waits for the
        # client's delayed ACK (about 40 ms an answer)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = emu.tls.wrap_socket(self.request, server_side=True)
        emu._track(self.request, True)
        super().setup()

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.emu._track(self.request, False)
            self.request.close()

    def log_message(self, fmt, *args):
        self.server.emu.log.debug("http: " + fmt, *args)

    def _any(self):
        emu = self.server.emu
        if self.headers.get("Transfer-Encoding"):
            reply = emu.refusal(411, "Content-Length required")
            self.close_connection = True
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                reply = emu.refusal(400, "bad Content-Length")
                self.close_connection = True
            else:
                body = self.rfile.read(length) if length else b""
                reply = emu.handle(self.command, self.path, self.headers, body)
        self._deliver(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

    def _deliver(self, reply):
        emu = self.server.emu
        if reply.delay and emu._stopping.wait(reply.delay):
            reply.drop = True
        if reply.drop:
            self.close_connection = True
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        status, headers, body = emu.render(reply)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)
        self.wfile.flush()


class HttpsServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def server_bind(self):
        # HTTPServer.server_bind asks getfqdn() for the address: on 0.0.0.0 in a container
        # without DNS that is a reverse lookup waiting for a timeout, for a name never used
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        self.emu.log.debug("connection from %s ended: %s", client_address, sys.exc_info()[1])


class _ControlHandler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                answer = self.server.emu.command(req) if isinstance(req, dict) else \
                    {"ok": False, "error": "a command is a JSON object"}
            except ValueError as e:
                answer = {"ok": False, "error": f"bad JSON: {e}"}
            self.wfile.write(jdump(answer) + b"\n")
            self.wfile.flush()


class _ControlServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False


# ---- the provider -------------------------------------------------------------------------
class Provider:
    """An emulator on threads of the calling process: start(), stop(), port, ca_file,
    command(dict), mode(next, **kw), status(); a context manager. listen is "HOST:PORT"
    (127.0.0.1, or 0.0.0.0 for every interface; port 0: a free one); control, a unix socket
    path for the JSON-lines control socket; cert_hosts, more names for the server certificate.

    A subclass sets NAME (logger, thread and CA names), SCENARIOS, FAULT_KINDS,
    FAULT_ENDPOINTS (what `faults` may name), MODE_NUMBERS (mode's numeric keys), READY_PATH
    (in the ready log line) and HANDLER (its Handler subclass), and gives handle(), render(),
    refusal() (see Handler), stopped_note() (the stop log line's figures), _charge(t, when)
    (for _settle; WAITING names the state a buyer still pays in), its _cmd_status and its
    other _cmd_<name> control commands. started() runs when the HTTPS server is up."""
    NAME = "provider"
    SCENARIOS = ()
    FAULT_KINDS = ()
    FAULT_ENDPOINTS = ()
    MODE_NUMBERS = ("seconds",)
    READY_PATH = ""
    HANDLER = Handler
    WAITING = None

    def __init__(self, dir, listen="127.0.0.1:0", control=None, cert_hosts=()):
        self.log = logging.getLogger(self.NAME)
        self.dir = dir
        host, _, port = listen.rpartition(":")
        self.listen = (host or "127.0.0.1", int(port))
        self.control = control
        ensure_tls(dir, f"posbus {self.NAME} emulator CA", cert_hosts)
        self.ca_file = os.path.join(dir, "ca.pem")
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(os.path.join(dir, "server.pem"), os.path.join(dir, "server.key"))
        self.lock = threading.RLock()
        self._stopping = threading.Event()
        self.stopped = threading.Event()
        self._conns = set()
        self._threads = []
        self.httpd = self.ctl = None
        self.port = None
        # the script and the request counts
        self.next = {"next": "success"}
        self.faults = {}                 # endpoint -> {"kind", "count", ...}
        self.requests = {}
        self.seq = int.from_bytes(secrets.token_bytes(3), "big")
        self.bill_edits = {"drop": set(), "amount": {}, "add": []}

    # -- life
    def start(self):
        port_file = os.path.join(self.dir, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        self.httpd = HttpsServer(self.listen, self.HANDLER)
        self.httpd.emu = self
        self.port = self.httpd.server_address[1]
        self._spawn(self.httpd.serve_forever, "https")
        self.started()
        if self.control:
            if os.path.exists(self.control):
                os.unlink(self.control)
            self.ctl = _ControlServer(self.control, _ControlHandler)
            self.ctl.emu = self
            self._spawn(self.ctl.serve_forever, "control")
        # the port file last: whoever waits for it finds the control socket there too
        write_atomic(port_file, f"{self.port}\n".encode())
        self.log.info("ready: https %s:%d%s dir %s", self.listen[0], self.port, self.READY_PATH,
                      self.dir)
        return self

    def started(self):
        pass

    def stop(self):
        if self._stopping.is_set():
            self.stopped.wait()
            return
        self._stopping.set()
        if self.ctl:
            self.ctl.shutdown()
            self.ctl.server_close()
            if os.path.exists(self.control):
                os.unlink(self.control)
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            with self.lock:
                conns = list(self._conns)
            for s in conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            port_file = os.path.join(self.dir, "port")
            if os.path.exists(port_file):
                os.unlink(port_file)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(STOP_JOIN)
        self.log.info("stopped: %s", self.stopped_note())
        self.stopped.set()

    def stopped_note(self):
        return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _spawn(self, fn, name):
        t = threading.Thread(target=fn, name=f"{self.NAME}-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def _track(self, sock, add):
        with self.lock:
            (self._conns.add if add else self._conns.discard)(sock)

    def _count(self, name):
        with self.lock:
            self.requests[name] = self.requests.get(name, 0) + 1

    # -- the script
    def _take_fault(self, endpoint):
        """The fault scripted for endpoint's next call (a copy), counted down; or None."""
        with self.lock:
            f = self.faults.get(endpoint)
            if not f:
                return None
            f["count"] -= 1
            if f["count"] <= 0:
                del self.faults[endpoint]
            return dict(f)

    def faulted(self, endpoint, act, failure):
        """act()'s Reply as endpoint's scripted fault has it: system_error answers
        failure(False) without act(), or failure(True) after it when the fault says
        "applied"; refused answers the provider's refused_reply(endpoint, fault) without
        act(); the other kinds are delivery faults of act()'s Reply."""
        fault = self._take_fault(endpoint)
        if fault and fault["kind"] == "system_error" and not fault.get("applied", False):
            return failure(False)
        if fault and fault["kind"] == "refused":
            self.log.info("%s: scripted refusal, nothing done", endpoint)
            return self.refused_reply(endpoint, fault)
        reply = act()
        if fault:
            if fault["kind"] == "system_error":
                reply = failure(True)
            else:
                reply.fault(fault["kind"], fault)
        return reply

    def refused_reply(self, endpoint, fault):
        """The Reply of the fault refused (a provider listing it in FAULT_KINDS has one): a
        signed business refusal with fault's code, nothing done."""
        raise NotImplementedError(f"{self.NAME}: no refusal for {endpoint}")

    def scripted(self, reply, mode):
        """reply delivered as the pay scenario mode says (drop_after_charge: dropped; a
        scenario named after a fault kind: that fault)."""
        kind = {"drop_after_charge": "drop"}.get(mode["next"], mode["next"])
        if kind in self.FAULT_KINDS:
            reply.fault(kind, mode)
        return reply

    # -- the books
    def _settle(self, t):
        """Bring trade t up to now: one WAITING for the buyer is charged (the provider's
        _charge(t, when)) once its pay_due (monotonic) has come, as paid at created +
        pay_seconds. Time-driven states are computed when looked at: no timer races a query."""
        if t["state"] == self.WAITING and t["pay_due"] is not None \
                and time.monotonic() >= t["pay_due"]:
            self._charge(t, t["created"] + t["pay_seconds"])

    # -- control
    def command(self, req):
        """One control command (a dict) -> its answer dict (any thread)."""
        cmd = req.get("cmd")
        try:
            fn = getattr(self, "_cmd_" + str(cmd), None)
            if fn is None:
                return {"ok": False, "error": f"unknown command {cmd!r}"}
            with self.lock:
                return fn(req)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            return {"ok": False, "error": f"bad {cmd}: {e}"}

    def mode(self, next, **kw):
        return self.command({"cmd": "mode", "next": next, **kw})

    def status(self):
        return self.command({"cmd": "status"})

    def _cmd_mode(self, req):
        if req.get("next") not in self.SCENARIOS:
            return {"ok": False, "error": f"next must be one of {', '.join(self.SCENARIOS)}"}
        for k in self.MODE_NUMBERS:
            if k in req:
                float(req[k])
        self.next = {k: v for k, v in req.items() if k != "cmd"}
        return {"ok": True, "next": self.next}

    def _cmd_faults(self, req):
        if req.get("clear"):
            self.faults = {}
        count = int(req.get("count", 1))
        kw = {k: v for k, v in req.items()
              if k in ("seconds", "applied", "status", "code", "sub_code", "message")}
        for ep in self.FAULT_ENDPOINTS:
            if ep in req:
                if req[ep] not in self.FAULT_KINDS:
                    return {"ok": False,
                            "error": f"{ep}: one of {', '.join(self.FAULT_KINDS)}"}
                if count > 0:
                    self.faults[ep] = {"kind": req[ep], "count": count, **kw}
                else:
                    self.faults.pop(ep, None)
        return {"ok": True, "faults": self.faults}

    def _cmd_quit(self, req):
        threading.Thread(target=self.stop, daemon=True).start()
        return {"ok": True}


# ---- the command line ---------------------------------------------------------------------
def main(argv, cls, description, add_args, make):
    """The program: parse the common options around add_args(parser)'s, make(args) the
    emulator (a cls), start it, print the ready line, run until SIGTERM/SIGINT or quit.
    Returns the exit status (2: it could not start)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--listen", default="127.0.0.1:0",
                    help="HOST:PORT, HOST 127.0.0.1 or 0.0.0.0 (every interface); "
                         "PORT 0: a free port")
    ap.add_argument("--dir", required=True, help="certificates, keys and the port file")
    add_args(ap)
    ap.add_argument("--control", help="unix socket path for the JSON-lines control socket")
    ap.add_argument("--cert-host", action="append", default=[], metavar="NAME",
                    help="one more name (DNS, or an IP address) the server certificate is "
                         "for, besides 127.0.0.1 and localhost; repeatable")
    ap.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format=f"{cls.NAME}: %(levelname)s %(message)s")
    try:
        emu = make(args).start()
    except (ValueError, OSError) as e:
        logging.getLogger(cls.NAME).error("cannot start: %s", e)
        return 2

    def on_signal(signum, frame):
        threading.Thread(target=emu.stop, daemon=True).start()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(json.dumps({"ready": True, "port": emu.port, "dir": args.dir}), flush=True)
    while not emu.stopped.wait(0.5):
        pass
    return 0
