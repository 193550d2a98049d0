"""Helpers for the Python black-box tests: a private redis-server, busd and services on free
127.0.0.1 ports in a temporary directory, posctl, a raw bus client, checks. Every process started
here is killed when the test ends, pass or fail. Run with Debian's /usr/bin/python3."""
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


class Checks:
    def __init__(self, name):
        self.name, self.passed, self.failed = name, 0, 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
            print("ok  ", what, flush=True)
        else:
            self.failed += 1
            print("FAIL", what, flush=True)
        return cond

    def finish(self):
        print(f"{self.name}: {self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(0 if self.failed == 0 else 1)


class Stack:
    """redis-server + busd + services, with CURVE keys, all private to one test."""

    def __init__(self, name):
        self.tmp = tempfile.mkdtemp(prefix=f"posbus-{name}-")
        self.procs = {}
        atexit.register(self.cleanup)
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
        self.keys = os.path.join(self.tmp, "keys")
        self.redis_port = free_port()
        self.pub, self.sub, self.req = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
        self.password_file = os.path.join(self.tmp, "redis.pass")
        with open(self.password_file, "w", encoding="utf-8") as f:
            f.write("test-" + secrets.token_hex(8) + "\n")
        for name in ("svc", "cli", "py"):
            self.posctl("keygen", self.keys, name, check=True)

    def cleanup(self):
        for p in list(self.procs.values()):
            if p.poll() is None:
                p.kill()
                p.wait()
        if not os.environ.get("POSBUS_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, tag, argv):
        log = open(os.path.join(self.tmp, tag + ".log"), "ab")
        self.procs[tag] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        return self.procs[tag]

    def kill(self, tag, sig=signal.SIGKILL):
        p = self.procs.pop(tag)
        p.send_signal(sig)
        p.wait()

    def start_redis(self):
        with open(self.password_file, encoding="utf-8") as f:
            password = f.read().strip()
        self.spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                             "--requirepass", password, "--save", "", "--appendonly", "yes",
                             "--dir", self.tmp])
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def start_busd(self):
        self.spawn("busd", [f"{BIN}/busd", "--pub-bind", self.pub, "--sub-bind", self.sub,
                            "--req-bind", self.req, "--cert",
                            os.path.join(self.keys, "busd.cert_secret"), "--clients-dir",
                            os.path.join(self.keys, "clients"), "--heartbeat-ms", "250",
                            "--heartbeat-timeout-ms", "1500"])

    def conn_args(self, cert="cli"):
        return ["--pub-endpoint", self.pub, "--sub-endpoint", self.sub, "--req-endpoint",
                self.req, "--cert", os.path.join(self.keys, cert + ".cert_secret"),
                "--server-cert", os.path.join(self.keys, "busd.cert")]

    def start_service(self, tag, program, *extra):
        return self.spawn(tag, [f"{BIN}/{program}", *self.conn_args("svc"), "--redis-port",
                                str(self.redis_port), "--redis-password-file",
                                self.password_file, "--heartbeat-ms", "250",
                                "--heartbeat-timeout-ms", "1500", *extra])

    def posctl(self, *args, check=False, timeout=300):
        argv = [f"{BIN}/posctl"]
        if args[0] != "keygen":
            argv += self.conn_args()
        r = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"posctl {' '.join(args)} failed: {r.stderr}")
        return r

    def posctl_json(self, *args):
        r = self.posctl(*args, "--format", "json", check=True)
        return json.loads(r.stdout.strip().splitlines()[-1])

    def wait_healthy(self, services, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.posctl("--expect", ",".join(services), "ping").returncode == 0:
                return True
            time.sleep(0.2)
        return False


class Bus:
    """A raw client of busd's request protocol (BUS1C), to send what posctl never would."""

    def __init__(self, stack, cert="py"):
        me = load_cert(os.path.join(stack.keys, cert + ".cert_secret"))
        server = load_cert(os.path.join(stack.keys, "busd.cert"))
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.curve_publickey, self.sock.curve_secretkey = me["public"], me["secret"]
        self.sock.curve_serverkey = server["public"]
        self.sock.connect(stack.req)
        self.seq = 0

    def call_raw(self, service, payload, timeout=5.0):
        corr = secrets.token_bytes(8)
        self.sock.send_multipart([b"BUS1C", b"REQ", service.encode(), corr, payload])
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.sock.poll(int((deadline - time.time()) * 1000) + 1):
                reply = self.sock.recv_multipart()
                if len(reply) == 4 and reply[2] == corr:
                    return msgpack.unpackb(reply[3], raw=False)
        return None

    def call(self, service, method, body, timeout=5.0):
        self.seq += 1
        env = {"v": 1, "type": method, "id": secrets.token_hex(16), "src": "pytest",
               "seq": self.seq, "ts": int(time.time() * 1000), "body": body}
        return self.call_raw(service, msgpack.packb(env), timeout)


def extract_doc_block(marker, path):
    """The python block after <!-- marker --> in a doc file, written to path."""
    text = open(os.path.join(SRC, "docs", "protocol.md"), encoding="utf-8").read()
    after = text.split(f"<!-- {marker} -->", 1)[1]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    with open(path, "w", encoding="utf-8") as f:
        f.write(code)
    return path
