/*  =========================================================================
    val.c - typed values and the strict MessagePack codec

    Encoding writes MessagePack directly into a bus_buf_t (msgpack-c's
    packer is used for the wire format through a write callback), so one
    buffer is reused for every message a publisher sends.

    Decoding is hand-written rather than msgpack_unpack because input comes
    from the network: msgpack-c allocates an array of N objects when it
    reads a header claiming N elements, before it knows the bytes exist, so
    five bytes could ask for gigabytes. Here every count is checked against
    the bytes that remain (each element takes at least one byte) before
    anything is allocated, depth is bounded by the limit (recursion depth
    therefore too), and anything posbus does not use is refused.
    =========================================================================
*/
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include "bus/val.h"
#include "val_internal.h"

#define S_BUF_MIN_CAP   256
#define S_MAP_MIN_CAP   8
#define S_MAP_HASH_FROM 16 /* maps at least this big check duplicate keys by sorting */

typedef struct {
    char *key;
    size_t key_len;
    bus_val_t *val;
} s_entry_t;

struct bus_val {
    bus_val_type_t type;
    union {
        bool b;
        int64_t i;
        struct {
            char *data; /* NUL-terminated copy */
            size_t len;
        } s;
        struct {
            bus_val_t **items;
            size_t len, cap;
        } a;
        struct {
            s_entry_t *entries;
            size_t len, cap;
        } m;
    } u;
};

static const char *const s_reject_names[BUS_REJ__COUNT] = {
    "none",    "oversize", "truncated", "malformed",   "too_deep",   "unsupported",
    "bad_key", "trailing", "not_map",   "missing_key", "wrong_type", "bad_value"};

const char *bus_reject_name(bus_reject_t reason)
{
    if ((int)reason < 0 || reason >= BUS_REJ__COUNT)
        return "unknown";
    return s_reject_names[reason];
}

/* ---- buffers ---------------------------------------------------------- */

int bus_buf_append(bus_buf_t *buf, const void *data, size_t len)
{
    if (buf->len + len + 1 > buf->cap) {
        size_t cap = buf->cap ? buf->cap : S_BUF_MIN_CAP;
        while (cap < buf->len + len + 1)
            cap *= 2;
        uint8_t *grown = realloc(buf->data, cap);
        if (!grown)
            return -1;
        buf->data = grown;
        buf->cap = cap;
    }
    if (len)
        memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    buf->data[buf->len] = '\0'; /* keeps text output usable as a C string */
    return 0;
}

void bus_buf_reset(bus_buf_t *buf)
{
    buf->len = 0;
}

void bus_buf_free(bus_buf_t *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

/* ---- construction ------------------------------------------------------ */

static bus_val_t *s_new(bus_val_type_t type)
{
    bus_val_t *self = calloc(1, sizeof(*self));
    if (self)
        self->type = type;
    return self;
}

bus_val_t *bus_val_new_nil(void)
{
    return s_new(BUS_VAL_NIL);
}

bus_val_t *bus_val_new_bool(bool b)
{
    bus_val_t *self = s_new(BUS_VAL_BOOL);
    if (self)
        self->u.b = b;
    return self;
}

bus_val_t *bus_val_new_int(int64_t i)
{
    bus_val_t *self = s_new(BUS_VAL_INT);
    if (self)
        self->u.i = i;
    return self;
}

static bus_val_t *s_new_bytes(bus_val_type_t type, const void *data, size_t len)
{
    bus_val_t *self = s_new(type);
    if (!self)
        return NULL;
    self->u.s.data = malloc(len + 1);
    if (!self->u.s.data) {
        free(self);
        return NULL;
    }
    if (len)
        memcpy(self->u.s.data, data, len);
    self->u.s.data[len] = '\0';
    self->u.s.len = len;
    return self;
}

bus_val_t *bus_val_new_str(const char *s)
{
    return s ? s_new_bytes(BUS_VAL_STR, s, strlen(s)) : NULL;
}

bus_val_t *bus_val_new_strn(const char *s, size_t len)
{
    return s || len == 0 ? s_new_bytes(BUS_VAL_STR, s, len) : NULL;
}

bus_val_t *bus_val_new_bin(const void *data, size_t len)
{
    return data || len == 0 ? s_new_bytes(BUS_VAL_BIN, data, len) : NULL;
}

bus_val_t *bus_val_new_arr(void)
{
    return s_new(BUS_VAL_ARR);
}

bus_val_t *bus_val_new_map(void)
{
    return s_new(BUS_VAL_MAP);
}

void bus_val_destroy(bus_val_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_val_t *self = *self_p;
    switch (self->type) {
    case BUS_VAL_STR:
    case BUS_VAL_BIN:
        free(self->u.s.data);
        break;
    case BUS_VAL_ARR:
        for (size_t i = 0; i < self->u.a.len; i++)
            bus_val_destroy(&self->u.a.items[i]);
        free(self->u.a.items);
        break;
    case BUS_VAL_MAP:
        for (size_t i = 0; i < self->u.m.len; i++) {
            free(self->u.m.entries[i].key);
            bus_val_destroy(&self->u.m.entries[i].val);
        }
        free(self->u.m.entries);
        break;
    default:
        break;
    }
    free(self);
    *self_p = NULL;
}

bus_val_t *bus_val_dup(const bus_val_t *self)
{
    if (!self)
        return NULL;
    bus_val_t *copy = NULL;
    switch (self->type) {
    case BUS_VAL_NIL:
        return bus_val_new_nil();
    case BUS_VAL_BOOL:
        return bus_val_new_bool(self->u.b);
    case BUS_VAL_INT:
        return bus_val_new_int(self->u.i);
    case BUS_VAL_STR:
    case BUS_VAL_BIN:
        return s_new_bytes(self->type, self->u.s.data, self->u.s.len);
    case BUS_VAL_ARR:
        copy = bus_val_new_arr();
        for (size_t i = 0; copy && i < self->u.a.len; i++) {
            bus_val_t *item = bus_val_dup(self->u.a.items[i]);
            if (!item || bus_val_arr_push(copy, &item) != 0)
                bus_val_destroy(&copy);
        }
        return copy;
    case BUS_VAL_MAP:
        copy = bus_val_new_map();
        for (size_t i = 0; copy && i < self->u.m.len; i++) {
            bus_val_t *item = bus_val_dup(self->u.m.entries[i].val);
            if (!item || bus_val_map_set(copy, self->u.m.entries[i].key, &item) != 0)
                bus_val_destroy(&copy);
        }
        return copy;
    }
    return NULL;
}

bus_val_type_t bus_val_type(const bus_val_t *self)
{
    return self ? self->type : BUS_VAL_NIL;
}

size_t bus_val_size(const bus_val_t *self)
{
    if (!self)
        return 0;
    switch (self->type) {
    case BUS_VAL_STR:
    case BUS_VAL_BIN:
        return self->u.s.len;
    case BUS_VAL_ARR:
        return self->u.a.len;
    case BUS_VAL_MAP:
        return self->u.m.len;
    default:
        return 0;
    }
}

bool bus_val_get_bool(const bus_val_t *self, bool *out)
{
    if (!self || self->type != BUS_VAL_BOOL)
        return false;
    *out = self->u.b;
    return true;
}

bool bus_val_get_int(const bus_val_t *self, int64_t *out)
{
    if (!self || self->type != BUS_VAL_INT)
        return false;
    *out = self->u.i;
    return true;
}

const char *bus_val_get_str(const bus_val_t *self, size_t *len)
{
    if (!self || self->type != BUS_VAL_STR)
        return NULL;
    if (len)
        *len = self->u.s.len;
    return self->u.s.data;
}

const void *bus_val_get_bin(const bus_val_t *self, size_t *len)
{
    if (!self || self->type != BUS_VAL_BIN)
        return NULL;
    if (len)
        *len = self->u.s.len;
    return self->u.s.data;
}

/* ---- arrays and maps --------------------------------------------------- */

int bus_val_arr_push(bus_val_t *self, bus_val_t **item_p)
{
    if (!self || self->type != BUS_VAL_ARR || !item_p || !*item_p) {
        bus_val_destroy(item_p);
        return -1;
    }
    if (self->u.a.len == self->u.a.cap) {
        size_t cap = self->u.a.cap ? self->u.a.cap * 2 : S_MAP_MIN_CAP;
        bus_val_t **grown = realloc(self->u.a.items, cap * sizeof(*grown));
        if (!grown) {
            bus_val_destroy(item_p);
            return -1;
        }
        self->u.a.items = grown;
        self->u.a.cap = cap;
    }
    self->u.a.items[self->u.a.len++] = *item_p;
    *item_p = NULL;
    return 0;
}

bus_val_t *bus_val_arr_get(const bus_val_t *self, size_t index)
{
    if (!self || self->type != BUS_VAL_ARR || index >= self->u.a.len)
        return NULL;
    return self->u.a.items[index];
}

static s_entry_t *s_find(const bus_val_t *self, const char *key, size_t key_len)
{
    for (size_t i = 0; i < self->u.m.len; i++) {
        s_entry_t *e = &self->u.m.entries[i];
        if (e->key_len == key_len && memcmp(e->key, key, key_len) == 0)
            return e;
    }
    return NULL;
}

/*  Append an entry without looking for an existing key (the decoder checks duplicates itself).
    Takes ownership of *val_p. */
static int s_map_append(bus_val_t *self, const char *key, size_t key_len, bus_val_t **val_p)
{
    if (self->u.m.len == self->u.m.cap) {
        size_t cap = self->u.m.cap ? self->u.m.cap * 2 : S_MAP_MIN_CAP;
        s_entry_t *grown = realloc(self->u.m.entries, cap * sizeof(*grown));
        if (!grown) {
            bus_val_destroy(val_p);
            return -1;
        }
        self->u.m.entries = grown;
        self->u.m.cap = cap;
    }
    char *copy = malloc(key_len + 1);
    if (!copy) {
        bus_val_destroy(val_p);
        return -1;
    }
    memcpy(copy, key, key_len);
    copy[key_len] = '\0';
    s_entry_t *e = &self->u.m.entries[self->u.m.len++];
    e->key = copy;
    e->key_len = key_len;
    e->val = *val_p;
    *val_p = NULL;
    return 0;
}

int bus_val_map_set(bus_val_t *self, const char *key, bus_val_t **val_p)
{
    if (!self || self->type != BUS_VAL_MAP || !key || !val_p || !*val_p) {
        bus_val_destroy(val_p);
        return -1;
    }
    size_t key_len = strlen(key);
    s_entry_t *e = s_find(self, key, key_len);
    if (e) {
        bus_val_destroy(&e->val);
        e->val = *val_p;
        *val_p = NULL;
        return 0;
    }
    return s_map_append(self, key, key_len, val_p);
}

int bus_val_map_set_int(bus_val_t *self, const char *key, int64_t i)
{
    bus_val_t *v = bus_val_new_int(i);
    return bus_val_map_set(self, key, &v);
}

int bus_val_map_set_str(bus_val_t *self, const char *key, const char *s)
{
    bus_val_t *v = bus_val_new_str(s);
    return bus_val_map_set(self, key, &v);
}

int bus_val_map_set_bool(bus_val_t *self, const char *key, bool b)
{
    bus_val_t *v = bus_val_new_bool(b);
    return bus_val_map_set(self, key, &v);
}

bus_val_t *bus_val_map_get(const bus_val_t *self, const char *key)
{
    if (!self || self->type != BUS_VAL_MAP || !key)
        return NULL;
    s_entry_t *e = s_find(self, key, strlen(key));
    return e ? e->val : NULL;
}

bool bus_val_map_get_int(const bus_val_t *self, const char *key, int64_t *out)
{
    return bus_val_get_int(bus_val_map_get(self, key), out);
}

bool bus_val_map_get_bool(const bus_val_t *self, const char *key, bool *out)
{
    return bus_val_get_bool(bus_val_map_get(self, key), out);
}

const char *bus_val_map_get_str(const bus_val_t *self, const char *key)
{
    return bus_val_get_str(bus_val_map_get(self, key), NULL);
}

const char *bus_val_map_key(const bus_val_t *self, size_t index)
{
    if (!self || self->type != BUS_VAL_MAP || index >= self->u.m.len)
        return NULL;
    return self->u.m.entries[index].key;
}

bus_val_t *bus_val_map_value(const bus_val_t *self, size_t index)
{
    if (!self || self->type != BUS_VAL_MAP || index >= self->u.m.len)
        return NULL;
    return self->u.m.entries[index].val;
}

bool bus_val_equal(const bus_val_t *a, const bus_val_t *b)
{
    if (!a || !b)
        return a == b;
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case BUS_VAL_NIL:
        return true;
    case BUS_VAL_BOOL:
        return a->u.b == b->u.b;
    case BUS_VAL_INT:
        return a->u.i == b->u.i;
    case BUS_VAL_STR:
    case BUS_VAL_BIN:
        return a->u.s.len == b->u.s.len && memcmp(a->u.s.data, b->u.s.data, a->u.s.len) == 0;
    case BUS_VAL_ARR:
        if (a->u.a.len != b->u.a.len)
            return false;
        for (size_t i = 0; i < a->u.a.len; i++)
            if (!bus_val_equal(a->u.a.items[i], b->u.a.items[i]))
                return false;
        return true;
    case BUS_VAL_MAP:
        if (a->u.m.len != b->u.m.len)
            return false;
        for (size_t i = 0; i < a->u.m.len; i++) {
            s_entry_t *e = s_find(b, a->u.m.entries[i].key, a->u.m.entries[i].key_len);
            if (!e || !bus_val_equal(a->u.m.entries[i].val, e->val))
                return false;
        }
        return true;
    }
    return false;
}

/* ---- encoding ---------------------------------------------------------- */

static int s_write(void *data, const char *buf, size_t len)
{
    return bus_buf_append((bus_buf_t *)data, buf, len);
}

static int s_pack(msgpack_packer *pk, const bus_val_t *v)
{
    switch (v->type) {
    case BUS_VAL_NIL:
        return msgpack_pack_nil(pk);
    case BUS_VAL_BOOL:
        return v->u.b ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    case BUS_VAL_INT:
        return msgpack_pack_int64(pk, v->u.i);
    case BUS_VAL_STR:
        if (msgpack_pack_str(pk, v->u.s.len) != 0)
            return -1;
        return msgpack_pack_str_body(pk, v->u.s.data, v->u.s.len);
    case BUS_VAL_BIN:
        if (msgpack_pack_bin(pk, v->u.s.len) != 0)
            return -1;
        return msgpack_pack_bin_body(pk, v->u.s.data, v->u.s.len);
    case BUS_VAL_ARR:
        if (msgpack_pack_array(pk, v->u.a.len) != 0)
            return -1;
        for (size_t i = 0; i < v->u.a.len; i++)
            if (s_pack(pk, v->u.a.items[i]) != 0)
                return -1;
        return 0;
    case BUS_VAL_MAP:
        if (msgpack_pack_map(pk, v->u.m.len) != 0)
            return -1;
        for (size_t i = 0; i < v->u.m.len; i++) {
            const s_entry_t *e = &v->u.m.entries[i];
            if (msgpack_pack_str(pk, e->key_len) != 0 ||
                msgpack_pack_str_body(pk, e->key, e->key_len) != 0 || s_pack(pk, e->val) != 0)
                return -1;
        }
        return 0;
    }
    return -1;
}

int bus_val_encode(const bus_val_t *self, bus_buf_t *buf)
{
    if (!self)
        return -1;
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, s_write);
    return s_pack(&pk, self) == 0 ? 0 : -1;
}

/* ---- decoding ---------------------------------------------------------- */

typedef struct {
    const uint8_t *p, *end;
    int max_depth;
    bus_reject_t reason;
} s_reader_t;

static bool s_need(s_reader_t *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n) {
        r->reason = BUS_REJ_TRUNCATED;
        return false;
    }
    return true;
}

static uint64_t s_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/*  Read an n-byte big-endian length or count that follows the type byte. */
static bool s_len(s_reader_t *r, int n, uint64_t *out)
{
    if (!s_need(r, (size_t)n))
        return false;
    *out = s_be(r->p, n);
    r->p += n;
    return true;
}

static bus_val_t *s_read(s_reader_t *r, int depth);

static bus_val_t *s_read_bytes(s_reader_t *r, bus_val_type_t type, uint64_t len)
{
    if (!s_need(r, len))
        return NULL;
    bus_val_t *v = s_new_bytes(type, r->p, (size_t)len);
    r->p += len;
    if (!v)
        r->reason = BUS_REJ_OVERSIZE;
    return v;
}

static bus_val_t *s_read_arr(s_reader_t *r, uint64_t count, int depth)
{
    if (depth > r->max_depth) {
        r->reason = BUS_REJ_TOO_DEEP;
        return NULL;
    }
    if (!s_need(r, count)) /* every element takes at least one byte */
        return NULL;
    bus_val_t *arr = bus_val_new_arr();
    if (!arr)
        return NULL;
    if (count) {
        arr->u.a.items = malloc((size_t)count * sizeof(*arr->u.a.items));
        if (!arr->u.a.items) {
            free(arr);
            r->reason = BUS_REJ_OVERSIZE;
            return NULL;
        }
        arr->u.a.cap = (size_t)count;
    }
    for (uint64_t i = 0; i < count; i++) {
        bus_val_t *item = s_read(r, depth);
        if (!item) {
            bus_val_destroy(&arr);
            return NULL;
        }
        arr->u.a.items[arr->u.a.len++] = item;
    }
    return arr;
}

static int s_cmp_entries(const void *a, const void *b)
{
    const s_entry_t *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    if (c != 0)
        return c;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

/*  True if two entries share a key. Small maps compare pairwise; large ones sort a copy. */
static bool s_has_duplicates(const bus_val_t *map)
{
    size_t n = map->u.m.len;
    if (n < S_MAP_HASH_FROM) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (s_cmp_entries(&map->u.m.entries[i], &map->u.m.entries[j]) == 0)
                    return true;
        return false;
    }
    s_entry_t *copy = malloc(n * sizeof(*copy));
    if (!copy)
        return true; /* refuse rather than accept unchecked */
    memcpy(copy, map->u.m.entries, n * sizeof(*copy));
    qsort(copy, n, sizeof(*copy), s_cmp_entries);
    bool dup = false;
    for (size_t i = 1; i < n && !dup; i++)
        dup = s_cmp_entries(&copy[i - 1], &copy[i]) == 0;
    free(copy);
    return dup;
}

static bus_val_t *s_read_map(s_reader_t *r, uint64_t count, int depth)
{
    if (depth > r->max_depth) {
        r->reason = BUS_REJ_TOO_DEEP;
        return NULL;
    }
    if (count > (uint64_t)(r->end - r->p) / 2) { /* key + value: at least two bytes */
        r->reason = BUS_REJ_TRUNCATED;
        return NULL;
    }
    bus_val_t *map = bus_val_new_map();
    if (!map)
        return NULL;
    if (count) {
        map->u.m.entries = malloc((size_t)count * sizeof(*map->u.m.entries));
        if (!map->u.m.entries) {
            free(map);
            r->reason = BUS_REJ_OVERSIZE;
            return NULL;
        }
        map->u.m.cap = (size_t)count;
    }
    for (uint64_t i = 0; i < count; i++) {
        bus_val_t *key = s_read(r, depth);
        if (!key) {
            bus_val_destroy(&map);
            return NULL;
        }
        if (key->type != BUS_VAL_STR) {
            bus_val_destroy(&key);
            bus_val_destroy(&map);
            r->reason = BUS_REJ_BAD_KEY;
            return NULL;
        }
        bus_val_t *val = s_read(r, depth);
        if (!val || s_map_append(map, key->u.s.data, key->u.s.len, &val) != 0) {
            bus_val_destroy(&key);
            bus_val_destroy(&map);
            if (r->reason == BUS_REJ_NONE)
                r->reason = BUS_REJ_OVERSIZE;
            return NULL;
        }
        bus_val_destroy(&key);
    }
    if (s_has_duplicates(map)) {
        bus_val_destroy(&map);
        r->reason = BUS_REJ_BAD_KEY;
        return NULL;
    }
    return map;
}

static bus_val_t *s_read(s_reader_t *r, int depth)
{
    if (!s_need(r, 1))
        return NULL;
    uint8_t t = *r->p++;
    uint64_t n;
    if (t <= 0x7f)
        return bus_val_new_int(t);
    if (t >= 0xe0)
        return bus_val_new_int((int8_t)t);
    if ((t & 0xf0) == 0x80)
        return s_read_map(r, t & 0x0f, depth + 1);
    if ((t & 0xf0) == 0x90)
        return s_read_arr(r, t & 0x0f, depth + 1);
    if ((t & 0xe0) == 0xa0)
        return s_read_bytes(r, BUS_VAL_STR, t & 0x1f);
    switch (t) {
    case 0xc0:
        return bus_val_new_nil();
    case 0xc2:
        return bus_val_new_bool(false);
    case 0xc3:
        return bus_val_new_bool(true);
    case 0xc4:
    case 0xc5:
    case 0xc6:
        if (!s_len(r, 1 << (t - 0xc4), &n))
            return NULL;
        return s_read_bytes(r, BUS_VAL_BIN, n);
    case 0xd9:
    case 0xda:
    case 0xdb:
        if (!s_len(r, 1 << (t - 0xd9), &n))
            return NULL;
        return s_read_bytes(r, BUS_VAL_STR, n);
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        if (!s_len(r, 1 << (t - 0xcc), &n))
            return NULL;
        if (n > INT64_MAX) {
            r->reason = BUS_REJ_UNSUPPORTED;
            return NULL;
        }
        return bus_val_new_int((int64_t)n);
    case 0xd0:
        if (!s_len(r, 1, &n))
            return NULL;
        return bus_val_new_int((int8_t)n);
    case 0xd1:
        if (!s_len(r, 2, &n))
            return NULL;
        return bus_val_new_int((int16_t)n);
    case 0xd2:
        if (!s_len(r, 4, &n))
            return NULL;
        return bus_val_new_int((int32_t)n);
    case 0xd3:
        if (!s_len(r, 8, &n))
            return NULL;
        return bus_val_new_int((int64_t)n);
    case 0xdc:
    case 0xdd:
        if (!s_len(r, t == 0xdc ? 2 : 4, &n))
            return NULL;
        return s_read_arr(r, n, depth + 1);
    case 0xde:
    case 0xdf:
        if (!s_len(r, t == 0xde ? 2 : 4, &n))
            return NULL;
        return s_read_map(r, n, depth + 1);
    case 0xc1:
        r->reason = BUS_REJ_MALFORMED;
        return NULL;
    default: /* floats (ca, cb) and extension types (c7-c9, d4-d8) */
        r->reason = BUS_REJ_UNSUPPORTED;
        return NULL;
    }
}

bus_val_t *bus_val_decode(const void *data, size_t len, const bus_limits_t *limits,
                          bus_reject_t *reason)
{
    bus_reject_t dummy;
    if (!reason)
        reason = &dummy;
    size_t max_size = limits && limits->max_size ? limits->max_size : BUS_DEFAULT_MAX_SIZE;
    int max_depth = limits && limits->max_depth ? limits->max_depth : BUS_DEFAULT_MAX_DEPTH;
    if (len > max_size) {
        *reason = BUS_REJ_OVERSIZE;
        return NULL;
    }
    if (!data && len) {
        *reason = BUS_REJ_MALFORMED;
        return NULL;
    }
    s_reader_t r = {data, (const uint8_t *)data + len, max_depth, BUS_REJ_NONE};
    bus_val_t *v = s_read(&r, 0);
    if (!v) {
        *reason = r.reason != BUS_REJ_NONE ? r.reason : BUS_REJ_OVERSIZE;
        return NULL;
    }
    if (r.p != r.end) {
        bus_val_destroy(&v);
        *reason = BUS_REJ_TRAILING;
        return NULL;
    }
    *reason = BUS_REJ_NONE;
    return v;
}

/* ---- JSON -------------------------------------------------------------- */

static int s_json_str(bus_buf_t *buf, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (bus_buf_append(buf, "\"", 1) != 0)
        return -1;
    const uint8_t *p = (const uint8_t *)s, *end = p + len;
    while (p < end) {
        uint8_t c = *p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            if (bus_buf_append(buf, esc, 2) != 0)
                return -1;
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
            if (named) {
                if (bus_buf_append(buf, named, 2) != 0)
                    return -1;
            } else {
                char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
                if (bus_buf_append(buf, u, 6) != 0)
                    return -1;
            }
            p++;
        } else if (c < 0x80) {
            if (bus_buf_append(buf, p, 1) != 0)
                return -1;
            p++;
        } else {
            /* validate one UTF-8 sequence; invalid bytes become U+FFFD */
            int n = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
            bool ok = n > 0 && (size_t)(end - p) >= (size_t)n;
            for (int i = 1; ok && i < n; i++)
                ok = (p[i] & 0xc0) == 0x80;
            if (ok && n == 2 && c < 0xc2)
                ok = false; /* overlong */
            if (ok) {
                if (bus_buf_append(buf, p, (size_t)n) != 0)
                    return -1;
                p += n;
            } else {
                if (bus_buf_append(buf, "\\ufffd", 6) != 0)
                    return -1;
                p++;
            }
        }
    }
    return bus_buf_append(buf, "\"", 1);
}

static int s_json_base64(bus_buf_t *buf, const uint8_t *d, size_t len)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (bus_buf_append(buf, "\"base64:", 8) != 0)
        return -1;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < len)
            v |= d[i + 2];
        char out[4] = {tbl[(v >> 18) & 63], tbl[(v >> 12) & 63],
                       i + 1 < len ? tbl[(v >> 6) & 63] : '=', i + 2 < len ? tbl[v & 63] : '='};
        if (bus_buf_append(buf, out, 4) != 0)
            return -1;
    }
    return bus_buf_append(buf, "\"", 1);
}

static int s_json(const bus_val_t *v, bus_buf_t *buf)
{
    char num[32];
    switch (v->type) {
    case BUS_VAL_NIL:
        return bus_buf_append(buf, "null", 4);
    case BUS_VAL_BOOL:
        return v->u.b ? bus_buf_append(buf, "true", 4) : bus_buf_append(buf, "false", 5);
    case BUS_VAL_INT: {
        int n = snprintf(num, sizeof(num), "%lld", (long long)v->u.i);
        return bus_buf_append(buf, num, (size_t)n);
    }
    case BUS_VAL_STR:
        return s_json_str(buf, v->u.s.data, v->u.s.len);
    case BUS_VAL_BIN:
        return s_json_base64(buf, (const uint8_t *)v->u.s.data, v->u.s.len);
    case BUS_VAL_ARR:
        if (bus_buf_append(buf, "[", 1) != 0)
            return -1;
        for (size_t i = 0; i < v->u.a.len; i++)
            if ((i && bus_buf_append(buf, ",", 1) != 0) || s_json(v->u.a.items[i], buf) != 0)
                return -1;
        return bus_buf_append(buf, "]", 1);
    case BUS_VAL_MAP:
        if (bus_buf_append(buf, "{", 1) != 0)
            return -1;
        for (size_t i = 0; i < v->u.m.len; i++) {
            const s_entry_t *e = &v->u.m.entries[i];
            if ((i && bus_buf_append(buf, ",", 1) != 0) ||
                s_json_str(buf, e->key, e->key_len) != 0 || bus_buf_append(buf, ":", 1) != 0 ||
                s_json(e->val, buf) != 0)
                return -1;
        }
        return bus_buf_append(buf, "}", 1);
    }
    return -1;
}

int bus_val_to_json(const bus_val_t *self, bus_buf_t *buf)
{
    if (!self)
        return bus_buf_append(buf, "null", 4);
    return s_json(self, buf);
}

bus_val_t *bus__val_map_take(bus_val_t *self, const char *key)
{
    if (!self || self->type != BUS_VAL_MAP)
        return NULL;
    s_entry_t *e = s_find(self, key, strlen(key));
    if (!e)
        return NULL;
    bus_val_t *val = e->val;
    free(e->key);
    size_t index = (size_t)(e - self->u.m.entries);
    memmove(e, e + 1, (self->u.m.len - index - 1) * sizeof(*e));
    self->u.m.len--;
    return val;
}
