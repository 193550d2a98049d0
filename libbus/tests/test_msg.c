/*  test_msg - the envelope, and 120,000 hostile inputs that must never crash

    The random part mixes pure random bytes, mutations of valid envelopes
    (bit flips, truncation, insertion, corrupted length bytes) and generated
    deep or wide trees. The test tallies what decode returned for each case
    and checks properties, not a loop count: every case accepted or rejected
    with a reason, every accepted case re-encodes byte for byte, every
    generated tree within limits decodes equal to the tree built, and the
    codec's own counters match the tally reason by reason. The sanitizer
    build turns any out-of-bounds read into a failure.
    */
#include <bus/msg.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

#define S_RANDOM_CASES 120000
#define S_SEED         20261124u

static uint32_t s_rng = S_SEED;

static uint32_t s_rand(void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 17;
    s_rng ^= s_rng << 5;
    return s_rng;
}

static bus_msg_t *s_sample(int64_t seq)
{
    bus_msg_t *msg = bus_msg_new("sale.completed", "S001-R01", seq);
    bus_val_t *body = bus_msg_body(msg);
    bus_val_map_set_str(body, "sale_id", "S001-R01-000042");
    bus_val_map_set_int(body, "total_fen", 12345);
    bus_val_t *lines = bus_val_new_arr();
    for (int i = 0; i < 3; i++) {
        bus_val_t *line = bus_val_new_map();
        bus_val_map_set_str(line, "sku", "6901234567892");
        bus_val_map_set_int(line, "qty", i + 1);
        bus_val_arr_push(lines, &line);
    }
    bus_val_map_set(body, "lines", &lines);
    return msg;
}

/*  Encode an arbitrary map as a raw envelope (to build envelopes with wrong fields). */
static bus_reject_t s_decode_map(bus_val_t *map, bus_codec_stats_t *stats)
{
    bus_buf_t buf = {0};
    bus_val_encode(map, &buf);
    bus_reject_t why = BUS_REJ_NONE;
    bus_msg_t *msg = bus_msg_decode(buf.data, buf.len, NULL, stats, &why);
    bus_msg_destroy(&msg);
    bus_buf_free(&buf);
    return why;
}

static bus_val_t *s_envelope_map(void)
{
    bus_val_t *m = bus_val_new_map();
    bus_val_map_set_int(m, "v", 1);
    bus_val_map_set_str(m, "type", "stock.low");
    bus_val_map_set_str(m, "id", "0123456789abcdef0123456789abcdef");
    bus_val_map_set_str(m, "src", "inventory-1");
    bus_val_map_set_int(m, "seq", 7);
    bus_val_map_set_int(m, "ts", 1764000000000);
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set(m, "body", &body);
    return m;
}

/*  busd finds an event's src without decoding it; the layout rule must leave no way to show it
    one src and the decoder another. */
static void s_test_peek_src(void)
{
    bus_buf_t buf = {0};
    const char *src = NULL;
    size_t n = 0;
    bus_msg_t *msg = bus_msg_new("sale.completed", "sales-host-42-ab12", 300);
    bus_val_map_set_str(bus_msg_body(msg), "src", "inventory"); /* a body key is not the src */
    bus_msg_set_ts(msg, 1764000000000);
    CHECK(bus_msg_encode(msg, &buf) == 0 && bus_msg_peek_src(buf.data, buf.len, &src, &n) == 0 &&
              n == 18 && memcmp(src, "sales-host-42-ab12", n) == 0,
          "peek_src finds the src libbus wrote: %.*s", (int)n, src ? src : "");
    for (size_t cut = 0; cut < buf.len - 1; cut++)
        if (bus_msg_peek_src(buf.data, cut, &src, &n) == 0 && cut < 60) {
            CHECK(false, "a truncated envelope (%zu of %zu bytes) is refused", cut, buf.len);
            break;
        }
    bus_msg_destroy(&msg);

    /* the same fields in another order (as another encoder might write them), or a second src
       where the decoder would take the last one: refused, never guessed */
    bus_val_t *m = s_envelope_map(); /* v, type, id, src, seq, ts, body in insertion order */
    bus_buf_reset(&buf);
    CHECK(bus_val_encode(m, &buf) == 0 && bus_msg_peek_src(buf.data, buf.len, &src, &n) == 0 &&
              n == 11 && memcmp(src, "inventory-1", n) == 0,
          "a map in the canonical order is accepted");
    bus_val_destroy(&m);
    m = bus_val_new_map();
    bus_val_map_set_str(m, "src", "sales");
    bus_val_map_set_int(m, "v", 1);
    bus_val_map_set_str(m, "type", "t");
    bus_val_map_set_str(m, "id", "i");
    bus_val_map_set_int(m, "seq", 1);
    bus_val_map_set_int(m, "ts", 1);
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set(m, "body", &body);
    bus_buf_reset(&buf);
    CHECK(bus_val_encode(m, &buf) == 0 && bus_msg_peek_src(buf.data, buf.len, &src, &n) != 0,
          "src in another position is refused");
    bus_val_destroy(&m);
    /* hand-built: 8 entries, the eighth a second "src" */
    static const uint8_t twice[] = {
        0x88, 0xa1, 'v', 1,    0xa4, 't', 'y', 'p', 'e',  0xa1, 't',  0xa2, 'i', 'd',  0xa1, 'i',
        0xa3, 's',  'r', 'c',  0xa5, 's', 'a', 'l', 'e',  's',  0xa3, 's',  'e', 'q',  1,    0xa2,
        't',  's',  1,   0xa4, 'b',  'o', 'd', 'y', 0x80, 0xa3, 's',  'r',  'c', 0xa1, 'x'};
    CHECK(bus_msg_peek_src(twice, sizeof(twice), &src, &n) != 0,
          "an envelope with an eighth key (a second src) is refused");
    CHECK(bus_msg_peek_src(twice + 1, 0, &src, &n) != 0, "an empty payload is refused");
    bus_buf_free(&buf);
}

static void s_test_roundtrip(void)
{
    static const char *const types[] = {"sale.completed", "stock.low", "health",
                                        "reply",          "error",     "catalog.changed"};
    int ok = 0;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        bus_msg_t *msg = s_sample((int64_t)i * 1000);
        bus_msg_t *typed = bus_msg_new(types[i], "node", (int64_t)i);
        bus_val_t *body = bus_msg_take_body(msg);
        bus_msg_set_body(typed, &body);
        bus_buf_t buf = {0};
        bus_msg_encode(typed, &buf);
        bus_codec_stats_t stats = {0};
        bus_msg_t *back = bus_msg_decode(buf.data, buf.len, NULL, &stats, NULL);
        if (back && strcmp(bus_msg_type(back), types[i]) == 0 &&
            strcmp(bus_msg_id(back), bus_msg_id(typed)) == 0 &&
            strcmp(bus_msg_src(back), "node") == 0 && bus_msg_seq(back) == (int64_t)i &&
            bus_msg_ts(back) == bus_msg_ts(typed) && bus_msg_version(back) == 1 &&
            bus_val_equal(bus_msg_body(back), bus_msg_body(typed)) && stats.accepted == 1)
            ok++;
        bus_buf_free(&buf);
        bus_msg_destroy(&back);
        bus_msg_destroy(&typed);
        bus_msg_destroy(&msg);
    }
    CHECK(ok == 6, "envelopes of 6 types round-trip with every field (%d)", ok);

    char a[BUS_MSG_ID_LEN + 1], b[BUS_MSG_ID_LEN + 1];
    bus_new_id(a);
    bus_new_id(b);
    bool hex = strlen(a) == 32 && strspn(a, "0123456789abcdef") == 32;
    CHECK(hex && strcmp(a, b) != 0, "ids are 32 lowercase hex and unique (%s)", a);
    int64_t now = bus_now_ms();
    CHECK(now > 1700000000000LL, "ts is milliseconds since the epoch");

    bus_msg_t *msg = bus_msg_new("x", "s", 1);
    bus_buf_t json = {0};
    bus_msg_set_ts(msg, 5);
    bus_msg_set_id(msg, "abc");
    bus_msg_to_json(msg, &json);
    CHECK(strcmp((const char *)json.data,
                 "{\"v\":1,\"type\":\"x\",\"id\":\"abc\",\"src\":\"s\",\"seq\":1,\"ts\":5,"
                 "\"body\":{}}") == 0,
          "JSON line: %s", (const char *)json.data);
    bus_buf_free(&json);
    CHECK(bus_msg_new("", "s", 1) == NULL, "an empty type is refused at construction");
    bus_msg_destroy(&msg);
}

static void s_test_rejections(void)
{
    bus_codec_stats_t stats = {0};
    bus_val_t *arr = bus_val_new_arr();
    CHECK(s_decode_map(arr, &stats) == BUS_REJ_NOT_MAP, "an array is not an envelope");
    bus_val_destroy(&arr);

    static const char *const keys[] = {"v", "type", "id", "src", "seq", "ts", "body"};
    int missing = 0, wrong = 0;
    for (size_t i = 0; i < 7; i++) {
        bus_val_t *m = s_envelope_map();
        bus_val_t *gone = bus_val_new_map();
        /* rebuild without key i */
        for (size_t k = 0; k < bus_val_size(m); k++)
            if (strcmp(bus_val_map_key(m, k), keys[i]) != 0) {
                bus_val_t *c = bus_val_dup(bus_val_map_value(m, k));
                bus_val_map_set(gone, bus_val_map_key(m, k), &c);
            }
        if (s_decode_map(gone, &stats) == BUS_REJ_MISSING)
            missing++;
        bus_val_destroy(&gone);
        /* key i with the wrong type: bool fits none of them */
        bus_val_map_set_bool(m, keys[i], true);
        if (s_decode_map(m, &stats) == BUS_REJ_WRONG_TYPE)
            wrong++;
        bus_val_destroy(&m);
    }
    CHECK(missing == 7, "each missing required key rejected as missing_key (%d)", missing);
    CHECK(wrong == 7, "each mistyped required key rejected as wrong_type (%d)", wrong);

    struct {
        const char *key;
        int64_t value;
    } bad_ints[] = {{"v", 0}, {"v", 2}, {"seq", -1}, {"ts", -5}};
    int bad = 0;
    for (size_t i = 0; i < 4; i++) {
        bus_val_t *m = s_envelope_map();
        bus_val_map_set_int(m, bad_ints[i].key, bad_ints[i].value);
        if (s_decode_map(m, &stats) == BUS_REJ_BAD_VALUE)
            bad++;
        bus_val_destroy(&m);
    }
    bus_val_t *m = s_envelope_map();
    bus_val_map_set_str(m, "type", "");
    if (s_decode_map(m, &stats) == BUS_REJ_BAD_VALUE)
        bad++;
    bus_val_destroy(&m);
    CHECK(bad == 5, "v 0, v 2, negative seq, negative ts, empty type: bad_value (%d)", bad);

    m = s_envelope_map();
    bus_val_map_set_str(m, "future_key", "ignored");
    bus_val_map_set_int(m, "another", 99);
    CHECK(s_decode_map(m, &stats) == BUS_REJ_NONE, "unknown keys are ignored");
    bus_val_destroy(&m);
    CHECK(stats.accepted == 1 && stats.rejected[BUS_REJ_MISSING] == 7 &&
              stats.rejected[BUS_REJ_WRONG_TYPE] == 7 && stats.rejected[BUS_REJ_BAD_VALUE] == 5 &&
              stats.rejected[BUS_REJ_NOT_MAP] == 1,
          "counters by reason match");
}

/*  A random tree: deep chains or wide maps, mixed scalar types. */
static bus_val_t *s_random_tree(int depth)
{
    uint32_t r = s_rand() % 10;
    if (depth > 20 || r < 4) {
        switch (s_rand() % 5) {
        case 0:
            return bus_val_new_int((int64_t)s_rand() << (s_rand() % 32));
        case 1:
            return bus_val_new_bool(s_rand() & 1);
        case 2:
            return bus_val_new_nil();
        case 3: {
            char s[40];
            size_t n = s_rand() % sizeof(s);
            for (size_t i = 0; i < n; i++)
                s[i] = (char)s_rand();
            return bus_val_new_strn(s, n);
        }
        default:
            return bus_val_new_bin("\x01\x02\x03", s_rand() % 4);
        }
    }
    if (r < 7) {
        bus_val_t *arr = bus_val_new_arr();
        int n = (int)(s_rand() % 4);
        for (int i = 0; i < n; i++) {
            bus_val_t *item = s_random_tree(depth + 1);
            bus_val_arr_push(arr, &item);
        }
        return arr;
    }
    bus_val_t *map = bus_val_new_map();
    int n = (int)(s_rand() % 5);
    for (int i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%u", s_rand() % 8);
        bus_val_t *item = s_random_tree(depth + 1);
        bus_val_map_set(map, key, &item);
    }
    return map;
}

/*  What the test itself saw of the random cases, to hold against the codec's own counters. */
typedef struct {
    uint64_t accepted;     /* decode returned a message */
    uint64_t roundtrip_ok; /* ... which re-encodes to the same bytes */
    uint64_t trees_equal;  /* generated trees accepted equal to what was built */
    uint64_t trees_accepted;
    uint64_t rejected[BUS_REJ__COUNT]; /* decode returned NULL, by the reason it gave */
    uint64_t unexplained;              /* rejected without a reason */
} s_tally_t;

/*  Decode one input and tally what happened. built: the body the input was made from, or NULL
    when the input is random or mutated. */
static void s_decode_case(const uint8_t *input, size_t len, const bus_val_t *built,
                          bus_codec_stats_t *stats, s_tally_t *tally)
{
    bus_reject_t why = BUS_REJ__COUNT;
    bus_msg_t *msg = bus_msg_decode(input, len, NULL, stats, &why);
    if (!msg) {
        if (why == BUS_REJ_NONE || why == BUS_REJ__COUNT)
            tally->unexplained++;
        else
            tally->rejected[why]++;
        return;
    }
    tally->accepted++;
    /* an accepted message re-encodes to bytes that decode and re-encode to the same bytes */
    bus_buf_t again = {0}, third = {0};
    bus_msg_encode(msg, &again);
    bus_msg_t *twice = bus_msg_decode(again.data, again.len, NULL, NULL, NULL);
    if (twice)
        bus_msg_encode(twice, &third);
    if (twice && third.len == again.len && memcmp(third.data, again.data, again.len) == 0 &&
        bus_val_equal(bus_msg_body(msg), bus_msg_body(twice)))
        tally->roundtrip_ok++;
    if (built) {
        tally->trees_accepted++;
        if (bus_val_equal(bus_msg_body(msg), built))
            tally->trees_equal++;
    }
    bus_msg_destroy(&twice);
    bus_buf_free(&third);
    bus_buf_free(&again);
    bus_msg_destroy(&msg);
}

static void s_test_random(void)
{
    bus_codec_stats_t stats = {0};
    s_tally_t tally = {0};
    bus_buf_t valid = {0};
    bus_msg_t *sample = s_sample(1);
    bus_msg_encode(sample, &valid);
    bus_msg_destroy(&sample);
    uint8_t *work = malloc(valid.len * 2 + 64);
    printf("random cases: seed %u\n", S_SEED);
    for (int i = 0; i < S_RANDOM_CASES; i++) {
        size_t len = 0;
        bus_buf_t tree_buf = {0};
        bus_val_t *built = NULL;
        const uint8_t *input = work;
        switch (i % 4) {
        case 0: /* pure random bytes */
            len = s_rand() % 64;
            for (size_t k = 0; k < len; k++)
                work[k] = (uint8_t)s_rand();
            break;
        case 1: /* mutated valid envelope: bit flips and a corrupted length byte */
            memcpy(work, valid.data, valid.len);
            len = valid.len;
            for (int f = 0; f < 1 + (int)(s_rand() % 4); f++)
                work[s_rand() % len] ^= (uint8_t)(1u << (s_rand() % 8));
            if (s_rand() % 2)
                work[s_rand() % len] = (uint8_t)(0xd9 + s_rand() % 8); /* length-bearing types */
            break;
        case 2: /* truncation or insertion */
            memcpy(work, valid.data, valid.len);
            len = valid.len;
            if (s_rand() % 2)
                len = s_rand() % valid.len;
            else {
                size_t at = s_rand() % len;
                memmove(work + at + 1, work + at, len - at);
                work[at] = (uint8_t)s_rand();
                len++;
            }
            break;
        default: { /* generated tree wrapped as a body, sometimes too deep */
            bus_msg_t *m = bus_msg_new("gen", "fuzz", i);
            bus_val_t *body = bus_val_new_map();
            bus_val_t *tree = s_random_tree(0);
            bus_val_map_set(body, "t", &tree);
            built = bus_val_dup(body);
            bus_msg_set_body(m, &body);
            bus_msg_encode(m, &tree_buf);
            bus_msg_destroy(&m);
            input = tree_buf.data;
            len = tree_buf.len;
            break;
        }
        }
        s_decode_case(input, len, built, &stats, &tally);
        bus_val_destroy(&built);
        bus_buf_free(&tree_buf);
    }
    uint64_t rejected = 0, codec_rejected = 0;
    bool reasons_match = true;
    for (int r = 0; r < BUS_REJ__COUNT; r++) {
        rejected += tally.rejected[r];
        codec_rejected += stats.rejected[r];
        if (tally.rejected[r] != stats.rejected[r]) {
            reasons_match = false;
            printf("     %-12s codec counted %" PRIu64 ", decode returned it %" PRIu64 " times\n",
                   bus_reject_name((bus_reject_t)r), stats.rejected[r], tally.rejected[r]);
        }
    }
    CHECK(tally.accepted + rejected == S_RANDOM_CASES && tally.unexplained == 0,
          "every random case accepted or rejected with a reason: %" PRIu64 " + %" PRIu64
          " of %d (%" PRIu64 " without a reason)",
          tally.accepted, rejected, S_RANDOM_CASES, tally.unexplained);
    CHECK(tally.roundtrip_ok == tally.accepted,
          "accepted cases that re-encode byte for byte the same: %" PRIu64 " of %" PRIu64,
          tally.roundtrip_ok, tally.accepted);
    CHECK(stats.accepted == tally.accepted && reasons_match,
          "the codec's counters match what decode returned (accepted %" PRIu64 " vs %" PRIu64
          ", rejected %" PRIu64 " vs %" PRIu64 ")",
          stats.accepted, tally.accepted, codec_rejected, rejected);
    CHECK(rejected > S_RANDOM_CASES / 4 && tally.accepted > 0,
          "both outcomes occur (%" PRIu64 " rejected, %" PRIu64 " accepted)", rejected,
          tally.accepted);
    for (int r = 1; r < BUS_REJ__COUNT; r++)
        if (tally.rejected[r])
            printf("     %-12s %" PRIu64 "\n", bus_reject_name((bus_reject_t)r), tally.rejected[r]);
    CHECK(tally.rejected[BUS_REJ_TOO_DEEP] > 0,
          "generated deep trees were refused as too_deep (%" PRIu64 ")",
          tally.rejected[BUS_REJ_TOO_DEEP]);
    CHECK(tally.trees_accepted > 0 && tally.trees_equal == tally.trees_accepted,
          "generated trees within limits decode equal to the tree built: %" PRIu64 " of %" PRIu64,
          tally.trees_equal, tally.trees_accepted);
    free(work);
    bus_buf_free(&valid);
}

/*  The example printed in docs/protocol.md decodes to what the document says. */
static void s_test_documented_example(void)
{
    static const uint8_t example[] = {
        0x87, 0xa1, 0x76, 0x01, 0xa4, 0x74, 0x79, 0x70, 0x65, 0xaa, 0x74, 0x65, 0x73, 0x74, 0x2e,
        0x65, 0x76, 0x65, 0x6e, 0x74, 0xa2, 0x69, 0x64, 0xd9, 0x20, 0x35, 0x66, 0x30, 0x63, 0x33,
        0x61, 0x39, 0x65, 0x32, 0x62, 0x37, 0x64, 0x34, 0x65, 0x31, 0x66, 0x38, 0x61, 0x36, 0x63,
        0x30, 0x62, 0x39, 0x64, 0x33, 0x65, 0x32, 0x66, 0x31, 0x61, 0x34, 0x63, 0xa3, 0x73, 0x72,
        0x63, 0xb3, 0x65, 0x63, 0x68, 0x6f, 0x2d, 0x68, 0x6f, 0x73, 0x74, 0x2d, 0x31, 0x32, 0x33,
        0x34, 0x2d, 0x61, 0x62, 0x31, 0x32, 0xa3, 0x73, 0x65, 0x71, 0x07, 0xa2, 0x74, 0x73, 0xcf,
        0x00, 0x00, 0x01, 0x9a, 0xb6, 0x97, 0xe8, 0x00, 0xa4, 0x62, 0x6f, 0x64, 0x79, 0x83, 0xa1,
        0x6e, 0x06, 0xa9, 0x74, 0x6f, 0x74, 0x61, 0x6c, 0x5f, 0x66, 0x65, 0x6e, 0xcd, 0x04, 0xd8,
        0xa5, 0x73, 0x74, 0x6f, 0x72, 0x65, 0xa4, 0x53, 0x30, 0x30, 0x31};
    bus_msg_t *msg = bus_msg_decode(example, sizeof(example), NULL, NULL, NULL);
    int64_t n = 0, total = 0;
    CHECK(msg && strcmp(bus_msg_type(msg), "test.event") == 0 &&
              strcmp(bus_msg_src(msg), "echo-host-1234-ab12") == 0 && bus_msg_seq(msg) == 7 &&
              bus_msg_ts(msg) == 1764000000000LL &&
              bus_val_map_get_int(bus_msg_body(msg), "n", &n) && n == 6 &&
              bus_val_map_get_int(bus_msg_body(msg), "total_fen", &total) && total == 1240,
          "the hex example in docs/protocol.md decodes as documented");
    bus_buf_t again = {0};
    if (msg)
        bus_msg_encode(msg, &again);
    CHECK(again.len == sizeof(example) && memcmp(again.data, example, sizeof(example)) == 0,
          "and libbus encodes it byte for byte the same");
    bus_buf_free(&again);
    bus_msg_destroy(&msg);
}

int main(void)
{
    s_test_documented_example();
    s_test_roundtrip();
    s_test_rejections();
    s_test_random();
    s_test_peek_src();
    return FINISH("test_msg");
}
