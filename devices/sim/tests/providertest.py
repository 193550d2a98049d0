"""What the payment-provider emulator tests (test_wechatpay.py, test_alipay.py) share, as
providercore.py is what the emulators share: the client's RSA key, one keep-alive HTTPS
connection trusting only the emulator's CA, the files in DIR, the emulator as a program (the
ready line, DIR/port, the control socket, SIGTERM) and the server certificate's names
(--cert-host). Each test keeps its provider's protocol: how a request is signed, how an answer
is checked.

Waits are on conditions with deadlines, never fixed sleeps."""
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time

import simtest
from simtest import PY, WAIT, sim_path  # noqa: E402 (sys.path too)

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def rsa_key_file(tmp, name):
    """A client RSA key pair: (private key, path of its public PEM tmp/name)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = os.path.join(tmp, name)
    with open(pub, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, pub


def until(pred, timeout=WAIT, step=0.05):
    """pred()'s first truthy value, or the last one after timeout."""
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


def trade(emu, otn):
    return next((t for t in emu.status()["trades"] if t["out_trade_no"] == otn), None)


class Connection:
    """One keep-alive HTTPS connection to an emulator on 127.0.0.1, trusting only its CA (the
    name checked is 127.0.0.1 too)."""

    def __init__(self, port, ca):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=ca)
        self.conn = None

    def exchange(self, method, path, body, headers, timeout=WAIT):
        """(response, its body, our socket's name), or None when the connection ended without
        an answer (it is then closed; the next exchange opens another)."""
        if self.conn is None:
            self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                                    timeout=timeout)
        self.conn.timeout = timeout
        if self.conn.sock is not None:
            self.conn.sock.settimeout(timeout)
        try:
            self.conn.request(method, path, body, headers)
            sockname = self.conn.sock.getsockname()
            resp = self.conn.getresponse()
            return resp, resp.read(), sockname
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            return None

    def close(self):
        if self.conn:
            self.conn.close()


def check_files(c, emu, names):
    """names exist in emu's DIR, DIR/port holds its port, and the server certificate is for
    127.0.0.1 and localhost."""
    d = emu.dir
    for name in names:
        c.check(os.path.exists(os.path.join(d, name)), f"{name} created")
    with open(os.path.join(d, "port")) as f:
        c.eq(int(f.read()), emu.port, "DIR/port holds the port")
    ips, dns = cert_names(d)
    c.check("127.0.0.1" in ips and "localhost" in dns,
            "server certificate: subjectAltName IP 127.0.0.1 and DNS localhost")


def cert_names(d):
    """The server certificate's subjectAltName: ([IP addresses as text], [DNS names])."""
    with open(os.path.join(d, "server.pem"), "rb") as f:
        san = x509.load_pem_x509_certificate(f.read()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    return [str(i) for i in san.get_values_for_type(x509.IPAddress)], \
        san.get_values_for_type(x509.DNSName)


def handshake(port, ca, name):
    """None when a TLS client trusting only ca and checking name connects to 127.0.0.1:port
    as if name resolved there; else why not."""
    ctx = ssl.create_default_context(cafile=ca)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            with ctx.wrap_socket(s, server_hostname=name):
                return None
    except (OSError, ssl.SSLError) as e:
        return f"{type(e).__name__}: {e}"


def test_cert_hosts(c, tmp, make):
    """--cert-host: make(dir, listen, cert_hosts) is the emulator (not started). The server
    certificate names the hosts; a client checking the name connects by it (also when the
    emulator listens on 0.0.0.0); a directory made without them gets a new server certificate
    from the same CA once they are asked for, and keeps it while they are."""
    d = os.path.join(tmp, "certhosts")
    with make(d, "127.0.0.1:0", ()) as emu:
        ca = emu.ca_file
        c.check(handshake(emu.port, ca, "payments-emulators") is not None,
                "cert-host: without it, the name payments-emulators is refused")
    with open(ca, "rb") as f:
        ca_before = f.read()
    with open(os.path.join(d, "server.pem"), "rb") as f:
        server_before = f.read()
    hosts = ("payments-emulators", "10.89.0.7")
    with make(d, "0.0.0.0:0", hosts) as emu:
        ips, dns = cert_names(d)
        c.check("payments-emulators" in dns and "10.89.0.7" in ips and "127.0.0.1" in ips and
                "localhost" in dns, f"cert-host: the names in subjectAltName ({ips} {dns})")
        with open(ca, "rb") as f:
            c.check(f.read() == ca_before, "cert-host: ca.pem unchanged")
        with open(os.path.join(d, "server.pem"), "rb") as f:
            server_after = f.read()
        c.check(server_after != server_before, "cert-host: a new server certificate")
        for name in ("payments-emulators", "10.89.0.7", "127.0.0.1", "localhost"):
            why = handshake(emu.port, ca, name)
            c.check(why is None, f"cert-host: listening on 0.0.0.0, connected by {name}"
                    + (f": {why}" if why else ""))
        c.check(handshake(emu.port, ca, "other-host") is not None,
                "cert-host: another name is still refused")
    with make(d, "127.0.0.1:0", hosts[:1]) as emu:
        with open(os.path.join(d, "server.pem"), "rb") as f:
            c.check(f.read() == server_after, "cert-host: names already covered, kept")
    try:
        make(d, "127.0.0.1:0", ("not a name",))
        c.fail("cert-host: 'not a name' accepted")
    except ValueError:
        c.check(True, "cert-host: a name that is no host name refused (ValueError)")


def start_program(c, tmp, script, args, control):
    """The emulator as a program (script with args, --dir tmp/prog, --control control):
    (process, port, ctl(dict) -> answer, stderr file). Checks the ready line and DIR/port."""
    d = os.path.join(tmp, "prog")
    err = open(os.path.join(tmp, "prog-stderr.log"), "w+")
    proc = subprocess.Popen([PY, sim_path(script), "--listen", "127.0.0.1:0", "--dir", d,
                             *args, "--control", control],
                            stdout=subprocess.PIPE, stderr=err, text=True)
    simtest.PROGRAMS.append(_Proc(proc))
    ready = json.loads(proc.stdout.readline() or "{}")
    c.check(ready.get("ready") is True and ready.get("dir") == d, "program: ready line")
    with open(os.path.join(d, "port")) as f:
        port = int(f.read())
    c.eq(ready.get("port"), port, "program: DIR/port matches the ready line")

    def ctl(req):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(WAIT)
            s.connect(control)
            s.sendall(json.dumps(req).encode() + b"\n")
            return json.loads(s.makefile().readline())
    return proc, port, ctl, err


def stop_program(c, tmp, proc, control, err):
    """SIGTERM: exit 0, the control socket and DIR/port removed (stderr shown if not)."""
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        rc = None
    c.eq(rc, 0, "program: SIGTERM exits 0")
    c.check(not os.path.exists(control), "program: control socket removed")
    c.check(not os.path.exists(os.path.join(tmp, "prog", "port")), "program: DIR/port removed")
    if rc != 0:
        err.seek(0)
        print(err.read())
    err.close()


class _Proc:
    def __init__(self, proc):
        self.proc = proc
