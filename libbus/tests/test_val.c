/*  test_val - typed values and the strict MessagePack codec */
#include <bus/val.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"
#include "val_internal.h"

#define S_BIG_MAP_KEYS 100000

static bus_val_t *s_roundtrip(const bus_val_t *v, size_t *encoded_len)
{
    bus_buf_t buf = {0};
    if (bus_val_encode(v, &buf) != 0)
        return NULL;
    if (encoded_len)
        *encoded_len = buf.len;
    bus_reject_t why;
    bus_val_t *back = bus_val_decode(buf.data, buf.len, NULL, &why);
    bus_buf_free(&buf);
    return back;
}

static bool s_encodes_to(const bus_val_t *v, const uint8_t *expect, size_t len)
{
    bus_buf_t buf = {0};
    bool ok = bus_val_encode(v, &buf) == 0 && buf.len == len && memcmp(buf.data, expect, len) == 0;
    bus_buf_free(&buf);
    return ok;
}

static bus_reject_t s_reject(const uint8_t *data, size_t len)
{
    bus_reject_t why = BUS_REJ_NONE;
    bus_val_t *v = bus_val_decode(data, len, NULL, &why);
    bus_val_destroy(&v);
    return why;
}

static void s_test_ints(void)
{
    static const int64_t cases[] = {
        INT64_MIN,    -2147483649LL, -2147483648LL, -32769, -32768, -129,
        -128,         -33,           -32,           -1,     0,      1,
        127,          128,           255,           256,    65535,  65536,
        4294967295LL, 4294967296LL,  INT64_MAX};
    int ok = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bus_val_t *v = bus_val_new_int(cases[i]);
        bus_val_t *back = s_roundtrip(v, NULL);
        int64_t got;
        if (back && bus_val_get_int(back, &got) && got == cases[i])
            ok++;
        bus_val_destroy(&v);
        bus_val_destroy(&back);
    }
    CHECK(ok == (int)(sizeof(cases) / sizeof(cases[0])), "int boundaries round-trip (%d)", ok);
    bus_val_t *v = bus_val_new_int(-32);
    CHECK(s_encodes_to(v, (const uint8_t[]){0xe0}, 1), "-32 is a negative fixint");
    bus_val_destroy(&v);
    v = bus_val_new_int(128);
    CHECK(s_encodes_to(v, (const uint8_t[]){0xcc, 0x80}, 2), "128 is uint8");
    bus_val_destroy(&v);
}

static void s_test_strings(void)
{
    static const size_t lens[] = {0, 31, 32, 255, 256, 65535, 65536};
    static const size_t head[] = {1, 1, 2, 2, 3, 3, 5};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        char *s = malloc(lens[i] + 1);
        memset(s, 'a' + (int)(i % 26), lens[i]);
        s[lens[i]] = '\0';
        bus_val_t *v = bus_val_new_str(s);
        size_t enc = 0;
        bus_val_t *back = s_roundtrip(v, &enc);
        size_t len = 0;
        const char *got = bus_val_get_str(back, &len);
        CHECK(got && len == lens[i] && memcmp(got, s, len) == 0 && enc == lens[i] + head[i],
              "str of %zu bytes round-trips with a %zu-byte header", lens[i], head[i]);
        bus_val_destroy(&v);
        bus_val_destroy(&back);
        free(s);
    }
    uint8_t bin[300];
    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (uint8_t)i;
    bus_val_t *v = bus_val_new_bin(bin, sizeof(bin));
    bus_val_t *back = s_roundtrip(v, NULL);
    size_t len;
    const void *got = bus_val_get_bin(back, &len);
    CHECK(got && len == sizeof(bin) && memcmp(got, bin, len) == 0, "bin round-trips");
    CHECK(bus_val_get_str(back, NULL) == NULL, "bin is not a str");
    bus_val_destroy(&v);
    bus_val_destroy(&back);
}

static void s_test_containers(void)
{
    static const size_t sizes[] = {0, 15, 16, 65535, 65536};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        bus_val_t *arr = bus_val_new_arr();
        bus_val_t *map = bus_val_new_map();
        for (size_t k = 0; k < sizes[i]; k++) {
            bus_val_t *item = bus_val_new_int((int64_t)k);
            bus_val_arr_push(arr, &item);
        }
        size_t mapn = sizes[i];
        for (size_t k = 0; k < mapn; k++) {
            char key[32];
            snprintf(key, sizeof(key), "k%zu", k);
            bus_val_t *item = bus_val_new_int((int64_t)k);
            bus_val_map_set(map, key, &item);
        }
        bus_val_t *arr2 = s_roundtrip(arr, NULL);
        bus_val_t *map2 = s_roundtrip(map, NULL);
        CHECK(bus_val_equal(arr, arr2) && bus_val_size(arr2) == sizes[i],
              "array of %zu round-trips", sizes[i]);
        CHECK(bus_val_equal(map, map2) && bus_val_size(map2) == mapn, "map of %zu round-trips",
              mapn);
        bus_val_destroy(&arr);
        bus_val_destroy(&arr2);
        bus_val_destroy(&map);
        bus_val_destroy(&map2);
    }
    bus_val_t *m = bus_val_new_map();
    bus_val_map_set_int(m, "a", 1);
    CHECK(s_encodes_to(m, (const uint8_t[]){0x81, 0xa1, 'a', 0x01}, 4), "{a:1} = 81 a1 61 01");
    bus_val_map_set_int(m, "a", 2);
    int64_t a = 0;
    CHECK(bus_val_size(m) == 1 && bus_val_map_get_int(m, "a", &a) && a == 2,
          "set replaces an existing key in place");
    bus_val_t *inner = bus_val_new_map();
    bus_val_map_set_str(inner, "name", "苹果");
    bus_val_map_set_bool(inner, "ok", true);
    bus_val_t *nil = bus_val_new_nil();
    bus_val_map_set(inner, "none", &nil);
    bus_val_map_set(m, "inner", &inner);
    bus_val_t *back = s_roundtrip(m, NULL);
    bool ok = false;
    CHECK(bus_val_equal(m, back) &&
              strcmp(bus_val_map_get_str(bus_val_map_get(back, "inner"), "name"), "苹果") == 0 &&
              bus_val_map_get_bool(bus_val_map_get(back, "inner"), "ok", &ok) && ok,
          "nested maps with UTF-8, bool and nil round-trip");
    CHECK(!bus_val_map_get_int(back, "inner", &a), "typed getter refuses a map");
    bus_val_t *dup = bus_val_dup(m);
    CHECK(bus_val_equal(dup, m), "dup is equal");
    bus_val_destroy(&dup);
    bus_val_destroy(&back);
    bus_val_destroy(&m);
}

/*  SipHash-2-4 of the bytes 00 01 02 ... under the key 00 01 ... 0f, from the reference
    implementation's published vectors; maps use the same code with 1 and 3 rounds. */
static void s_test_siphash(void)
{
    static const struct {
        size_t len;
        uint64_t hash;
    } vectors[] = {{0, 0x726fdb47dd0e0e31ULL},  {1, 0x74f839c593dc67fdULL},
                   {7, 0xab0200f58b01d137ULL},  {8, 0x93f5f5799a932462ULL},
                   {15, 0xa129ca6149be45e5ULL}, {63, 0x958a324ceb064572ULL}};
    uint8_t msg[64];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)i;
    const uint64_t key[2] = {0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        uint64_t got = bus__val_siphash(key, msg, vectors[i].len, 2, 4);
        CHECK(got == vectors[i].hash, "SipHash-2-4 of %zu bytes: expected %016llx, got %016llx",
              vectors[i].len, (unsigned long long)vectors[i].hash, (unsigned long long)got);
    }
}

/*  Key and value of entry i of the big maps: values are not the position, so a lookup that
    returns a neighbour's entry is caught. */
static void s_big_key(size_t i, char *key, size_t size)
{
    snprintf(key, size, "sku-%zu", i);
}

static int64_t s_big_value(size_t i)
{
    return (int64_t)i * 7 + 3;
}

/*  Number of entries of map whose key or value is not the one inserted at that position; prints
    the first mismatch. */
static size_t s_big_order_errors(const bus_val_t *map, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        char key[32];
        s_big_key(i, key, sizeof(key));
        const char *got = bus_val_map_key(map, i);
        int64_t v = 0;
        if (!got || strcmp(got, key) != 0 || !bus_val_get_int(bus_val_map_value(map, i), &v) ||
            v != s_big_value(i)) {
            if (bad++ == 0)
                printf("     entry %zu: expected %s=%lld, got %s=%lld\n", i, key,
                       (long long)s_big_value(i), got ? got : "(none)", (long long)v);
        }
    }
    return bad;
}

static void s_test_big_maps(void)
{
    const size_t n = S_BIG_MAP_KEYS;
    bus_val_t *map = bus_val_new_map();
    size_t set_failures = 0;
    for (size_t i = 0; i < n; i++) {
        char key[32];
        s_big_key(i, key, sizeof(key));
        if (bus_val_map_set_int(map, key, s_big_value(i)) != 0)
            set_failures++;
    }
    CHECK(set_failures == 0 && bus_val_size(map) == n, "%zu keys set: size %zu, %zu failures", n,
          bus_val_size(map), set_failures);

    size_t missing = 0;
    for (size_t i = 0; i < n; i++) {
        char key[32];
        s_big_key(i, key, sizeof(key));
        int64_t v = 0;
        if (!bus_val_map_get_int(map, key, &v) || v != s_big_value(i)) {
            if (missing++ == 0)
                printf("     %s: expected %lld, got %lld\n", key, (long long)s_big_value(i),
                       (long long)v);
        }
    }
    CHECK(missing == 0, "every one of %zu keys found with its value (%zu wrong)", n, missing);

    size_t phantom = 0;
    for (size_t i = n; i < n + n / 10; i++) {
        char key[32];
        s_big_key(i, key, sizeof(key));
        if (bus_val_map_get(map, key) != NULL)
            phantom++;
    }
    CHECK(phantom == 0 && bus_val_map_get(map, "") == NULL && bus_val_map_get(map, "sku-") == NULL,
          "absent keys not found (%zu found)", phantom);

    size_t misordered = s_big_order_errors(map, n);
    CHECK(misordered == 0, "insertion order kept over %zu keys (%zu out of place)", n, misordered);

    /* replacing keeps the position and the size */
    const size_t replaced[] = {0, 7, 8, n / 2, n - 1};
    for (size_t i = 0; i < sizeof(replaced) / sizeof(replaced[0]); i++) {
        char key[32];
        s_big_key(replaced[i], key, sizeof(key));
        bus_val_map_set_int(map, key, -(int64_t)replaced[i] - 1);
    }
    size_t replace_errors = 0;
    for (size_t i = 0; i < sizeof(replaced) / sizeof(replaced[0]); i++) {
        char key[32];
        s_big_key(replaced[i], key, sizeof(key));
        int64_t v = 0;
        const char *at = bus_val_map_key(map, replaced[i]);
        if (!at || strcmp(at, key) != 0 || !bus_val_map_get_int(map, key, &v) ||
            v != -(int64_t)replaced[i] - 1) {
            replace_errors++;
            printf("     %s: expected at %zu with %lld, found %s there, value %lld\n", key,
                   replaced[i], (long long)(-(int64_t)replaced[i] - 1), at ? at : "(none)",
                   (long long)v);
        }
    }
    CHECK(replace_errors == 0 && bus_val_size(map) == n,
          "replaced keys keep their position and the size stays %zu (size %zu)", n,
          bus_val_size(map));
    for (size_t i = 0; i < sizeof(replaced) / sizeof(replaced[0]); i++) {
        char key[32];
        s_big_key(replaced[i], key, sizeof(key));
        bus_val_map_set_int(map, key, s_big_value(replaced[i]));
    }

    /* the wire: encode, decode, compare; the decoded map is indexed and ordered too */
    bus_buf_t buf = {0};
    bus_reject_t why = BUS_REJ_NONE;
    bus_limits_t roomy = {.max_size = 64 * 1024 * 1024, .max_depth = 0};
    CHECK(bus_val_encode(map, &buf) == 0, "%zu-key map encodes (%zu bytes)", n, buf.len);
    bus_val_t *back = bus_val_decode(buf.data, buf.len, &roomy, &why);
    int64_t v = 0;
    CHECK(back && bus_val_equal(map, back) && bus_val_equal(back, map),
          "%zu-key map round-trips equal (reject %s)", n, bus_reject_name(why));
    CHECK(back && s_big_order_errors(back, n) == 0 && bus_val_map_get_int(back, "sku-99999", &v) &&
              v == s_big_value(99999),
          "decoded map keeps the order and finds its keys");
    bus_val_t *dup = bus_val_dup(back);
    CHECK(dup && bus_val_equal(dup, map) && s_big_order_errors(dup, n) == 0,
          "dup of the decoded map is equal and ordered");

    /* equality must compare values by key, not merely sizes */
    bus_val_map_set_int(dup, "sku-54321", -1);
    CHECK(!bus_val_equal(dup, map), "maps differing in one value of %zu are unequal", n);
    bus_val_destroy(&dup);

    /* a repeated key anywhere in a big map is refused: rename the last key to an earlier one of
       the same length, in the encoded bytes */
    static const char *const repeats[] = {"sku-10000", "sku-50000", "sku-99998"};
    for (size_t i = 0; i < sizeof(repeats) / sizeof(repeats[0]); i++) {
        uint8_t *copy = malloc(buf.len);
        memcpy(copy, buf.data, buf.len);
        uint8_t *last = memmem(copy, buf.len, "sku-99999", 9);
        memcpy(last, repeats[i], 9);
        bus_val_t *twice = bus_val_decode(copy, buf.len, &roomy, &why);
        CHECK(!twice && why == BUS_REJ_BAD_KEY,
              "%zu-key map repeating %s refused: expected bad_key, got %s", n, repeats[i],
              twice ? "accepted" : bus_reject_name(why));
        bus_val_destroy(&twice);
        free(copy);
    }
    uint8_t *copy = malloc(buf.len);
    memcpy(copy, buf.data, buf.len);
    uint8_t *first = memmem(copy, buf.len, "sku-0", 5);
    memcpy(first, "sku-1", 5); /* the first key repeats the second */
    bus_val_t *twice = bus_val_decode(copy, buf.len, &roomy, &why);
    CHECK(!twice && why == BUS_REJ_BAD_KEY, "repeat of the first key refused: got %s",
          twice ? "accepted" : bus_reject_name(why));
    bus_val_destroy(&twice);
    free(copy);

    bus_buf_free(&buf);
    bus_val_destroy(&back);
    bus_val_destroy(&map);
}

/*  Around the size where a map gets its index: lookups, replacement and duplicate refusal hold
    on both sides of it. */
static void s_test_index_threshold(void)
{
    size_t errors = 0;
    for (size_t n = 1; n <= 80; n++) {
        bus_val_t *map = bus_val_new_map();
        for (size_t i = 0; i < n; i++) {
            char key[16];
            snprintf(key, sizeof(key), "k%zu", i);
            bus_val_map_set_int(map, key, (int64_t)i);
            bus_val_map_set_int(map, key, (int64_t)i + 100); /* replace at once */
        }
        for (size_t i = 0; i < n; i++) {
            char key[16];
            snprintf(key, sizeof(key), "k%zu", i);
            int64_t v = -1;
            const char *at = bus_val_map_key(map, i);
            if (!bus_val_map_get_int(map, key, &v) || v != (int64_t)i + 100 || !at ||
                strcmp(at, key) != 0) {
                errors++;
                printf("     map of %zu: %s gave %lld at key %s\n", n, key, (long long)v,
                       at ? at : "(none)");
            }
        }
        if (bus_val_size(map) != n || bus_val_map_get(map, "k") != NULL)
            errors++;
        bus_val_destroy(&map);
    }
    CHECK(errors == 0, "maps of 1 to 80 keys (both sides of the index threshold) find, replace and order every key (%zu errors)",
          errors);
}

/*  Taking a key out of an indexed map (the envelope's body is moved out this way) leaves every
    other key findable at its shifted position. */
static void s_test_take(void)
{
    const size_t n = 20;
    bus_val_t *map = bus_val_new_map();
    for (size_t i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%zu", i);
        bus_val_map_set_int(map, key, (int64_t)i);
    }
    bus_val_t *taken = bus__val_map_take(map, "k5");
    int64_t v = -1;
    CHECK(bus_val_get_int(taken, &v) && v == 5 && bus_val_size(map) == n - 1 &&
              bus_val_map_get(map, "k5") == NULL,
          "take returns the value and removes the key (value %lld, size %zu)", (long long)v,
          bus_val_size(map));
    bus_val_destroy(&taken);
    size_t errors = 0;
    for (size_t i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%zu", i);
        size_t pos = i < 5 ? i : i - 1;
        const char *at = bus_val_map_key(map, pos);
        if (i != 5 && (!bus_val_map_get_int(map, key, &v) || v != (int64_t)i || !at ||
                       strcmp(at, key) != 0)) {
            errors++;
            printf("     %s: value %lld, key at %zu is %s\n", key, (long long)v, pos,
                   at ? at : "(none)");
        }
    }
    bus_val_map_set_int(map, "k5", 55);
    CHECK(errors == 0 && strcmp(bus_val_map_key(map, n - 1), "k5") == 0 &&
              bus_val_map_get_int(map, "k5", &v) && v == 55,
          "after take the others are found in order and the key can be added again (%zu errors)",
          errors);
    bus_val_destroy(&map);
}

static void s_test_hostile(void)
{
    CHECK(s_reject((const uint8_t[]){0xc1}, 1) == BUS_REJ_MALFORMED, "0xc1 is malformed");
    CHECK(s_reject((const uint8_t[]){0xca, 0, 0, 0, 0}, 5) == BUS_REJ_UNSUPPORTED,
          "float32 unsupported");
    CHECK(s_reject((const uint8_t[]){0xcb, 0, 0, 0, 0, 0, 0, 0, 0}, 9) == BUS_REJ_UNSUPPORTED,
          "float64 unsupported");
    CHECK(s_reject((const uint8_t[]){0xd4, 1, 2}, 3) == BUS_REJ_UNSUPPORTED, "ext unsupported");
    CHECK(s_reject((const uint8_t[]){0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9) ==
              BUS_REJ_UNSUPPORTED,
          "uint64 above INT64_MAX unsupported");
    CHECK(s_reject((const uint8_t[]){0xdd, 0xff, 0xff, 0xff, 0xff}, 5) == BUS_REJ_TRUNCATED,
          "array32 claiming 4e9 elements in 5 bytes: truncated, nothing allocated");
    CHECK(s_reject((const uint8_t[]){0xdf, 0xff, 0xff, 0xff, 0xff}, 5) == BUS_REJ_TRUNCATED,
          "map32 claiming 4e9 entries: truncated");
    CHECK(s_reject((const uint8_t[]){0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}, 6) == BUS_REJ_TRUNCATED,
          "str32 claiming 4 GiB: truncated");
    CHECK(s_reject((const uint8_t[]){0x81, 0x01, 0x02}, 3) == BUS_REJ_BAD_KEY, "int key refused");
    CHECK(s_reject((const uint8_t[]){0x82, 0xa1, 'a', 1, 0xa1, 'a', 2}, 7) == BUS_REJ_BAD_KEY,
          "duplicate key refused");
    CHECK(s_reject((const uint8_t[]){0x01, 0x02}, 2) == BUS_REJ_TRAILING, "trailing byte refused");
    CHECK(s_reject(NULL, 0) == BUS_REJ_TRUNCATED, "empty input truncated");

    uint8_t deep[40];
    for (int i = 0; i < 17; i++)
        deep[i] = 0x91; /* array of one */
    deep[17] = 0x01;
    CHECK(s_reject(deep, 18) == BUS_REJ_TOO_DEEP, "17 levels deep refused (limit 16)");
    bus_reject_t why;
    bus_val_t *ok16 = bus_val_decode(deep + 1, 17, NULL, &why);
    CHECK(ok16 != NULL, "16 levels accepted");
    bus_val_destroy(&ok16);

    bus_limits_t small = {.max_size = 4, .max_depth = 0};
    bus_val_t *v =
        bus_val_decode((const uint8_t[]){0xa5, 'h', 'e', 'l', 'l', 'o'}, 6, &small, &why);
    CHECK(!v && why == BUS_REJ_OVERSIZE, "payload above the size limit refused");

    /* every proper prefix of a valid encoding is truncated */
    bus_val_t *m = bus_val_new_map();
    bus_val_map_set_str(m, "store", "S001");
    bus_val_map_set_int(m, "total", 123456789);
    bus_val_t *arr = bus_val_new_arr();
    bus_val_t *x = bus_val_new_str("line");
    bus_val_arr_push(arr, &x);
    bus_val_map_set(m, "lines", &arr);
    bus_buf_t buf = {0};
    bus_val_encode(m, &buf);
    size_t truncated = 0;
    for (size_t len = 0; len < buf.len; len++)
        if (s_reject(buf.data, len) == BUS_REJ_TRUNCATED)
            truncated++;
    CHECK(truncated == buf.len, "all %zu proper prefixes rejected as truncated (%zu)", buf.len,
          truncated);
    bus_buf_free(&buf);
    bus_val_destroy(&m);
}

static void s_test_json(void)
{
    bus_val_t *m = bus_val_new_map();
    bus_val_map_set_str(m, "s", "a\"b\\c\nd\x01");
    bus_val_map_set_int(m, "n", -5);
    bus_val_t *bin = bus_val_new_bin("\x00\xff", 2);
    bus_val_map_set(m, "b", &bin);
    bus_val_t *bad = bus_val_new_strn("\xff"
                                      "ok",
                                      3);
    bus_val_map_set(m, "u", &bad);
    bus_buf_t buf = {0};
    bus_val_to_json(m, &buf);
    const char *expect =
        "{\"s\":\"a\\\"b\\\\c\\nd\\u0001\",\"n\":-5,\"b\":\"base64:AP8=\",\"u\":\"\\ufffdok\"}";
    CHECK(strcmp((const char *)buf.data, expect) == 0, "JSON escaping: %s", (const char *)buf.data);
    bus_buf_free(&buf);
    bus_val_destroy(&m);
}

/*  One pass picks every named field; absent names and non-maps give NULL. */
static void s_test_pick(void)
{
    bus_val_t *m = bus_val_new_map();
    bus_val_map_set_int(m, "qty", 3);
    bus_val_map_set_str(m, "sku", "RICE5");
    bus_val_map_set_int(m, "amount", 4990);
    static const char *const names[] = {"sku", "amount", "missing", "qty"};
    const bus_val_t *v[4];
    bus_val_map_pick(m, names, 4, v);
    int64_t qty = 0, amount = 0;
    bus_val_get_int(v[3], &qty);
    bus_val_get_int(v[1], &amount);
    CHECK(v[0] && strcmp(bus_val_get_str(v[0], NULL), "RICE5") == 0 && amount == 4990 && !v[2] && qty == 3,
          "pick finds each named field and NULL for an absent one");
    bus_val_map_pick(bus_val_map_get(m, "qty"), names, 4, v);
    CHECK(!v[0] && !v[1] && !v[2] && !v[3], "pick on a value that is not a map gives NULLs");
    bus_val_destroy(&m);
}

int main(void)
{
    s_test_ints();
    s_test_strings();
    s_test_containers();
    s_test_siphash();
    s_test_big_maps();
    s_test_index_threshold();
    s_test_take();
    s_test_hostile();
    s_test_json();
    s_test_pick();
    return FINISH("test_val");
}
