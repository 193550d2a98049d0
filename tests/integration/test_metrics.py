#!/usr/bin/python3
"""test_metrics - every back-office program serves Prometheus metrics over HTTP, and logs JSON.

Runs a private redis-server, busd, sales, inventory, reporting, devices and payments, each with
--metrics-listen on its own free port. Checks:

  1. every page parses as the Prometheus text format 0.0.4 under a strict parser written here
     (names, labels, escapes, one HELP and TYPE per family before its samples, families not
     split, no series twice, histogram buckets cumulative with +Inf equal to _count, counters
     never negative), and carries the program's own names;
  2. counters a user causes go up: a garbage request to inventory raises rejected_requests;
     200 sales rung up by `posctl sim` raise sales' sales_committed by 200, and inventory's and
     reporting's sales_applied by 200;
  3. the request latency histogram of stock.get counts exactly the requests sent;
  4. the stream lag of the inventory and reporting groups is exposed, is seen above 0 while
     reporting lets entries gather, and is 0 (nothing pending either) once caught up;
  5. devices shows a register's unsynced sales, online state and peripherals' health;
  6. other paths answer 404, other methods 405, and a scrape takes well under a second;
  7. with --log-json --log-stdout every line on standard output is one JSON object with ts,
     prog, level, event, msg; text stays the default.
"""
import json
import math
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

from harness import BIN, SRC, Bus, Checks, Stack, free_port, wait_for

SIM_SALES = 200
STORE = "S1"
REFRESH_MS = "100"

c = Checks("test_metrics")
st = Stack("metrics")

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
HELP_ESC = re.compile(r"(\\[\\n]|[^\\\n])*\Z")


class ParseError(Exception):
    pass


def parse_labels(text, lineno):
    """'{a="x",b="y"}' body (without braces) -> dict; strict about escapes and commas."""
    labels, i = {}, 0
    while i < len(text):
        eq = text.find("=", i)
        if eq < 0:
            raise ParseError(f"line {lineno}: label without '='")
        name = text[i:eq]
        if not LABEL.match(name) or name in labels:
            raise ParseError(f"line {lineno}: bad or repeated label name {name!r}")
        if text[eq + 1:eq + 2] != '"':
            raise ParseError(f"line {lineno}: label value not quoted")
        j, value = eq + 2, []
        while True:
            if j >= len(text):
                raise ParseError(f"line {lineno}: unterminated label value")
            ch = text[j]
            if ch == "\\":
                nxt = text[j + 1:j + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ParseError(f"line {lineno}: bad escape \\{nxt}")
                value.append("\n" if nxt == "n" else nxt)
                j += 2
            elif ch == '"':
                break
            else:
                value.append(ch)
                j += 1
        labels[name] = "".join(value)
        i = j + 1
        if i < len(text):
            if text[i] != ",":
                raise ParseError(f"line {lineno}: expected ',' between labels")
            i += 1
    return labels


def parse_value(text, lineno):
    if text in ("NaN", "+Inf", "-Inf"):
        return float(text.replace("Inf", "inf"))
    if not re.match(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\Z", text):
        raise ParseError(f"line {lineno}: bad value {text!r}")
    return float(text)


def parse_exposition(text):
    """Strict parser of the text format 0.0.4 as posbus writes it. Returns
    {family: {"type", "help", "samples": [(name, labels, value)]}}; raises ParseError."""
    if text and not text.endswith("\n"):
        raise ParseError("the page does not end with a newline")
    families, current, seen_series, closed = {}, None, set(), set()
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, rest = line[2:6], line[7:]
            name, _, arg = rest.partition(" ")
            if not NAME.match(name):
                raise ParseError(f"line {lineno}: bad metric name {name!r}")
            if name in closed or (current and current != name and name in families):
                raise ParseError(f"line {lineno}: family {name} split or repeated")
            fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
            if fam["samples"]:
                raise ParseError(f"line {lineno}: {kind} of {name} after its samples")
            if kind == "HELP":
                if fam["help"] is not None or not HELP_ESC.match(arg):
                    raise ParseError(f"line {lineno}: second or badly escaped HELP of {name}")
                fam["help"] = arg
            else:
                if fam["type"] is not None or arg not in ("counter", "gauge", "histogram",
                                                          "summary", "untyped"):
                    raise ParseError(f"line {lineno}: second or unknown TYPE {arg!r} of {name}")
                fam["type"] = arg
            if current and current != name:
                closed.add(current)
            current = name
            continue
        if line.startswith("#") or not line:
            raise ParseError(f"line {lineno}: unexpected line {line!r}")
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)\Z", line)
        if not m:
            raise ParseError(f"line {lineno}: not a sample: {line!r}")
        name, labels = m.group(1), parse_labels(m.group(3) or "", lineno)
        value = parse_value(m.group(4), lineno)
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and families.get(base, {}).get("type") == "histogram":
                family = base
        if family != current or family not in families or families[family]["type"] is None:
            raise ParseError(f"line {lineno}: sample of {name} outside its family's block")
        key = (name, tuple(sorted(labels.items())))
        if key in seen_series:
            raise ParseError(f"line {lineno}: series {name}{labels} twice")
        seen_series.add(key)
        fam = families[family]
        if fam["type"] == "counter" and (not name.endswith("_total") or value < 0):
            raise ParseError(f"line {lineno}: counter {name} without _total or negative")
        if fam["type"] == "histogram" and name.endswith("_bucket") and "le" not in labels:
            raise ParseError(f"line {lineno}: bucket without le")
        fam["samples"].append((name, labels, value))
    for name, fam in families.items():
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
    return families


def check_histogram(name, samples):
    groups = {}
    for sname, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sname.endswith("_bucket"):
            le = labels["le"]
            g["buckets"].append((math.inf if le == "+Inf" else float(le), value))
        elif sname.endswith("_sum"):
            g["sum"] = value
        else:
            g["count"] = value
    for rest, g in groups.items():
        bounds = [b for b, _ in g["buckets"]]
        counts = [v for _, v in g["buckets"]]
        if bounds != sorted(bounds) or not bounds or bounds[-1] != math.inf:
            raise ParseError(f"{name}{rest}: buckets not ascending or no +Inf")
        if counts != sorted(counts):
            raise ParseError(f"{name}{rest}: buckets not cumulative")
        if g["count"] != counts[-1] or g["sum"] is None or g["sum"] < 0:
            raise ParseError(f"{name}{rest}: _count {g['count']} != +Inf {counts[-1]} or no _sum")


def scrape(port, path="/metrics", method="GET"):
    """(status, body text, seconds)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    t0 = time.time()
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode("utf-8"), time.time() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace"), time.time() - t0


def page(port):
    """The parsed page, or None (a failed check) when it does not parse."""
    status, text, _ = scrape(port)
    if status != 200:
        c.fail(f"scrape of port {port}: expected 200, got {status}")
        return None
    try:
        return parse_exposition(text)
    except ParseError as e:
        c.fail(f"page of port {port} parses as Prometheus text: {e}")
        return None


def value(fams, name, **labels):
    """The value of one series, or None."""
    if not fams:
        return None
    for fam in fams.values():
        for sname, slabels, v in fam["samples"]:
            if sname == name and all(slabels.get(k) == val for k, val in labels.items()):
                return v
    return None


def metric(port, name, **labels):
    return value(page(port), name, **labels)


ports = {p: free_port() for p in ("busd", "sales", "inventory", "reporting", "devices",
                                  "payments")}
json_log = None
try:
    st.start_redis()
    # busd with metrics: the harness's busd plus --metrics-listen
    st.spawn("busd", [f"{BIN}/busd", "--pub-bind", st.pub, "--sub-bind", st.sub, "--req-bind",
                      st.req, "--cert", f"{st.keys}/busd.cert_secret", "--clients-dir",
                      f"{st.keys}/clients", "--heartbeat-ms", "250", "--heartbeat-timeout-ms",
                      "1500", "--metrics-listen", f"127.0.0.1:{ports['busd']}",
                      "--metrics-refresh-ms", REFRESH_MS])
    metrics_args = lambda p: ["--metrics-listen", f"127.0.0.1:{ports[p]}", "--metrics-refresh-ms",
                              REFRESH_MS]
    for prog in ("sales", "inventory", "devices", "payments"):
        st.start_service(prog, prog, *metrics_args(prog))
    # reporting logs JSON lines on standard output (kept apart from its standard error), and
    # lets entries gather a second after a small batch, so that its lag is seen above 0
    json_log = open(f"{st.tmp}/reporting.stdout", "w")
    st.spawn("reporting", [f"{BIN}/reporting",
                           *st.conn_args(st.key("service", "reporting")), "--redis-port",
                           str(st.redis_port), "--redis-password-file", st.password_file,
                           "--heartbeat-ms", "250", "--heartbeat-timeout-ms", "1500",
                           "--gather-ms", "1000", "--log-json", "--log-stdout",
                           *metrics_args("reporting")], stdout=json_log)
    c.check(st.wait_healthy(["sales", "inventory", "reporting", "devices", "payments"]),
            "every service healthy")

    # --- 1. every page parses, with the program's names ---
    for prog, port in ports.items():
        fams = wait_for(lambda: scrape(port)[0] == 200 and page(port), 5, f"{prog}'s page")
        c.check(fams is not None and f"posbus_{prog}_info" in (fams or {}),
                f"{prog}: /metrics parses strictly ({len(fams or {})} families) and carries "
                f"posbus_{prog}_info")
        if prog != "busd":
            c.check(fams and fams.get(f"posbus_{prog}_request_duration_seconds", {}).get("type")
                    == "histogram", f"{prog}: a request_duration_seconds histogram per method")
    fams = page(ports["busd"])
    c.check(value(fams, "posbus_busd_instances") is not None and
            fams["posbus_busd_instances"]["type"] == "gauge" and
            value(fams, "posbus_busd_requests_total") is not None,
            "busd: instances is a gauge, requests a counter")
    fams = page(ports["reporting"])
    c.check(fams and fams.get("posbus_reporting_apply_lag_p99_ms", {}).get("type") == "gauge",
            "reporting: apply_lag_p99_ms is a gauge, not a counter")

    # --- 2. a counter caused by a bad request ---
    bus = Bus(st)
    before = metric(ports["inventory"], "posbus_inventory_rejected_requests_total")
    bus.call_raw("inventory", b"\xc1 not msgpack")
    c.check(wait_for(lambda: (metric(ports["inventory"], "posbus_inventory_rejected_requests_total")
                              or 0) == (before or 0) + 1, 5),
            f"a garbage request raises inventory's rejected_requests by 1 (from {before})")

    # --- 3. the latency histogram counts the requests sent ---
    hist = "posbus_inventory_request_duration_seconds_count"
    before = metric(ports["inventory"], hist, method="stock.get") or 0
    for i in range(25):
        bus.call("inventory", "stock.get", {"store": STORE, "sku": f"SKU{i}"})
    after = wait_for(lambda: (metric(ports["inventory"], hist, method="stock.get") or 0)
                     >= before + 25 and metric(ports["inventory"], hist, method="stock.get"), 5)
    c.eq(after, before + 25, "stock.get latency histogram count after 25 requests")

    # --- 4. sales through posctl sim: counters and stream lag ---
    st.posctl("store", "add", STORE, "Metrics store", check=True)
    st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"),
              check=True)
    lag = "posbus_reporting_stream_lag_entries"
    c.check(metric(ports["inventory"], "posbus_inventory_stream_lag_entries",
                   group="inventory", stream="sales:stream") is not None and
            metric(ports["reporting"], lag, group="reporting") is not None,
            "the stream lag gauge of the inventory and reporting groups exists")
    seen = []
    sim = st.posctl_popen("sim", "sim", "--store", STORE, "--registers", "2", "--sales",
                          str(SIM_SALES), "--seed", "7", "--deadline-ms", "120000")
    while sim.poll() is None:
        seen.append(metric(ports["reporting"], lag, group="reporting") or 0)
        time.sleep(0.05)
    c.check(sim.returncode == 0, f"posctl sim: every sale acknowledged (exit {sim.returncode}: "
            f"{open(os.path.join(st.tmp, 'sim.log'), errors='replace').read()[-300:]})")
    c.check(max(seen + [0]) > 0, f"reporting's lag seen above 0 while entries gather "
            f"(max {max(seen + [0]):g} over {len(seen)} scrapes)")
    c.check(wait_for(lambda: metric(ports["sales"], "posbus_sales_sales_committed_total")
                     == SIM_SALES, 10),
            f"sales_committed_total is {SIM_SALES}")
    for prog in ("inventory", "reporting"):
        c.check(wait_for(lambda: metric(ports[prog], f"posbus_{prog}_sales_applied_total")
                         == SIM_SALES, 30),
                f"{prog}: sales_applied_total reaches {SIM_SALES}")
        c.check(wait_for(lambda: metric(ports[prog], f"posbus_{prog}_stream_lag_entries",
                                        group=prog) == 0 and
                         metric(ports[prog], f"posbus_{prog}_stream_pending_entries",
                                group=prog) == 0, 10),
                f"{prog}: stream lag and pending fall to 0 once caught up")
    xinfo = {g["name"]: g for g in st.redis_json("XINFO", "GROUPS", "sales:stream")}
    c.check(all(xinfo.get(g, {}).get("lag") == 0 for g in ("inventory", "reporting")),
            "Redis agrees: both groups' lag is 0")

    # --- 5. devices: the node registry as gauges ---
    reg = Bus(st, st.key("register", f"{STORE}.R09"))
    devices = [{"name": "scanner", "kind": "scanner", "health": "ok", "detail": ""},
               {"name": "printer", "kind": "printer", "health": "error", "detail": "无纸 no paper"}]
    r = reg.call("devices", "node.hello", {"version": "1.0", "devices": devices,
                                           "config_version": 0})
    c.check(r["type"] == "reply", f"node.hello of R09: {r['body']}")
    r = reg.call("devices", "node.heartbeat", {"last_seq": 12, "unsynced": 3,
                                               "config_version": 0})
    c.check(r["type"] == "reply", f"node.heartbeat of R09: {r['body']}")
    dp = ports["devices"]
    c.check(wait_for(lambda: metric(dp, "posbus_devices_node_unsynced_sales", store=STORE,
                                    register="R09") == 3, 5),
            "devices: node_unsynced_sales of R09 is the 3 its heartbeat said")
    c.eq(metric(dp, "posbus_devices_node_online", store=STORE, register="R09"), 1,
         "devices: node_online of R09")
    c.check(metric(dp, "posbus_devices_device_health", register="R09", device="printer",
                   health="error") == 1 and
            metric(dp, "posbus_devices_device_health", register="R09", device="printer",
                   health="ok") == 0 and
            metric(dp, "posbus_devices_device_health", register="R09", device="scanner",
                   health="ok") == 1,
            "devices: device_health is 1 for each peripheral's reported health, 0 for the others")

    # --- 6. other paths and methods; scrape time ---
    c.eq(scrape(ports["sales"], "/")[0], 404, "GET / answers")
    c.eq(scrape(ports["sales"], "/metricsx")[0], 404, "GET /metricsx answers")
    c.eq(scrape(ports["sales"], method="POST")[0], 405, "POST /metrics answers")
    c.eq(scrape(ports["busd"], method="PUT")[0], 405, "PUT /metrics (busd) answers")
    with socket.create_connection(("127.0.0.1", ports["devices"]), 5) as s:
        s.sendall(b"\x00\xff garbage\r\n\r\n")
        s.settimeout(5)
        try:
            s.recv(100)
        except OSError:
            pass
    times = sorted(scrape(ports["inventory"])[2] for _ in range(20))
    print(f"     scrape of inventory's page: median {times[10] * 1000:.2f} ms, "
          f"max {times[-1] * 1000:.2f} ms ({len(scrape(ports['inventory'])[1])} bytes)")
    c.check(times[10] < 0.5, f"a scrape takes well under a second (median {times[10]:.4f} s)")
    c.eq(scrape(ports["devices"])[0], 200, "devices still serves after garbage")

    # --- 7. JSON log lines on standard output ---
    json_log.flush()
    lines = open(f"{st.tmp}/reporting.stdout", encoding="utf-8").read().splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            c.fail(f"reporting stdout line is JSON: {line[:200]!r}")
    c.check(parsed and all(isinstance(o, dict) and {"ts", "prog", "level", "event", "msg"}
                           <= o.keys() and o["prog"] == "reporting" for o in parsed),
            f"{len(parsed)} of {len(lines)} stdout lines are JSON objects with ts, prog, level, "
            f"event, msg")
    c.check(any(o.get("event") == "service.metrics" for o in parsed),
            "the metrics address is logged")
    text = open(f"{st.tmp}/sales.log", encoding="utf-8", errors="replace").read().splitlines()
    c.check(text and not text[0].startswith("{") and " INFO " in text[0],
            "text log lines stay the default (sales)")

    # --- bad addresses are refused at start ---
    r = subprocess.run([f"{BIN}/sales", "--metrics-listen", "nowhere"], capture_output=True,
                       text=True, timeout=30)
    c.check(r.returncode != 0 and "metrics-listen" in r.stderr,
            f"a bad --metrics-listen stops the service with a reason (exit {r.returncode})")
finally:
    c.finish()
