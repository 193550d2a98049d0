#!/usr/bin/python3
"""test_escpos - the ESC/POS driver alone (device_tool) against the printer simulator on a pty:
a job prints once per key, health follows the paper, garbage from the printer changes nothing."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "tests", "integration"))
sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "devices", "sim"))
from harness import BIN, Checks, wait_for  # noqa: E402
from escpos_printer import Printer  # noqa: E402

c = Checks("test_escpos")
tmp = tempfile.mkdtemp(prefix="posbus-escpos-")
link = os.path.join(tmp, "printer.tty")
printer = Printer(pty=link, width=80)
printer.start()
tool = subprocess.Popen([f"{BIN}/device_tool", "escpos", f"serial:{link},baud=19200"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
lines = []


def send(cmd):
    tool.stdin.write(cmd + "\n")
    tool.stdin.flush()


def read_until(pred, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = tool.stdout.readline()
        if not line:
            return None
        msg = json.loads(line)
        lines.append(msg)
        if pred(msg):
            return msg
    return None


def health():
    send("health")
    return read_until(lambda m: "health" in m)["health"]


c.check(wait_for(lambda: health().get("health") == "ok", 10), "the printer is found, ok")
doc = ("1b40" + "hello posbus".encode().hex() + "0a" + "1d5601")
send(f"submit job-1 print hex:{doc}")
send(f"submit job-1 print hex:{doc}")
c.check(read_until(lambda m: m.get("event", {}).get("name") == "done") is not None, "job done")
time.sleep(1)
c.eq(len(printer.receipts()), 1, "a job submitted twice with one key prints once")
c.check(printer.receipts()[0]["text"].strip() == "hello posbus", "its text")
printer.set_paper("out")
c.check(wait_for(lambda: health().get("health") == "error", 10), "paper out: health error")
printer.set_paper("ok")
c.check(wait_for(lambda: health().get("health") == "ok", 10), "paper back: ok")
printer.garbage(bytes.fromhex("ff00ff00"))
send(f"submit job-2 print hex:{doc}")
c.check(read_until(lambda m: m.get("event", {}).get("name") == "done") is not None,
        "garbage from the printer: the next job still prints")
send("stats")
stats = read_until(lambda m: "stats" in m)["stats"]
c.check(stats.get("jobs") == 2 and stats.get("bytes_out") == printer.status()["bytes_received"],
        f"statistics match what the printer saw: {stats}")
send("quit")
c.eq(tool.wait(timeout=10), 0, "device_tool exits 0")
printer.stop()
c.finish()
