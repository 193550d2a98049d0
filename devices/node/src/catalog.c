/*  =========================================================================
    catalog.c - the register's catalog replica

    Why it looks like this. A register scans an item every second or two
    and must price it at once, with or without the back office; a store's
    catalog holds up to about 100k items that change a few times a day. So
    the whole catalog lives in memory and a scan is one or two hash probes:
    items sit in one array (40-odd bytes each plus their strings), their
    strings in 64 KiB chunks that never move, and two open-addressing
    indexes of 32-bit item numbers (by SKU, by barcode) kept at most half
    full. 100k items take about 15 MB. Lookups compare the key stored in
    the item, so an index slot left behind by a replaced barcode is only a
    wasted probe, and nothing is ever deleted from an index.

    Everything that replaces the catalog (sync, load) builds a second table
    and swaps it in whole, so a sync that fails on page 57 or a damaged
    file never leaves a half catalog: the register keeps selling at the
    prices it had. That costs twice the memory for the moment of the swap.

    The file is a fixed header (magic, format, body length, SHA-256 of the
    body) and a body of length-prefixed MessagePack records: one meta map,
    then one map per item. Records rather than one big MessagePack array
    because decoding one tree of 100k maps would take several times the
    catalog's memory; this way a load decodes one small item at a time
    with bus_val's limits set to a record's size. The checksum catches a
    flipped byte that would still decode (a price digit), the length a
    truncation, and every length is checked against the bytes that remain
    before it is used, so no file can make load allocate more than the
    file's own size. docs/catalog-replica.md has the bytes.
    =========================================================================
*/
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "node/catalog.h"
#include "node/file.h"

#define S_MAGIC          "PBCATLG1" /* posbus catalog replica */
#define S_MAGIC_SIZE     8
#define S_HEAD_SIZE      (S_MAGIC_SIZE + 4 + 4 + 8 + SHA256_DIGEST_LENGTH)
#define S_RECORD_MAX     4096 /* an encoded item is far below this (names <= 480 bytes) */
#define S_FILE_MAX       ((uint64_t)1 << 30)
#define S_CHUNK_SIZE     65536
#define S_SLOTS_MIN      1024
#define S_TAX_BP_MAX     10000
#define S_SNAPSHOT_PAGE  1000 /* items asked for per catalog.snapshot page (inventory's maximum) */
#define S_SERVICE        "inventory"
#define S_DEFAULT_LAYOUT "PPIIIIIVVVVVC"

/* The fields of an item in a snapshot page and in the file, in the order written. */
enum {
    S_SKU,
    S_BARCODE,
    S_NAME,
    S_PRICE,
    S_TAX,
    S_UNIT,
    S_CATEGORY,
    S_MEMBER,
    S_ACTIVE,
    S_NFIELDS
};
static const char *const s_fields[S_NFIELDS] = {
    "sku", "barcode", "name", "price", "tax_rate_bp", "unit", "category", "member_price", "active"};

typedef struct s_chunk {
    struct s_chunk *next;
    size_t used, size;
    char data[];
} s_chunk_t;

typedef struct {
    node_catalog_item_t *items;
    size_t count, cap;
    uint32_t *by_sku, *by_code; /* item number + 1; 0 = empty slot */
    size_t slots;               /* a power of two, at least twice count and code_used */
    size_t code_used;           /* filled by_code slots: a replaced barcode leaves one behind */
    s_chunk_t *chunks;
    int64_t version;
} s_table_t;

struct node_catalog_t {
    s_table_t *table;
    pos_label_layout_t layout;
    char err[NODE_CATALOG_REASON_MAX];
};

/* ---- errors -------------------------------------------------------------- */

static int s_fail(node_catalog_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int s_fail(node_catalog_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->err, sizeof(self->err), fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- the table ----------------------------------------------------------- */

static void s_table_destroy(s_table_t **self_p)
{
    s_table_t *self = *self_p;
    if (!self)
        return;
    while (self->chunks) {
        s_chunk_t *next = self->chunks->next;
        free(self->chunks);
        self->chunks = next;
    }
    free(self->items);
    free(self->by_sku);
    free(self->by_code);
    free(self);
    *self_p = NULL;
}

static s_table_t *s_table_new(void)
{
    s_table_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->slots = S_SLOTS_MIN;
    self->by_sku = calloc(self->slots, sizeof(*self->by_sku));
    self->by_code = calloc(self->slots, sizeof(*self->by_code));
    if (!self->by_sku || !self->by_code)
        s_table_destroy(&self);
    return self;
}

/*  A copy of s in the table's string chunks, or NULL when out of memory. */
static const char *s_strdup(s_table_t *self, const char *s)
{
    size_t len = strlen(s) + 1;
    s_chunk_t *chunk = self->chunks;
    if (!chunk || chunk->size - chunk->used < len) {
        size_t size = len > S_CHUNK_SIZE ? len : S_CHUNK_SIZE;
        chunk = malloc(sizeof(*chunk) + size);
        if (!chunk)
            return NULL;
        chunk->size = size;
        chunk->used = 0;
        chunk->next = self->chunks;
        self->chunks = chunk;
    }
    char *copy = chunk->data + chunk->used;
    memcpy(copy, s, len);
    chunk->used += len;
    return copy;
}

/*  FNV-1a: short keys, no adversary (the catalog comes from the back office). */
static uint64_t s_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

static const char *s_key(const node_catalog_item_t *item, bool barcode)
{
    return barcode ? item->barcode : item->sku;
}

/*  The number of the item whose SKU (barcode) is key, or -1. */
static long s_find(const s_table_t *self, const char *key, bool barcode)
{
    const uint32_t *index = barcode ? self->by_code : self->by_sku;
    size_t mask = self->slots - 1;
    for (size_t i = s_hash(key) & mask;; i = (i + 1) & mask) {
        uint32_t slot = index[i];
        if (slot == 0)
            return -1;
        if (strcmp(s_key(&self->items[slot - 1], barcode), key) == 0)
            return (long)slot - 1;
    }
}

/*  Index item number n under its SKU (barcode) unless an item is already found under that key
    (a barcode shared by two items: the first one keeps it). The index has a free slot. */
static void s_index(s_table_t *self, size_t n, bool barcode)
{
    uint32_t *index = barcode ? self->by_code : self->by_sku;
    const char *key = s_key(&self->items[n], barcode);
    if (barcode && !*key)
        return;
    size_t mask = self->slots - 1;
    size_t i = s_hash(key) & mask;
    for (; index[i] != 0; i = (i + 1) & mask)
        if (strcmp(s_key(&self->items[index[i] - 1], barcode), key) == 0)
            return;
    index[i] = (uint32_t)n + 1;
    if (barcode)
        self->code_used++;
}

/*  Make room for one more item and one more barcode slot: the item array and, past half full,
    both indexes (rebuilt, which also drops the barcode slots of replaced barcodes). */
static int s_reserve(s_table_t *self)
{
    if (self->count == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 1024;
        node_catalog_item_t *items = realloc(self->items, cap * sizeof(*items));
        if (!items)
            return -1;
        self->items = items;
        self->cap = cap;
    }
    if ((self->count + 1) * 2 <= self->slots && (self->code_used + 1) * 2 <= self->slots)
        return 0;
    /* grow when the items need it; else only drop the slots replaced barcodes left behind */
    size_t slots = (self->count + 1) * 2 > self->slots ? self->slots * 2 : self->slots;
    uint32_t *by_sku = calloc(slots, sizeof(*by_sku));
    uint32_t *by_code = calloc(slots, sizeof(*by_code));
    if (!by_sku || !by_code) {
        free(by_sku);
        free(by_code);
        return -1;
    }
    free(self->by_sku);
    free(self->by_code);
    self->by_sku = by_sku;
    self->by_code = by_code;
    self->slots = slots;
    self->code_used = 0;
    for (size_t n = 0; n < self->count; n++) {
        s_index(self, n, false);
        s_index(self, n, true);
    }
    return 0;
}

static bool s_code_ok(const char *s, bool empty_ok)
{
    size_t len = s ? strlen(s) : 0;
    if (!s || len > NODE_CATALOG_CODE_MAX || (len == 0 && !empty_ok))
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
              *s == '_' || *s == '-' || *s == '.'))
            return false;
    return true;
}

/*  Why item cannot be in a catalog (written into why), or NULL when it can. */
static const char *s_item_why(const node_catalog_item_t *item, char *why, size_t size)
{
    if (!s_code_ok(item->sku, false))
        return "sku: 1-32 letters, digits, '_', '-' or '.'";
    if (!s_code_ok(item->barcode, true))
        snprintf(why, size, "%s: barcode: 0-32 letters, digits, '_', '-' or '.'", item->sku);
    else if (!item->name || strlen(item->name) > POS_NAME_MAX)
        snprintf(why, size, "%s: name: at most %d bytes", item->sku, POS_NAME_MAX);
    else if (!item->unit || strlen(item->unit) > NODE_CATALOG_UNIT_MAX)
        snprintf(why, size, "%s: unit: at most %d bytes", item->sku, NODE_CATALOG_UNIT_MAX);
    else if (!item->category || strlen(item->category) > POS_CATEGORY_MAX)
        snprintf(why, size, "%s: category: at most %d bytes", item->sku, POS_CATEGORY_MAX);
    else if (item->price < 0 || item->member_price < 0)
        snprintf(why, size, "%s: negative price", item->sku);
    else if (item->tax_rate_bp < 0 || item->tax_rate_bp > S_TAX_BP_MAX)
        snprintf(why, size, "%s: tax_rate_bp %d out of 0..%d", item->sku, item->tax_rate_bp,
                 S_TAX_BP_MAX);
    else
        return NULL;
    return why;
}

/*  Add item (checked by the caller), or replace the one with its SKU when replace is set.
    0 with *why NULL, or -1 with *why set: out of memory, too many items, a repeated SKU. */
static int s_table_put(s_table_t *self, const node_catalog_item_t *item, bool replace,
                       const char **why)
{
    long found = s_find(self, item->sku, false);
    if (found >= 0 && !replace) {
        *why = "SKU repeated";
        return -1;
    }
    if (found < 0 && self->count >= NODE_CATALOG_ITEMS_MAX) {
        *why = "more items than NODE_CATALOG_ITEMS_MAX";
        return -1;
    }
    *why = "out of memory";
    if (s_reserve(self) != 0)
        return -1;
    node_catalog_item_t copy = *item;
    copy.barcode = item->barcode ? item->barcode : "";
    if (!(copy.sku = s_strdup(self, item->sku)) || !(copy.barcode = s_strdup(self, copy.barcode)) ||
        !(copy.name = s_strdup(self, item->name)) || !(copy.unit = s_strdup(self, item->unit)) ||
        !(copy.category = s_strdup(self, item->category)))
        return -1;
    size_t n = found >= 0 ? (size_t)found : self->count++;
    self->items[n] = copy;
    if (found < 0)
        s_index(self, n, false);
    s_index(self, n, true);
    *why = NULL;
    return 0;
}

static bool s_item_equal(const node_catalog_item_t *a, const node_catalog_item_t *b)
{
    return strcmp(a->sku, b->sku) == 0 && strcmp(a->barcode, b->barcode) == 0 &&
           strcmp(a->name, b->name) == 0 && strcmp(a->unit, b->unit) == 0 &&
           strcmp(a->category, b->category) == 0 && a->price == b->price &&
           a->member_price == b->member_price && a->tax_rate_bp == b->tax_rate_bp &&
           a->active == b->active;
}

/*  Items of fresh that are not in old, or differ. */
static int64_t s_changes(const s_table_t *old, const s_table_t *fresh)
{
    int64_t changed = 0;
    for (size_t n = 0; n < fresh->count; n++) {
        long at = s_find(old, fresh->items[n].sku, false);
        if (at < 0 || !s_item_equal(&old->items[at], &fresh->items[n]))
            changed++;
    }
    return changed;
}

/*  Read an item from a map with every field of s_fields, typed. The strings are borrowed from
    map. false when a field is missing or of the wrong type (why says which). */
static bool s_item_from_val(const bus_val_t *map, node_catalog_item_t *item, const char **why)
{
    const bus_val_t *v[S_NFIELDS];
    bus_val_map_pick(map, s_fields, S_NFIELDS, v);
    int64_t tax = 0;
    *item = (node_catalog_item_t){0};
    item->sku = bus_val_get_str(v[S_SKU], NULL);
    item->barcode = bus_val_get_str(v[S_BARCODE], NULL);
    item->name = bus_val_get_str(v[S_NAME], NULL);
    item->unit = bus_val_get_str(v[S_UNIT], NULL);
    item->category = bus_val_get_str(v[S_CATEGORY], NULL);
    for (int f = 0; f < S_NFIELDS; f++) {
        bool ok = f == S_PRICE    ? bus_val_get_int(v[f], &item->price)
                  : f == S_MEMBER ? bus_val_get_int(v[f], &item->member_price)
                  : f == S_TAX    ? bus_val_get_int(v[f], &tax)
                  : f == S_ACTIVE ? bus_val_get_bool(v[f], &item->active)
                                  : bus_val_get_str(v[f], NULL) != NULL;
        if (!ok) {
            *why = s_fields[f];
            return false;
        }
    }
    if (tax < 0 || tax > S_TAX_BP_MAX) {
        *why = "tax_rate_bp";
        return false;
    }
    item->tax_rate_bp = (int)tax;
    return true;
}

/* ---- the catalog --------------------------------------------------------- */

node_catalog_t *node_catalog_new(void)
{
    node_catalog_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->table = s_table_new();
    if (!self->table) {
        free(self);
        return NULL;
    }
    pos_label_layout_init(&self->layout, S_DEFAULT_LAYOUT, NULL, POS_LABEL_PRICE);
    return self;
}

void node_catalog_destroy(node_catalog_t **self_p)
{
    node_catalog_t *self = *self_p;
    if (!self)
        return;
    s_table_destroy(&self->table);
    free(self);
    *self_p = NULL;
}

void node_catalog_set_label_layout(node_catalog_t *self, const pos_label_layout_t *layout)
{
    self->layout = *layout;
}

const node_catalog_item_t *node_catalog_lookup(const node_catalog_t *self, const char *code,
                                               node_catalog_code_t *what)
{
    node_catalog_code_t dummy;
    if (!what)
        what = &dummy;
    *what = (node_catalog_code_t){NODE_CATALOG_PLAIN, 0};
    if (!code || !*code || strnlen(code, NODE_CATALOG_CODE_MAX + 1) > NODE_CATALOG_CODE_MAX)
        return NULL;
    const s_table_t *t = self->table;
    long n = s_find(t, code, false);
    if (n < 0)
        n = s_find(t, code, true);
    if (n >= 0)
        return &t->items[n];
    pos_label_t label;
    if (!pos_label_matches(&self->layout, code) ||
        pos_label_parse(&self->layout, code, &label) != POS_OK)
        return NULL;
    n = s_find(t, label.item, false);
    const char *digits = label.item;
    while (n < 0 && *digits == '0' && digits[1]) {
        digits++;
        if (*digits != '0')
            n = s_find(t, digits, false);
    }
    if (n < 0)
        return NULL;
    what->kind =
        label.kind == POS_LABEL_WEIGHT ? NODE_CATALOG_LABEL_WEIGHT : NODE_CATALOG_LABEL_PRICE;
    what->value = label.value;
    return &t->items[n];
}

int node_catalog_put(node_catalog_t *self, const node_catalog_item_t *item)
{
    char why[NODE_CATALOG_REASON_MAX];
    const char *bad = s_item_why(item, why, sizeof(why));
    if (bad)
        return s_fail(self, "put: %s", bad);
    if (s_table_put(self->table, item, true, &bad) != 0)
        return s_fail(self, "put %s: %s", item->sku, bad);
    self->err[0] = '\0';
    return 0;
}

int64_t node_catalog_version(const node_catalog_t *self)
{
    return self->table->version;
}

void node_catalog_set_version(node_catalog_t *self, int64_t version)
{
    self->table->version = version;
}

size_t node_catalog_count(const node_catalog_t *self)
{
    return self->table->count;
}

const node_catalog_item_t *node_catalog_item(const node_catalog_t *self, size_t index)
{
    return index < self->table->count ? &self->table->items[index] : NULL;
}

bool node_catalog_stale(const node_catalog_t *self, int64_t version)
{
    return version > self->table->version;
}

const char *node_catalog_errstr(const node_catalog_t *self)
{
    return self->err;
}

void node_catalog_to_pos(const node_catalog_item_t *item, pos_item_t *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->sku, sizeof(out->sku), "%s", item->sku);
    snprintf(out->name, sizeof(out->name), "%s", item->name);
    snprintf(out->category, sizeof(out->category), "%s", item->category);
    out->price = item->price;
    out->member_price = item->member_price;
    out->tax_rate_bp = item->tax_rate_bp;
    out->unit = strcmp(item->unit, "kg") == 0 ? POS_UNIT_KG : POS_UNIT_PCS;
}

/*  Swap fresh in as the catalog; *changed (may be NULL) gets how many items it adds or changes. */
static void s_adopt(node_catalog_t *self, s_table_t **fresh_p, int64_t *changed)
{
    if (changed)
        *changed = s_changes(self->table, *fresh_p);
    s_table_destroy(&self->table);
    self->table = *fresh_p;
    *fresh_p = NULL;
    self->err[0] = '\0';
}

/* ---- sync ---------------------------------------------------------------- */

/*  Add the items of one snapshot page to fresh. They must come in strictly increasing SKU
    order after *after (which moves on), so a walk cannot loop or repeat an item. */
static int s_sync_page(node_catalog_t *self, s_table_t *fresh, const bus_val_t *items, char *after)
{
    char why[NODE_CATALOG_REASON_MAX];
    for (size_t i = 0; i < bus_val_size(items); i++) {
        node_catalog_item_t item;
        const char *bad = NULL;
        if (!s_item_from_val(bus_val_arr_get(items, i), &item, &bad))
            return s_fail(self, "catalog.snapshot after '%s': item %zu: %s missing or mistyped",
                          after, i, bad);
        if ((bad = s_item_why(&item, why, sizeof(why))))
            return s_fail(self, "catalog.snapshot: item refused: %s", bad);
        if (strcmp(item.sku, after) <= 0)
            return s_fail(self, "catalog.snapshot: SKU %s out of order after %s", item.sku, after);
        if (s_table_put(fresh, &item, false, &bad) != 0)
            return s_fail(self, "catalog.snapshot: %s: %s", item.sku, bad);
        snprintf(after, NODE_CATALOG_CODE_MAX + 1, "%s", item.sku);
    }
    return 0;
}

int node_catalog_sync(node_catalog_t *self, bus_client_t *client, int64_t *changed)
{
    s_table_t *fresh = s_table_new();
    if (!fresh)
        return s_fail(self, "sync: out of memory");
    char after[NODE_CATALOG_CODE_MAX + 1] = "";
    bool more = true, first = true;
    int rc = -1;
    while (more) {
        bus_val_t *body = bus_val_new_map();
        if (!body || bus_val_map_set_str(body, "after", after) != 0 ||
            bus_val_map_set_int(body, "count", S_SNAPSHOT_PAGE) != 0) {
            bus_val_destroy(&body);
            s_fail(self, "sync: out of memory");
            goto out_free_fresh;
        }
        bus_msg_t *rep = bus_client_request(client, S_SERVICE, "catalog.snapshot", &body);
        if (!rep) {
            s_fail(self, "catalog.snapshot after '%s': %s", after, bus_client_errstr(client));
            goto out_free_fresh;
        }
        const bus_val_t *reply = bus_msg_body(rep);
        const bus_val_t *items = bus_val_map_get(reply, "items");
        const char *last = bus_val_map_get_str(reply, "last");
        int64_t version;
        if (!bus_val_map_get_int(reply, "version", &version) ||
            !bus_val_map_get_bool(reply, "more", &more) || !last ||
            bus_val_type(items) != BUS_VAL_ARR) {
            s_fail(self, "catalog.snapshot after '%s': reply lacks version, more, last or items",
                   after);
            bus_msg_destroy(&rep);
            goto out_free_fresh;
        }
        if (first)
            fresh->version = version;
        first = false;
        char prev[sizeof(after)];
        snprintf(prev, sizeof(prev), "%s", after);
        int page = s_sync_page(self, fresh, items, after);
        /* a page may end early on its byte budget: go on from where inventory says it stopped,
           which must be past where this page started, or the walk would never end */
        if (page == 0 && more &&
            (!s_code_ok(last, false) || strcmp(last, prev) <= 0 || strcmp(last, after) < 0))
            page = s_fail(self, "catalog.snapshot: more, but the page ends at '%s' after '%s'",
                          last, prev);
        else if (page == 0 && more)
            snprintf(after, sizeof(after), "%s", last);
        bus_msg_destroy(&rep);
        if (page != 0)
            goto out_free_fresh;
    }
    s_adopt(self, &fresh, changed);
    rc = 0;
out_free_fresh:
    s_table_destroy(&fresh);
    return rc;
}

/* ---- the file ------------------------------------------------------------ */

static void s_put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t s_get_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | p[i];
    return v;
}

/*  Append one record (4-byte length, the MessagePack of val) to buf; takes *val_p. */
static int s_record(bus_buf_t *buf, bus_buf_t *scratch, bus_val_t **val_p)
{
    uint8_t len[4];
    bus_buf_reset(scratch);
    int rc = *val_p && bus_val_encode(*val_p, scratch) == 0 ? 0 : -1;
    bus_val_destroy(val_p);
    if (rc != 0 || scratch->len > S_RECORD_MAX)
        return -1;
    s_put_be(len, scratch->len, 4);
    return bus_buf_append(buf, len, 4) == 0 && bus_buf_append(buf, scratch->data, scratch->len) == 0
               ? 0
               : -1;
}

static bus_val_t *s_item_val(const node_catalog_item_t *item)
{
    bus_val_t *map = bus_val_new_map();
    if (!map || bus_val_map_set_str(map, "sku", item->sku) ||
        bus_val_map_set_str(map, "barcode", item->barcode) ||
        bus_val_map_set_str(map, "name", item->name) ||
        bus_val_map_set_int(map, "price", item->price) ||
        bus_val_map_set_int(map, "tax_rate_bp", item->tax_rate_bp) ||
        bus_val_map_set_str(map, "unit", item->unit) ||
        bus_val_map_set_str(map, "category", item->category) ||
        bus_val_map_set_int(map, "member_price", item->member_price) ||
        bus_val_map_set_bool(map, "active", item->active))
        bus_val_destroy(&map);
    return map;
}

/*  The whole file in buf: header, meta record, item records. -1 on allocation failure. */
static int s_encode(const s_table_t *t, bus_buf_t *buf)
{
    uint8_t head[S_HEAD_SIZE] = {0};
    bus_buf_t scratch = {0};
    int rc = bus_buf_append(buf, head, sizeof(head));
    bus_val_t *meta = bus_val_new_map();
    if (rc == 0 && meta && bus_val_map_set_int(meta, "format", NODE_CATALOG_FORMAT) == 0 &&
        bus_val_map_set_int(meta, "version", t->version) == 0 &&
        bus_val_map_set_int(meta, "count", (int64_t)t->count) == 0)
        rc = s_record(buf, &scratch, &meta);
    else
        rc = -1;
    bus_val_destroy(&meta);
    for (size_t n = 0; rc == 0 && n < t->count; n++) {
        bus_val_t *item = s_item_val(&t->items[n]);
        rc = s_record(buf, &scratch, &item);
    }
    bus_buf_free(&scratch);
    if (rc != 0)
        return -1;
    uint8_t *h = buf->data;
    memcpy(h, S_MAGIC, S_MAGIC_SIZE);
    s_put_be(h + 8, NODE_CATALOG_FORMAT, 4);
    s_put_be(h + 16, buf->len - S_HEAD_SIZE, 8);
    SHA256(buf->data + S_HEAD_SIZE, buf->len - S_HEAD_SIZE, h + 24);
    return 0;
}

/*  fsync the directory holding path, so that a renamed entry survives a crash. */
int node_catalog_save(node_catalog_t *self, const char *path)
{
    bus_buf_t buf = {0};
    if (s_encode(self->table, &buf) != 0) {
        bus_buf_free(&buf);
        errno = ENOMEM;
        return s_fail(self, "save %s: out of memory", path);
    }
    char why[NODE_CATALOG_REASON_MAX - 8];
    int rc = node_file_write(path, buf.data, buf.len, 1, why, sizeof(why));
    int e = errno;
    bus_buf_free(&buf);
    if (rc != 0) {
        errno = e;
        return s_fail(self, "save: %s", why);
    }
    self->err[0] = '\0';
    return 0;
}

/*  Read the whole file at path into *data (malloc'd), bounded by S_FILE_MAX. 0, or -1 with
    errno (EBADMSG for a file too large to be a replica) and the reason in self. */
static int s_read_file(node_catalog_t *self, const char *path, uint8_t **data, size_t *size)
{
    char why[NODE_CATALOG_REASON_MAX - 8];
    if (node_file_read(path, S_FILE_MAX, data, size, why, sizeof(why)) == 0)
        return 0;
    if (errno == EFBIG)
        errno = EBADMSG;
    int e = errno;
    s_fail(self, "load %s", why);
    errno = e;
    return -1;
}

/*  The next record of [*p, end) decoded, advancing *p; NULL with why set. */
static bus_val_t *s_next_record(const uint8_t **p, const uint8_t *end, char *why, size_t size)
{
    if (end - *p < 4) {
        snprintf(why, size, "ends inside a record length");
        return NULL;
    }
    uint64_t len = s_get_be(*p, 4);
    if (len == 0 || len > S_RECORD_MAX || len > (uint64_t)(end - *p - 4)) {
        snprintf(why, size, "record of %llu bytes (at most %d, %td left)", (unsigned long long)len,
                 S_RECORD_MAX, end - *p - 4);
        return NULL;
    }
    bus_limits_t limits = {.max_size = S_RECORD_MAX, .max_depth = 2};
    bus_reject_t reason;
    bus_val_t *val = bus_val_decode(*p + 4, len, &limits, &reason);
    if (!val || bus_val_type(val) != BUS_VAL_MAP) {
        snprintf(why, size, "record not a MessagePack map (%s)",
                 val ? "another type" : bus_reject_name(reason));
        bus_val_destroy(&val);
        return NULL;
    }
    *p += 4 + len;
    return val;
}

/*  Check the header of data (size bytes): why is set and -1 returned if it is refused. */
static int s_check_head(const uint8_t *data, size_t size, char *why, size_t wsize)
{
    if (size == 0) {
        snprintf(why, wsize, "empty file");
        return -1;
    }
    if (size < S_HEAD_SIZE || memcmp(data, S_MAGIC, S_MAGIC_SIZE) != 0) {
        snprintf(why, wsize, "%s",
                 memcmp(data, S_MAGIC, size < S_MAGIC_SIZE ? size : S_MAGIC_SIZE)
                     ? "not a catalog replica file (no " S_MAGIC " magic)"
                     : "truncated inside the header");
        return -1;
    }
    uint64_t format = s_get_be(data + 8, 4), body = s_get_be(data + 16, 8);
    if (format != NODE_CATALOG_FORMAT) {
        snprintf(why, wsize, "format %llu; this posnode reads format %d",
                 (unsigned long long)format, NODE_CATALOG_FORMAT);
        return -1;
    }
    if (body != size - S_HEAD_SIZE) {
        snprintf(why, wsize, "%s: the header says %llu body bytes, the file has %zu",
                 body > size - S_HEAD_SIZE ? "truncated" : "bytes after the end",
                 (unsigned long long)body, size - S_HEAD_SIZE);
        return -1;
    }
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256(data + S_HEAD_SIZE, body, digest);
    if (memcmp(digest, data + 24, sizeof(digest)) != 0) {
        snprintf(why, wsize, "SHA-256 of the body does not match: the file is damaged");
        return -1;
    }
    return 0;
}

/*  Build a table from a file image whose header passed s_check_head. */
static s_table_t *s_decode(const uint8_t *data, size_t size, char *why, size_t wsize)
{
    const uint8_t *p = data + S_HEAD_SIZE, *end = data + size;
    s_table_t *t = s_table_new();
    if (!t) {
        snprintf(why, wsize, "out of memory");
        return NULL;
    }
    bus_val_t *meta = s_next_record(&p, end, why, wsize);
    int64_t format = 0, count = -1;
    if (!meta)
        goto out_free_table;
    if (!bus_val_map_get_int(meta, "format", &format) || format != NODE_CATALOG_FORMAT ||
        !bus_val_map_get_int(meta, "version", &t->version) ||
        !bus_val_map_get_int(meta, "count", &count) || count < 0 ||
        count > NODE_CATALOG_ITEMS_MAX) {
        snprintf(why, wsize, "meta record: format %d, version and count 0..%d required",
                 NODE_CATALOG_FORMAT, NODE_CATALOG_ITEMS_MAX);
        goto out_free_meta;
    }
    char item_why[NODE_CATALOG_REASON_MAX];
    for (int64_t n = 0; n < count; n++) {
        bus_val_t *val = s_next_record(&p, end, item_why, sizeof(item_why));
        node_catalog_item_t item;
        const char *bad = NULL;
        const char *what = "";
        if (!val)
            bad = item_why;
        else if (!s_item_from_val(val, &item, &bad))
            what = " missing or mistyped";
        else if (!(bad = s_item_why(&item, item_why, sizeof(item_why))))
            s_table_put(t, &item, false, &bad);
        bus_val_destroy(&val);
        if (bad) {
            snprintf(why, wsize, "item %lld of %lld: %s%s", (long long)n + 1, (long long)count, bad,
                     what);
            goto out_free_meta;
        }
    }
    if (p != end) {
        snprintf(why, wsize, "%td bytes after the last of %lld items", end - p, (long long)count);
        goto out_free_meta;
    }
    bus_val_destroy(&meta);
    return t;
out_free_meta:
    bus_val_destroy(&meta);
out_free_table:
    s_table_destroy(&t);
    return NULL;
}

int node_catalog_load(node_catalog_t *self, const char *path)
{
    uint8_t *data = NULL;
    size_t size = 0;
    if (s_read_file(self, path, &data, &size) != 0)
        return -1;
    char why[NODE_CATALOG_REASON_MAX - 64];
    s_table_t *t = s_check_head(data, size, why, sizeof(why)) == 0
                       ? s_decode(data, size, why, sizeof(why))
                       : NULL;
    free(data);
    if (!t) {
        errno = EBADMSG;
        return s_fail(self, "load %s: %s", path, why);
    }
    s_adopt(self, &t, NULL);
    return 0;
}
