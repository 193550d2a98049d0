#!/usr/bin/python3
"""test_keys - posctl's key commands make role-bearing keys that busd lets in and keeps out.

A real busd (no Redis, no services) on a keys directory made only by posctl:
- `keygen` makes busd's certificate once; `keygen ROLE NAME...` one enrolled key per name for
  service, operator and consumer, each carrying role and name in the certificate's metadata
  (zcert text, "metadata" section), created-by posbus and a UTC creation time; the secret file
  is mode 0600. It refuses the role register, an unknown role and a malformed name (exit 2,
  nothing written) and never replaces an existing key (exit 1, same public key).
- `node enroll STORE REGISTER` makes a register's key with role, name STORE.REGISTER, store
  and register in its metadata and names the two files to carry to the register; busd answers
  a client holding that key.
- `node revoke` removes only clients/<file>.cert (the key files stay) and busd refuses the key
  within seconds; `node enroll` again enrols the same public key and busd answers it again;
  `keys revoke` / `keys enrol` do the same for other roles; revoking what is not enrolled fails
  with a message naming it.
- `keys list` shows every enrolled key with its role (table and --format json); a certificate
  in clients/ without a valid role is listed as "invalid" with the reason."""
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "tests", "integration"))
from harness import BIN, Bus, Checks, Stack, load_cert, wait_for  # noqa: E402

ZAP_RELOAD_S = 10  # busd notices clients/ changes within about a second; generous under ASan

c = Checks("test_keys")
st = Stack("keys")  # makes busd's key and the operator keys "cli" and "py" with posctl keygen
keys = st.keys
clients = os.path.join(keys, "clients")


def meta(path):
    """The metadata section of a zcert text file as a dict."""
    out, section = {}, None
    for line in open(path, encoding="utf-8"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            section = line.strip()
            continue
        m = re.match(r'\s+([\w-]+)\s*=\s*"(.*)"\s*$', line)
        if m and section == "metadata":
            out[m.group(1)] = m.group(2)
    return out


def public_key(path):
    return load_cert(path)["public"]


def listed():
    """keys list --format json as {file: row}."""
    r = st.posctl("keys", "list", "--format", "json", check=True)
    return {row["file"]: row for row in json.loads(r.stdout)}


def talks(cert):
    """Does busd answer a client holding this secret certificate? Any answer counts, an error
    too: it means the CURVE handshake let the key in (a key busd does not know gets nothing)."""
    bus = Bus(st, cert)
    try:
        return bus.call("busd", "health", {}, timeout=1.0, allow_timeout=True) is not None
    finally:
        bus.sock.close(0)


# --- keygen per role -----------------------------------------------------------------------
r = st.posctl("keygen", check=True)
c.check("busd.cert exists" in r.stdout and "every client needs it" in r.stdout,
        "keygen without a role: busd's certificate already there, and says every client needs "
        "busd.cert", actual=r.stdout)
busd_key = public_key(os.path.join(keys, "busd.cert"))
c.check("role" not in meta(os.path.join(keys, "busd.cert")), "busd's certificate has no role")

r = st.posctl("keygen", "service", "sales", "inventory", check=True)
c.check(r.stdout.count("created") == 2 and "clients/service-inventory.cert" in r.stdout,
        "keygen service sales inventory: two keys created and enrolled", actual=r.stdout)
st.posctl("keygen", "consumer", "bi", check=True)
for file, role, name in (("service-sales", "service", "sales"),
                         ("service-inventory", "service", "inventory"),
                         ("operator-cli", "operator", "cli"), ("consumer-bi", "consumer", "bi")):
    m = meta(os.path.join(keys, file + ".cert"))
    mode = stat.S_IMODE(os.stat(os.path.join(keys, file + ".cert_secret")).st_mode)
    enrolled = os.path.join(clients, file + ".cert")
    c.check(m.get("role") == role and m.get("name") == name and m.get("created-by") == "posbus"
            and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m.get("created", "")) and
            "store" not in m and mode == 0o600 and os.path.exists(enrolled) and
            public_key(enrolled) == public_key(os.path.join(keys, file + ".cert")),
            f"{file}: role {role}, name {name}, created time, secret 0600, enrolled copy",
            actual=(m, oct(mode)))
c.eq(public_key(os.path.join(keys, "busd.cert")), busd_key,
     "busd's key is made once, not replaced by later keygens")

# --- refusals -------------------------------------------------------------------------------
before = sorted(os.listdir(keys)), sorted(os.listdir(clients))
r = st.posctl("keygen", "register", "S1")
c.check(r.returncode == 2 and "node enroll" in r.stderr,
        "keygen register is refused (exit 2) and points to node enroll",
        actual=(r.returncode, r.stderr))
r = st.posctl("keygen", "boss", "x")
c.check(r.returncode == 2 and "unknown role 'boss'" in r.stderr, "keygen of an unknown role is "
        "refused (exit 2)", actual=(r.returncode, r.stderr))
r = st.posctl("keygen", "operator", "good", "bad name")
c.check(r.returncode == 2 and "bad name 'bad name'" in r.stderr,
        "keygen with a malformed name is refused (exit 2) before any key is made",
        actual=(r.returncode, r.stderr))
r = st.posctl("node", "enroll", "S-1", "R01")
c.check(r.returncode == 2 and "bad store or register id" in r.stderr,
        "node enroll with a malformed store id is refused (exit 2)",
        actual=(r.returncode, r.stderr))
c.eq((sorted(os.listdir(keys)), sorted(os.listdir(clients))), before,
     "nothing was written by the refused commands")
sales_key = public_key(os.path.join(keys, "service-sales.cert"))
r = st.posctl("keygen", "service", "sales")
c.check(r.returncode == 1 and "exists already" in r.stderr and
        public_key(os.path.join(keys, "service-sales.cert")) == sales_key and
        public_key(os.path.join(clients, "service-sales.cert")) == sales_key,
        "keygen of an existing key fails (exit 1) and keeps the key",
        actual=(r.returncode, r.stderr))

# --- a register: enrol, revoke, enrol again, against a running busd -------------------------
st.start_busd()
c.check(wait_for(lambda: talks(st.key("operator", "cli")), 15, "busd answering"),
        "busd answers an operator key made by posctl keygen")
r = st.posctl("node", "enroll", "S1", "R01", check=True)
reg_secret = os.path.join(keys, "register-S1-R01.cert_secret")
reg_public = os.path.join(keys, "register-S1-R01.cert")
reg_enrolled = os.path.join(clients, "register-S1-R01.cert")
lines = [line.strip() for line in r.stdout.splitlines()]
c.check("carry these two files to register S1.R01" in r.stdout and reg_secret in lines and
        os.path.join(keys, "busd.cert") in lines,
        "node enroll names the two files to carry: the register's secret and busd.cert",
        actual=r.stdout)
m = meta(reg_public)
c.check(m.get("role") == "register" and m.get("name") == "S1.R01" and m.get("store") == "S1"
        and m.get("register") == "R01" and meta(reg_enrolled) == m,
        "the register's certificate carries role, name S1.R01, store and register", actual=m)
reg_key = public_key(reg_public)
c.check(wait_for(lambda: talks(reg_secret), ZAP_RELOAD_S, "busd answering the register"),
        "busd answers the register's key without a restart")

r = st.posctl("node", "revoke", "S1", "R01", check=True)
c.check(not os.path.exists(reg_enrolled) and os.path.exists(reg_public) and
        os.path.exists(reg_secret) and "stay" in r.stdout,
        "node revoke removes clients/register-S1-R01.cert and says the key files stay",
        actual=r.stdout)
c.check(wait_for(lambda: not talks(reg_secret), ZAP_RELOAD_S, "busd refusing the register"),
        "busd refuses the revoked register's key")
r = st.posctl("node", "revoke", "S1", "R01")
c.check(r.returncode == 1 and "register S1.R01 is not enrolled" in r.stderr,
        "revoking it again fails (exit 1) saying it is not enrolled",
        actual=(r.returncode, r.stderr))

r = st.posctl("node", "enroll", "S1", "R01", check=True)
c.check("again" in r.stdout and public_key(reg_enrolled) == reg_key and
        public_key(reg_secret) == reg_key,
        "node enroll after revoke enrols the same public key again (the register keeps its "
        "files)", actual=r.stdout)
c.check(wait_for(lambda: talks(reg_secret), ZAP_RELOAD_S, "busd answering the register again"),
        "busd answers the re-enrolled register")

# --- other roles: keys revoke / keys enrol ---------------------------------------------------
bi_secret = os.path.join(keys, "consumer-bi.cert_secret")
c.check(wait_for(lambda: talks(bi_secret), ZAP_RELOAD_S), "busd answers the consumer key")
r = st.posctl("keys", "revoke", "consumer", "bi", check=True)
c.check(not os.path.exists(os.path.join(clients, "consumer-bi.cert")) and
        os.path.exists(bi_secret), "keys revoke consumer bi removes it from clients/ only")
c.check(wait_for(lambda: not talks(bi_secret), ZAP_RELOAD_S), "busd refuses the revoked consumer")
r = st.posctl("keys", "revoke", "operator", "nobody")
c.check(r.returncode == 1 and "operator nobody is not enrolled" in r.stderr,
        "revoking a key that is not enrolled fails with a message naming it",
        actual=(r.returncode, r.stderr))
r = st.posctl("keys", "revoke", "register", "S1.R01")
c.check(r.returncode == 2 and "node" in r.stderr, "keys revoke register points to node revoke",
        actual=(r.returncode, r.stderr))
st.posctl("keys", "enrol", "consumer", "bi", check=True)
c.check(wait_for(lambda: talks(bi_secret), ZAP_RELOAD_S), "keys enrol lets the consumer in again")

# --- keys list -------------------------------------------------------------------------------
rows = listed()
want = {"service-sales.cert": ("service", "sales", None, None),
        "service-inventory.cert": ("service", "inventory", None, None),
        "operator-cli.cert": ("operator", "cli", None, None),
        "operator-py.cert": ("operator", "py", None, None),
        "consumer-bi.cert": ("consumer", "bi", None, None),
        "register-S1-R01.cert": ("register", "S1.R01", "S1", "R01")}
got = {f: (r["role"], r["name"], r["store"], r["register"]) for f, r in rows.items()}
c.eq(got, want, "keys list --format json: every enrolled key with role, name, store, register")
c.check(all(r["reason"] is None and r["created"] and len(r["key"]) == 8 for r in rows.values())
        and rows["register-S1-R01.cert"]["key"] == reg_key.decode()[:8],
        "each row has its creation time and the first 8 characters of its public key, no reason")
table = st.posctl("keys", "list", check=True).stdout
c.check(re.search(r"^register-S1-R01\.cert\s+register\s+S1\.R01\s+S1\s+R01\s", table, re.M) and
        re.search(r"^service-sales\.cert\s+service\s+sales\s", table, re.M),
        "keys list (table) shows file, role and name per line", actual=table)

# a certificate without a role, in a keys directory of its own (busd's stays clean)
other = os.path.join(st.tmp, "other-keys")
os.makedirs(os.path.join(other, "clients"), mode=0o700)
with open(os.path.join(keys, "operator-py.cert"), encoding="utf-8") as f:
    text = f.read()
with open(os.path.join(other, "clients", "legacy.cert"), "w", encoding="utf-8") as f:
    f.write(re.sub(r'\n\s+role = "operator"', "", text))
shutil.copy(reg_enrolled, os.path.join(other, "clients"))
r = subprocess.run([f"{BIN}/posctl", "--keys-dir", other, "keys", "list", "--format", "json"],
                   capture_output=True, text=True, timeout=60)
rows = {row["file"]: row for row in json.loads(r.stdout)} if r.returncode == 0 else {}
legacy = rows.get("legacy.cert", {})
c.check(legacy.get("role") == "invalid" and legacy.get("reason") == "no role in the certificate"
        and rows.get("register-S1-R01.cert", {}).get("role") == "register",
        "a certificate without a role is listed as invalid with the reason", actual=r.stdout)
r = subprocess.run([f"{BIN}/posctl", "--keys-dir", os.path.join(st.tmp, "nowhere"), "keys",
                    "list"], capture_output=True, text=True, timeout=60)
c.check(r.returncode == 1 and "no such directory" in r.stderr,
        "keys list on a missing keys directory fails saying so", actual=(r.returncode, r.stderr))

c.finish()
