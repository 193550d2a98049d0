#!/usr/bin/python3
"""test_tui - posnode --tui: a cashier sells at the screen of an 80x24 terminal.

A real stack (redis, busd with identities, sales, inventory, devices) and posnode --tui running
in a private tmux server, driven with tmux send-keys the way a person and a keyboard-wedge
barcode scanner type, read back with tmux capture-pane:
  - the screen names the register, says nobody is logged in, and shows the configuration with
    the cashier arriving from the devices service without a key being pressed;
  - while `login ann 1111` is typed the PIN shows as ****, and 1111 is never on the screen;
  - a barcode typed as digits + Enter is scanned; names (Chinese), the total, a refused
    command's message, F4 (void prompt), F2 (pay cash exact) and the completed sale with its
    id and change are shown; ONLINE, and unsynced falls to 0 by itself (the screen refreshes);
  - with busd and the services stopped the header says OFFLINE and counts the sale rung
    meanwhile (unsynced 1); back online it is uploaded and the count falls to 0;
  - sales holds the sale; SIGTERM stops posnode with exit 0 and the terminal restored."""
import atexit
import os
import re
import shlex
import signal
import subprocess

from harness import BIN, SRC, Bus, Checks, Stack, sanitizer_report, wait_for

STORE, REG, PIN = "S1", "R01", "1111"
RICE, COLA_BARCODE = "金龙鱼大米 5kg", "6901234500097"
c = Checks("test_tui")
st = Stack("tui")
st.start_redis()
st.start_busd()
SERVICES = ["sales", "inventory", "devices"]
for s in SERVICES:
    st.start_service(s, s)
c.check(st.wait_healthy(SERVICES), "back office healthy")
st.posctl("store", "add", STORE, "X", check=True)
st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"), check=True)
r = subprocess.run([f"{BIN}/posctl", *st.conn_args(), "cashier", "add", "--store", STORE, "--id",
                    "ann", "--name", "Ann", "--role", "cashier"], input=PIN + "\n",
                   capture_output=True, text=True, timeout=60)
m = re.search(r"configuration version (\d+)", r.stdout)
c.check(r.returncode == 0 and m, f"posctl cashier add ann ({r.stdout.strip()} {r.stderr.strip()})")
config_version = int(m.group(1)) if m else 1

# ---- posnode --tui in a private tmux server ---------------------------------------------------
TMUX_NAME = f"posbus-tui-{os.getpid()}"
TMUX_CONF = os.path.join(st.tmp, "tmux.conf")
with open(TMUX_CONF, "w", encoding="utf-8") as f:
    # no status bar: the pane is the whole 80x24 terminal; keep a dead pane for its exit status
    f.write("set -g status off\nset -g remain-on-exit on\n")
TMUX_ENV = {k: v for k, v in os.environ.items() if k != "TMUX"}
TMUX_ENV.update(LANG="C.UTF-8", LC_ALL="C.UTF-8")


def tmux(*args, check=True):
    r = subprocess.run(["tmux", "-u", "-L", TMUX_NAME, "-f", TMUX_CONF, *args],
                       capture_output=True, text=True, env=TMUX_ENV, timeout=30)
    if check and r.returncode != 0:
        c.fail(f"tmux {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def kill_tmux():
    subprocess.run(["tmux", "-L", TMUX_NAME, "kill-server"], capture_output=True, env=TMUX_ENV,
                   timeout=30)


atexit.register(kill_tmux)  # on any failure too: posnode gets SIGHUP and stops

state = os.path.join(st.tmp, "r01")
os.makedirs(state, exist_ok=True)
log = os.path.join(st.tmp, "posnode-tui.log")
argv = [f"{BIN}/posnode", *st.conn_args(st.key("register", f"{STORE}.{REG}")), "--store", STORE,
        "--register", REG, "--state-dir", state, "--node-heartbeat-ms", "300",
        "--backoff-max-ms", "1000", "--tui"]
envs = [f"{k}={os.environ[k]}" for k in ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS")
        if k in os.environ]
command = " ".join(["exec", "env", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", *envs,
                    *map(shlex.quote, argv)]) + " 2>>" + shlex.quote(log)
tmux("new-session", "-d", "-s", "till", "-x", "80", "-y", "24", command)

screens = []  # every capture, to look for the PIN in all of them


def screen():
    text = tmux("capture-pane", "-p", "-t", "till", check=False)
    screens.append(text)
    return text


def wait_screen(pred, what, timeout=15):
    """Poll the screen until pred(text) holds; the last screen (printed if it never did)."""
    ok = wait_for(lambda: pred(screen()), timeout, what)
    text = screens[-1]
    if not ok:
        print("     screen:\n" + "\n".join("     |" + line for line in text.splitlines()))
    return text if ok else None


def typed(keys, enter=True):
    """Type keys (literally) and Enter, as a person or a barcode scanner does."""
    tmux("send-keys", "-t", "till", "-l", keys)
    if enter:
        tmux("send-keys", "-t", "till", "Enter")


def version(text, what):
    m = re.search(what + r" v(\d+)", text or "")
    return int(m.group(1)) if m else -1


c.eq(tmux("display-message", "-p", "-t", "till", "#{pane_width}x#{pane_height}").strip(),
     "80x24", "the till's terminal is 80x24")
s = wait_screen(lambda t: "S1.R01" in t and "not logged in" in t, "the screen")
c.check(s, "the screen comes up: register S1.R01, not logged in")
s = wait_screen(lambda t: version(t, "config") >= config_version and version(t, "catalog") > 0,
                f"configuration v{config_version} and a catalog", timeout=30)
c.check(s and "devices: no devices" in s,
        f"the configuration with Ann (v{config_version}) and the catalog arrive on the screen "
        "by themselves; devices: no devices")

typed(f"login ann {PIN}", enter=False)
s = wait_screen(lambda t: "> login ann ****" in t, "the masked PIN", timeout=5)
c.check(s and PIN not in s, "while typed, the PIN shows as **** (> login ann ****)")
tmux("send-keys", "-t", "till", "Enter")
s = wait_screen(lambda t: "cashier Ann (ann, cashier)" in t, "Ann logged in")
c.check(s and "login: ok" in s, "Enter logs Ann in: the screen names her")

typed("6901234500011")  # a keyboard-wedge scanner: digits and Enter
s = wait_screen(lambda t: RICE in t, "the rice")
c.check(s and re.search(r"金龙鱼大米 5kg\s+1\s+49\.90\s+49\.90", s),
        "the barcode typed as digits + Enter is scanned: 金龙鱼大米 5kg 1 49.90 49.90")
typed("scan COLA 2")
s = wait_screen(lambda t: "可口可乐 330ml" in t and "TOTAL 55.90" in t, "the cola and the total")
c.check(s and re.search(r"可口可乐 330ml\s+2\s+3\.00\s+6\.00", s),
        "scan COLA 2: 可口可乐 330ml 2 3.00 6.00, TOTAL 55.90")
c.check(s and "Remaining 55.90" in s, "nothing paid yet: Remaining 55.90")

typed("123")
s = wait_screen(lambda t: "refused" in t, "the refusal")
c.check(s and "scan refused (unknown_code): no item with code 123" in s,
        "a refused command's message is shown")
tmux("send-keys", "-t", "till", "F4")
s = wait_screen(lambda t: "> void 2" in t, "F4")
c.check(s, "F4 offers to void the last line (> void 2)")
tmux("send-keys", "-t", "till", "Escape")
s = wait_screen(lambda t: "> void" not in t, "Esc")
c.check(s, "Esc clears the input line")

typed("pay cash 100")
s = wait_screen(lambda t: "S1-R01-000001" in t, "the completed sale")
c.check(s and "SALE S1-R01-000001 COMPLETE   Change 44.10" in s and "TOTAL 55.90" in s
        and RICE in s, "pay cash 100: the paid ticket stays, SALE S1-R01-000001 COMPLETE, "
        "Change 44.10, TOTAL 55.90")
c.check(s and "Last sale S1-R01-000001   change 44.10" in s, "last sale and its change shown")
print("     the screen after the sale:\n" + "\n".join("     |" + line for line in s.splitlines())
      if s else "")
c.check(s and "ONLINE" in s and "OFFLINE" not in s, "ONLINE")
s = wait_screen(lambda t: "unsynced 0" in t, "unsynced 0")
c.check(s, "the screen refreshes by itself: unsynced 0 once sales has the sale")

got = Bus(st).call("sales", "sale.get", {"store": STORE, "sale_id": "S1-R01-000001"})
body = got.get("body", {}) if got else {}
c.check(got and got["type"] == "reply" and body.get("sale", {}).get("total") == 5590,
        f"sales holds S1-R01-000001 with total 55.90: {body}")

typed(COLA_BARCODE)
s = wait_screen(lambda t: "TOTAL 3.00" in t, "a second ticket")
c.check(s and "SALE S1-R01-000001" not in s, "a new ticket replaces the completed one")
tmux("send-keys", "-t", "till", "F2")
s = wait_screen(lambda t: "SALE S1-R01-000002 COMPLETE   Change 0.00" in t, "F2")
c.check(s, "F2 pays cash exact: SALE S1-R01-000002 COMPLETE, Change 0.00")

# ---- the back office goes away: OFFLINE, and the sale rung meanwhile is counted --------------
c.check(wait_screen(lambda t: "ONLINE unsynced 0" in t, "sale 2 uploaded"),
        "sale 2 is uploaded: ONLINE unsynced 0")
for svc in SERVICES:
    st.kill(svc, signal.SIGTERM)
st.kill("busd", signal.SIGTERM)
s = wait_screen(lambda t: "OFFLINE" in t, "OFFLINE")
c.check(s and "OFFLINE unsynced 0" in s and "ONLINE" not in s,
        "busd and the services stopped: the header says OFFLINE, unsynced 0 (expected "
        f"'OFFLINE unsynced 0', got '{s.splitlines()[0].strip() if s else None}')")
typed(COLA_BARCODE)
s = wait_screen(lambda t: "TOTAL 3.00" in t and "SALE S1-R01-000002" not in t, "a third ticket")
tmux("send-keys", "-t", "till", "F2")
s = wait_screen(lambda t: "SALE S1-R01-000003 COMPLETE" in t, "the offline sale")
c.check(s and "OFFLINE unsynced 1" in s,
        "a sale rung offline completes at once; the header counts it: OFFLINE unsynced 1 "
        f"(got '{s.splitlines()[0].strip() if s else None}')")
st.start_busd()
for svc in SERVICES:
    st.start_service(svc, svc)
c.check(st.wait_healthy(SERVICES), "the back office is back")
s = wait_screen(lambda t: "ONLINE unsynced 0" in t, "ONLINE unsynced 0", timeout=60)
c.check(s and "OFFLINE" not in s,
        "back online the screen says so by itself, and the sale is uploaded: ONLINE unsynced 0")
got = Bus(st).call("sales", "sale.get", {"store": STORE, "sale_id": "S1-R01-000003"})
c.check(got and got["type"] == "reply" and got["body"].get("sale", {}).get("total") == 300,
        f"sales holds the offline sale S1-R01-000003 (3.00): {got and got['body']}")

c.check(screens and not any(PIN in t for t in screens),
        f"the PIN {PIN} is on none of the {len(screens)} screens captured")

# ---- SIGTERM: exit 0, the terminal restored --------------------------------------------------
pid = int(tmux("list-panes", "-t", "till", "-F", "#{pane_pid}").strip() or 0)
server = int(tmux("display-message", "-p", "#{pid}").strip() or 0)
c.check(pid > 0 and server > 0, f"posnode's pid from tmux: {pid} (tmux server {server})")
if pid > 0:
    os.kill(pid, signal.SIGTERM)


def exit_status():
    """posnode's exit status once tmux has it. tmux built with libutempter can miss the
    SIGCHLD of a pane whose process exits while utempter's own handler is in (tmux/tmux#311):
    the pane is dead, its process a zombie, the status empty. Another SIGCHLD makes tmux
    reap it."""
    if server > 0:
        os.kill(server, signal.SIGCHLD)
    dead, _, status = tmux("list-panes", "-t", "till", "-F",
                           "#{pane_dead} #{pane_dead_status}").partition(" ")
    return status.strip() if dead == "1" and status.strip() else None


dead = wait_for(lambda: exit_status() == "0", 15, "posnode exit")
c.check(dead, "posnode exits 0 on SIGTERM: "
        + tmux("list-panes", "-t", "till", "-F", "dead=#{pane_dead} status=#{pane_dead_status}"))
s = screen()
c.check("S1.R01" not in s and "TOTAL" not in s and "> " not in s,
        "the terminal is given back: the till's screen is gone")
kill_tmux()
with open(log, encoding="utf-8", errors="replace") as f:
    text = f.read()
report = sanitizer_report(text)
c.check(report is None, f"posnode's log is free of sanitizer reports: {report}")
c.check("posnode.stopping" in text, "posnode logged its stop (stderr went to the log)")
c.finish()
