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

    Maps keep their entries in one array in insertion order, because the
    wire format and callers iterate in that order. Most maps are envelopes
    and sale lines of a handful of keys, where a linear scan is cheapest, so
    a map gets a hash index only once it holds S_MAP_INDEX_FROM entries:
    stock lists and reports of 100k keys then build and read in linear time.
    The index is an open-addressing table (linear probing, at most half
    full) of 32-bit positions into the entry array; it is rebuilt from the
    hashes stored in the entries when it grows, so no key is hashed twice.
    Keys come from the network, so the hash is SipHash-1-3 under a key drawn
    at random once per process: an attacker who cannot see the key cannot
    send 100k keys that share one probe chain. Lookups never modify a map,
    so several threads may read a map that nobody is changing.
    =========================================================================
*/
#include <msgpack.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include "bus/val.h"
#include "val_internal.h"

#define S_BUF_MIN_CAP         256
#define S_MAP_MIN_CAP         8
#define S_MAP_INDEX_FROM      32 /* maps with this many entries or more get a hash index */
#define S_INDEX_MIN_SLOTS     64 /* power of two, at least twice S_MAP_INDEX_FROM */
#define S_INDEX_SLOT_EMPTY    0  /* slots hold entry position + 1 */
#define S_MAP_MAX_LEN         (UINT32_MAX / 4) /* keeps positions and slot counts in uint32 */
#define S_SIP_COMPRESS_ROUNDS 1
#define S_SIP_FINAL_ROUNDS    3

typedef struct {
    char *key;
    size_t key_len;
    uint64_t hash; /* SipHash of the key; set only while the map is indexed */
    bus_val_t *val;
} s_entry_t;

/*  Hash index of a map: slot[i] is S_INDEX_SLOT_EMPTY or the position of an entry plus one.
    Invariant: every entry of the map is in exactly one slot, and len <= (mask + 1) / 2. */
typedef struct {
    size_t mask; /* slot count - 1; the slot count is a power of two */
    uint32_t slot[];
} s_index_t;

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
            s_index_t *index; /* NULL below S_MAP_INDEX_FROM entries */
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
        free(self->u.m.index);
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

/* ---- map index --------------------------------------------------------- */

static uint64_t s_sip_key[2];
static pthread_once_t s_sip_key_once = PTHREAD_ONCE_INIT;

/*  Draw the hash key. If the kernel has no entropy to give, fall back to the clock, the process id
    and an address, which an attacker on the network cannot read either. */
static void s_sip_key_init(void)
{
    if (getrandom(s_sip_key, sizeof(s_sip_key), GRND_NONBLOCK) == (ssize_t)sizeof(s_sip_key))
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s_sip_key[0] = (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec;
    s_sip_key[1] = (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)&ts;
}

#define S_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void s_sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = S_ROTL(v[1], 13);
    v[1] ^= v[0];
    v[0] = S_ROTL(v[0], 32);
    v[2] += v[3];
    v[3] = S_ROTL(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = S_ROTL(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = S_ROTL(v[1], 17);
    v[1] ^= v[2];
    v[2] = S_ROTL(v[2], 32);
}

/*  n (<= 8) bytes at p as a little-endian word, whatever the host's byte order. */
static uint64_t s_le_word(const uint8_t *p, size_t n)
{
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)p[i] << (8 * i);
    return w;
}

static void s_sip_absorb(uint64_t v[4], uint64_t m, int rounds)
{
    v[3] ^= m;
    for (int r = 0; r < rounds; r++)
        s_sip_round(v);
    v[0] ^= m;
}

/*  SipHash with c compression and d finalisation rounds, as its authors specify it (the four
    constants are theirs, the bytes of "somepseudorandomlygeneratedbytes"). */
uint64_t bus__val_siphash(const uint64_t key[2], const void *data, size_t len, int c, int d)
{
    const uint8_t *p = data;
    uint64_t v[4] = {key[0] ^ 0x736f6d6570736575ULL, key[1] ^ 0x646f72616e646f6dULL,
                     key[0] ^ 0x6c7967656e657261ULL, key[1] ^ 0x7465646279746573ULL};
    size_t whole = len & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8)
        s_sip_absorb(v, s_le_word(p + i, 8), c);
    s_sip_absorb(v, s_le_word(p + whole, len - whole) | (uint64_t)len << 56, c);
    v[2] ^= 0xff;
    for (int r = 0; r < d; r++)
        s_sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/*  Hash of a map key: SipHash-1-3 under the process's random key. */
static uint64_t s_key_hash(const char *key, size_t key_len)
{
    pthread_once(&s_sip_key_once, s_sip_key_init);
    return bus__val_siphash(s_sip_key, key, key_len, S_SIP_COMPRESS_ROUNDS, S_SIP_FINAL_ROUNDS);
}

/*  Slots for an index of len entries: a power of two, at least twice len. */
static size_t s_index_slots(size_t len)
{
    size_t nslots = S_INDEX_MIN_SLOTS;
    while (nslots < len * 2)
        nslots *= 2;
    return nslots;
}

static void s_index_put(s_index_t *index, uint64_t hash, size_t pos)
{
    size_t i = (size_t)hash & index->mask;
    while (index->slot[i] != S_INDEX_SLOT_EMPTY)
        i = (i + 1) & index->mask;
    index->slot[i] = (uint32_t)(pos + 1);
}

/*  Replace the map's index by one of nslots slots (a power of two, at least twice len) holding
    every entry. Hashes the keys only when the map had no index yet. 0 ok, -1 out of memory (the
    old index is kept). */
static int s_index_rebuild(bus_val_t *self, size_t nslots)
{
    s_index_t *index = calloc(1, sizeof(*index) + nslots * sizeof(index->slot[0]));
    if (!index)
        return -1;
    index->mask = nslots - 1;
    for (size_t i = 0; i < self->u.m.len; i++) {
        s_entry_t *e = &self->u.m.entries[i];
        if (!self->u.m.index)
            e->hash = s_key_hash(e->key, e->key_len);
        s_index_put(index, e->hash, i);
    }
    free(self->u.m.index);
    self->u.m.index = index;
    return 0;
}

/*  The entry holding key, or NULL. hash is the key's hash when the map is indexed (ignored
    otherwise). */
static s_entry_t *s_find_hashed(const bus_val_t *self, const char *key, size_t key_len,
                                uint64_t hash)
{
    const s_index_t *index = self->u.m.index;
    if (!index) {
        for (size_t i = 0; i < self->u.m.len; i++) {
            s_entry_t *e = &self->u.m.entries[i];
            if (e->key_len == key_len && memcmp(e->key, key, key_len) == 0)
                return e;
        }
        return NULL;
    }
    for (size_t i = (size_t)hash & index->mask; index->slot[i] != S_INDEX_SLOT_EMPTY;
         i = (i + 1) & index->mask) {
        s_entry_t *e = &self->u.m.entries[index->slot[i] - 1];
        if (e->hash == hash && e->key_len == key_len && memcmp(e->key, key, key_len) == 0)
            return e;
    }
    return NULL;
}

static s_entry_t *s_find(const bus_val_t *self, const char *key, size_t key_len)
{
    uint64_t hash = self->u.m.index ? s_key_hash(key, key_len) : 0;
    return s_find_hashed(self, key, key_len, hash);
}

/*  The entry for key: the existing one (*existed = true) or a new last entry with a copy of the
    key and val NULL, which the caller must fill at once. NULL when out of memory or the map is
    full; the map is then unchanged. One hash per call, and none on a map without an index. */
static s_entry_t *s_map_slot(bus_val_t *self, const char *key, size_t key_len, bool *existed)
{
    uint64_t hash = self->u.m.index ? s_key_hash(key, key_len) : 0;
    s_entry_t *e = s_find_hashed(self, key, key_len, hash);
    *existed = e != NULL;
    if (e)
        return e;
    size_t len = self->u.m.len;
    if (len >= S_MAP_MAX_LEN)
        return NULL;
    if (len == self->u.m.cap) {
        size_t cap = self->u.m.cap ? self->u.m.cap * 2 : S_MAP_MIN_CAP;
        s_entry_t *grown = realloc(self->u.m.entries, cap * sizeof(*grown));
        if (!grown)
            return NULL;
        self->u.m.entries = grown;
        self->u.m.cap = cap;
    }
    s_index_t *index = self->u.m.index;
    if (index && (len + 1) * 2 > index->mask + 1 &&
        s_index_rebuild(self, (index->mask + 1) * 2) != 0)
        return NULL;
    char *copy = malloc(key_len + 1);
    if (!copy)
        return NULL;
    memcpy(copy, key, key_len);
    copy[key_len] = '\0';
    e = &self->u.m.entries[len];
    *e = (s_entry_t){.key = copy, .key_len = key_len, .hash = hash, .val = NULL};
    self->u.m.len++;
    if (self->u.m.index)
        s_index_put(self->u.m.index, hash, len);
    else if (self->u.m.len >= S_MAP_INDEX_FROM)
        (void)s_index_rebuild(self, s_index_slots(self->u.m.len)); /* if out of memory the map
                                                  works unindexed, slower; retried next insert */
    return e;
}

int bus_val_map_set(bus_val_t *self, const char *key, bus_val_t **val_p)
{
    if (!self || self->type != BUS_VAL_MAP || !key || !val_p || !*val_p) {
        bus_val_destroy(val_p);
        return -1;
    }
    bool existed;
    s_entry_t *e = s_map_slot(self, key, strlen(key), &existed);
    if (!e) {
        bus_val_destroy(val_p);
        return -1;
    }
    if (existed)
        bus_val_destroy(&e->val);
    e->val = *val_p;
    *val_p = NULL;
    return 0;
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

void bus_val_map_pick(const bus_val_t *self, const char *const *names, int n,
                      const bus_val_t **out)
{
    for (int k = 0; k < n; k++)
        out[k] = NULL;
    if (!self || self->type != BUS_VAL_MAP)
        return;
    for (size_t i = 0; i < self->u.m.len; i++) {
        const char *key = self->u.m.entries[i].key;
        for (int k = 0; k < n; k++)
            if (key[0] == names[k][0] && strcmp(key, names[k]) == 0) {
                out[k] = self->u.m.entries[i].val;
                break;
            }
    }
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
        bool existed = false;
        s_entry_t *e = val ? s_map_slot(map, key->u.s.data, key->u.s.len, &existed) : NULL;
        bus_val_destroy(&key);
        if (!e || existed) {
            bus_val_destroy(&val);
            bus_val_destroy(&map);
            if (existed)
                r->reason = BUS_REJ_BAD_KEY; /* a repeated key: which value would be meant? */
            else if (r->reason == BUS_REJ_NONE)
                r->reason = BUS_REJ_OVERSIZE;
            return NULL;
        }
        e->val = val;
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
    size_t pos = (size_t)(e - self->u.m.entries);
    memmove(e, e + 1, (self->u.m.len - pos - 1) * sizeof(*e));
    self->u.m.len--;
    if (self->u.m.index) {
        /* positions after pos moved down by one: refill the slots from the stored hashes */
        s_index_t *index = self->u.m.index;
        memset(index->slot, 0, (index->mask + 1) * sizeof(index->slot[0]));
        for (size_t i = 0; i < self->u.m.len; i++)
            s_index_put(index, self->u.m.entries[i].hash, i);
    }
    return val;
}
