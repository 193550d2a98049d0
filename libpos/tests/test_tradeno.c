/*  test_tradeno - intent ids to Alipay's out_trade_no alphabet and back, one to one */
#include <pos/tradeno.h>
#include <string.h>
#include "testutil.h"

static int s_wire_ok(const char *w)
{
    for (; *w; w++)
        if (!((*w >= 'a' && *w <= 'z') || (*w >= 'A' && *w <= 'Z') || (*w >= '0' && *w <= '9') ||
              *w == '_'))
            return 0;
    return 1;
}

int main(void)
{
    char w[POS_ALIPAY_NO_MAX + 1], id[40];
    CHECK(pos_tradeno_alipay("S1-R01-000001-1", w, sizeof(w)) == POS_OK &&
              strcmp(w, "S1__R01__000001__1") == 0,
          "S1-R01-000001-1 is S1__R01__000001__1 (%s)", w);
    CHECK(pos_tradeno_alipay("S_1-R01-7", w, sizeof(w)) == POS_OK && strcmp(w, "S_u1__R01__7") == 0,
          "an underscore is _u (%s)", w);
    /* the ids a lone-'_'-for-'-' form would confuse, and edge cases: all different on the wire,
       all in Alipay's alphabet, all coming back as they were */
    static const char *ids[] = {"a_-b", "a-_b", "a--b", "a__b", "_", "-", "__-", "-__", "u",
                                "_u", "H0123456789abcdef01234567-12",
                                "--------------------------------"};
    const size_t n = sizeof(ids) / sizeof(ids[0]);
    char wires[sizeof(ids) / sizeof(ids[0])][POS_ALIPAY_NO_MAX + 1];
    for (size_t i = 0; i < n; i++) {
        int ok = pos_tradeno_alipay(ids[i], wires[i], sizeof(wires[i])) == POS_OK &&
                 s_wire_ok(wires[i]) && strlen(wires[i]) <= POS_ALIPAY_NO_MAX &&
                 pos_tradeno_from_alipay(wires[i], id, sizeof(id)) == POS_OK &&
                 strcmp(id, ids[i]) == 0;
        CHECK(ok, "%s -> %s -> %s", ids[i], wires[i], id);
        for (size_t k = 0; k < i; k++)
            if (strcmp(wires[i], wires[k]) == 0)
                CHECK(0, "%s and %s share the wire form %s", ids[i], ids[k], wires[i]);
    }
    CHECK_EQ(strlen(wires[n - 1]), 64, "32 dashes: 64 on the wire, Alipay's most");
    char id33[34];
    memset(id33, '-', 33);
    id33[33] = '\0';
    CHECK(pos_tradeno_alipay(id33, w, sizeof(w)) == POS_ELENGTH && !*w,
          "longer than 64 on the wire: POS_ELENGTH, out empty");
    CHECK(pos_tradeno_alipay("S1-R01", w, 6) == POS_ELENGTH, "out too small: POS_ELENGTH");
    static const char *bad_ids[] = {"", "A+B", "S1 R01", "S1.R01", "\xe4\xb8\xad"};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++)
        CHECK(pos_tradeno_alipay(bad_ids[i], w, sizeof(w)) == POS_ESYNTAX,
              "id %zu outside letters, digits, '_' and '-': POS_ESYNTAX", i);
    CHECK(pos_tradeno_alipay(NULL, w, sizeof(w)) == POS_ESYNTAX, "NULL id: POS_ESYNTAX");
    static const char *bad_wires[] = {"", "S1-R01", "S1_", "S1_x2", "a_U", "A+B", "a b"};
    for (size_t i = 0; i < sizeof(bad_wires) / sizeof(bad_wires[0]); i++)
        CHECK(pos_tradeno_from_alipay(bad_wires[i], id, sizeof(id)) == POS_ESYNTAX && !*id,
              "wire %s: no id's wire form, POS_ESYNTAX", bad_wires[i]);
    CHECK(pos_tradeno_from_alipay("SALE000001", id, sizeof(id)) == POS_OK &&
              strcmp(id, "SALE000001") == 0,
          "letters and digits only: the same");
    CHECK(pos_tradeno_from_alipay("S1__R01", id, 6) == POS_ELENGTH, "out too small: POS_ELENGTH");
    return FINISH("test_tradeno");
}
