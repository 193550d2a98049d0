"""devtool - device_tool (devices/drivers/device_tool.c) run from a driver's test: one device,
its JSON lines read on a thread, commands written to its stdin, its stderr kept for the
sanitizer check. Run with Debian's /usr/bin/python3."""
import json
import os
import queue
import subprocess
import threading
import time

from harness import BIN, sanitizer_report

TOOLS = []  # every tool started, so a test can kill what is left: kill_all()


class DeviceTool:
    """device_tool DRIVER TRANSPORT [OPTIONS]; its stderr in errdir/device_tool-N.err."""

    def __init__(self, driver, transport, options=None, errdir="/tmp"):
        TOOLS.append(self)
        self.err = open(os.path.join(errdir, f"device_tool-{len(TOOLS)}.err"), "w+")
        argv = [f"{BIN}/device_tool", driver, transport] + ([options] if options else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, bufsize=1)
        self.lines = queue.Queue()  # every JSON line device_tool prints
        self.events = []            # every event seen, in order
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def read_until(self, pred, timeout=10):
        """The first line pred accepts within timeout (None otherwise); events are kept."""
        deadline = time.time() + timeout
        while True:
            try:
                msg = self.lines.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                return None
            if msg is None:
                return None
            if "event" in msg:
                self.events.append(msg["event"])
            if pred(msg):
                return msg
            if time.time() > deadline:
                return None

    def health(self):
        self.send("health")
        m = self.read_until(lambda m: "health" in m)
        return m["health"] if m else {}

    def outcome(self, key, timeout=10):
        """The done / failed event of the job with key: its name, or None."""
        end = self.read_until(lambda m: m.get("event", {}).get("name") in ("done", "failed")
                              and m["event"]["body"].get("key") == key, timeout)
        return end["event"]["name"] if end else None

    def quit(self, timeout=15):
        """(exit status, sanitizer report or None)."""
        self.send("quit")
        rc = self.proc.wait(timeout=timeout)
        self.err.seek(0)
        return rc, sanitizer_report(self.err.read())


def kill_all():
    for t in TOOLS:
        if t.proc.poll() is None:
            t.proc.kill()
