#!/usr/bin/python3
"""Write the seed corpus of fuzz_sale: sale documents (MessagePack maps, as sale.upload receives
them), valid ones of every kind and near-valid ones that stop at one check each.

Amounts are priced here by the rules of docs/protocol.md (gross = price x qty, per kg x grams /
1000 half away from zero; tax = amount x rate / (10000 + rate) half away from zero), so the valid
seeds pass pos_sale_check and the fuzzer starts from inside the accepted space. Run from
anywhere: python3 tests/fuzz/corpus/make_sale_seeds.py (rewrites tests/fuzz/corpus/fuzz_sale/;
commit the result)."""
import copy
import os

import msgpack

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_sale")


def half_away(num, den):
    q, r = divmod(abs(num), den)
    q += 1 if 2 * r >= den else 0
    return q if num >= 0 else -q


def line(sku, qty, price, rate=1300, unit="pcs", discount=0, return_of=None, voided=False,
         name="", category=""):
    gross = 0 if voided else (half_away(price * qty, 1000) if unit == "kg" else price * qty)
    amount = 0 if voided else gross - discount
    l = {"sku": sku, "name": name, "category": category, "qty": qty, "unit": unit,
         "unit_price": price, "gross": gross, "promo_discount": 0,
         "ticket_discount": 0 if voided else discount, "amount": amount,
         "tax": 0 if voided else half_away(amount * rate, 10000 + rate), "tax_rate_bp": rate}
    if return_of:
        l["return_of"] = return_of
    if voided:
        l["voided"] = True
    return l


def sale(seq, lines, tenders=None, kind="sale", change=0, rounding=0):
    total = sum(l["amount"] for l in lines)
    if tenders is None:
        tenders = [{"kind": "card", "amount": total}] if total else []
    return {"sale_id": f"S001-R01-{seq:06d}", "store": "S001", "register": "R01", "seq": seq,
            "cashier": "C-R01", "ts": 1732500000000, "kind": kind, "lines": lines,
            "tenders": tenders, "total": total, "change": change, "cash_rounding": rounding}


RICE = line("RICE5", 2, 3990, rate=900, name="\u4e1c\u5317\u5927\u7c73 5kg", category="grain")
APPLE = line("APPLE", 1250, 1290, unit="kg", name="Apple", category="fruit")  # 1612.5 -> 1613
ORIG = "S001-R02-000007"

SEEDS = {
    "sale_card": sale(1, [RICE]),
    # 79.80 + 16.13 = 95.93; card 5.93, cash 100.00: cash part 90.00, no rounding, change 10.00
    "sale_weighed_cash_change": sale(2, [RICE, APPLE], [{"kind": "card", "amount": 593},
                                                       {"kind": "cash", "amount": 10000}],
                                     change=1000),
    # 16.13 in cash rounds to 16.10 (rounding -3); 20.00 handed over, change 3.90
    "sale_cash_rounding": sale(3, [APPLE], [{"kind": "cash", "amount": 2000}], change=390,
                               rounding=-3),
    "sale_voided_discount": sale(4, [line("COLA", 3, 350, discount=50), RICE,
                                     line("GUM", 1, 500, voided=True)],
                                 [{"kind": "wechat", "amount": 1000},
                                  {"kind": "alipay", "amount": 7980}]),
    # refund 2 x 3.33 in cash: -6.66 rounds to -6.70 (rounding -4)
    "return_cash": sale(5, [line("COLA", -2, 333, return_of=ORIG)],
                        [{"kind": "cash", "amount": -670}], kind="return", rounding=-4),
    "return_weighed_voided": sale(6, [line("APPLE", -500, 1290, unit="kg", return_of=ORIG),
                                      line("APPLE", -1, 1290, unit="kg", voided=True,
                                           return_of="S001-R03-000001")], kind="return"),
    "nosale": sale(7, [], kind="nosale"),
    # near-valid: each breaks one rule
    "bad_rounding_6": sale(8, [RICE], [{"kind": "cash", "amount": 8000}], change=14,
                           rounding=6),
    "bad_negative_tender": sale(9, [RICE], [{"kind": "card", "amount": -20},
                                            {"kind": "cash", "amount": 8000}]),
    "bad_33_originals": sale(10, [line("COLA", -1, 100, return_of=f"S001-R09-{n:06d}",
                                       voided=True) for n in range(33)], kind="return"),
    "bad_sum_beyond_bound": sale(11, [line("GOLD", 1, 6 * 10**11), line("GOLD", 1, 6 * 10**11)]),
    "bad_tax": dict(sale(12, [RICE]), lines=[dict(RICE, tax=660)]),
    "bad_types": dict(sale(13, [RICE]), seq="13", lines=[dict(RICE, voided="yes")]),
}


def main():
    os.makedirs(HERE, exist_ok=True)
    for name in os.listdir(HERE):
        os.remove(os.path.join(HERE, name))
    for name, doc in SEEDS.items():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(msgpack.packb(copy.deepcopy(doc), use_bin_type=True))
    print(f"{len(SEEDS)} seeds in {HERE}")


if __name__ == "__main__":
    main()
