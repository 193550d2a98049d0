#!/usr/bin/python3
"""The ESC/POS printer simulator (devices/sim/escpos_printer.py) driven with hand-written
ESC/POS bytes, as a driver would: over its pty (the symlink opened like a serial port, raw) and
over TCP, checked through its control socket, its output files and the module API.

A receipt (centred header, Chinese items in GB18030 inside FS & ... FS ., a QR code, a partial
cut) must come out with exactly its lines; DLE EOT 1..4 must answer the documented bytes for
paper ok, near end, out and cover open; a receipt interrupted by paper end must come out the
same as without the interruption; garbage and a command cut by a disconnect must be counted,
not crash it; drawer pulses are counted; SIGTERM exits 0 and removes the symlink."""
import os
import random
import signal
import socket
import time

from simtest import ANSWER, WAIT, Program, PtyHost, TcpHost, run  # noqa: E402 (sys.path)
from harness import free_port  # noqa: E402
import escpos_printer  # noqa: E402
from escpos_printer import Printer, decode  # noqa: E402

ESC, GS, FS = b"\x1b", b"\x1d", b"\x1c"
INIT = ESC + b"@"
CENTRE, LEFT, RIGHT = ESC + b"a\x01", ESC + b"a\x00", ESC + b"a\x02"
BOLD_ON, BOLD_OFF = ESC + b"E\x01", ESC + b"E\x00"
CHINESE_ON, CHINESE_OFF = FS + b"&", FS + b"."
PARTIAL_CUT, FULL_CUT = GS + b"V\x01", GS + b"V\x00"
QR_DATA = "https://posbus.example/r/S001-R02-000042"


def qr(data):
    d = data.encode()
    store = bytes([len(d) + 3 & 0xFF, len(d) + 3 >> 8]) + b"\x31\x50\x30" + d
    return (GS + b"(k\x04\x00\x31\x41\x32\x00" + GS + b"(k\x03\x00\x31\x43\x06" +
            GS + b"(k\x03\x00\x31\x45\x31" + GS + b"(k" + store + GS + b"(k\x03\x00\x31\x51\x30")


def gb(text):
    return text.encode("gb18030")


ITEMS = [("金龙鱼大米 5kg", "59.90"), ("农夫山泉 550ml x2", "4.00"), ("Milk 1L", "12.50")]


def receipt_bytes(cols):
    """A receipt as a driver sends it, and the exact text lines it must print."""
    raw = INIT + CENTRE + BOLD_ON + GS + b"!\x00" + b"POSBUS MART\n" + BOLD_OFF
    lines = [" " * ((cols - 11) // 2) + "POSBUS MART"]
    raw += b"S001 R02 #42\n"
    lines.append(" " * ((cols - 12) // 2) + "S001 R02 #42")
    raw += LEFT + CHINESE_ON
    for name, price in ITEMS:
        width = sum(2 if ord(c) > 0x2E80 else 1 for c in name)
        line = name + " " * (cols - width - len(price)) + price
        raw += gb(line) + b"\n"
        lines.append(line)
    raw += CHINESE_OFF + b"-" * cols + b"\n"
    lines.append("-" * cols)
    raw += RIGHT + b"TOTAL 76.40\n"
    lines.append(" " * (cols - 11) + "TOTAL 76.40")
    raw += CENTRE + CHINESE_ON + gb("谢谢惠顾") + b"\n" + CHINESE_OFF
    lines.append(" " * ((cols - 8) // 2) + "谢谢惠顾")
    raw += qr(QR_DATA) + b"\n" + ESC + b"d\x03" + PARTIAL_CUT
    lines += [f"[QR:{QR_DATA}]", "", "", "", ""]
    return raw, lines


def long_receipt_bytes(cols):
    """Eight plain lines, one of them longer than the paper is wide (the printer wraps it)."""
    raw = INIT
    for k in range(1, 8):
        raw += b"line %d\n" % k
    raw += b"W" * (cols + 5) + b"\n" + FULL_CUT
    return raw


def start_sim(tmp, name, *args):
    """The simulator as a program in tmp/name, with its control socket."""
    return Program("escpos_printer.py", os.path.join(tmp, name), *args)


def ask(host, n):
    """DLE EOT n: the one byte answered, or None."""
    host.send(b"\x10\x04" + bytes([n]))
    b = host.read(1)
    return b[0] if b else None


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


STATUS_TABLE = [  # (what, control commands, DLE EOT 1, 2, 3, 4)
    ("paper ok", [("paper", {"state": "ok"})], 0x12, 0x12, 0x12, 0x12),
    ("paper near end", [("paper", {"state": "near_end"})], 0x12, 0x12, 0x12, 0x1E),
    ("paper out", [("paper", {"state": "out"})], 0x1A, 0x32, 0x12, 0x72),
    ("cover open", [("paper", {"state": "ok"}), ("cover", {"open": True})],
     0x1A, 0x16, 0x12, 0x12),
    ("drawer open", [("cover", {"open": False}), ("drawer", {"open": True})],
     0x16, 0x12, 0x12, 0x12),
    ("cutter error", [("drawer", {"open": False}), ("error", {"kind": "cutter"})],
     0x1A, 0x52, 0x1A, 0x12),
]


def test_paper_end(c, sim, host, long, expect, n):
    what = f"paper end after {n} lines"
    before = sim.ctl("status")
    sim.ctl("paper_out_after_lines", n=n)
    # The status request in the same write answers for the lines before it.
    host.send(long + b"\x10\x04\x04")
    c.eq(host.read(1), b"\x72", f"{what}: DLE EOT 4 right behind the receipt answers out")
    st = sim.wait(lambda s: s["paper"] == "out")
    c.eq(st["paper"], "out", f"{what}: the paper runs out")
    time.sleep(0.2)
    st = sim.ctl("status")
    c.eq(st["lines_printed"] - before["lines_printed"], n, f"{what}: exactly {n} lines printed")
    c.eq(st["receipts"], before["receipts"], f"{what}: the receipt is not finished")
    c.check(st["held_bytes"] > 0, f"{what}: the rest of the receipt is held",
            "> 0", st["held_bytes"])
    c.eq([ask(host, k) for k in (1, 2, 4)], [0x1A, 0x32, 0x72],
         f"{what}: DLE EOT 1, 2, 4 still answer (offline, stopped at paper end, out)")
    sim.ctl("paper", state="ok")
    st = sim.wait(lambda s: s["receipts"] > before["receipts"])
    r = sim.ctl("receipts")["receipts"][-1]
    c.eq(r["text"], expect[0]["text"] if expect else None,
         f"{what}: after loading paper the receipt equals the uninterrupted one")
    c.eq(len(r["lines"]), 9, f"{what}: 9 lines (8 and the wrapped rest), none twice or lost")
    # The receipt's bytes are everything since the previous cut (status requests sent before
    # it included), then the receipt itself, once; requests sent while it was held come after.
    c.check(r["raw_hex"].endswith(long.hex()) and r["raw_hex"].count(long.hex()) == 1,
            f"{what}: the receipt's raw bytes end with the receipt, once", long.hex(),
            r["raw_hex"])
    c.eq(st["held_bytes"], 0, f"{what}: nothing is held any more")


def test_pty_receipt(c, tmp):
    out = os.path.join(tmp, "out80")
    link = os.path.join(tmp, "printer80")
    sim = start_sim(tmp, "pty80", "--pty", link, "--width", "80", "--out", out)
    c.check(os.path.islink(link) and os.readlink(link).startswith("/dev/pts/"),
            "pty: the symlink points at a pseudo-terminal", actual=os.path.realpath(link))
    host = PtyHost(link)
    raw, lines = receipt_bytes(48)
    host.send(raw)
    st = sim.wait(lambda s: s["receipts"] >= 1)
    c.eq(st["receipts"], 1, "pty: one receipt after one cut")
    r = sim.ctl("receipts")["receipts"]
    got = r[0] if r else {}
    c.eq(got.get("text"), "".join(line + "\n" for line in lines),
         "pty: the receipt text is exactly its lines (centred header, GB18030 items, QR)")
    c.eq(got.get("qr"), [QR_DATA], "pty: the QR data is kept")
    c.eq(got.get("cut"), "partial", "pty: the cut is partial")
    c.eq(got.get("bytes"), len(raw), "pty: the receipt counts every byte sent")
    c.eq(st["bytes_received"], len(raw), "pty: bytes_received")
    c.eq(st["unknown_commands"], 0, "pty: a well-formed receipt has no unknown command")

    txt = os.path.join(out, "receipt-0001.txt")
    c.check(os.path.exists(txt) and open(txt, encoding="utf-8").read() == got.get("text"),
            "pty: --out wrote receipt-0001.txt with the receipt text (UTF-8)")
    binp = os.path.join(out, "raw-0001.bin")
    c.check(os.path.exists(binp) and open(binp, "rb").read() == raw,
            "pty: --out wrote raw-0001.bin with the exact bytes of the receipt")
    size = png_size(os.path.join(out, "receipt-0001.png")) if \
        os.path.exists(os.path.join(out, "receipt-0001.png")) else None
    c.check(size is not None and size[0] == 576, "pty: receipt-0001.png is 576 px wide (80 mm)",
            576, size and size[0])
    c.check(size is not None and 30 * len(lines) <= size[1] <= 30 * len(lines) + 400,
            "pty: receipt-0001.png is about as tall as its lines", "~" + str(30 * len(lines)),
            size and size[1])
    c.eq([d["text"] for d in decode(raw, 80)], [got.get("text")],
         "module: decode() of the same bytes gives the same receipt")

    # The same receipt one byte per write: every command and character split across reads.
    for k in range(len(raw)):
        host.send(raw[k:k + 1])
        if k % 8 == 0:
            time.sleep(0.001)
    st = sim.wait(lambda s: s["receipts"] >= 2)
    r = sim.ctl("receipts")["receipts"]
    c.check(len(r) == 2 and r[1]["text"] == r[0]["text"] and r[1]["bytes"] == len(raw),
            "pty: the receipt sent one byte at a time prints the same",
            got.get("text"), r[-1]["text"] if r else None)

    # Real-time status for each printer state.
    for what, cmds, *expect in STATUS_TABLE:
        for cmd, kw in cmds:
            sim.ctl(cmd, **kw)
        answers = [ask(host, n) for n in (1, 2, 3, 4)]
        c.eq(answers, expect, f"pty: DLE EOT 1..4 with {what}")
    sim.ctl("error", kind="none")
    c.eq(ask(host, 1), 0x12, "pty: DLE EOT 1 is 0x12 again once the error is cleared")

    # Paper runs out in an 8-line receipt whose last line wraps: after 3 lines (at a line feed)
    # and after 8 (inside the wrapped text). The rest is held and printed once paper is loaded.
    long = long_receipt_bytes(48)
    expect = decode(long, 80)
    for n in (3, 8):
        test_paper_end(c, sim, host, long, expect, n)

    # A status request in the middle of a command (a driver splitting its job anywhere to ask
    # for status) is answered at once, like on an Epson, and its bytes are the command's data.
    before = sim.ctl("status")
    data = b"abc\x10\x04\x01def"
    store = GS + b"(k" + bytes([len(data) + 3, 0]) + b"\x31\x50\x30" + data
    host.send(INIT + store[:14])  # up to and with the DLE EOT
    c.eq(host.read(1), b"\x12", "status inside a command: DLE EOT 1 is answered at once")
    host.send(store[14:] + GS + b"(k\x03\x00\x31\x51\x30" + PARTIAL_CUT)
    st = sim.wait(lambda s: s["receipts"] > before["receipts"])
    c.eq(st["status_inside_commands"] - before["status_inside_commands"], 1,
         "status inside a command: counted")
    r = sim.ctl("receipts")["receipts"][-1]
    c.eq(r["qr"], [data.decode()], "status inside a command: its bytes are the QR code's data")

    # Drawer pulses: ESC p on pin 2 and pin 5, and the real-time DLE DC4 1.
    before = sim.ctl("status")
    host.send(ESC + b"p\x00\x19\x19" + ESC + b"p\x01\x32\x32" + b"\x10\x14\x01\x00\x01")
    st = sim.wait(lambda s: s["drawer_kicks"] >= before["drawer_kicks"] + 3)
    c.eq(st["drawer_kicks"] - before["drawer_kicks"], 3, "drawer: three pulses counted")

    # Garbage toward the driver, unprompted.
    host.drain()
    c.eq(sim.ctl("garbage", bytes="deadbeef00ff")["ok"], True, "garbage: the command is accepted")
    c.eq(host.read(6), bytes.fromhex("deadbeef00ff"), "garbage: the driver reads those bytes")

    # A command cut in half by a disconnect: the pty pair is replaced, the symlink follows.
    old_target = os.readlink(link)
    host.send(GS + b"(k\x20\x00\x31\x50\x30" + b"half a QR")
    time.sleep(0.2)
    before = sim.ctl("status")
    c.eq(sim.ctl("disconnect")["ok"], True, "pty disconnect: accepted")
    c.check(os.readlink(link) != old_target, "pty disconnect: the symlink points at a new pty",
            "not " + old_target, os.readlink(link))
    c.check(host.read(1, 0.5) == b"", "pty disconnect: the old pty reads nothing more")
    host.close()
    host = PtyHost(link)
    st = sim.ctl("status")
    c.eq(st["incomplete_commands"] - before["incomplete_commands"], 1,
         "pty disconnect: the half command is dropped and counted")
    c.eq(st["connections"], before["connections"] + 1, "pty disconnect: connections counts it")
    c.eq(ask(host, 4), 0x12, "pty disconnect: the new pty answers DLE EOT")
    host.send(raw)
    sim.wait(lambda s: s["receipts"] > before["receipts"])
    r = sim.ctl("receipts")["receipts"][-1]
    c.eq(r["text"], got.get("text"), "pty disconnect: the next receipt prints exactly")
    host.close()

    code = sim.terminate(signal.SIGTERM)
    c.eq(code, 0, "SIGTERM: the simulator exits 0")
    c.check(not os.path.lexists(link), "SIGTERM: the symlink is removed")
    c.check(not os.path.exists(sim.control), "SIGTERM: the control socket is removed")
    c.check("Traceback" not in sim.stderr(), "pty: no traceback in the log", "", sim.stderr())


def test_tcp(c, tmp):
    out = os.path.join(tmp, "out58")
    port = free_port()
    sim = start_sim(tmp, "tcp58", "--tcp", f"127.0.0.1:{port}", "--width", "58", "--out", out)
    host = TcpHost(port)
    raw, lines = receipt_bytes(32)
    host.send(raw)
    st = sim.wait(lambda s: s["receipts"] >= 1)
    r = sim.ctl("receipts")["receipts"]
    c.eq(r[0]["text"] if r else None, "".join(line + "\n" for line in lines),
         "tcp 58 mm: the receipt text is exactly its lines at 32 columns")
    size = png_size(os.path.join(out, "receipt-0001.png")) if \
        os.path.exists(os.path.join(out, "receipt-0001.png")) else None
    c.check(size is not None and size[0] == 384, "tcp 58 mm: the PNG is 384 px wide",
            384, size and size[0])
    c.eq(st["connections"], 1, "tcp: one connection")
    for what, cmds, *expect in STATUS_TABLE[:3]:
        for cmd, kw in cmds:
            sim.ctl(cmd, **kw)
        c.eq([ask(host, n) for n in (1, 2, 3, 4)], expect, f"tcp: DLE EOT 1..4 with {what}")
    sim.ctl("paper", state="ok")

    # Unknown sequences are skipped and counted; the stream goes on.
    before = sim.ctl("status")
    host.send(ESC + b"\x01" + GS + b"\xfe" + FS + b"\x7f" + b"\x10\x04\x09")
    c.eq(ask(host, 1), 0x12, "garbage: DLE EOT still answers after unknown sequences")
    st = sim.ctl("status")
    c.eq(st["unknown_commands"] - before["unknown_commands"], 4,
         "garbage: four unknown sequences counted")

    # Random bytes, then a disconnect: it must survive and serve the next connection.
    rnd = random.Random(20261125)
    junk = bytes(rnd.randrange(256) for _ in range(20000))
    host.send(junk)
    time.sleep(0.3)
    host.close()
    st = sim.wait(lambda s: s["connections"] == 1 and s["bytes_received"] >=
                  before["bytes_received"] + 9 + 3 + len(junk))
    c.check(sim.proc.poll() is None, "garbage: 20000 random bytes do not crash it")
    c.check(st["unknown_commands"] > before["unknown_commands"] + 4,
            "garbage: random bytes count unknown commands", "> %d" %
            (before["unknown_commands"] + 4), st["unknown_commands"])
    sim.ctl("paper", state="ok")
    sim.ctl("cover", open=False)
    sim.ctl("error", kind="none")

    host = TcpHost(port)
    st = sim.wait(lambda s: s["connections"] == 2)
    c.eq(st["connections"], 2, "tcp: the driver reconnects")
    c.eq(ask(host, 4), 0x12, "tcp: the new connection answers DLE EOT")
    host.send(INIT + FULL_CUT)  # what the garbage printed goes out as a receipt of its own

    # A QR command cut in half by the driver disconnecting.
    before = sim.ctl("status")
    host.send(GS + b"(k\x40\x00\x31\x50\x30" + b"only part of it")
    time.sleep(0.2)
    host.close()
    st = sim.wait(lambda s: s["incomplete_commands"] > before["incomplete_commands"])
    c.eq(st["incomplete_commands"] - before["incomplete_commands"], 1,
         "tcp: a command cut by a disconnect is dropped and counted")
    host = TcpHost(port)
    n = sim.ctl("status")["receipts"]
    host.send(raw)
    sim.wait(lambda s: s["receipts"] > n)
    r = sim.ctl("receipts")["receipts"][-1]
    c.eq(r["text"], "".join(line + "\n" for line in lines),
         "tcp: after the cut command the next receipt prints exactly")

    # The control channel closes the driver's connection; the driver can come back.
    host.send(b"x")
    time.sleep(0.1)
    c.eq(sim.ctl("disconnect")["ok"], True, "tcp disconnect: accepted")
    c.eq(host.read(1, ANSWER), b"", "tcp disconnect: the driver sees the connection closed")
    host.close()
    host = TcpHost(port)
    c.eq(ask(host, 1), 0x12, "tcp disconnect: a new connection is served")
    c.eq(sim.ctl("garbage", bytes="1b40")["ok"], True, "tcp garbage: accepted")
    c.eq(host.read(2), b"\x1b\x40", "tcp garbage: the driver reads the bytes")
    c.eq(sim.ctl("bogus").get("ok"), False, "control: an unknown command is refused")
    host.close()
    code = sim.terminate(signal.SIGINT)
    c.eq(code, 0, "SIGINT: the simulator exits 0")
    c.check("Traceback" not in sim.stderr(), "tcp: no traceback in the log", "", sim.stderr())


def test_module(c, tmp):
    raw, lines = receipt_bytes(48)
    text = "".join(line + "\n" for line in lines)
    with Printer(tcp="127.0.0.1:0", width=80) as p:
        host = TcpHost(p.port)
        host.send(raw)
        deadline = time.time() + WAIT
        while p.status()["receipts"] < 1 and time.time() < deadline:
            time.sleep(0.05)
        rs = p.receipts()
        c.eq(rs[0]["text"] if rs else None, text, "Printer: the in-process simulator prints it")
        p.set_paper("near_end")
        c.eq(ask(host, 4), 0x1E, "Printer: set_paper near_end shows in DLE EOT 4")
        p.set_paper("ok")
        p.paper_out_after_lines(1)
        host.send(b"one\ntwo\n")
        time.sleep(0.2)
        c.eq(p.status()["paper"], "out", "Printer: paper_out_after_lines(1)")
        p.set_paper("ok")
        p.set_drawer(True)
        c.eq(ask(host, 1), 0x16, "Printer: set_drawer(True) shows in DLE EOT 1")
        host.close()
        port = p.port
    with socket.socket() as s:
        c.check(s.connect_ex(("127.0.0.1", port)) != 0, "Printer: stop() closes the port")

    # drop_after_bytes: the first N bytes are taken, the rest of that read thrown away
    # (counted), the connection dropped; drop_after_receipt: dropped right after the next cut.
    for kind in ("tcp", "pty"):
        with Printer(**({"tcp": "127.0.0.1:0"} if kind == "tcp" else
                        {"pty": os.path.join(tmp, "drop.tty")})) as p:
            host = TcpHost(p.port) if kind == "tcp" else PtyHost(p.link)
            c.eq(p.drop_after_bytes(11)["ok"], True, f"{kind} drop_after_bytes: accepted")
            c.eq(p.status()["drop_after_bytes"], 11, f"{kind} drop_after_bytes: in status")
            host.send(INIT + b"12345678\n" + b"lost\n" + PARTIAL_CUT)
            c.check(host.read(1, WAIT) == b"" or host.hung_up(),
                    f"{kind} drop_after_bytes: the host sees the connection go")
            st = p.status()
            c.check(st["bytes_received"] == 11 and st["bytes_dropped"] == 8 and
                    st["drop_after_bytes"] is None and st["connections"] == 1 + (kind == "pty"),
                    f"{kind} drop_after_bytes: 11 bytes taken, 8 thrown away, one drop",
                    None, st)
            host.close()
            host = TcpHost(p.port) if kind == "tcp" else PtyHost(p.link)
            c.eq(p.drop_after_receipt()["ok"], True, f"{kind} drop_after_receipt: accepted")
            host.send(PARTIAL_CUT + b"\x10\x04\x01after")
            c.check(host.read(1, WAIT) == b"" or host.hung_up(),
                    f"{kind} drop_after_receipt: the host sees the connection go, no answer")
            st = p.status()
            c.check(st["receipts"] == 1 and st["bytes_dropped"] == 8 + 8 and
                    not st["drop_after_receipt"] and st["status_requests"] == 0,
                    f"{kind} drop_after_receipt: the receipt is out, what followed thrown away",
                    None, st)
            c.eq([r["text"] for r in p.receipts()], ["12345678\n"],
                 f"{kind}: the receipt has what came before the drop")
            host.close()

    # decode() never raises, whatever it is given; every cut of the receipt decodes.
    rnd = random.Random(7)
    crashed = None
    for k in range(300):
        blob = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 400)))
        try:
            decode(blob, 58)
            decode(raw[:rnd.randrange(len(raw))] + blob, 80)
        except Exception as e:  # any exception is the failure being looked for
            crashed = f"{type(e).__name__}: {e} on {blob.hex()}"
            break
    c.check(crashed is None, "decode: 300 random byte strings never raise", None, crashed)

    # Random chunking through the Device gives the same receipt as one chunk.
    got = []
    dev = escpos_printer.Device(80, lambda r, cut: got.append(r.as_dict(cut)))
    i = 0
    while i < len(raw):
        n = rnd.randrange(1, 7)
        dev.receive(raw[i:i + n])
        i += n
    c.eq(got[0]["text"] if got else None, text, "Device: random chunking prints the same")

    # Both barcode forms.
    bars = decode(INIT + GS + b"k\x02" + b"5901234123457\x00" + GS + b"kI\x0a{B12345678" +
                  PARTIAL_CUT, 80)
    c.eq(bars[0]["lines"] if bars else None,
         ["[BARCODE:5901234123457]", "[BARCODE:{B12345678]"],
         "decode: barcodes in the NUL-terminated and the length-prefixed form")


def main():
    run("test_escpos_printer", test_pty_receipt, test_tcp, test_module)

if __name__ == "__main__":
    main()
