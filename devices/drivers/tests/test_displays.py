#!/usr/bin/python3
"""test_displays - the customer display drivers alone (device_tool) against their simulators on
a pty: the VFD shows exactly the two lines (padded, cut at 20, not wrapped, non-ASCII as '?'),
clear empties it, a key submitted twice updates once; the LED display shows total 55.90 with
the total label, then change 4.10 with the change label; a bad label or amount is refused and
nothing is sent; after garbage from the display and a disconnect the next show works and the
statistics count a reconnect. Both displays on a pty and over TCP: a 6 KB burst of garbage and
20 shows at once change nothing (no reconnect, the last one shown); after a disconnect (TCP),
and after the line dropped right after a show's first bytes (drop_after_bytes), the display
shows the last job again, whole; jobs, opens and bytes match what the display counted."""
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "tests", "integration"))
sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "devices", "sim"))
from harness import BIN, Checks, Failure, wait_for  # noqa: E402
from led_display import LED  # noqa: E402
from vfd_display import VFD  # noqa: E402

WAIT = 10.0
QUIET = 1.5  # seconds in which a refused or repeated job must not reach the display


class Tool:
    """device_tool DRIVER TRANSPORT, its JSON lines read on a thread."""

    def __init__(self, driver, transport, options=""):
        self.proc = subprocess.Popen([f"{BIN}/device_tool", driver, transport, options],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.lines = queue.Queue()
        self.events = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def until(self, pred, timeout=WAIT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                msg = self.lines.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            if msg is None:
                raise Failure("device_tool exited")
            if "event" in msg:
                self.events.append(msg["event"])
            if pred(msg):
                return msg
        return None

    def ask(self, what):
        self.send(what)
        msg = self.until(lambda m: what in m)
        if msg is None:
            raise Failure(f"device_tool did not answer {what}")
        return msg[what]

    def submit(self, key, verb, arg=""):
        self.send(f"submit {key} {verb} {arg}".rstrip())
        return self.until(lambda m: "submitted" in m)["submitted"]

    def outcome(self, key):
        """The name of the job's done/failed event, None when none came."""
        def match(m):
            e = m.get("event", {})
            return e.get("name") in ("done", "failed") and e.get("body", {}).get("key") == key
        for e in self.events:
            if match({"event": e}):
                return e["name"]
        msg = self.until(match)
        return msg["event"]["name"] if msg else None

    def quit(self):
        self.send("quit")
        try:
            return self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def hexlines(*lines):
    return "hex:" + "\n".join(lines).encode().hex()


def test_vfd(c, tmp):
    vfd = VFD(pty=os.path.join(tmp, "vfd.tty")).start()
    tool = Tool("vfd", f"serial:{vfd.link}")
    c.check(wait_for(lambda: tool.ask("health").get("health") == "ok", WAIT),
            "vfd: attached, health ok")
    st = vfd.screen()
    c.check(st["clears"] == 1 and st["lines"] == [" " * 20] * 2 and st["unknown"] == 0,
            f"vfd: attach initialises and clears the display ({st})")

    c.eq(tool.submit("v-1", "show", hexlines("Total 55.90 and more text here",
                                             "谢谢 thanks very much for shopping")),
         0, "vfd: show queued")
    c.eq(tool.outcome("v-1"), "done", "vfd: show done")
    st = vfd.screen()
    c.eq(st["lines"], ["Total 55.90 and more", "?? thanks very much "],
         "vfd: two lines cut at 20 (not wrapped), CJK as '?'")
    c.eq(st["unknown"], 0, "vfd: the driver sends nothing the display does not know")
    sent = st["bytes_received"]
    c.eq(tool.submit("v-1", "show", hexlines("other", "text")), 1,
         "vfd: the same key again is not queued")
    time.sleep(QUIET)
    c.eq(vfd.screen()["bytes_received"], sent, "vfd: the same key twice updates once")

    tool.submit("v-2", "show", hexlines("Milk 1L", ""))
    c.eq(tool.outcome("v-2"), "done", "vfd: a short show done")
    c.eq(vfd.screen()["lines"], ["Milk 1L" + " " * 13, " " * 20],
         "vfd: a short line padded, an empty second line blank")

    tool.submit("v-3", "clear")
    c.eq(tool.outcome("v-3"), "done", "vfd: clear done")
    st = vfd.screen()
    c.check(st["lines"] == [" " * 20] * 2 and st["clears"] == 2,
            f"vfd: clear empties the display ({st['lines']}, clears {st['clears']})")

    sent = st["bytes_received"]
    tool.submit("v-4", "show", hexlines("one", "two", "three"))
    c.eq(tool.outcome("v-4"), "failed", "vfd: three lines are refused")
    tool.submit("v-5", "blink", "text:x")
    c.eq(tool.outcome("v-5"), "failed", "vfd: an unknown verb is refused")
    time.sleep(QUIET)
    c.eq(vfd.screen()["bytes_received"], sent, "vfd: nothing sent for refused jobs")

    vfd.garbage(b"\xff\x00\x1b@garbage")
    c.check(wait_for(lambda: tool.ask("stats").get("bytes_in") == 11, WAIT),
            "vfd: the driver reads and drops garbage from the display")
    c.eq(tool.ask("health").get("health"), "ok", "vfd: garbage leaves health ok")
    c.eq(vfd.disconnect().get("ok"), True, "vfd: the simulator drops the line")
    tool.submit("v-6", "show", hexlines("after", "reconnect"))
    c.eq(tool.outcome("v-6"), "done", "vfd: after garbage and a disconnect the next show done")
    c.eq(vfd.screen()["lines"], ["after" + " " * 15, "reconnect" + " " * 11],
         "vfd: after the reconnect it shows the new lines")
    stats = tool.ask("stats")
    c.check(stats.get("reconnects", 0) >= 1 and stats.get("jobs") == 4 and
            stats.get("jobs_failed") == 2, f"vfd: statistics count a reconnect, 4 jobs, "
            f"2 refused ({stats})")
    c.eq(tool.ask("health").get("health"), "ok", "vfd: health ok again")
    c.eq(tool.quit(), 0, "vfd: device_tool exits 0")
    vfd.stop()


def test_led(c, tmp):
    led = LED(pty=os.path.join(tmp, "led.tty")).start()
    tool = Tool("led_price", f"serial:{led.link}")
    c.check(wait_for(lambda: tool.ask("health").get("health") == "ok", WAIT),
            "led: attached, health ok")
    tool.submit("l-1", "show", "text:total 55.90")
    c.eq(tool.outcome("l-1"), "done", "led: show done")
    st = led.state()
    c.eq([st["number"], st["label"]], ["55.90", "total"], "led: total 55.90, total label lit")
    tool.submit("l-2", "show", "text:change 4.10")
    c.eq(tool.outcome("l-2"), "done", "led: second show done")
    st = led.state()
    c.eq([st["number"], st["label"], st["unknown"]], ["4.10", "change", 0],
         "led: change 4.10, change label lit, nothing unknown")

    sent, updates = st["bytes_received"], st["updates"]
    c.eq(tool.submit("l-2", "show", "text:change 9.99"), 1, "led: the same key is not queued")
    bad = ["bogus 1.00", "total 5.9", "total 55", "total -1.00", "total 1e3.00", "total",
           "total  1.00", "total 123456789.00", "price 12.345", ""]
    for i, text in enumerate(bad):
        tool.submit(f"bad-{i}", "show", f"text:{text}")
    outcomes = [tool.outcome(f"bad-{i}") for i in range(len(bad))]
    c.eq(outcomes, ["failed"] * len(bad), f"led: bad label or amount refused ({bad})")
    time.sleep(QUIET)
    st = led.state()
    c.eq([st["bytes_received"], st["updates"], st["number"], st["label"]],
         [sent, updates, "4.10", "change"], "led: nothing sent for refused or repeated jobs")

    tool.submit("l-3", "show", "text:price 12345678.00")
    c.eq(tool.outcome("l-3"), "failed", "led: ten digits do not fit eight")
    tool.submit("l-4", "show", "text:received 123456.78")
    c.eq(tool.outcome("l-4"), "done", "led: eight digits fit")
    st = led.state()
    c.eq([st["number"], st["label"]], ["123456.78", "received"], "led: received 123456.78")
    tool.submit("l-5", "show", "text:none 0.05")
    tool.outcome("l-5")
    st = led.state()
    c.eq([st["number"], st["label"]], ["0.05", "none"], "led: a number without a label")
    tool.submit("l-6", "clear")
    c.eq(tool.outcome("l-6"), "done", "led: clear done")
    st = led.state()
    c.eq([st["number"], st["label"]], ["0", "none"], "led: clear: number 0, labels off")

    led.garbage(b"\xff\xfe\r\n")
    c.check(wait_for(lambda: tool.ask("stats").get("bytes_in") == 4, WAIT),
            "led: the driver reads and drops garbage from the display")
    c.eq(tool.ask("health").get("health"), "ok", "led: garbage leaves health ok")
    c.eq(led.disconnect().get("ok"), True, "led: the simulator drops the line")
    tool.submit("l-7", "show", "text:total 88.00")
    c.eq(tool.outcome("l-7"), "done", "led: after garbage and a disconnect the next show done")
    st = led.state()
    c.eq([st["number"], st["label"]], ["88.00", "total"], "led: total 88.00 after reconnect")
    stats = tool.ask("stats")
    c.check(stats.get("reconnects", 0) >= 1, f"led: statistics count a reconnect ({stats})")
    c.eq(stats.get("bytes_out"), led.state()["bytes_received"],
         "led: every byte the driver wrote reached the display")
    c.eq(tool.quit(), 0, "led: device_tool exits 0")
    led.stop()


def test_vfd_tcp(c):
    """Over TCP a write after the display closed the connection can still succeed (the kernel
    takes it, the reset comes later) and be lost: the driver must see the end first."""
    vfd = VFD(tcp="127.0.0.1:0").start()
    tool = Tool("vfd", f"tcp:127.0.0.1:{vfd.port}")
    c.check(wait_for(lambda: tool.ask("health").get("health") == "ok", WAIT),
            "vfd tcp: attached, health ok")
    for i in range(3):
        c.eq(vfd.disconnect().get("ok"), True, f"vfd tcp: connection {i + 1} dropped")
        tool.submit(f"t-{i}", "show", hexlines("over tcp", f"show {i}"))
        c.eq(tool.outcome(f"t-{i}"), "done", f"vfd tcp: show {i} done")
        # the simulator may accept the new connection after the driver wrote into it
        want = ["over tcp" + " " * 12, f"show {i}" + " " * 14]
        c.check(wait_for(lambda: vfd.screen()["lines"] == want, WAIT),
                f"vfd tcp: show {i} right after a disconnect reaches the display "
                f"({vfd.screen()['lines']})")
    stats = tool.ask("stats")
    c.eq(stats.get("reconnects"), 3, "vfd tcp: three reconnects counted")
    c.eq(tool.quit(), 0, "vfd tcp: device_tool exits 0")
    vfd.stop()


def test_faults(c, tmp, kind, led):
    """Garbage, a burst of jobs, a disconnect and the line dropped right after a job's bytes
    (which the display never acknowledges, so the job is done and its bytes lost): after the
    reconnect the display shows the last job again; the statistics match the display's."""
    name = "led" if led else "vfd"
    what = f"{name} {kind}"
    cls = LED if led else VFD
    sim = (cls(pty=os.path.join(tmp, f"{name}-faults.tty")) if kind == "pty" else
           cls(tcp="127.0.0.1:0")).start()
    tool = Tool("led_price" if led else "vfd", f"serial:{sim.link}" if kind == "pty" else
                f"tcp:127.0.0.1:{sim.port}")
    state = sim.state if led else sim.screen

    def shows(i):
        return f"text:total {i}.00" if led else hexlines("burst", f"show {i}")

    def shown(i):
        return [state()["number"], state()["label"]] if led else state()["lines"]

    def want(i):
        return [f"{i}.00", "total"] if led else ["burst" + " " * 15, f"show {i}".ljust(20)]

    c.check(wait_for(lambda: tool.ask("health").get("health") == "ok", WAIT),
            f"{what}: attached, health ok")
    opens = tool.ask("stats").get("opens")
    sim.garbage(bytes([0xFF, 0x00, 0x0D, 0x1B]) * 1500)
    c.check(wait_for(lambda: tool.ask("stats").get("bytes_in") == 6000, WAIT),
            f"{what}: a 6 KB burst of garbage from the display is read and dropped")
    keys = [f"{kind}-b{i}" for i in range(20)]
    for i, k in enumerate(keys):
        tool.submit(k, "show", shows(i))
    c.eq([tool.outcome(k) for k in keys], ["done"] * 20, f"{what}: 20 shows at once: all done")
    c.check(wait_for(lambda: shown(19) == want(19), WAIT),
            f"{what}: the display shows the last", want(19), shown(19))
    c.eq(tool.ask("stats").get("opens"), opens, f"{what}: no reconnect for garbage or a burst")

    drops = 0
    if kind == "tcp":  # (test_vfd and test_led disconnect the pty)
        c.eq(sim.disconnect().get("ok"), True, f"{what}: the display disconnects")
        drops += 1
        c.check(wait_for(lambda: tool.ask("stats").get("reconnects") == drops, WAIT),
                f"{what}: the driver reconnects")
        c.check(wait_for(lambda: shown(19) == want(19), WAIT),
                f"{what}: after the reconnect the display shows the last job again", want(19),
                shown(19))

    sim.command({"cmd": "drop_after_bytes", "n": 3})
    tool.submit(f"{kind}-d1", "show", shows(42))
    drops += 1
    c.eq(tool.outcome(f"{kind}-d1"), "done", f"{what}: the line dropped after 3 bytes of a show")
    c.check(wait_for(lambda: tool.ask("stats").get("reconnects") == drops, WAIT),
            f"{what}: the driver sees the line go and reconnects")
    c.check(wait_for(lambda: shown(42) == want(42), WAIT),
            f"{what}: after the reconnect the display shows that job whole", want(42),
            shown(42))
    st, stats = state(), tool.ask("stats")
    c.eq([stats.get("jobs"), stats.get("jobs_failed"), stats.get("opens")],
         [21, 0, st["connections"]],
         f"{what}: statistics: 21 jobs, none failed, opens = the display's connections")
    c.eq(stats.get("bytes_out"), st["bytes_received"] + st["bytes_dropped"],
         f"{what}: bytes_out is what the display received and lost in the drop")
    c.eq(stats.get("bytes_in"), 6000, f"{what}: bytes_in is the garbage it sent")
    c.check(stats.get("errors", 0) >= drops, f"{what}: the lost lines count errors", None,
            stats)
    c.eq(tool.quit(), 0, f"{what}: device_tool exits 0")
    sim.stop()


def test_options(c, tmp):
    vfd = VFD(pty=os.path.join(tmp, "vfd2.tty")).start()
    tool = Tool("vfd", f"serial:{vfd.link}", "brightness=2")
    c.check(wait_for(lambda: vfd.screen()["brightness"] == 2, WAIT),
            "options: brightness=2 sets the VFD's brightness at attach")
    tool.quit()
    vfd.stop()
    led = LED(pty=os.path.join(tmp, "led2.tty")).start()
    tool = Tool("led_price", f"serial:{led.link}", "digits=4")
    tool.submit("d-1", "show", "text:total 100.00")
    tool.submit("d-2", "show", "text:total 99.99")
    c.eq([tool.outcome("d-1"), tool.outcome("d-2")], ["failed", "done"],
         "options: digits=4 refuses 100.00 and shows 99.99")
    c.eq(led.state()["number"], "99.99", "options: 99.99 on a 4-digit display")
    tool.quit()
    led.stop()
    for driver, options in (("vfd", "brightness=5"), ("led_price", "digits=0"),
                            ("vfd", "colour=blue")):
        r = subprocess.run([f"{BIN}/device_tool", driver, "serial:/dev/null", options],
                           input="quit\n", capture_output=True, text=True, timeout=WAIT)
        c.check(r.returncode == 1 and "options" in r.stderr,
                f"options: {driver} {options} refused at start ({r.returncode}, {r.stderr!r})")


def main():
    c = Checks("test_displays")
    tmp = tempfile.mkdtemp(prefix="posbus-displays-")
    test_vfd(c, tmp)
    test_led(c, tmp)
    test_vfd_tcp(c)
    for kind in ("pty", "tcp"):
        for led in (False, True):
            test_faults(c, tmp, kind, led)
    test_options(c, tmp)
    c.finish()


if __name__ == "__main__":
    main()
