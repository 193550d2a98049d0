#!/usr/bin/python3
"""test_metrics_doc - every metric the docs name is served, and moves when its cause happens.

docs/operations.md sends operators to docs/metrics.md (a table per program, and short lists in
prose) and to docs/posnode.md "## Metrics". This test reads those two files, expands each name
to the programs it applies to, and then, against a real stack (redis, busd, sales, inventory,
reporting, devices, payments and one posnode with a simulated receipt printer, each with
--metrics-listen on a free port):

  1. every documented name is served by every program it applies to (a histogram as _bucket,
     _sum and _count);
  2. every documented name has an entry in CAUSES below: what the test does to move it and what
     it expects (a counter goes up, a gauge moves as documented). An entry may exempt a name,
     or one program's copy of it, with the reason the test cannot produce its cause; exempt
     names are still checked for being served. A name added to a doc without an entry here, or
     an entry whose name the docs no longer mention, fails the test: the docs and this table
     stay in step.

Counters are compared between a scrape of every page after start and one at the end; gauges
are watched while their cause lasts (wait_for, never a fixed sleep as the check)."""
import os
import re
import resource
import signal
import subprocess
import time
import urllib.error
import urllib.request

import msgpack
import zmq

from harness import (BIN, SRC, Bus, Checks, PaymentEmulators, Stack, free_port, journal_sales,
                     load_cert, sim_control, wait_for)

STORE = "S1"
REFRESH_MS = "100"
WAIT = 20  # seconds any one movement may take on a loaded machine
SERVICES = ("sales", "inventory", "reporting", "devices", "payments")
PROGRAMS = ("busd",) + SERVICES + ("posnode",)

# ---- the documented names ------------------------------------------------------------------
# scope of a "### heading" of docs/metrics.md (matched by its first words)
SCOPES = {"On every page": PROGRAMS, "Every service": SERVICES,
          "The consumers of the sales stream": ("inventory", "reporting"),
          "busd": ("busd",), "devices": ("devices",), "payments": ("payments",)}


def doc_text(name):
    with open(os.path.join(SRC, "docs", name), encoding="utf-8") as f:
        return f.read()


def sections(text, level):
    """{heading: body} of the headings of one level ("##" or "###")."""
    out, head = {}, None
    for line in text.splitlines():
        m = re.match(level + r" (.*)", line)
        if m:
            head = m.group(1).strip()
            out[head] = []
        elif head is not None:
            if re.match(r"#{1,%d} " % (len(level) - 1), line):
                head = None
            else:
                out[head].append(line)
    return {h: "\n".join(body) for h, body in out.items()}


def scope_of(heading):
    for key, progs in SCOPES.items():
        if heading.startswith(key):
            return progs
    return None


def documented():
    """{(program, name): type} for every metric the docs name; name is without the
    posbus_<program>_ prefix ("requests_total"); type is counter, gauge or histogram. Also
    {(program, name): {label: [values]}} for the label values posnode.md lists."""
    names, label_values = {}, {}
    md = doc_text("metrics.md")
    for heading, body in sections(md, "###").items():
        progs = scope_of(heading)
        if progs is None:
            continue
        # tables: the backticked name in the first cell, the type in the second
        for row in re.findall(r"^\| `([^`]+)` \| (\w+) \|[^|]*\|(.*)\|$", body, re.M):
            raw, kind, meaning = row
            if "<stat>" in raw:
                continue  # the stats templates: their names come from the lists below
            only = re.match(r"\s*only ([a-z, ]+):", meaning)
            row_progs = [p.strip() for p in re.split(r",| and ", only.group(1))
                         if p.strip()] if only else progs
            m = re.match(r"(?:posbus_<p>_|\.\.\._|posbus_(\w+?)_)(\w+)$", raw)
            if not m:
                raise SystemExit(f"metrics.md: cannot read the name {raw!r} in {heading}")
            if m.group(1):
                row_progs = [m.group(1)]
            for p in row_progs:
                names[(p, m.group(2))] = kind
        # prose: "(sales: `a`, `b`...; inventory: ...)": each service's own counters
        for prog, lst in re.findall(r"\b(sales|inventory|reporting|devices|payments): "
                                    r"((?:`\w+`(?:,\s+|\.\.\.)?)+)", body):
            for n in re.findall(r"`(\w+)`", lst):
                names[(prog, n + "_total")] = "counter"
        # "reporting also has the gauges `a` and `b`"
        for prog, lst in re.findall(r"(\w+) also has the gauges ((?:`\w+`(?:,| and| )*)+)",
                                    body):
            for n in re.findall(r"`(\w+)`", lst):
                names[(prog, n)] = "gauge"
        # "`x_total`, `y_total` ... are its `bus_stats` counters"
        for lst in re.findall(r"\n\n((?:(?!\n\n).)*?) are its `bus_stats` counters", body, re.S):
            for n in re.findall(r"`(\w+_total)`", lst):
                for p in progs:
                    names[(p, n)] = "counter"
        if heading == "busd":
            counters, rest = re.split(r"\s+as\s+counters", body, maxsplit=1)
            gauges, last = re.split(r"\s+as\s+gauges", rest, maxsplit=1)
            for part, kind in ((counters, "counter"), (gauges, "gauge"), (last, "gauge")):
                for n in re.findall(r"`([\w*]+)`", part):
                    n = n + "_total" if kind == "counter" else n
                    names[("busd", n)] = kind
    # "Worth an alert: `a`, ...": each must be a counter some list above gives a program
    alert = re.search(r"Worth an alert:(.*?)\n\n", md, re.S)
    alerts = re.findall(r"`(\w+)`", alert.group(1)) if alert else []
    # posnode.md "## Metrics"
    pn = sections(doc_text("posnode.md"), "##").get("Metrics", "")
    for name, label, values in re.findall(r"`(\w+)\{(\w+)\}` \(((?:`\w+`(?:,\s+)?)+)\)", pn):
        label_values[("posnode", name)] = {label: re.findall(r"`(\w+)`", values)}
    pn = re.sub(r"(`\w+\{\w+\}`) \((?:`\w+`(?:,\s+)?)+\)", r"\1", pn)
    for raw in re.findall(r"`([a-z_]+)(?:\{[a-z, ]+\})?`", pn):
        n = raw[len("posbus_posnode_"):] if raw.startswith("posbus_posnode_") else raw
        names[("posnode", n)] = "counter" if n.endswith("_total") else "gauge"
    return names, label_values, alerts


# ---- what moves each name --------------------------------------------------------------------
# name -> (cause the test produces, expected change). "up": the counter is higher at the end than
# after start. An EXEMPT entry gives the reason instead, for every program or for some.
UP = "up"
CAUSES = {
    # on every page
    "info": ("nothing: a constant", "1, with a version label"),
    "metrics_scrapes_total": ("the test's own scrapes", UP),
    # every service (the shared request path of libbus/src/service.c)
    "request_duration_seconds": ("a `health` request to each service",
                                 "_count{method=health} up"),
    "requests_total": ("requests of every kind below", UP),
    "error_replies_total": ("a request for a method the service has not", UP),
    "rejected_requests_total": ("a request that is not MessagePack", UP),
    "unknown_methods_total": ("a request for method no.such.method", UP),
    "forbidden_total": ("a register key calling an operator's method (day.close, store.add, "
                        "config.set, payment.recon.put)", UP),
    "bad_frames_total": ("EXEMPT", "only busd writes to a service's socket and it forwards only "
                         "well-formed frames; the counter guards against a busd of another "
                         "version, which a test cannot be without building one"),
    "replies_repeated_total": ("a reply-cached request (day.close, store.add, config.set, "
                               "card.create) sent twice under one request id", UP),
    "retries_while_running_total": ("a request whose id another attempt still holds in the "
                                    "reply cache (the claim planted in Redis, as a running "
                                    "attempt on another instance leaves it)", UP),
    "reply_cache_errors_total": ("a reply-cached request while Redis refuses writes "
                                 "(maxmemory 1 byte, noeviction)", UP),
    "redis_errors_total": ("a write while Redis refuses writes: a sale upload (sales), "
                           "node.hello (devices), payment.pay (payments)", UP),
    "codec_messages_total": ("requests decoded (outcome accepted) and the non-MessagePack one",
                             UP),
    "uptime_seconds": ("time passing", "higher at the end"),
    # the stream consumers
    "stream_lag_entries": ("copies of a sale entry added while the consumer lets entries gather "
                           "(--gather-ms 1000)", "above 0, then 0"),
    "stream_pending_entries": ("an entry read in the group by a consumer that never "
                               "acknowledges (XREADGROUP in the test)", "above 0, then 0 once "
                               "claimed"),
    "stream_applied_total": ("sales rung up on posnode", UP),
    "stream_parked_total": ("an entry without a sale (XADD garbage to sales:stream)", UP),
    "stream_claimed_total": ("the entry left pending by the test's consumer, after "
                             "--claim-idle-ms", UP),
    "stream_errors_total": ("an entry delivered while Redis refuses writes", UP),
    "apply_lag_p50_ms": ("a sale applied by reporting", "a value >= 0 (-1 before)"),
    "apply_lag_p99_ms": ("a sale applied by reporting", "a value >= 0 (-1 before)"),
    # services' own counters named in prose
    "sales_committed_total": ("sales rung up on posnode", UP),
    "sales_applied_total": ("sales rung up on posnode", UP),
    "sales_refused_total": ("a sale.upload whose total does not add up (sales); the garbage "
                            "stream entry (reporting)", UP),
    "sequence_gaps_total": ("a sale.upload of register R02 numbered 3 with 1 and 2 missing", UP),
    "stock_movements_total": ("posctl stock receive", UP),
    "low_stock_events_total": ("a sale taking OIL18 from 5 received to 4, below its "
                               "threshold (5)", UP),
    "bad_stream_entries_total": ("the garbage stream entry", UP),
    "intents_created_total": ("a WeChat payment", UP),
    "succeeded_total": ("a WeChat payment the customer confirms", UP),
    "failed_total": ("a declined WeChat payment", UP),
    "reversed_total": ("a WeChat payment cancelled after it was paid", UP),
    "card_deductions_total": ("card.pay of a topped-up card", UP),
    "lost_leases_total": ("EXEMPT", "needs two payments instances racing for one intent's lease "
                          "(a worker stalled past its lease while another takes over)"),
    "refunds_manual_total": ("EXEMPT", "needs a refund unresolved past --refund-deadline-s "
                             "(every refund call and query failing): produced and checked by "
                             "test_payments.py"),
    "hellos_total": ("posnode starting", UP),
    "heartbeats_total": ("posnode's heartbeats", UP),
    "resends_asked_total": ("a heartbeat of R03 saying it journaled sales the back office has "
                            "not", UP),
    # busd
    "events_forwarded_total": ("events published while a subscriber takes every topic", UP),
    "subscriptions_total": ("a subscriber subscribing", UP),
    "unsubscriptions_total": ("the subscriber unsubscribing", UP),
    "requests_total@busd": ("any request", UP),
    "replies_total": ("any reply", UP),
    "no_service_total": ("a request for service nosuch", UP),
    "bad_frames_total@busd": ("a client sending a frame that is not the protocol", UP),
    "instances_registered_total": ("a new service (spare) starting", UP),
    "instances_expired_total": ("the spare stopped with SIGSTOP: its heartbeats stop", UP),
    "instances_goodbye_total": ("sales stopped with SIGTERM", UP),
    "replies_undeliverable_total": ("a client gone before its reply (inventory stopped with "
                                    "SIGSTOP while the request waits, the client closes, then "
                                    "SIGCONT)", UP),
    "refused_*_total": ("a key busd does not know connecting (refused_unknown_key)", UP),
    "instances": ("sales stopped, then started", "one less, then back"),
    "services": ("a new service (spare) registering", "one more"),
    "keys_enrolled": ("posctl node enroll of a new register", "one more"),
    "uptime_seconds@busd": ("time passing", "higher at the end"),
    # devices
    "node_online": ("posnode stopped", "1, then 0 after --node-offline-ms"),
    "node_unsynced_sales": ("a sale rung up while sales is stopped", "above 0, then 0"),
    "device_health": ("the simulated printer out of paper", "health=error 1 (devices); 2 "
                      "(posnode)"),
    "node_metrics_truncated": ("501 registers in the store's node set", "0, 1, then 0"),
    # payments
    "payments_open": ("a WeChat payment the customer takes a few seconds to confirm",
                      "state=pending 1, then 0"),
    # posnode
    "last_sale": ("a sale rung up", "its number"),
    "unsynced_sales": ("a sale rung up while sales is stopped", "above 0, then 0"),
    "online": ("devices stopped with SIGSTOP (heartbeats time out)", "1, 0, then 1"),
    "upload_blocked": ("a sale of a store removed from the stores set while sales was stopped: "
                       "sales refuses it (unknown_store)", "0, 1, then 0"),
    "selling_stopped": ("the journal's file size limited (RLIMIT_FSIZE, as a full disk) while "
                        "a sale is paid", "0, 1, then 0 once the sale is written"),
    "uploads_total": ("sales uploaded", UP),
    "upload_errors_total": ("uploads while sales is stopped", UP),
    "card_deductions_pending": ("EXEMPT", "needs a stored-value tender taken offline at the "
                                "till: produced and checked by test_canteen_till.py"),
    "refunds_pending": ("EXEMPT", "needs the return of a wallet payment while payments is "
                        "down: test_return_refund.py produces it (and reads it from the till's "
                        "state)"),
    "scans_dropped_total": ("EXEMPT", "needs a scanner flooding faster than the till reads "
                            "(a queue overflow); no scanner simulator drives one"),
    "canteen_taps_total": ("EXEMPT", "needs canteen terminals on the register: produced and "
                           "checked per `what` by test_canteen_till.py"),
}
# one program's copy exempt where its cause does not exist there
EXEMPT_FOR = {
    ("reporting", n): "reporting has only reads open to every role: nothing is reply-cached and "
                      "no role is refused" for n in ("forbidden_total", "replies_repeated_total",
                                                     "retries_while_running_total",
                                                     "reply_cache_errors_total")}


def cause_key(prog, name):
    if prog == "busd" and f"{name}@busd" in CAUSES:
        return f"{name}@busd"
    if prog == "busd" and name.startswith("refused_"):
        return "refused_*_total"
    return name


# ---- scraping ----------------------------------------------------------------------------------
def scrape(port):
    """{(name, frozenset(labels)): value} of a page, or {} when it cannot be had."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except (OSError, urllib.error.HTTPError):
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def total(page, full, **labels):
    """Sum of the series of one name whose labels include labels; None if there are none."""
    vals = [v for (n, ls), v in page.items()
            if n == full and all((k, w) in ls for k, w in labels.items())]
    return sum(vals) if vals else None


c = Checks("test_metrics_doc")
st = Stack("metrics_doc")
ports = {p: free_port() for p in PROGRAMS}
moved = {}  # (program, name) -> what was seen


def full(prog, name):
    return f"posbus_{prog}_{name}"


def m(prog, name, **labels):
    return total(scrape(ports[prog]), full(prog, name), **labels)


def observe(prog, name, cond, what, timeout=WAIT):
    """Wait for cond() (a gauge's documented movement); record it for the final tally."""
    ok = bool(wait_for(cond, timeout, f"{prog} {name}: {what}"))
    c.check(ok, f"{prog}: {name} {what}")
    if ok:
        moved.setdefault((prog, name), what)
    return ok


def margs(prog):
    return ["--metrics-listen", f"127.0.0.1:{ports[prog]}", "--metrics-refresh-ms", REFRESH_MS]


names, label_values, alerts = documented()
emu = None
try:
    c.check(len(names) > 80 and all(p in {q for q, _ in names} for p in PROGRAMS),
            f"the docs name {len(names)} metrics (program, name) over {len(PROGRAMS)} programs")
    for a in alerts:
        c.check(any(n == a + "_total" for _, n in names),
                f"metrics.md 'Worth an alert' names {a}, which a list gives a program")
    for key in sorted({cause_key(p, n) for p, n in names} ^ set(CAUSES)):
        c.fail(f"{key}: " + ("documented but no entry in CAUSES (add its cause)"
                             if key not in CAUSES else "in CAUSES but no doc names it"))

    # ---- the stack ----
    st.start_redis()
    st.spawn("busd", [f"{BIN}/busd", "--pub-bind", st.pub, "--sub-bind", st.sub, "--req-bind",
                      st.req, "--cert", f"{st.keys}/busd.cert_secret", "--clients-dir",
                      f"{st.keys}/clients", "--heartbeat-ms", "250", "--heartbeat-timeout-ms",
                      "4000", *margs("busd")])
    emu = PaymentEmulators(st, alipay=False)
    # claim-idle-ms: long enough for both groups' pending entry to be seen on a slow machine
    # before an instance claims it, short enough to see the claim within WAIT
    extra = {"inventory": ["--gather-ms", "1000", "--claim-idle-ms", "6000"],
             "reporting": ["--gather-ms", "1000", "--claim-idle-ms", "6000"],
             "devices": ["--node-offline-ms", "1500"], "payments": emu.args}
    for p in SERVICES:
        st.start_service(p, p, *margs(p), *extra.get(p, []))
    c.check(st.wait_healthy(list(SERVICES), timeout=30), "every service healthy")
    st.posctl("store", "add", STORE, "Metrics store", check=True)
    st.posctl("catalog", "import", os.path.join(SRC, "scripts", "sample", "catalog.csv"),
              check=True)
    for cid, role, pin in (("ann", "cashier", "1111"), ("sue", "supervisor", "2222")):
        subprocess.run([f"{BIN}/posctl", *st.conn_args(), "cashier", "add", "--store", STORE,
                        "--id", cid, "--name", cid.title(), "--role", role], input=pin + "\n",
                       text=True, capture_output=True, check=True)
    # the printer simulator on a pty, as in test_printer.py
    link, control = os.path.join(st.tmp, "printer.tty"), os.path.join(st.tmp, "printer.ctl")
    st.spawn("printer-sim", ["/usr/bin/python3", os.path.join(SRC, "devices", "sim",
                                                              "escpos_printer.py"),
                             "--pty", link, "--control", control, "--out",
                             os.path.join(st.tmp, "receipts"), "--width", "80"])
    wait_for(lambda: os.path.exists(link) and os.path.exists(control), 10, "printer simulator")
    devices_file = os.path.join(st.tmp, "devices.conf")
    with open(devices_file, "w") as f:
        f.write(f"printer escpos serial:{link},baud=19200\n")
    r01 = st.start_posnode("r01", STORE, "R01", "--devices", devices_file,
                           "--request-timeout-ms", "500", *margs("posnode"))
    for p in PROGRAMS:
        c.check(wait_for(lambda: scrape(ports[p]), WAIT), f"{p} serves /metrics")
    wait_for(lambda: r01.cmd("state")["config_version"] >= 1, WAIT, "posnode's config")
    c.check(r01.cmd("login ann 1111")["ok"], "Ann logs in at R01")

    def sell(*lines):
        for line in lines:
            r01.cmd(line)
        return r01.cmd("pay cash 100")

    base = {p: scrape(ports[p]) for p in PROGRAMS}
    c.eq(total(base["reporting"], full("reporting", "apply_lag_p50_ms")), -1,
         "reporting: apply_lag_p50_ms before the first sale")
    bus = Bus(st)
    reg = lambda r: Bus(st, st.key("register", f"{STORE}.{r}"))  # noqa: E731

    # ---- sales stopped: uploads wait, unsynced sales show, busd sees it go and come back ----
    inst = m("busd", "instances")
    st.kill("sales", signal.SIGTERM)
    observe("busd", "instances", lambda: m("busd", "instances") == inst - 1,
            f"one less with sales stopped (from {inst})")
    r = sell("scan RICE5", "scan COLA")
    c.check(r.get("ok"), f"a sale rung up while sales is stopped: {r.get('sale_id')}")
    observe("posnode", "last_sale", lambda: m("posnode", "last_sale") == 1, "is 1 after sale 1")
    observe("posnode", "unsynced_sales", lambda: (m("posnode", "unsynced_sales") or 0) > 0,
            "above 0 while sales is stopped")
    observe("devices", "node_unsynced_sales",
            lambda: (m("devices", "node_unsynced_sales", register="R01") or 0) > 0,
            "above 0 while sales is stopped")
    wait_for(lambda: (m("posnode", "upload_errors_total") or 0) > 0, WAIT, "an upload error")
    # the store forgotten while sales was away: sales, started again, refuses the register's
    # sale until the store is registered again
    observe("posnode", "upload_blocked", lambda: m("posnode", "upload_blocked") == 0,
            "0 before")
    st.redis_cli("SREM", "stores", STORE)
    st.start_service("sales", "sales", *margs("sales"))
    observe("busd", "instances", lambda: m("busd", "instances") == inst, "back with sales")
    observe("posnode", "upload_blocked", lambda: m("posnode", "upload_blocked") == 1,
            "1 while sales refuses its sale (unknown_store)")
    st.redis_cli("SADD", "stores", STORE)
    observe("posnode", "upload_blocked", lambda: m("posnode", "upload_blocked") == 0,
            "0 again once the store is back")
    observe("posnode", "unsynced_sales", lambda: m("posnode", "unsynced_sales") == 0,
            "0 once sales is back")
    observe("devices", "node_unsynced_sales",
            lambda: m("devices", "node_unsynced_sales", register="R01") == 0,
            "0 once sales is back")
    c.check(wait_for(lambda: scrape(ports["sales"]), WAIT), "sales serves again")
    base["sales"] = scrape(ports["sales"])  # its counters started again from 0
    me = load_cert(st.key("consumer", "watch"))
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.curve_publickey, sub.curve_secretkey = me["public"], me["secret"]
    sub.curve_serverkey = load_cert(st.server_cert())["public"]
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(st.sub)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    wait_for(lambda: (m("busd", "subscriptions_total") or 0) >
             (total(base["busd"], full("busd", "subscriptions_total")) or 0), WAIT,
             "a subscription")
    st.posctl("stock", "receive", "--store", STORE, "OIL18", "5", "--ref", "T", "--move-id",
              "m-oil", check=True)
    r = sell("scan OIL18", "scan BEER")
    c.check(r.get("ok"), "a second sale")
    wait_for(lambda: (m("busd", "events_forwarded_total") or 0) > 0, WAIT, "an event forwarded")
    sub.setsockopt(zmq.UNSUBSCRIBE, b"")
    wait_for(lambda: (m("busd", "unsubscriptions_total") or 0) >
             (total(base["busd"], full("busd", "unsubscriptions_total")) or 0), WAIT,
             "an unsubscription")
    sub.close()
    observe("reporting", "apply_lag_p50_ms", lambda: (m("reporting", "apply_lag_p50_ms")
                                                      or -1) >= 0, ">= 0 after a sale")
    observe("reporting", "apply_lag_p99_ms", lambda: (m("reporting", "apply_lag_p99_ms")
                                                      or -1) >= 0, ">= 0 after a sale")
    wait_for(lambda: m("posnode", "unsynced_sales") == 0, WAIT, "sale 2 uploaded")

    # ---- every service: the request path ----
    forbidden = {"sales": "day.close", "inventory": "store.add", "devices": "config.set",
                 "payments": "payment.recon.put", "reporting": None}
    cached = {"sales": ("day.close", {}), "inventory": ("store.add", {"store": "S8",
                                                                      "name": "Other"}),
              "devices": ("config.set", {}), "payments": ("card.create", {}),
              "reporting": None}
    register = reg("R01")
    redis = st.redis()
    for p in SERVICES:
        bus.call(p, "health", {})
        bus.call(p, "no.such.method", {})
        bus.call_raw(p, b"\xc1 not msgpack")
        if forbidden[p]:
            r = register.call(p, forbidden[p], {})
            c.check(r["type"] == "error", f"{p}: {forbidden[p]} refused to a register: "
                    f"{r['body'].get('code')}")
        if cached[p]:
            method, body = cached[p]
            rid = f"repeat-{p}"
            first = bus.call(p, method, body, request_id=rid)
            again = bus.call(p, method, body, request_id=rid)
            c.eq(again["body"], first["body"], f"{p}: {method} twice under one id, one answer")
            key = f"reply:{{{p}}}:operator-py:running-{p}"
            redis.call("SET", key, "Pother-instance", "PX", "30000")
            r = bus.call(p, method, body, request_id=f"running-{p}")
            c.check(r["type"] == "error" and r["body"].get("code") == "unavailable",
                    f"{p}: a request another attempt holds: unavailable ({r['body']})")

    # ---- busd ----
    bus.call("nosuch", "health", {}, allow_timeout=True)
    bus.sock.send_multipart([b"NOT-A-PROTOCOL"])
    stranger = zmq.Context.instance().socket(zmq.DEALER)
    pub, sec = zmq.curve_keypair()
    stranger.curve_publickey, stranger.curve_secretkey = pub, sec
    stranger.curve_serverkey = load_cert(st.server_cert())["public"]
    stranger.setsockopt(zmq.LINGER, 0)
    stranger.connect(st.req)
    stranger.send_multipart([b"BUS1C", b"REQ", b"sales", b"12345678", b"x"], zmq.NOBLOCK)
    wait_for(lambda: any(n.startswith("posbus_busd_refused_") and v > 0
                         for (n, _), v in scrape(ports["busd"]).items()), WAIT,
             "a refusal of the stranger's key")
    stranger.close()
    enrolled = m("busd", "keys_enrolled")
    st.key("register", f"{STORE}.R07")
    observe("busd", "keys_enrolled", lambda: (m("busd", "keys_enrolled") or 0) > enrolled,
            f"one more after an enrolment (from {enrolled})")
    # a reply with nobody to take it: inventory holds the request while the client leaves
    before = m("busd", "requests_total")
    gone = Bus(st)
    st.procs["inventory"].send_signal(signal.SIGSTOP)
    try:
        gone.sock.send_multipart([b"BUS1C", b"REQ", b"inventory", b"corr0001", msgpack.packb(
            {"v": 1, "type": "health", "id": "gone-1", "src": "pytest", "seq": 1,
             "ts": int(time.time() * 1000), "body": {}})])
        wait_for(lambda: (m("busd", "requests_total") or 0) > before, 3, "busd forwards")
        gone.sock.close(linger=0)
        time.sleep(0.3)  # lets busd see the connection close (the check is the counter below)
    finally:
        st.procs["inventory"].send_signal(signal.SIGCONT)
    wait_for(lambda: (m("busd", "replies_undeliverable_total") or 0) > 0, WAIT,
             "an undeliverable reply")
    svcs = m("busd", "services")
    st.start_service("spare", "devices", "--service-name", "spare")
    observe("busd", "services", lambda: m("busd", "services") == svcs + 1,
            f"one more with a new service (from {svcs})")
    st.procs["spare"].send_signal(signal.SIGSTOP)
    wait_for(lambda: (m("busd", "instances_expired_total") or 0) > 0, WAIT, "an expiry")
    st.kill("spare", signal.SIGKILL)

    # ---- sales' and devices' own counters, from raw register requests ----
    doc = journal_sales(r01.journal)[-1]
    r02 = reg("R02")
    gap = dict(doc, register="R02", seq=3, sale_id=f"{STORE}-R02-000003")
    r = r02.call("sales", "sale.upload", gap)
    c.check(r["type"] == "reply", f"R02's sale 3 with 1 and 2 missing: committed ({r['body']})")
    bad = dict(doc, register="R02", seq=4, sale_id=f"{STORE}-R02-000004",
               total=doc["total"] + 1)
    r = r02.call("sales", "sale.upload", bad)
    c.check(r["type"] == "error", f"a sale whose total does not add up: refused ({r['body']})")
    r03 = reg("R03")
    r03.call("devices", "node.hello", {"version": "1.0", "devices": [], "config_version": 0})
    r = r03.call("devices", "node.heartbeat", {"last_seq": 2, "unsynced": 0,
                                               "config_version": 0})

    # ---- the stream: garbage entry, an entry left pending, lag while entries gather ----
    groups = ("inventory", "reporting")
    replies = redis.pipeline([("MULTI",), ("XADD", "sales:stream", "*", "junk", "1")] +
                             [("XREADGROUP", "GROUP", g, "test-stuck", "COUNT", "1", "STREAMS",
                               "sales:stream", ">") for g in groups] + [("EXEC",)])
    c.check(isinstance(replies[-1], list), f"an entry read by a consumer that never acks: "
            f"{replies[-1]!r:.200}")
    for g in groups:
        observe(g, "stream_pending_entries",
                lambda: (m(g, "stream_pending_entries", group=g) or 0) > 0,
                "above 0 while the test's consumer holds an entry")
    for g in groups:
        observe(g, "stream_pending_entries", lambda: m(g, "stream_pending_entries", group=g)
                == 0, "0 once an instance claimed it", timeout=WAIT)
    real = redis.call("XRANGE", "sales:stream", "-", "+", "COUNT", "1")[0][1]

    def lag_seen(g):
        # the first entry wakes the consumer; the second lands while it lets entries gather
        redis.call("XADD", "sales:stream", "*", *real)
        time.sleep(0.05)
        redis.call("XADD", "sales:stream", "*", *real)
        return wait_for(lambda: (m(g, "stream_lag_entries", group=g) or 0) > 0, 1.5)
    for g in groups:
        observe(g, "stream_lag_entries", lambda: lag_seen(g), "above 0 while entries gather")
        observe(g, "stream_lag_entries", lambda: m(g, "stream_lag_entries", group=g) == 0,
                "0 once caught up")

    # ---- payments ----
    wx = emu.wx
    r04 = reg("R04")
    r03 = reg("R03")

    def pay(n, amount):
        r = r04.call("payments", "payment.pay", {"sale_id": f"{STORE}-R04-{n:06d}", "attempt": 1,
                                                 "amount": amount, "code": "134567890123456789"})
        return r["body"].get("intent")

    def final(intent):
        return wait_for(lambda: r04.call("payments", "payment.get", {"intent": intent})
                        ["body"].get("final"), WAIT, f"intent {intent} final")
    wx.mode("userpaying_then_success", seconds=3)
    i = pay(2, 700)
    observe("payments", "payments_open", lambda: m("payments", "payments_open", store=STORE,
                                                   state="pending") == 1,
            "state=pending 1 while the customer confirms")
    final(i)
    observe("payments", "payments_open", lambda: m("payments", "payments_open", store=STORE,
                                                   state="pending") == 0, "pending 0 once paid")
    r04.call("payments", "payment.cancel", {"intent": i})
    wait_for(lambda: (m("payments", "reversed_total") or 0) > 0, WAIT, "a reversal")
    wx.mode("declined")
    final(pay(3, 500))
    st.posctl("card", "create", "C1", "--holder", "Zhang San", check=True)
    st.posctl("card", "topup", "C1", "50", check=True)
    r = r04.call("payments", "card.pay", {"card": "C1", "amount": 100,
                                          "sale_id": f"{STORE}-R04-000009", "attempt": 1})
    c.check(r["type"] == "reply", f"card.pay: {r['body']}")

    # ---- Redis refuses writes ----
    redis.pipeline([("MULTI",), ("XADD", "sales:stream", "*", *real),
                    ("XADD", "sales:stream", "*", "junk", "2"),
                    ("CONFIG", "SET", "maxmemory-policy", "noeviction"),
                    ("CONFIG", "SET", "maxmemory", "1"), ("EXEC",)])
    try:
        for p in SERVICES:
            if cached[p]:
                method, body = cached[p]
                bus.call(p, method, body)
        r03.call("devices", "node.hello", {"version": "1.0", "devices": [],
                                           "config_version": 0})
        reg("R04").call("payments", "payment.pay", {"sale_id": f"{STORE}-R04-000001",
                                                    "attempt": 1, "amount": 100,
                                                    "code": "134567890123456789"})
        r = sell("scan COLA")
        for g in groups:
            wait_for(lambda: (m(g, "stream_errors_total") or 0) > 0, 5, f"{g}: a stream error")
        wait_for(lambda: (m("sales", "redis_errors_total") or 0) > 0, WAIT, "sales: redis error")
    finally:
        redis.call("CONFIG", "SET", "maxmemory", "0")
    wait_for(lambda: m("posnode", "unsynced_sales") == 0, WAIT, "sale 3 uploaded")

    # ---- devices: truncation, peripheral health, registers going offline ----
    observe("devices", "node_metrics_truncated", lambda: m("devices", "node_metrics_truncated")
            == 0, "0 with a few registers")
    fake = [f"Z{i:03d}" for i in range(501)]
    redis.call("SADD", f"nodes:{{{STORE}}}", *fake)
    observe("devices", "node_metrics_truncated", lambda: m("devices", "node_metrics_truncated")
            == 1, "1 with more than 500 registers")
    redis.call("SREM", f"nodes:{{{STORE}}}", *fake)
    observe("devices", "node_metrics_truncated", lambda: m("devices", "node_metrics_truncated")
            == 0, "0 again")

    def printer(cmd, **kw):
        return sim_control(control, cmd, **kw)
    observe("posnode", "device_health", lambda: m("posnode", "device_health", device="printer")
            == 0, "0 (ok) with paper")
    printer("paper", state="out")
    observe("posnode", "device_health", lambda: m("posnode", "device_health", device="printer")
            == 2, "2 (error) with the printer out of paper")
    observe("devices", "device_health",
            lambda: m("devices", "device_health", register="R01", device="printer",
                      health="error") == 1, "health=error 1 with the printer out of paper")
    printer("paper", state="ok")
    observe("posnode", "online", lambda: m("posnode", "online") == 1, "1 with the back office")
    st.procs["devices"].send_signal(signal.SIGSTOP)
    try:
        observe("posnode", "online", lambda: m("posnode", "online") == 0,
                "0 while devices does not answer", timeout=10)
    finally:
        st.procs["devices"].send_signal(signal.SIGCONT)
    observe("posnode", "online", lambda: m("posnode", "online") == 1, "1 again")
    observe("devices", "node_online", lambda: m("devices", "node_online", register="R01") == 1,
            "1 while posnode runs")
    # the journal's disk full (its file may grow by 200 bytes only): selling stops, and the
    # same sale is written once there is room again
    observe("posnode", "selling_stopped", lambda: m("posnode", "selling_stopped") == 0,
            "0 before")
    pid = st.procs["r01"].pid
    unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    resource.prlimit(pid, resource.RLIMIT_FSIZE,
                     (os.path.getsize(r01.journal) + 200, resource.RLIM_INFINITY))
    try:
        r = sell("scan COLA")
        c.check(not r.get("ok") and r.get("stopped") is True,
                f"R01 stops selling with the journal full: {r.get('message')}")
        observe("posnode", "selling_stopped", lambda: m("posnode", "selling_stopped") == 1,
                "1 while the journal cannot be written")
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, unlimited)
    r = r01.cmd("pay")
    c.check(r.get("ok") and r.get("stopped") is False,
            f"with room again the sale is written: {r.get('sale_id')} {r.get('message')}")
    observe("posnode", "selling_stopped", lambda: m("posnode", "selling_stopped") == 0,
            "0 once the sale is written")
    final_pn = scrape(ports["posnode"])
    r01.close()
    st.kill("r01", signal.SIGTERM)
    observe("devices", "node_online", lambda: m("devices", "node_online", register="R01") == 0,
            "0 once posnode stopped")

    # ---- the tally ----
    end = {p: scrape(ports[p]) for p in PROGRAMS if p != "posnode"}
    end["posnode"] = final_pn
    served = exempt = real_causes = 0
    for (prog, name), kind in sorted(names.items()):
        page, fname = end[prog], full(prog, name)
        fams = {n for n, _ in page}
        if "*" in name:
            pat = re.compile(re.escape(fname).replace(r"\*", r"\w+") + r"\Z")
            got = sorted(n for n in fams if pat.match(n))
        else:
            suffixes = ("_bucket", "_sum", "_count") if kind == "histogram" else ("",)
            got = [fname + s for s in suffixes if fname + s in fams]
            got = got if len(got) == len(suffixes) else []
        ok = c.check(got, f"{prog}: {fname} served ({kind})")
        served += ok
        for n, vals in label_values.get((prog, name), {}).items():
            have = {dict(ls).get(n) for (sn, ls) in page if sn == fname}
            c.check(set(vals) <= have, f"{prog}: {fname} has a series for every documented "
                    f"{n}: {sorted(set(vals) - have)} missing")
        key = cause_key(prog, name)
        cause, expect = CAUSES.get(key, ("", ""))
        reason = EXEMPT_FOR.get((prog, name)) or (expect if cause == "EXEMPT" else None)
        if reason:
            exempt += 1
            print(f"     exempt {prog} {name}: {reason}", flush=True)
            continue
        if (prog, name) in moved:
            real_causes += 1
            continue
        if name == "info":
            v = total(page, fname)
            c.check(v == 1 and any(dict(ls).get("version") for (sn, ls) in page if sn == fname),
                    f"{prog}: {fname} is 1 with a version label ({v})")
            real_causes += 1
            continue
        sample = fname + "_count" if kind == "histogram" else fname
        labels = {"method": "health"} if kind == "histogram" else {}
        before = total(base[prog], sample, **labels) or 0
        after = total(page, sample, **labels) or 0
        if "*" in name:
            before = sum(v for (n, _), v in base[prog].items() if n in got)
            after = sum(v for (n, _), v in page.items() if n in got)
        real_causes += c.check(after > before, f"{prog}: {sample} went up with its cause "
                               f"({cause}): {before:g} -> {after:g}")
    print(f"     {len(names)} documented (program, metric) pairs: {served} served, "
          f"{real_causes} moved by their cause, {exempt} exempt", flush=True)
finally:
    if emu:
        emu.stop()
    c.finish()
