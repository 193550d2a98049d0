#!/usr/bin/python3
"""test_peripherals - posnode with a barcode scanner, two customer displays and a scale
(simulators on pseudo-terminals, the real byte protocols): a scanned code is priced with no
typing, a wrong check digit sells nothing, a burst of codes sells each once; a weighed item takes
the scale's stable weight, a moving scale sells nothing; the VFD shows the last item and the
total, the LED price display the total and then the change; the devices' health reaches the back
office."""
import json
import os
import subprocess
import time

from harness import BIN, SRC, Bus, Checks, Stack, sim_control, wait_for

STORE = "S1"
c = Checks("test_peripherals")
st = Stack("peripherals")
st.start_redis()
st.start_busd()
for s in ("sales", "inventory", "devices"):
    st.start_service(s, s)
c.check(st.wait_healthy(["sales", "inventory", "devices"]), "back office healthy")
st.posctl("store", "add", STORE, "Peripherals store", check=True)
st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"), check=True)
subprocess.run([f"{BIN}/posctl", *st.conn_args(), "cashier", "add", "--store", STORE, "--id",
                "ann", "--name", "Ann", "--role", "cashier"], input="1111\n", text=True,
               capture_output=True, check=True)

SIMS = {"scanner": "scanner.py", "vfd": "vfd_display.py", "led": "led_display.py",
        "scale": "scale_8217.py"}
links, controls = {}, {}
for name, script in SIMS.items():
    links[name] = os.path.join(st.tmp, f"{name}.tty")
    controls[name] = os.path.join(st.tmp, f"{name}.ctl")
    st.spawn(f"{name}-sim", ["/usr/bin/python3", os.path.join(SRC, "devices", "sim", script),
                             "--pty", links[name], "--control", controls[name]])
for name in SIMS:
    wait_for(lambda: os.path.exists(controls[name]), 10, f"the {name} simulator")


def sim(name, cmd, **kw):
    return sim_control(controls[name], cmd, **kw)


devices_file = os.path.join(st.tmp, "devices.conf")
with open(devices_file, "w") as f:
    f.write(f"scanner scanner serial:{links['scanner']}\n"
            f"vfd vfd serial:{links['vfd']}\n"
            f"led led_price serial:{links['led']}\n"
            f"scale toledo8217 serial:{links['scale']},baud=9600,data=7,parity=even,stop=1\n")
r01 = st.start_posnode("r01", STORE, "R01", "--devices", devices_file)


def health():
    return {d["name"]: d["health"] for d in r01.cmd("devices").get("devices", [])}


c.check(wait_for(lambda: health() == {"scanner": "ok", "vfd": "ok", "led": "ok",
                                      "scale": "ok"}, 15),
        f"scanner, displays and scale found: {health()}")
wait_for(lambda: r01.cmd("state")["config_version"] >= 1, 15)
c.check(r01.cmd("login ann 1111")["ok"], "Ann logs in")


def lines():
    t = r01.cmd("state").get("ticket")
    return [ln["sku"] for ln in t["lines"]] if t else []


sim("scanner", "scan", code="6901234500011", suffix="crlf")
c.check(wait_for(lambda: lines() == ["RICE5"], 10), f"a scanned barcode is sold: {lines()}")
c.check(wait_for(lambda: sim("vfd", "screen").get("lines") ==
                 ["RICE5               "[:20 - len("49.90")] + "49.90",
                  "TOTAL" + " " * 10 + "49.90"], 10),
        f"the VFD shows the item and the total: {sim('vfd', 'screen').get('lines')}")
c.check(wait_for(lambda: sim("led", "state").get("number") == "49.90" and
                 sim("led", "state").get("label") == "total", 10),
        f"the LED display shows the total: {sim('led', 'state')}")
sim("scanner", "scan", code="6901234500012", suffix="crlf")  # wrong check digit
sim("scanner", "scan", code="6901234500097", suffix="cr")
c.check(wait_for(lambda: lines() == ["RICE5", "COLA"], 10),
        f"a wrong check digit sells nothing; the next code sells: {lines()}")
sim("scanner", "burst", codes=["6901234500103", "6901234500110", "6901234500103"])
c.check(wait_for(lambda: lines() == ["RICE5", "COLA", "WATER", "TEA", "WATER"], 10),
        f"a burst of three codes: three lines, in order: {lines()}")
sim("scale", "set", grams=800, moving=True)
sim("scanner", "scan", code="APPLE", suffix="crlf")  # a weighed item, its SKU scanned
time.sleep(6.5)  # the driver gives up after 5 s without a stable weight
c.eq(lines(), ["RICE5", "COLA", "WATER", "TEA", "WATER"],
     "a moving scale gives no weight: nothing is sold")
sim("scale", "set", grams=1234, moving=False, moving_for_ms=1000)
sim("scanner", "scan", code="APPLE", suffix="crlf")
c.check(wait_for(lambda: lines()[-1:] == ["APPLE"], 15), f"once it settles: {lines()}")
t = r01.cmd("state")["ticket"]
c.check(t["lines"][-1]["qty"] == 1234 and t["lines"][-1]["amount"] == 1580,
        f"1.234 kg of apples at 12.80/kg = 15.80: {t['lines'][-1]}")
r = r01.cmd("pay cash 100")
c.check(r["ok"] and r.get("change") == 10000 - 4990 - 300 - 200 - 350 - 200 - 1580,
        f"paid: change {r.get('change')}")
c.check(wait_for(lambda: sim("led", "state").get("label") == "change" and
                 sim("led", "state").get("number") == "23.80", 10),
        f"the LED display shows the change: {sim('led', 'state')}")
c.check(wait_for(lambda: sim("vfd", "screen").get("lines", [""])[1].endswith("23.80"), 10),
        f"the VFD too: {sim('vfd', 'screen').get('lines')}")
nl = None


def node_health():
    global nl
    nl = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "node", "list", "--store", STORE],
                        capture_output=True, text=True, timeout=30)
    return all(f"{d}:ok" in nl.stdout for d in ("scanner", "vfd", "led", "scale"))


c.check(wait_for(node_health, 10), f"the back office sees their health:\n{nl.stdout}")


def node_row():
    r = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "node", "list", "--store", STORE,
                        "--format", "json"], capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout)["nodes"][0]


c.check(wait_for(lambda: node_row().get("last_seq") == 1, 10),
        f"heartbeats carry the last sale: {node_row()}")

# --- a device set from the back office is applied without a restart ------------------------------
link2, ctl2 = os.path.join(st.tmp, "led2.tty"), os.path.join(st.tmp, "led2.ctl")
controls["led2"] = ctl2
st.spawn("led2-sim", ["/usr/bin/python3", os.path.join(SRC, "devices", "sim", "led_display.py"),
                      "--pty", link2, "--control", ctl2])
wait_for(lambda: os.path.exists(ctl2), 10, "the second LED display")
ops = Bus(st)
r = ops.call("devices", "config.set", {"store": STORE, "register": "R01", "devices": [
    {"name": "led2", "driver": "led_price", "transport": f"serial:{link2}"}]})
c.check(r["type"] == "reply", f"config.set with R01's devices: {r['body']}")
got = ops.call("devices", "config.get", {"store": STORE})
c.check(got["body"].get("register_devices", {}).get("R01", [{}])[0].get("name") == "led2",
        f"config.get shows an operator every register's devices: {got['body'].get('register_devices')}")
pid = st.procs["r01"].pid
c.check(wait_for(lambda: health().get("led2") == "ok", 15),
        f"the running register starts led2 by itself: {health()}")
c.eq(st.procs["r01"].pid, pid, "the same posnode process (no restart)")
r01.cmd("scan COLA")
c.check(wait_for(lambda: sim("led2", "state").get("number") == "3.00", 10),
        f"led2 shows the total: {sim('led2', 'state')}")
r = ops.call("devices", "config.set", {"store": STORE, "register": "R01", "devices": []})
c.check(wait_for(lambda: "led2" not in health(), 15), f"removed again: {health()}")
bad = ops.call("devices", "config.set", {"store": STORE, "register": "R01", "devices": [
    {"name": "x", "driver": "escpos", "transport": "/dev/ttyS0"}]})
c.check(bad["type"] == "error" and bad["body"].get("code") == "bad_request",
        f"a transport that is no spec is refused: {bad['body']}")

st.stop_all(c)
c.finish()
