/*  test_catalog - the register's catalog replica, offline: a 100k-item catalog built, every
    item found by barcode and by SKU, scale labels, unknown codes; saved and loaded back equal;
    truncated, damaged, foreign and empty files refused with a reason while the catalog in use
    keeps selling. Prints node.scan_to_price_p99_us and node.catalog_100k_rss_mb (measurements,
    not assertions: a sanitizer build is several times slower and larger than a release one). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "node/catalog.h"
#include "testutil.h"

#define T_ITEMS   100000
#define T_LOOKUPS 100000
#define T_HEAD    56 /* the file header: magic 8, format 4, reserved 4, body length 8, SHA-256 */

static char t_dir[PATH_MAX];
static size_t t_count; /* items of the catalog in use while files are refused */

/*  The EAN-13 of item n: 690 + n in 9 digits + check digit. */
static void t_barcode(int n, char *out)
{
    snprintf(out, 14, "690%09d", n);
    out[12] = (char)('0' + pos_gtin_check_digit(out, 12));
    out[13] = '\0';
}

static void t_sku(int n, char *out, size_t size)
{
    snprintf(out, size, "SKU%06d", n);
}

static int64_t t_price(int n)
{
    return 100 + (int64_t)n * 7 % 99900;
}

/*  Put generated item n into cat. */
static int t_put(node_catalog_t *cat, int n)
{
    char sku[16], barcode[16], name[64], category[16];
    t_sku(n, sku, sizeof(sku));
    t_barcode(n, barcode);
    snprintf(name, sizeof(name), "商品 %d 号", n);
    snprintf(category, sizeof(category), "cat%d", n % 50);
    node_catalog_item_t item = {.sku = sku,
                                .barcode = barcode,
                                .name = name,
                                .unit = n % 10 == 0 ? "kg" : "pcs",
                                .category = category,
                                .price = t_price(n),
                                .member_price = n % 5 == 0 ? t_price(n) - 50 : 0,
                                .tax_rate_bp = n % 2 ? 1300 : 900,
                                .active = n % 97 != 0};
    return node_catalog_put(cat, &item);
}

/*  Resident memory in kB from /proc/self/status, or -1. */
static long t_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static int64_t t_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int t_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static bool t_item_equal(const node_catalog_item_t *a, const node_catalog_item_t *b)
{
    return a && b && strcmp(a->sku, b->sku) == 0 && strcmp(a->barcode, b->barcode) == 0 &&
           strcmp(a->name, b->name) == 0 && strcmp(a->unit, b->unit) == 0 &&
           strcmp(a->category, b->category) == 0 && a->price == b->price &&
           a->member_price == b->member_price && a->tax_rate_bp == b->tax_rate_bp &&
           a->active == b->active;
}

/*  Read the file at path whole (malloc'd) into *data; its size, or -1. */
static long t_slurp(const char *path, uint8_t **data)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    *data = malloc((size_t)size + 1);
    long got = (long)fread(*data, 1, (size_t)size, f);
    fclose(f);
    return got == size ? size : -1;
}

static void t_write(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, size, f);
        fclose(f);
    }
}

/*  Load path into cat, which holds the 100k catalog: it must be refused with errstr containing
    expect, and cat must still price item 4242 and hold every item. */
static void t_refused(node_catalog_t *cat, const char *path, const char *expect, const char *what)
{
    int rc = node_catalog_load(cat, path);
    const char *why = node_catalog_errstr(cat);
    CHECK(rc == -1 && strstr(why, expect), "%s: refused, saying '%s' (got %d: %s)", what, expect,
          rc, why);
    char barcode[16];
    t_barcode(4242, barcode);
    const node_catalog_item_t *item = node_catalog_lookup(cat, barcode, NULL);
    CHECK(node_catalog_count(cat) == t_count && item && item->price == t_price(4242),
          "%s: the catalog in use still holds %zu items and prices %s", what, t_count, barcode);
}

static void t_lookups(node_catalog_t *cat)
{
    int missing = 0, wrong = 0;
    for (int n = 0; n < T_ITEMS; n++) {
        char sku[16], barcode[16];
        t_sku(n, sku, sizeof(sku));
        t_barcode(n, barcode);
        node_catalog_code_t what;
        const node_catalog_item_t *a = node_catalog_lookup(cat, barcode, &what);
        const node_catalog_item_t *b = node_catalog_lookup(cat, sku, NULL);
        if (!a || !b)
            missing++;
        else if (a != b || strcmp(a->sku, sku) != 0 || a->price != t_price(n) ||
                 what.kind != NODE_CATALOG_PLAIN)
            wrong++;
    }
    CHECK(missing == 0 && wrong == 0,
          "every one of %d items found by barcode and by SKU at its price (missing %d, wrong %d)",
          T_ITEMS, missing, wrong);
}

static void t_labels(node_catalog_t *cat)
{
    node_catalog_item_t loose = {.sku = "12345",
                                 .barcode = "",
                                 .name = "红富士苹果",
                                 .unit = "kg",
                                 .category = "fruit",
                                 .price = 1280,
                                 .tax_rate_bp = 900,
                                 .active = true};
    CHECK(node_catalog_put(cat, &loose) == 0, "a weighed item without barcode is added");
    loose.sku = "1234";
    loose.name = "香蕉";
    loose.price = 698;
    CHECK(node_catalog_put(cat, &loose) == 0, "a second one, SKU 1234");

    /* the default layout: PPIIIIIVVVVVC, 20-29, price labels */
    node_catalog_code_t what;
    const node_catalog_item_t *item = node_catalog_lookup(cat, "2012345012349", &what);
    CHECK(item && strcmp(item->sku, "12345") == 0 && what.kind == NODE_CATALOG_LABEL_PRICE &&
              what.value == 1234,
          "price label 2012345012349: item 12345, 12.34 printed (got %s, kind %d, %" PRId64 ")",
          item ? item->sku : "none", (int)what.kind, what.value);
    CHECK(!node_catalog_lookup(cat, "2012345012348", &what) && what.kind == NODE_CATALOG_PLAIN,
          "a label with a wrong check digit is not found");
    char unknown[16] = "209999901234";
    unknown[12] = (char)('0' + pos_gtin_check_digit(unknown, 12));
    unknown[13] = '\0';
    CHECK(pos_ean13_check(unknown) == POS_OK && !node_catalog_lookup(cat, unknown, NULL),
          "a good label of an unknown item (%s) is not found", unknown);

    /* a weight layout: item digits with leading zeros name SKU 1234 */
    pos_label_layout_t weight;
    CHECK(pos_label_layout_init(&weight, "PIIIIIIVVVVVC", "2", POS_LABEL_WEIGHT) == POS_OK,
          "weight layout");
    node_catalog_set_label_layout(cat, &weight);
    item = node_catalog_lookup(cat, "2001234015004", &what);
    CHECK(item && strcmp(item->sku, "1234") == 0 && what.kind == NODE_CATALOG_LABEL_WEIGHT &&
              what.value == 1500,
          "weight label 2001234015004: item 001234 = SKU 1234, 1500 g (got %s, %" PRId64 ")",
          item ? item->sku : "none", what.value);
    pos_item_t pos;
    node_catalog_to_pos(item, &pos);
    CHECK(pos.unit == POS_UNIT_KG && pos.price == 698 && strcmp(pos.name, "香蕉") == 0,
          "to_pos: a kg item at 6.98 per kg");

    pos_label_layout_t price;
    pos_label_layout_init(&price, "PPIIIIIVVVVVC", NULL, POS_LABEL_PRICE);
    node_catalog_set_label_layout(cat, &price);
}

static void t_unknown(node_catalog_t *cat)
{
    char longer[64];
    memset(longer, '1', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    CHECK(!node_catalog_lookup(cat, "6909999999996", NULL) && !node_catalog_lookup(cat, "", NULL) &&
              !node_catalog_lookup(cat, NULL, NULL) && !node_catalog_lookup(cat, longer, NULL) &&
              !node_catalog_lookup(cat, "SKU", NULL) &&
              !node_catalog_lookup(cat, "sku000001", NULL),
          "unknown, empty, NULL, 63-digit and near-miss codes are not found");
}

static void t_put_rules(node_catalog_t *cat)
{
    node_catalog_item_t bad = {.sku = "BAD SKU",
                               .barcode = "",
                               .name = "x",
                               .unit = "pcs",
                               .category = "c",
                               .price = 1,
                               .tax_rate_bp = 0,
                               .active = true};
    CHECK(node_catalog_put(cat, &bad) == -1 && strstr(node_catalog_errstr(cat), "sku"),
          "a SKU with a space is refused (%s)", node_catalog_errstr(cat));
    bad.sku = "NEG";
    bad.price = -1;
    CHECK(node_catalog_put(cat, &bad) == -1 && strstr(node_catalog_errstr(cat), "negative"),
          "a negative price is refused (%s)", node_catalog_errstr(cat));
    bad.price = 1;
    bad.tax_rate_bp = 10001;
    CHECK(node_catalog_put(cat, &bad) == -1, "a tax rate above 100%% is refused");
    CHECK(!node_catalog_lookup(cat, "NEG", NULL), "nothing refused is in the catalog");

    /* replace an item with a new price and barcode: the old barcode no longer finds it */
    node_catalog_item_t item = *node_catalog_lookup(cat, "SKU000007", NULL);
    char old_barcode[16];
    snprintf(old_barcode, sizeof(old_barcode), "%s", item.barcode);
    item.barcode = "6912345678904";
    item.price = 99;
    CHECK(node_catalog_put(cat, &item) == 0, "an item is replaced");
    const node_catalog_item_t *now = node_catalog_lookup(cat, "6912345678904", NULL);
    CHECK(now && now->price == 99 && strcmp(now->sku, "SKU000007") == 0 &&
              !node_catalog_lookup(cat, old_barcode, NULL),
          "found under its new barcode at its new price, not under the old one");
}

/*  One item whose barcode is replaced many times more than the index has slots: every old
    barcode leaves a slot behind, which the index must reclaim rather than fill up. */
static void t_barcode_churn(void)
{
    node_catalog_t *cat = node_catalog_new();
    node_catalog_item_t item = {
        .sku = "CHURN", .name = "x", .unit = "pcs", .category = "c", .price = 1, .active = true};
    char barcode[16];
    int failed = 0;
    for (int n = 0; n < 20000; n++) {
        t_barcode(n, barcode);
        item.barcode = barcode;
        failed += node_catalog_put(cat, &item) != 0;
    }
    const node_catalog_item_t *now = node_catalog_lookup(cat, barcode, NULL);
    t_barcode(19998, barcode);
    CHECK(failed == 0 && node_catalog_count(cat) == 1 && now &&
              !node_catalog_lookup(cat, barcode, NULL),
          "20000 barcode changes of one item: found under the last only (%d failed)", failed);
    node_catalog_destroy(&cat);
}

static void t_measure(node_catalog_t *cat)
{
    int64_t *ns = malloc(sizeof(*ns) * T_LOOKUPS);
    uint64_t x = 88172645463325252ULL;
    int found = 0;
    for (int i = 0; i < T_LOOKUPS; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift: no libc state */
        char code[16];
        int n = (int)(x % T_ITEMS);
        if (i % 4 == 3)
            t_sku(n, code, sizeof(code));
        else
            t_barcode(n, code);
        int64_t t0 = t_ns();
        const node_catalog_item_t *item = node_catalog_lookup(cat, code, NULL);
        pos_item_t pos;
        if (item)
            node_catalog_to_pos(item, &pos);
        ns[i] = t_ns() - t0;
        found += item != NULL;
    }
    qsort(ns, T_LOOKUPS, sizeof(*ns), t_cmp_i64);
    printf("node.scan_to_price_p50_us: %.2f\n", (double)ns[T_LOOKUPS / 2] / 1000.0);
    printf("node.scan_to_price_p99_us: %.2f\n", (double)ns[T_LOOKUPS * 99 / 100] / 1000.0);
    CHECK_EQ(found, T_LOOKUPS, "every random lookup found its item");
    free(ns);
}

/*  A file with a valid header and checksum whose first record claims 4 GiB. */
static void t_huge_record(node_catalog_t *cat)
{
    uint8_t file[T_HEAD + 8] = {0};
    memcpy(file, "PBCATLG1", 8);
    file[11] = 1; /* format 1 */
    file[23] = 8; /* 8 body bytes */
    memset(file + T_HEAD, 0xff, 8);
    SHA256(file + T_HEAD, 8, file + 24);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/huge.cat", t_dir);
    t_write(path, file, sizeof(file));
    t_refused(cat, path, "record of 4294967295 bytes", "a record length of 4 GiB");
}

static void t_files(node_catalog_t *cat)
{
    char path[PATH_MAX], bad[PATH_MAX];
    snprintf(path, sizeof(path), "%s/catalog.cat", t_dir);
    snprintf(bad, sizeof(bad), "%s/bad.cat", t_dir);
    node_catalog_set_version(cat, 41);
    int64_t t0 = t_ns();
    CHECK(node_catalog_save(cat, path) == 0, "100k items saved (%s)", node_catalog_errstr(cat));
    printf("node.catalog_100k_save_ms: %.1f\n", (double)(t_ns() - t0) / 1e6);
    struct stat st;
    CHECK(stat(path, &st) == 0 && access(path, F_OK) == 0, "the file is there");
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0, "no PATH.tmp left behind");
    printf("node.catalog_100k_file_mb: %.1f\n", (double)st.st_size / 1048576.0);

    node_catalog_t *copy = node_catalog_new();
    t0 = t_ns();
    CHECK(node_catalog_load(copy, path) == 0, "loaded back (%s)", node_catalog_errstr(copy));
    printf("node.catalog_100k_load_ms: %.1f\n", (double)(t_ns() - t0) / 1e6);
    size_t differ = 0;
    for (size_t i = 0; i < node_catalog_count(cat); i++) {
        const node_catalog_item_t *a = node_catalog_item(cat, i);
        if (!t_item_equal(a, node_catalog_lookup(copy, a->sku, NULL)))
            differ++;
    }
    CHECK(node_catalog_count(copy) == node_catalog_count(cat) && differ == 0 &&
              node_catalog_version(copy) == 41,
          "the copy has every item, equal, and version 41 (%zu items, %zu differ, version %" PRId64
          ")",
          node_catalog_count(copy), differ, node_catalog_version(copy));
    node_catalog_code_t what;
    const node_catalog_item_t *label = node_catalog_lookup(copy, "2012345012349", &what);
    CHECK(label && what.kind == NODE_CATALOG_LABEL_PRICE, "the copy reads scale labels too");
    node_catalog_destroy(&copy);

    uint8_t *data = NULL;
    long size = t_slurp(path, &data);
    CHECK(size > T_HEAD, "the file read back (%ld bytes)", size);
    if (size <= T_HEAD)
        return;
    /* the catalog under test now holds exactly T_ITEMS: load the saved one back into it */
    CHECK(node_catalog_load(cat, path) == 0, "load replaces the catalog in use");
    t_count = node_catalog_count(cat);

    t_write(bad, "", 0);
    t_refused(cat, bad, "empty file", "an empty file");
    t_write(bad, data, 20);
    t_refused(cat, bad, "truncated inside the header", "a file cut inside its header");
    t_write(bad, data, (size_t)size / 2);
    t_refused(cat, bad, "truncated", "a file cut in half");
    t_write(bad, data, (size_t)size - 1);
    t_refused(cat, bad, "truncated", "a file one byte short");
    data[size / 3] ^= 0x01;
    t_write(bad, data, (size_t)size);
    t_refused(cat, bad, "damaged", "a file with one bit flipped in an item");
    data[size / 3] ^= 0x01;
    data[T_HEAD + 40] ^= 0x80;
    t_write(bad, data, (size_t)size);
    t_refused(cat, bad, "damaged", "a file with one bit flipped in the meta record");
    data[T_HEAD + 40] ^= 0x80;
    data[11] = 2;
    t_write(bad, data, (size_t)size);
    t_refused(cat, bad, "format 2", "a file of format 2");
    data[11] = 1;
    data[0] = 'X';
    t_write(bad, data, (size_t)size);
    t_refused(cat, bad, "not a catalog replica", "a file without the magic");
    data[0] = 'P';
    t_write(bad, "sku,barcode,name\nA,1,x\n", 23);
    t_refused(cat, bad, "not a catalog replica", "a CSV file");
    snprintf(bad, sizeof(bad), "%s/absent.cat", t_dir);
    t_refused(cat, bad, "No such file", "a missing file");
    t_huge_record(cat);

    /* the bytes as saved still load: the refusals above changed nothing on disk */
    snprintf(bad, sizeof(bad), "%s/bad.cat", t_dir);
    t_write(bad, data, (size_t)size);
    CHECK(node_catalog_load(cat, bad) == 0, "the restored bytes load again");
    free(data);

    snprintf(bad, sizeof(bad), "%s/no/such/dir/catalog.cat", t_dir);
    CHECK(node_catalog_save(cat, bad) == -1 && strstr(node_catalog_errstr(cat), "cannot create"),
          "save into a missing directory fails with a reason (%s)", node_catalog_errstr(cat));
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(t_dir, sizeof(t_dir), "/tmp/posbus-catalog-XXXXXX");
    if (!mkdtemp(t_dir)) {
        perror("mkdtemp");
        return 2;
    }
    node_catalog_t *cat = node_catalog_new();
    CHECK(cat && node_catalog_count(cat) == 0 && node_catalog_version(cat) == 0,
          "a new catalog is empty, version 0");
    CHECK(!node_catalog_lookup(cat, "6900000000017", NULL), "an empty catalog finds nothing");

    long rss0 = t_rss_kb();
    int64_t t0 = t_ns();
    int failed = 0;
    for (int n = 0; n < T_ITEMS; n++)
        failed += t_put(cat, n) != 0;
    printf("node.catalog_100k_build_ms: %.1f\n", (double)(t_ns() - t0) / 1e6);
    long rss1 = t_rss_kb();
    printf("node.catalog_100k_rss_mb: %.1f\n", (double)(rss1 - rss0) / 1024.0);
    printf("node.rss_mb: %.1f\n", (double)rss1 / 1024.0);
    CHECK(failed == 0 && node_catalog_count(cat) == T_ITEMS, "%d items put (%d failed: %s)",
          T_ITEMS, failed, node_catalog_errstr(cat));

    t_lookups(cat);
    t_unknown(cat);
    t_measure(cat);

    node_catalog_set_version(cat, 7);
    CHECK(node_catalog_stale(cat, 8) && !node_catalog_stale(cat, 7) && !node_catalog_stale(cat, 3),
          "stale only for a version above 7");

    t_put_rules(cat);
    t_barcode_churn();
    t_labels(cat);
    t_files(cat);

    node_catalog_destroy(&cat);
    node_catalog_destroy(&cat);
    CHECK(cat == NULL, "destroy is NULL-safe and nulls the pointer");
    t_remove_dir(t_dir);
    return FINISH("test_catalog");
}
