#!/usr/bin/python3
"""Write the seed corpora of fuzz_msg (bus envelopes, MessagePack) and fuzz_csv (catalog rows).

Seeds are small, valid or nearly valid inputs that reach deep into the code under test; the
fuzzer mutates them. Run from anywhere: python3 tests/fuzz/corpus/make_msg_csv_seeds.py (rewrites
tests/fuzz/corpus/fuzz_msg/ and tests/fuzz/corpus/fuzz_csv/; commit the result)."""
import os

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))


def envelope(type_, body, seq=1, **over):
    env = {"v": 1, "type": type_, "id": "0123456789abcdef0123456789abcdef", "src": "posctl",
           "seq": seq, "ts": 1732500000000, "body": body}
    env.update(over)
    return msgpack.packb(env, use_bin_type=True)


SALE = {"sale_id": "S001-R01-000001", "store": "S001", "register": "R01", "seq": 1,
        "cashier": "C-R01", "ts": 1732500000000, "kind": "sale",
        "lines": [{"sku": "RICE5", "name": "\u4e1c\u5317\u5927\u7c73 5kg", "qty": 2,
                   "unit": "pcs", "unit_price": 3990, "gross": 7980, "promo_discount": 0,
                   "ticket_discount": 0, "amount": 7980, "tax": 659, "tax_rate_bp": 900},
                  {"sku": "APPLE", "name": "Apple", "qty": 1250, "unit": "kg",
                   "unit_price": 1290, "gross": 1613, "amount": 1613, "voided": True}],
        "tenders": [{"kind": "cash", "amount": 10000}], "total": 7980, "change": 2020,
        "cash_rounding": 0}

MSG = {
    "request_empty": envelope("health", {}),
    "request_sale": envelope("sale.upload", SALE, seq=42),
    "reply": envelope("reply", {"ok": True, "duplicate": False, "stream_id": "1732500000000-0"}),
    "error_unavailable": envelope("error", {"code": "unavailable", "message": "redis: LOADING",
                                            "retry_ms": 250}),
    "event_nested": envelope("sale.completed", {"a": [1, -1, 2**40, -2**63, 2**64 - 1, None,
                                                      [], {}, {"x": {"y": [True, False]}}]}),
    "bin_body": envelope("blob", {"payload": b"\x00\x01\xff" * 20, "empty": b""}),
    "unicode": envelope("catalog.get", {"code": "\u725b\u5976", "emoji": "\U0001f35c"}),
    "max_version": envelope("health", {}, v=1, seq=2**63 - 1, ts=2**62),
    "extra_keys": envelope("health", {}, extra="ignored", more=[1, 2]),
    "dup_keys": b"\x88" + b"".join(msgpack.packb(x) for x in (
        "v", 1, "type", "t", "id", "i", "src", "s", "seq", 0, "ts", 0, "body", {}, "body", {})),
    # A NUL inside id: C code reading it as a string sees an empty id (the key of exactly-once
    # replies), so the decoder must refuse it (a finding of fuzz_msg). src is cut at the NUL.
    "id_with_nul": envelope("health", {}, id="\x00\x0746913578abcdef0123456789abcdef"),
    "src_with_nul": envelope("health", {}, src="pos\x00ctl"),
    "bad_version": envelope("health", {}, v=0),
    "body_not_map": msgpack.packb({"v": 1, "type": "x", "id": "i", "src": "s", "seq": 0, "ts": 0,
                                   "body": [1, 2]}),
    "truncated": envelope("sale.upload", SALE)[:-7],
    "str8_str16": msgpack.packb({"v": 1, "type": "t" * 40, "id": "i", "src": "s" * 300,
                                 "seq": 0, "ts": 0, "body": {"k": "v" * 300}}),
}

CSV = {
    "header": b"sku,barcode,name,price,tax_rate,unit,category,supplier,threshold,member_price,"
              b"active\n",
    "rows": b"sku,barcode,name,price,tax_rate,unit,category\n"
            b"RICE5,6901234500011,Rice 5kg,39.90,9,pcs,grain\n"
            b"APPLE,,Apple,12.90,9%,kg,fruit\n",
    "quoted": b"GOOD2,,\"Quoted, with comma\",2.50,9%,kg,misc\n"
              b"Q2,,\"say \"\"hi\"\"\",1.00,13,pcs,\"two\nlines\"\n",
    "crlf_bom": b"\xef\xbb\xbfsku,barcode,name,price,tax_rate,unit,category\r\n"
                b"MILK1,6901234500028,Milk 1L,11.50,13,pcs,dairy\r\n\r\n",
    "chinese": "NIU1,6901234500035,\u725b\u5976 250ml,3.50,13,pcs,\u4e73\u54c1\n"
               "MI5,,\"\u4e1c\u5317\u5927\u7c73\uff0c5kg, \u65b0\u7c73\",39.90,9,pcs,"
               "\u7cae\u6cb9\n".encode(),
    "empty_fields": b",,,,,,\n,\n\n",
    "unterminated": b"BAD,,\"open quote,1.00,13,pcs,misc\n",
    "many_fields": b",".join(b"f%d" % i for i in range(40)) + b"\n",
    "garbage": bytes(range(1, 256)) + b"\n\"\"\"\r\r\n,,\"",
    "no_newline": b"LAST,,Last row without a newline,1.00,13,pcs,misc",
    "quote_mid_field": b"ab\"c,d\"ef,\"\"\"\"\n",
}


def write(corpus, seeds):
    path = os.path.join(HERE, corpus)
    os.makedirs(path, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)


write("fuzz_msg", MSG)
write("fuzz_csv", CSV)
