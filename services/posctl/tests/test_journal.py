#!/usr/bin/python3
"""test_journal - `posctl journal verify` passes a real register journal and names the first bad
record of a damaged one.

Journals are made by node_journal_tool (devices/node/tests) with the journal library itself, then
damaged here byte by byte, from the format in docs/journal.md (a 60-byte head whose bytes 8-11
are the payload length, the payload, a 64-byte signature):
- a good journal: exit 0, "ok: N records, seq 1..N, register S1.R01, key <fingerprint>", the
  same in --format json; with --journal-key of its register ok, of another register refused;
- one byte changed in the head, previous-record hash, payload or signature of the first, a
  middle and the last record: exit 1, "bad record seq K at byte <its offset>";
- a record removed, two swapped: the removed one, the first of the two is named;
- a torn last record (the file cut inside it) is named and called a torn tail; the register's
  library then cuts it off, continues at the same sequence number, and the journal verifies;
- a file that is not a journal, a missing file, a bad key file: exit 1 with a message."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.environ.get("POSBUS_SRC", "."), "tests", "integration"))
from harness import BIN, Checks  # noqa: E402

HEAD, SIG = 60, 64
RECORDS = 20

c = Checks("test_journal")
tmp = tempfile.mkdtemp(prefix="test_journal.")
tool = os.path.join(BIN, "node_journal_tool")
posctl = os.path.join(BIN, "posctl")


def path(name):
    return os.path.join(tmp, name)


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def verify(file, *opts):
    return run(posctl, "journal", "verify", file, *opts)


def offsets(data):
    """Start of every record (the header's first) and the end of the file."""
    out, off = [], 0
    while off + HEAD <= len(data):
        out.append(off)
        off += HEAD + int.from_bytes(data[off + 8:off + 12], "big") + SIG
    return out + [len(data)]


def named(r, seq, at=None):
    first = r.stdout.splitlines()[0] if r.stdout else ""
    want = f"bad record seq {seq} at byte " + ("" if at is None else f"{at}:")
    return r.returncode == 1 and first.startswith(want)


try:
    r = run(tool, "keygen", path("a.pem"), path("a.pub"))
    c.check(r.returncode == 0, "node_journal_tool makes register a's key", actual=r.stderr)
    fingerprint = r.stdout.split()[-1]
    run(tool, "keygen", path("b.pem"), path("b.pub"))
    journal = path("journal")
    r1 = run(tool, "append", journal, path("a.pem"), "S1", "R01", str(RECORDS // 2), "200")
    r2 = run(tool, "append", journal, path("a.pem"), "S1", "R01", str(RECORDS // 2), "1000")
    c.eq((r1.stdout.strip(), r2.stdout.strip()), (f"seq 1..{RECORDS // 2}",
         f"seq {RECORDS // 2 + 1}..{RECORDS}"), "two runs append gap-free sequence numbers")

    # --- a good journal ----------------------------------------------------------------------
    r = verify(journal)
    c.eq((r.returncode, r.stdout.strip()),
         (0, f"ok: {RECORDS} records, seq 1..{RECORDS}, register S1.R01, key {fingerprint}"),
         "verify passes a real journal")
    r = verify(journal, "--format", "json")
    doc = json.loads(r.stdout) if r.returncode == 0 else {}
    c.check(doc.get("ok") is True and doc.get("records") == RECORDS and doc.get("store") == "S1"
            and doc.get("register") == "R01" and doc.get("key") == fingerprint,
            "--format json says the same", actual=r.stdout)
    r = verify(journal, "--journal-key", path("a.pub"))
    c.eq(r.returncode, 0, "verify with its register's public key passes")
    r = verify(journal, "--journal-key", path("b.pub"))
    c.check(named(r, 0, 0) and "not the expected key" in r.stdout,
            "verify with another register's key: refused at the header", actual=r.stdout)

    data = open(journal, "rb").read()
    offs = offsets(data)
    c.eq(len(offs), RECORDS + 2, "the file walks as a header, 20 records and the end")

    # --- one byte changed --------------------------------------------------------------------
    fields = {"seq": 19, "length": 11, "timestamp": 27, "previous hash": 40, "payload": HEAD + 3}
    for k in (1, 7, 11, RECORDS):
        start, end = offs[k], offs[k + 1]
        bad = []
        for what, at in list(fields.items()) + [("signature", end - start - 5)]:
            d = bytearray(data)
            d[start + at] ^= 0x10
            open(path("work"), "wb").write(d)
            r = verify(path("work"))
            if not named(r, k, start):
                bad.append(f"{what}: {r.returncode} {r.stdout!r}")
        c.check(not bad, f"one byte changed in each field of record {k}: verify names record "
                f"{k} at byte {start}", actual=bad)

    # --- removed, swapped --------------------------------------------------------------------
    for k in (1, 9, RECORDS - 1):
        open(path("work"), "wb").write(data[:offs[k]] + data[offs[k + 1]:])
        r = verify(path("work"))
        c.check(named(r, k, offs[k]), f"record {k} removed: verify names it",
                actual=r.stdout)
    for k in (1, 10, RECORDS - 1):
        a, b = data[offs[k]:offs[k + 1]], data[offs[k + 1]:offs[k + 2]]
        open(path("work"), "wb").write(data[:offs[k]] + b + a + data[offs[k + 2]:])
        r = verify(path("work"))
        c.check(named(r, k, offs[k]), f"records {k} and {k + 1} swapped: verify names {k}",
                actual=r.stdout)

    # --- a torn last record ------------------------------------------------------------------
    last = offs[RECORDS]
    open(path("torn"), "wb").write(data[:last + 500])
    r = verify(path("torn"))
    c.check(named(r, RECORDS, last) and "torn tail" in r.stdout,
            "the file cut inside the last record: verify names it as a torn tail",
            actual=r.stdout)
    r = run(tool, "append", path("torn"), path("a.pem"), "S1", "R01", "1", "1000")
    c.check(r.returncode == 0 and "torn tail cut: 500 bytes" in r.stdout
            and f"seq {RECORDS}..{RECORDS}" in r.stdout,
            "the register's library cuts the torn record and continues at its number",
            actual=r.stdout + r.stderr)
    c.check(os.path.getsize(path("torn.torn")) == 500, "the cut bytes are kept in FILE.torn")
    r = verify(path("torn"))
    c.check(r.returncode == 0 and r.stdout.startswith(f"ok: {RECORDS} records"),
            "and the journal verifies again", actual=r.stdout)
    r = run(tool, "append", path("torn"), path("b.pem"), "S1", "R01", "1")
    c.check(r.returncode != 0 and "not the expected key" in r.stderr
            and os.path.getsize(path("torn")) == os.path.getsize(journal),
            "another register's key cannot continue the journal (nothing written)",
            actual=r.stderr)

    # --- not a journal -----------------------------------------------------------------------
    open(path("junk"), "wb").write(os.urandom(4096))
    r = verify(path("junk"))
    c.check(named(r, 0, 0), "random bytes: bad record seq 0 at byte 0", actual=r.stdout)
    r = verify(path("missing"))
    c.check(r.returncode == 1 and "cannot read" in r.stderr, "a missing file: exit 1, says so",
            actual=r.stderr)
    r = verify(journal, "--journal-key", path("junk"))
    c.check(r.returncode == 1 and "cannot load the journal key" in r.stderr,
            "a key file without a key: exit 1, says so", actual=r.stderr)
    r = run(posctl, "journal", "check", journal)
    c.eq(r.returncode, 2, "an unknown journal subcommand is a usage error")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
c.finish()
