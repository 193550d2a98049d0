#!/usr/bin/python3
"""The canteen terminal line simulator (devices/sim/canteen_terminal.py) driven with hand-built
frames, as a driver would (docs/canteen-protocol.md): the program on a pty with terminals 1 and 2
and its control socket, and the CanteenLine class over TCP.

A poll must answer STATUS with the started flag, the blocklist version and the last sequence;
only the terminal addressed answers, an address nobody has is silent; SET_TIME clears started; a
tap is reported to every poll until answered, an answer approves or declines it and repeating it
is harmless; a tap not answered within the online wait is settled by the offline rule and a late
answer is refused with that verdict; blocklist frames apply on top of a newer version only;
collect returns offline transactions after a sequence, at most 11 a frame, and ack removes them;
a bad checksum is answered 0xAA, garbage and a partial frame cut by a gap are skipped and
counted; a terminal taken offline answers nothing, then answers again; a disconnect gives a
fresh pty that answers; SIGTERM exits 0 and removes the symlink and the control socket."""
import os
import struct
import time

from simtest import Program, PtyHost, TcpHost, run  # noqa: E402 (sys.path too)
from canteen_terminal import (CanteenLine, frame, FrameParser, INTER_BYTE_MS,  # noqa: E402
                              CMD_POLL, CMD_TIME, CMD_PARAMS, CMD_BLOCKLIST, CMD_ANSWER,
                              CMD_COLLECT, CMD_ACK, CMD_MEALS, CMD_FEES, REP_STATUS, REP_TAP,
                              REP_TXS, REP_OK, REP_FAILED, REP_RECV_ERROR)

ANSWER = 1.5


def reply(host):
    """One frame from the host's side: (addr, cmd, data, ok) or None within ANSWER."""
    p = FrameParser()
    deadline = time.time() + ANSWER
    while time.time() < deadline:
        chunk = host.read(1, max(0.01, deadline - time.time()))
        if not chunk:
            return None
        got = p.feed(chunk, 0)
        if got:
            return got[0]
    return None


def ask(host, addr, cmd, data=b""):
    host.send(frame(addr, cmd, data))
    return reply(host)


def status(data):
    flags, version, seq, offline = struct.unpack(">BIIH", data)
    return {"flags": flags, "version": version, "seq": seq, "offline": offline}


def time_data():
    return struct.pack(">HBBBBB", 2026, 11, 25, 12, 30, 0)


def test_program(c, tmp):
    link = os.path.join(tmp, "line.tty")
    prog = Program("canteen_terminal.py", os.path.join(tmp, "prog"), "--pty", link,
                   "--terminals", "1,2")
    host = PtyHost(link)
    r = ask(host, 1, CMD_POLL)
    c.check(r is not None and r[:2] == (1, REP_STATUS) and r[3], "terminal 1 answers STATUS")
    c.eq(status(r[2]) if r else None, {"flags": 1, "version": 0, "seq": 0, "offline": 0},
         "started, blocklist version 0, last sequence 0, nothing offline")
    r = ask(host, 2, CMD_POLL)
    c.eq(r[:2] if r else None, (2, REP_STATUS), "terminal 2 answers its own poll")
    c.eq(ask(host, 7, CMD_POLL), None, "nobody answers address 7")
    c.eq(ask(host, 1, CMD_TIME, time_data())[1], REP_OK, "SET_TIME is 0x88")
    c.eq(status(ask(host, 1, CMD_POLL)[2])["flags"], 0, "the time set: started cleared")
    st = prog.ctl("status")["terminals"]["1"]
    c.eq(st["clock"], [2026, 11, 25, 12, 30, 0], "the clock as the host set it")

    c.eq(prog.ctl("tap", terminal=1, card=123456, amount=1250)["seq"], 1, "a tap takes seq 1")
    for i in range(2):
        r = ask(host, 1, CMD_POLL)
        c.eq((r[1], struct.unpack(">III", r[2])) if r else None, (REP_TAP, (1, 123456, 1250)),
             f"poll {i + 1} after the tap: TAP seq 1 card 123456 1250 fen")
    c.eq(ask(host, 1, CMD_ANSWER, struct.pack(">IB", 1, 1) + "余额 10.00".encode("gb18030"))[1],
         REP_OK, "approve: 0x88")
    c.eq(ask(host, 1, CMD_ANSWER, struct.pack(">IB", 1, 1))[1], REP_OK,
         "the same approval again (a lost reply): 0x88")
    c.eq(ask(host, 1, CMD_POLL)[1], REP_STATUS, "answered: polls see STATUS again")
    st = prog.ctl("status")["terminals"]["1"]
    c.eq((st["approved"], st["settled"].get("1"), st["text"]), (1, "approved", "余额 10.00"),
         "the terminal approved seq 1 and shows the text")
    c.eq(ask(host, 1, CMD_ANSWER, struct.pack(">IB", 9, 1))[1:3], (REP_FAILED, bytes([3])),
         "an answer to no pending tap: 0x99 not pending")

    # the offline rule: online wait 0.2 s, limit 20.00
    for t in (1, 2):
        c.eq(ask(host, t, CMD_PARAMS, struct.pack(">HI", 2, 2000))[1], REP_OK, "params: 0x88")
    prog.ctl("tap", terminal=1, card=5, amount=800)
    prog.ctl("tap", terminal=2, card=6, amount=900)
    st = prog.wait(lambda s: s["terminals"]["1"]["settled"].get("2") == "offline_approved"
                   and s["terminals"]["2"]["pending"] is None)
    c.eq(st["terminals"]["1"]["offline"][0]["amount"] if st["terminals"]["1"]["offline"]
         else None, 800, "unanswered for the online wait: approved offline and kept")
    c.eq(ask(host, 1, CMD_ANSWER, struct.pack(">IB", 2, 2))[1:3], (REP_FAILED, bytes([4, 1])),
         "a late decline: 0x99 settled offline, approved")
    prog.ctl("tap", terminal=1, card=5, amount=5000)
    st = prog.wait(lambda s: s["terminals"]["1"]["settled"].get("3") == "offline_declined")
    c.eq(st["terminals"]["1"]["settled"].get("3"), "offline_declined",
         "over the offline limit: declined offline, not kept")
    c.eq(status(ask(host, 1, CMD_POLL)[2]), {"flags": 2, "version": 0, "seq": 3, "offline": 1},
         "STATUS: offline transactions waiting, last seq 3")

    # blocklist: applied on a newer version only, in chunks
    r = ask(host, 1, CMD_BLOCKLIST, struct.pack(">IBB", 5, 0, 1) + struct.pack(">BI", 1, 111))
    c.eq((r[1], r[2]), (REP_OK, struct.pack(">I", 0)), "a first chunk: applied, version still 0")
    r = ask(host, 1, CMD_BLOCKLIST, struct.pack(">IBB", 5, 1, 2) + struct.pack(">BI", 1, 222)
            + struct.pack(">BI", 2, 111))
    c.eq((r[1], r[2]), (REP_OK, struct.pack(">I", 5)), "the last chunk: version 5")
    r = ask(host, 1, CMD_BLOCKLIST, struct.pack(">IBB", 4, 1, 1) + struct.pack(">BI", 1, 333))
    c.eq((r[1], r[2]), (REP_OK, struct.pack(">I", 5)), "an older version: nothing applied")
    c.eq(prog.ctl("status")["terminals"]["1"]["blocklist"], [222], "the blocklist is {222}")
    c.eq(ask(host, 1, CMD_BLOCKLIST, b"\x00")[1:3], (REP_FAILED, bytes([1])),
         "a malformed blocklist frame: 0x99 bad data")

    # collect by sequence
    prog.ctl("queue_offline", terminal=1, count=14, card=77, amount=300)
    r = ask(host, 1, CMD_COLLECT, struct.pack(">IB", 0, 255))
    n = r[2][0] if r else 0
    txs = [struct.unpack(">IIIIB", r[2][1 + 17 * i:18 + 17 * i]) for i in range(n)]
    c.eq((r[1], n, txs[0][:3]), (REP_TXS, 11, (2, 5, 800)), "collect after 0: 11, seq 2 first")
    r = ask(host, 1, CMD_COLLECT, struct.pack(">IB", txs[-1][0], 11))
    c.eq([struct.unpack(">I", r[2][1 + 17 * i:5 + 17 * i])[0] for i in range(r[2][0])],
         [14, 15, 16, 17], "collect after the last: the remaining 4 in order")
    c.eq(ask(host, 1, CMD_ACK, struct.pack(">I", 17))[1], REP_OK, "ack up to 17")
    c.eq(ask(host, 1, CMD_COLLECT, struct.pack(">IB", 0, 11))[2], b"\x00",
         "acked: nothing left to collect")

    # meals and fees
    c.eq(ask(host, 2, CMD_MEALS, bytes([1, 1, 6, 30, 9, 0]))[1], REP_OK, "meals: 0x88")
    c.eq(ask(host, 2, CMD_FEES, bytes([1, 1, 0]) + struct.pack(">I", 500))[1], REP_OK,
         "fees: 0x88")
    st = prog.ctl("status")["terminals"]["2"]
    c.eq((st["meals"], st["fees"]), ([[1, "06:30", "09:00"]], [[1, 0, 500]]),
         "the meal period and fee rule as pushed")

    # faults
    bad = bytearray(frame(2, CMD_POLL))
    bad[-1] ^= 1
    host.send(bytes(bad))
    r = reply(host)
    c.eq(r[:2] if r else None, (2, REP_RECV_ERROR), "a bad checksum: 0xAA receive error")
    host.send(b"\xff\x00\xfe")
    r = ask(host, 2, CMD_POLL)
    c.eq(r[1] if r else None, REP_STATUS, "garbage before a frame is skipped")
    host.send(frame(2, CMD_POLL)[:3])
    time.sleep(INTER_BYTE_MS * 3 / 1000)
    r = ask(host, 2, CMD_POLL)
    c.eq(r[1] if r else None, REP_STATUS, "a partial frame cut by a gap: thrown away")
    st = prog.ctl("status")
    c.eq((st["bad_checksums"], st["resyncs"], st["skipped_bytes"], st["gaps"]), (1, 1, 3, 1),
         "counted: 1 bad checksum, 3 skipped bytes in 1 run, 1 gap")
    prog.ctl("bad_checksum", terminal=2, count=1)
    r = ask(host, 2, CMD_POLL)
    c.check(r is not None and not r[3], "bad_checksum: the next reply's checksum is wrong")
    prog.ctl("garbage", bytes="fffe", next_reply=True)
    host.send(frame(2, CMD_POLL))
    c.eq(host.read(2, ANSWER), b"\xff\xfe", "garbage next_reply: just before the reply")
    c.check(reply(host) is not None, "and the reply follows")
    prog.ctl("offline", terminal=2, on=True)
    c.eq(ask(host, 2, CMD_POLL), None, "terminal 2 offline: no answer")
    c.check(ask(host, 1, CMD_POLL) is not None, "terminal 1 still answers")
    prog.ctl("offline", terminal=2, on=False)
    c.check(ask(host, 2, CMD_POLL) is not None, "terminal 2 back")
    prog.ctl("offline", terminal=0, ms=400)
    c.eq(ask(host, 1, CMD_POLL), None, "the line down: no answer")
    deadline = time.time() + 5
    while ask(host, 1, CMD_POLL) is None and time.time() < deadline:
        pass
    c.check(time.time() < deadline, "the line back after 0.4 s")
    prog.ctl("restart", terminal=1)
    c.eq(status(ask(host, 1, CMD_POLL)[2])["flags"] & 1, 1, "a restart reports started")
    prog.ctl("disconnect")
    host.close()
    host = PtyHost(link)
    c.check(ask(host, 1, CMD_POLL) is not None, "after a disconnect the new pty answers")
    host.close()
    c.eq(prog.terminate(), 0, "SIGTERM: exit 0")
    c.check(not os.path.lexists(link) and not os.path.exists(prog.control),
            "the symlink and the control socket are removed")


def test_tcp(c, tmp):
    with CanteenLine(tcp="127.0.0.1:0", terminals=(3,)) as line:
        host = TcpHost(line.port)
        c.eq(ask(host, 3, CMD_POLL)[:2], (3, REP_STATUS), "TCP: terminal 3 answers")
        c.eq(line.tap(3, 42, 100)["seq"], 1, "TCP: a tap")
        r = ask(host, 3, CMD_POLL)
        c.eq(r[1], REP_TAP, "TCP: the tap is reported")
        c.eq(ask(host, 3, CMD_ANSWER, struct.pack(">IB", 1, 2))[1], REP_OK, "TCP: declined")
        c.eq(line.terminal(3)["declined"], 1, "TCP: the terminal declined it")
        host.close()
        try:
            line.tap(3, 42, 100)
            line.tap(3, 42, 100)
            c.fail("a second tap while one waits must be refused")
        except ValueError:
            c.check(True, "a second tap while one waits is refused")


run("test_canteen_terminal", test_program, test_tcp)
