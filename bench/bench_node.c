/*  =========================================================================
    bench_node - the register's pricing path and sale commit, in process

    posnode prices a scan from its catalog replica without asking the back
    office, so what a cashier waits for is a hash probe, libpos adding the
    line and repricing the whole ticket, and the till building its answer.
    This program builds a replica of ITEMS items (default 100,000, valid
    EAN-13 barcodes) with node_catalog_put and measures, per scan of a
    random barcode:
      node.lookup_price_*_us  node_catalog_lookup + pos_ticket_add_line +
                              pos_ticket_compute on a libpos ticket alone;
      node.scan_to_price_*_us node_till_command("scan CODE") on a real till
                              (cashier logged in, journal on disk), the
                              answer map (the whole ticket) built and freed;
      node.scan_json_*_us     that answer encoded as JSON, as posnode does
                              before writing it to the socket.
    Tickets are closed every LINES scans (default 20, a large basket), so the
    figures are for tickets of 1..LINES lines; the till's are completed with
    `pay cash`, which appends the sale to the journal and fdatasync()s it
    before answering: node.till_pay_*_ms is that, in process. The journal
    lives in a temporary directory under DIR (the build tree: a real disk,
    not tmpfs), removed at the end. node.journal_read_first/again_*_us
    read that journal back with node_journal_reader_read, record by record,
    twice: the uplink reads every record once to index it and once more for
    each upload, and every read checks the record's signature.
    Every lookup is checked, so a broken catalog fails the run instead of
    reporting a fast wrong answer. Prints `name: value` lines.
    Arguments: bench_node DIR [ITEMS [SCANS [LINES]]] (defaults 100000,
    20000, 20).
    =========================================================================
*/
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bus/val.h>
#include <node/cashier.h>
#include <node/catalog.h>
#include <node/config.h>
#include <node/journal.h>
#include <node/key.h>
#include <node/till.h>
#include <pos/ticket.h>

#define S_DEFAULT_ITEMS 100000
#define S_DEFAULT_SCANS 20000
#define S_DEFAULT_LINES 20
#define S_BARCODE_LEN   13
#define S_PATH_MAX      4096
#define S_PIN           "1111"

typedef struct {
    char sku[16];
    char barcode[S_BARCODE_LEN + 1];
} s_code_t;

static int64_t s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*  xorshift64: the same scan order every run, no libc state. */
static uint64_t s_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/*  An EAN-13 "690" + 9 digits of i + its check digit, the way a supplier's barcode reads. */
static void s_ean13(size_t i, char out[S_BARCODE_LEN + 1])
{
    snprintf(out, S_BARCODE_LEN, "690%09zu", i);
    int sum = 0;
    for (int k = 0; k < 12; k++)
        sum += (out[k] - '0') * (k % 2 ? 3 : 1);
    out[12] = (char)('0' + (10 - sum % 10) % 10);
    out[13] = '\0';
}

/*  A catalog of n items SKU000000.. with barcodes; codes gets each item's SKU and barcode.
    NULL (after saying why) when an item is refused. */
static node_catalog_t *s_catalog_new(size_t n, s_code_t *codes)
{
    node_catalog_t *cat = node_catalog_new();
    for (size_t i = 0; cat && i < n; i++) {
        char name[48];
        snprintf(codes[i].sku, sizeof(codes[i].sku), "SKU%06zu", i);
        s_ean13(i, codes[i].barcode);
        snprintf(name, sizeof(name), "Bench item %zu", i);
        node_catalog_item_t item = {.sku = codes[i].sku,
                                    .barcode = codes[i].barcode,
                                    .name = name,
                                    .unit = "pcs",
                                    .category = "bench",
                                    .price = 100 + (int64_t)(i % 9900),
                                    .tax_rate_bp = i % 3 ? 1300 : 900,
                                    .active = true};
        if (node_catalog_put(cat, &item) != 0) {
            fprintf(stderr, "bench_node: item %zu refused: %s\n", i, node_catalog_errstr(cat));
            node_catalog_destroy(&cat);
        }
    }
    if (cat)
        node_catalog_set_version(cat, 1);
    return cat;
}

/*  The answer's "ok". */
static bool s_ok(const bus_val_t *reply)
{
    bool ok = false;
    return reply && bus_val_map_get_bool(reply, "ok", &ok) && ok;
}

static int s_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/*  Sorts ns[0..n-1] and prints NAME_p50/p99/max in the unit (divisor from ns, its suffix). */
static void s_print(const char *name, int64_t *ns, size_t n, double div, const char *unit)
{
    if (n == 0)
        return;
    qsort(ns, n, sizeof(*ns), s_cmp);
    printf("%s_p50_%s: %.1f\n", name, unit, (double)ns[n / 2] / div);
    printf("%s_p99_%s: %.1f\n", name, unit, (double)ns[n * 99 / 100] / div);
    printf("%s_max_%s: %.1f\n", name, unit, (double)ns[n - 1] / div);
}

/*  Lookup + add + compute on a libpos ticket alone; 0, or -1 if a scan went wrong. */
static int s_bench_lookup(const node_catalog_t *cat, const s_code_t *codes, size_t n, size_t scans,
                          int lines, int64_t *ns)
{
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    pos_ticket_t *t = NULL;
    int rc = 0;
    for (size_t s = 0; s < scans && rc == 0; s++) {
        if (s % (size_t)lines == 0) {
            pos_ticket_destroy(&t);
            if (!(t = pos_ticket_new()))
                return -1;
        }
        const s_code_t *want = &codes[s_rand(&rng) % n];
        int64_t t0 = s_now_ns();
        node_catalog_code_t what;
        const node_catalog_item_t *ci = node_catalog_lookup(cat, want->barcode, &what);
        pos_item_t item;
        int index = -1;
        if (ci)
            node_catalog_to_pos(ci, &item);
        pos_err_t e = ci ? pos_ticket_add_line(t, &item, 1, &index) : POS_ELIMIT;
        if (e == POS_OK)
            e = pos_ticket_compute(t);
        ns[s] = s_now_ns() - t0;
        if (!ci || strcmp(ci->sku, want->sku) != 0 || e != POS_OK) {
            fprintf(stderr, "bench_node: scan of %s went wrong\n", want->barcode);
            rc = -1;
        }
    }
    pos_ticket_destroy(&t);
    return rc;
}

/*  A till on a journal in dir with cashier ann (PIN S_PIN) logged in. NULL after saying why. */
static node_till_t *s_till_new(const char *dir, node_session_t *session, node_key_t **key)
{
    char path[S_PATH_MAX], why[NODE_TILL_WHY_MAX];
    snprintf(path, sizeof(path), "%s/journal.key", dir);
    if (node_key_generate(path) != 0 || !(*key = node_key_load(path))) {
        fprintf(stderr, "bench_node: cannot make the journal key %s\n", path);
        return NULL;
    }
    snprintf(path, sizeof(path), "%s/journal", dir);
    node_till_t *till = node_till_open(path, *key, "S1", "R01", session, NULL, why, sizeof(why));
    if (!till) {
        fprintf(stderr, "bench_node: %s\n", why);
        return NULL;
    }
    static node_config_t cfg; /* large: promotion tables */
    node_cashier_t ann = {.id = "ann",
                          .name = "Ann",
                          .role = NODE_ROLE_CASHIER,
                          .permissions = NODE_PERM_ROLE,
                          .active = true};
    node_config_init(&cfg);
    cfg.version = 1;
    cfg.cashiers = &ann;
    cfg.ncashiers = 1;
    bus_val_t *r = NULL;
    if (node_pin_hash(S_PIN, ann.pin_hash, sizeof(ann.pin_hash)) != 0 ||
        node_till_set_config(till, &cfg, why, sizeof(why)) != 0 ||
        !(r = node_till_command(till, "login ann " S_PIN)) || !s_ok(r)) {
        fprintf(stderr, "bench_node: cannot log the cashier in: %s\n", why);
        node_till_destroy(&till);
    }
    bus_val_destroy(&r);
    return till;
}

/*  Scans through node_till_command, `pay cash` every lines scans. scan_ns and json_ns get one
    figure per scan, pay_ns one per sale (*sales of them). 0, or -1 if a command failed. */
static int s_bench_till(node_till_t *till, const s_code_t *codes, size_t n, size_t scans, int lines,
                        int64_t *scan_ns, int64_t *json_ns, int64_t *pay_ns, size_t *sales)
{
    uint64_t rng = 0x2545f4914f6cdd1dULL;
    char line[64];
    *sales = 0;
    for (size_t s = 0; s < scans; s++) {
        const s_code_t *want = &codes[s_rand(&rng) % n];
        snprintf(line, sizeof(line), "scan %s", want->barcode);
        int64_t t0 = s_now_ns();
        bus_val_t *r = node_till_command(till, line);
        int64_t t1 = s_now_ns();
        bus_buf_t buf = {0};
        int enc = r ? bus_val_to_json(r, &buf) : -1;
        scan_ns[s] = t1 - t0;
        json_ns[s] = s_now_ns() - t1;
        bus_buf_free(&buf);
        bool ok = enc == 0 && s_ok(r);
        bus_val_destroy(&r);
        if (!ok) {
            fprintf(stderr, "bench_node: %s refused\n", line);
            return -1;
        }
        if ((s + 1) % (size_t)lines == 0 || s + 1 == scans) {
            t0 = s_now_ns();
            r = node_till_command(till, "pay cash");
            pay_ns[(*sales)++] = s_now_ns() - t0;
            ok = r && s_ok(r) && bus_val_map_get_str(r, "sale_id") != NULL;
            bus_val_destroy(&r);
            if (!ok) {
                fprintf(stderr, "bench_node: pay cash after scan %zu refused\n", s + 1);
                return -1;
            }
        }
    }
    return 0;
}

/*  What the uplink pays per record before an upload: node_journal_reader_read of every record
    of the till's journal in order, first when the reader has not seen it (it indexes and checks
    the record, then reads it) and then again (a read alone, as each upload does). 0 or -1. */
static int s_bench_reader(const char *dir, const node_key_t *key, int64_t *first_ns,
                          int64_t *again_ns, size_t *n)
{
    char path[S_PATH_MAX];
    snprintf(path, sizeof(path), "%s/journal", dir);
    node_journal_reader_t *reader = node_journal_reader_open(path, key);
    if (!reader)
        return -1;
    int rc = 0;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        int64_t *ns = pass ? again_ns : first_ns;
        size_t k = 0;
        for (uint64_t seq = 1; k < *n; seq++, k++) {
            node_journal_entry_t e;
            int64_t t0 = s_now_ns();
            int r = node_journal_reader_read(reader, seq, &e);
            ns[k] = s_now_ns() - t0;
            node_journal_entry_clear(&e);
            if (r != 0) {
                if (errno != ERANGE || k == 0)
                    rc = -1;
                break;
            }
        }
        *n = k;
    }
    node_journal_reader_destroy(&reader);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_node DIR [ITEMS [SCANS [LINES]]]\n");
        return 2;
    }
    size_t n = argc > 2 ? strtoul(argv[2], NULL, 10) : S_DEFAULT_ITEMS;
    size_t scans = argc > 3 ? strtoul(argv[3], NULL, 10) : S_DEFAULT_SCANS;
    int lines = argc > 4 ? atoi(argv[4]) : S_DEFAULT_LINES;
    if (n < 1 || scans < 1 || lines < 1) {
        fprintf(stderr, "bench_node: ITEMS, SCANS and LINES must be >= 1\n");
        return 2;
    }
    char dir[S_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/bench-node-XXXXXX", argv[1]);
    if (!mkdtemp(dir)) {
        perror("bench_node: mkdtemp");
        return 1;
    }
    int rc = 1;
    s_code_t *codes = calloc(n, sizeof(*codes));
    int64_t *scan_ns = calloc(scans, sizeof(int64_t)), *json_ns = calloc(scans, sizeof(int64_t));
    int64_t *pay_ns = calloc(scans / (size_t)lines + 1, sizeof(int64_t));
    node_session_t *session = node_session_new(NULL, NULL);
    node_key_t *key = NULL;
    node_till_t *till = NULL;
    node_catalog_t *cat = NULL;
    if (!codes || !scan_ns || !json_ns || !pay_ns || !session)
        goto out_free;
    int64_t t0 = s_now_ns();
    cat = s_catalog_new(n, codes);
    if (!cat)
        goto out_free;
    printf("node.catalog_items: %zu\n", node_catalog_count(cat));
    printf("node.catalog_build_ms: %.0f\n", (double)(s_now_ns() - t0) / 1e6);

    if (s_bench_lookup(cat, codes, n, scans, lines, scan_ns) != 0)
        goto out_free;
    s_print("node.lookup_price", scan_ns, scans, 1e3, "us");

    till = s_till_new(dir, session, &key);
    if (!till)
        goto out_free;
    node_till_set_catalog(till, cat);
    size_t sales = 0;
    if (s_bench_till(till, codes, n, scans, lines, scan_ns, json_ns, pay_ns, &sales) != 0)
        goto out_free;
    printf("node.ticket_lines: %d\n", lines);
    s_print("node.scan_to_price", scan_ns, scans, 1e3, "us");
    s_print("node.scan_json", json_ns, scans, 1e3, "us");
    printf("node.till_sales: %zu\n", sales);
    s_print("node.till_pay", pay_ns, sales, 1e6, "ms");
    size_t records = scans; /* the journal holds fewer: one sale and a few audits per ticket */
    if (s_bench_reader(dir, key, scan_ns, json_ns, &records) != 0) {
        fprintf(stderr, "bench_node: cannot read the journal back\n");
        goto out_free;
    }
    printf("node.journal_records: %zu\n", records);
    s_print("node.journal_read_first", scan_ns, records, 1e3, "us");
    s_print("node.journal_read_again", json_ns, records, 1e3, "us");
    rc = 0;
out_free:
    node_till_destroy(&till);
    node_catalog_destroy(&cat);
    node_session_destroy(&session);
    node_key_destroy(&key);
    free(codes);
    free(scan_ns);
    free(json_ns);
    free(pay_ns);
    char path[S_PATH_MAX + 32];
    static const char *const files[] = {"journal", "journal.key", "journal.pub", "journal.torn"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    if (rmdir(dir) != 0)
        fprintf(stderr, "bench_node: %s left behind (not empty)\n", dir);
    return rc;
}
