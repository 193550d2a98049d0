/*  fuzz_sale - libFuzzer target for the sale validation path of the sales service.

    fuzz-sources: services/sales/src/sale_doc.c libpos/src/*.c libbus/src/val.c libbus/src/keys.c
    fuzz-libs: msgpack

    Build and run with scripts/fuzz.sh [--time SECONDS] fuzz_sale (clang, libclang-rt-14-dev).
    Seeds: tests/fuzz/corpus/fuzz_sale/, written by tests/fuzz/corpus/make_sale_seeds.py.

    The input is one MessagePack value, taken as a sale document (docs/protocol.md) the way
    sale.upload receives it. It goes through everything the service does before Redis: decode
    into a typed sale (sale_doc.c), pos_sale_check, the commit script's keys (bus/keys.h) and
    its return-line argument. Properties:
    - nothing crashes, reads or writes out of bounds or overflows (ASan, UBSan);
    - a refusal always comes with a reason;
    - decoding is deterministic: the same document decodes to the same sale;
    - a sale that passes the check adds up when recomputed here in 128-bit arithmetic (lines to
      the total, tenders less change to the total plus rounding, rounding within 5 fen), names
      at most 32 original sales, and always gets its keys (each carrying the store's hash tag)
      and a return-line argument with one entry per live return line.
    */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sale_doc.h"

/*  Stop with a clear message: libFuzzer saves the input that got here. */
#define F_ASSERT(cond, what)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_sale: property broken: %s\n", what);                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/*  The invariants of a sale that passed pos_sale_check, recomputed without libpos. */
static void f_check_sums(const pos_sale_t *s)
{
    __int128 lines = 0, paid = 0;
    for (int i = 0; i < s->nlines; i++)
        lines += s->lines[i].amount;
    for (int i = 0; i < s->ntenders; i++)
        paid += s->tenders[i].amount;
    F_ASSERT(lines == s->total, "the line amounts add up to the total");
    F_ASSERT(paid - s->change == (__int128)s->total + s->cash_rounding,
             "tenders less change pay the total plus rounding");
    F_ASSERT(s->cash_rounding >= -POS_CASH_ROUNDING_MAX &&
                 s->cash_rounding <= POS_CASH_ROUNDING_MAX,
             "cash rounding within 5 fen");
    F_ASSERT(s->total >= -POS_AMOUNT_MAX && s->total <= POS_AMOUNT_MAX, "total within bounds");
}

/*  Keys and the return-line argument of a checked sale. */
static void f_check_commit_args(const pos_sale_t *s)
{
    static sales_commit_keys_t keys; /* 18 KB: off the stack */
    char why[POS_WHY_MAX], tag[POS_STORE_ID_MAX + 3];
    F_ASSERT(sales_doc_commit_keys(s, &keys, why, sizeof(why)) == 0, "a checked sale has keys");
    F_ASSERT(keys.noriginals <= POS_SALE_ORIGINALS_MAX &&
                 keys.nkeys == SALES_KEYS_FIXED + 2 * keys.noriginals,
             "one key pair per original");
    snprintf(tag, sizeof(tag), "{%s}", s->store);
    for (int k = 0; k < keys.nkeys; k++)
        F_ASSERT(k == SALES_KEY_STREAM || strstr(keys.keys[k], tag),
                 "every store key carries the store's hash tag");
    int live = 0;
    for (int i = 0; i < s->nlines; i++)
        live += s->lines[i].is_return && !s->lines[i].voided;
    bus_buf_t buf = {0};
    F_ASSERT(sales_doc_returns(s, &keys, &buf) == 0, "the return lines encode");
    bus_val_t *list = bus_val_decode(buf.data, buf.len, NULL, NULL);
    F_ASSERT(list && bus_val_type(list) == BUS_VAL_ARR && bus_val_size(list) == (size_t)live,
             "one return argument per live return line");
    bus_val_destroy(&list);
    bus_buf_free(&buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bus_val_t *doc = bus_val_decode(data, size, NULL, NULL);
    if (!doc)
        return 0;
    pos_sale_t sale, again;
    pos_sale_init(&sale);
    pos_sale_init(&again);
    char why[POS_WHY_MAX] = "", why2[POS_WHY_MAX] = "";
    int rc = sales_doc_decode(doc, &sale, why, sizeof(why));
    F_ASSERT(rc == 0 || why[0], "a refused document has a reason");
    F_ASSERT(sales_doc_decode(doc, &again, why2, sizeof(why2)) == rc, "decoding is deterministic");
    if (rc == 0) {
        F_ASSERT(again.nlines == sale.nlines &&
                     (sale.nlines == 0 || memcmp(again.lines, sale.lines,
                                                 (size_t)sale.nlines * sizeof(*sale.lines)) == 0),
                 "the same document decodes to the same lines");
        pos_err_t err = pos_sale_check(&sale, why, sizeof(why));
        F_ASSERT(err == POS_OK || why[0], "a refused sale has a reason");
        if (err == POS_OK) {
            f_check_sums(&sale);
            f_check_commit_args(&sale);
        }
    }
    pos_sale_clear(&again);
    pos_sale_clear(&sale);
    bus_val_destroy(&doc);
    return 0;
}
