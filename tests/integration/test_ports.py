#!/usr/bin/python3
"""test_ports - a register reports its machine's serial ports to the back office.

posnode lists the serial ports with libserialport and sends them with its hello; `posctl node
devices` shows them per register with the device that uses each. The expected list is computed
here from /sys/class/tty the way libserialport 0.1.1 does on Linux (a tty whose sysfs device is
not virtual; a legacy 8250 UART only if the driver says a UART is there), not by asking posnode
or libserialport. A device configured on a link to a listed port is shown as using it; a device
on a path that is no port marks none. On a machine without serial ports the list must be
reported as empty (not left out). A heartbeat sends the list only when it changed: a list
removed behind posnode's back stays removed, and a change of the register's devices brings it
back, changed. The devices service refuses malformed lists, keeps the stored list on a
heartbeat without one, and forgets it on a hello without one (an older posnode)."""
import atexit
import fcntl
import json
import os
import struct
import subprocess
import time

from harness import BIN, SRC, Bus, Checks, Stack, wait_for

STORE = "S1"
TIOCGSERIAL = 0x541E
PORT_UNKNOWN = 0


def sysfs_read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\n")
    except OSError:
        return None


def expected_ports():
    """What libserialport 0.1.1 lists on Linux (linux.c list_ports and get_port_details)."""
    ports = []
    for name in sorted(os.listdir("/sys/class/tty")):
        entry = f"/sys/class/tty/{name}"
        link = entry if os.path.islink(entry) else f"{entry}/device"
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if "virtual" in target:
            continue
        dev = f"/dev/{name}"
        if "serial8250" in target:
            # the 8250 driver has a fixed number of ports: only the driver knows which exist
            try:
                fd = os.open(dev, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY)
            except OSError:
                continue
            try:
                info = fcntl.ioctl(fd, TIOCGSERIAL, bytes(128))
            except OSError:
                continue
            finally:
                os.close(fd)
            if struct.unpack_from("i", info)[0] == PORT_UNKNOWN:
                continue
        port = {"name": dev, "transport": "bluetooth" if "bluetooth" in target else
                "usb" if "usb" in target else "native", "description": name}
        if port["transport"] == "usb":
            for up in range(1, 6):  # the USB device is a few levels above the tty's device
                base = f"{entry}/device/" + "../" * up
                if sysfs_read(base + "busnum") is None:
                    continue
                port["usb_vid"] = int(sysfs_read(base + "idVendor"), 16)
                port["usb_pid"] = int(sysfs_read(base + "idProduct"), 16)
                port["description"] = sysfs_read(base + "product") or name
                for key in ("manufacturer", "product", "serial"):
                    if sysfs_read(base + key):
                        port[key] = sysfs_read(base + key)
                break
        ports.append(port)
    return ports


c = Checks("test_ports")
want = expected_ports()
print(f"     serial ports of this machine (as libserialport lists them): "
      f"{[p['name'] for p in want] or 'none'}", flush=True)
st = Stack("ports")
st.start_redis()
st.start_busd()
for s in ("sales", "inventory", "devices"):
    st.start_service(s, s)
c.check(st.wait_healthy(["sales", "inventory", "devices"]), "back office healthy")
st.posctl("store", "add", STORE, "Ports store", check=True)
ops = Bus(st)

# A scanner (a driver that only reads) on a link to the last port, as /dev/serial/by-id/... links
# are used; the port's line settings are put back at the end (it may be the machine's console).
used = want[-1]["name"] if want else None
devices_file = os.path.join(st.tmp, "devices.conf")
with open(devices_file, "w") as f:
    if used:
        saved = subprocess.run(["stty", "-F", used, "-g"], capture_output=True, text=True)
        if saved.returncode == 0:
            atexit.register(lambda: subprocess.run(["stty", "-F", used, saved.stdout.strip()],
                                                   capture_output=True))
        os.symlink(used, os.path.join(st.tmp, "by-id-scanner"))
        f.write(f"scanner scanner serial:{st.tmp}/by-id-scanner,baud=9600\n")
    f.write(f"ghost scanner serial:{st.tmp}/no-such-port\n")
r01 = st.start_posnode("r01", STORE, "R01", "--devices", devices_file)
started = time.time()


def nodes():
    r = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "node", "devices", "--store", STORE,
                        "--format", "json"], capture_output=True, text=True, timeout=30)
    try:
        return {n["register"]: n for n in json.loads(r.stdout)["nodes"]}
    except (ValueError, KeyError):
        return {}


def ports(reg="R01"):
    return nodes().get(reg, {}).get("ports")


def marked(expected, device):
    """expected with the port named by `used` marked as used by device."""
    return [dict(p, device=device) if device and p["name"] == used else p for p in expected]


# --- the list at start, with the device that uses a port ------------------------------------------
want_used = marked(want, "scanner")
if want:
    wait_for(lambda: ports() == want_used, 20)
    c.eq(ports(), want_used, "posctl node devices: every serial port libserialport lists, with "
         "transport, description and USB ids, the scanner's port used by it (through its link)")
else:
    c.check(wait_for(lambda: ports() == [], 20),
            f"no serial port on this machine: the register reports an empty list, not none "
            f"({ports()!r})")
c.check(all(p.get("device") != "ghost" for p in ports() or []),
        "a device on a path that is no port uses no port")

table = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "node", "devices", "--store", STORE],
                       capture_output=True, text=True, timeout=30)
lines = table.stdout.splitlines()
header = next((ln for ln in lines if ln.startswith("store") and "port" in ln.split()), "")
rows = lines[lines.index(header) + 1:] if header else []
if used:
    row = next((ln.split() for ln in rows if used in ln.split()), [])
    c.check(row[:4] == [STORE, "R01", used, want[-1]["transport"]] and row[-1] == "scanner",
            f"the table has a ports section, the port on one row with its user:\n{table.stdout}")
else:
    c.check(any(ln.split()[:3] == [STORE, "R01", "(none)"] for ln in rows),
            f"the table says the register has no ports:\n{table.stdout}")
csv = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "node", "devices", "--store", STORE,
                      "--format", "csv"], capture_output=True, text=True, timeout=30)
c.check("store,register,port,transport,usb_id,description,manufacturer,product,serial,used_by"
        in csv.stdout.splitlines(), f"and as csv, after the devices:\n{csv.stdout}")
for p in want:
    if "usb_vid" in p:
        usb = f"{p['usb_vid']:04x}:{p['usb_pid']:04x}"
        c.check(usb in table.stdout, f"{p['name']}'s USB id shown as {usb}")

# --- sent only when changed ----------------------------------------------------------------------
def heartbeats():
    return ops.call("devices", "stats", {})["body"]["counters"].get("heartbeats", 0)


st.redis_cli("HDEL", f"node:{{{STORE}}}:R01", "ports")
seen = heartbeats()
c.check(wait_for(lambda: heartbeats() >= seen + 10, 15), "10 more heartbeats of R01")
c.check(ports() is None and time.time() - started < 55,
        f"heartbeats do not send an unchanged list again (removed behind posnode's back, still "
        f"gone after 10 heartbeats): {ports()!r}")
# the register's devices change (the configuration wins for a name the file gives too): the
# scanner moves off the port, so the list changes and is sent with the next heartbeat
r = ops.call("devices", "config.set", {"store": STORE, "register": "R01", "devices": [
    {"name": "scanner", "driver": "scanner", "transport": f"serial:{st.tmp}/no-such-port-2",
     "options": ""}]})
c.check(r["type"] == "reply", f"config.set moves the scanner: {r['body']}")
c.check(wait_for(lambda: ports() == want, 20),
        f"the changed list is sent: no port used now: {ports()!r}")
r = ops.call("devices", "config.set", {"store": STORE, "register": "R01", "devices": []})
c.check(wait_for(lambda: ports() == want_used, 20),
        f"the scanner back on its port from the file, and so in the list: {ports()!r}")

# --- the devices service's side: what it takes and what it refuses --------------------------------
r02 = Bus(st, st.key("register", f"{STORE}.R02"))
USB = {"name": "/dev/ttyUSB0", "transport": "usb", "usb_vid": 0x0403, "usb_pid": 0x6001,
       "usb_bus": 1, "usb_address": 4, "description": "FT232R USB UART", "manufacturer": "FTDI",
       "product": "FT232R USB UART", "serial": "A50285BI", "device": "printer"}
HB = {"last_seq": 0, "unsynced": 0, "config_version": 0}
r = r02.call("devices", "node.hello", {"version": "1.0", "devices": [], "config_version": 0,
                                       "ports": [dict(USB, extra="dropped")]})
c.check(r["type"] == "reply", f"a hello with a USB port: {r['body']}")
c.eq(ports("R02"), [USB], "the port is stored as sent (unknown keys dropped)")
row = next((ln.split() for ln in subprocess.run(
    [f"{BIN}/posctl", *st.conn_args(), "node", "devices", "--store", STORE],
    capture_output=True, text=True, timeout=30).stdout.splitlines()
    if ln.startswith(f"{STORE} ") and "/dev/ttyUSB0" in ln), [])
c.check(row[:5] == [STORE, "R02", "/dev/ttyUSB0", "usb", "0403:6001"] and row[-1] == "printer",
        f"posctl shows VID:PID as 4 hex digits each and the device using it: {row}")
r02.call("devices", "node.heartbeat", HB)
c.eq(ports("R02"), [USB], "a heartbeat without ports keeps the stored list")
BAD = [[{"name": f"/dev/ttyUSB{i}", "transport": "usb"} for i in range(65)],
       [{"name": "/dev/ttyS0", "transport": "serial"}],
       [{"transport": "native"}],
       [{"name": "", "transport": "native"}],
       [{"name": "/dev/ttyS0", "transport": "native", "usb_vid": 70000, "usb_pid": 1}],
       [{"name": "/dev/ttyS0", "transport": "native", "manufacturer": "bad\x01"}],
       [{"name": "/dev/ttyS0", "transport": "native", "serial": "x" * 65}],
       [{"name": "/dev/ttyS0", "transport": "native", "device": "no spaces"}],
       [{"name": "/dev/ttyS0", "transport": "native"}, {"name": "/dev/ttyS0", "transport": "usb"}],
       "ports"]
for bad in BAD:
    r = r02.call("devices", "node.heartbeat", dict(HB, ports=bad))
    c.check(r["type"] == "error" and r["body"].get("code") == "bad_request",
            f"ports {str(bad)[:60]}: bad_request ({r['body'].get('message', r['body'])})")
c.eq(ports("R02"), [USB], "nothing of the refused lists was stored")
r = r02.call("devices", "node.heartbeat", dict(HB, ports=[]))
c.eq(ports("R02"), [], "a heartbeat with an empty list stores it empty")
r02.call("devices", "node.hello", {"version": "0.9", "devices": [], "config_version": 0})
c.check(ports("R02") is None, f"a hello without ports (an older posnode) forgets the list: "
        f"{ports('R02')!r}")
c.check(st.wait_healthy(["devices"]), "devices still healthy")

st.stop_all(c)
c.finish()
