/*  =========================================================================
    svcard.c - the register's local copy of what it knows of stored-value cards

    Why it looks like this. A register sees a few hundred cards a day and a
    blocklist of at most a few thousand; the whole store is one MessagePack
    map ({format, since, cards: {id: {blocked, cap, balance, ms}}}) held in
    memory as a bus_val tree (hash-indexed past 32 keys) and replaced whole
    on the disk when it changed, like the catalog replica. A card once
    known stays known: the file grows with the cards the register has seen,
    which bounds it well below S_FILE_MAX for years of a canteen.
    =========================================================================
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bus/val.h>

#include "node/file.h"
#include "node/svcard.h"

#define S_FORMAT   1
#define S_FILE_MAX (64u << 20) /* bytes: far past any register's cards */

struct node_svcard_t {
    char *path;
    bus_val_t *cards; /* id -> {blocked, cap, balance, ms} */
    int64_t since;
    bool dirty;
};

bool node_svcard_id_ok(const char *card)
{
    size_t n = card ? strlen(card) : 0;
    if (n < 1 || n > NODE_SVCARD_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = card[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/*  Take a decoded file: 0, or -1 when it is not a store of this format. */
static int s_load(node_svcard_t *self, bus_val_t *doc)
{
    int64_t format = 0;
    bus_val_t *cards = bus_val_map_get(doc, "cards");
    if (!bus_val_map_get_int(doc, "format", &format) || format != S_FORMAT || !cards ||
        bus_val_type(cards) != BUS_VAL_MAP)
        return -1;
    bus_val_map_get_int(doc, "since", &self->since);
    bus_val_t *copy = bus_val_dup(cards);
    if (!copy)
        return -1;
    bus_val_destroy(&self->cards);
    self->cards = copy;
    return 0;
}

node_svcard_t *node_svcard_open(const char *path, char *why, size_t size)
{
    why[0] = '\0';
    node_svcard_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->path = strdup(path);
    self->cards = bus_val_new_map();
    if (!self->path || !self->cards) {
        node_svcard_destroy(&self);
        return NULL;
    }
    uint8_t *data = NULL;
    size_t len = 0;
    char rwhy[200];
    if (node_file_read(path, S_FILE_MAX, &data, &len, rwhy, sizeof(rwhy)) != 0) {
        if (errno != ENOENT)
            snprintf(why, size, "%s: %s: starting empty", path, rwhy);
        return self;
    }
    bus_limits_t limits = {.max_size = S_FILE_MAX};
    bus_val_t *doc = bus_val_decode(data, len, &limits, NULL);
    free(data);
    if (!doc || s_load(self, doc) != 0) {
        snprintf(why, size, "%s: not a card store: starting empty", path);
        self->since = 0;
        self->dirty = true; /* replaced by the next save */
    }
    bus_val_destroy(&doc);
    return self;
}

void node_svcard_destroy(node_svcard_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_svcard_t *self = *self_p;
    bus_val_destroy(&self->cards);
    free(self->path);
    free(self);
    *self_p = NULL;
}

void node_svcard_get(const node_svcard_t *self, const char *card, node_svcard_info_t *out)
{
    memset(out, 0, sizeof(*out));
    bus_val_t *c = self && card ? bus_val_map_get(self->cards, card) : NULL;
    if (!c)
        return;
    bus_val_map_get_bool(c, "known", &out->known);
    bus_val_map_get_bool(c, "blocked", &out->blocked);
    bus_val_map_get_int(c, "cap", &out->cap);
    bus_val_map_get_int(c, "balance", &out->balance);
    bus_val_map_get_int(c, "ms", &out->seen_ms);
}

/*  The entry of card, made when missing (NULL: out of memory). */
static bus_val_t *s_entry(node_svcard_t *self, const char *card)
{
    bus_val_t *c = bus_val_map_get(self->cards, card);
    if (c)
        return c;
    bus_val_t *fresh = bus_val_new_map();
    if (!fresh || bus_val_map_set(self->cards, card, &fresh) != 0)
        return NULL;
    return bus_val_map_get(self->cards, card);
}

int node_svcard_seen(node_svcard_t *self, const char *card, int64_t cap, int64_t balance,
                     int blocked, int64_t ms)
{
    if (!node_svcard_id_ok(card))
        return -1;
    bus_val_t *c = s_entry(self, card);
    if (!c)
        return -1;
    int rc = bus_val_map_set_bool(c, "known", true);
    if (cap >= 0)
        rc |= bus_val_map_set_int(c, "cap", cap);
    rc |= bus_val_map_set_int(c, "balance", balance);
    if (blocked >= 0)
        rc |= bus_val_map_set_bool(c, "blocked", blocked > 0);
    rc |= bus_val_map_set_int(c, "ms", ms);
    self->dirty = true;
    return rc ? -1 : 0;
}

int node_svcard_block(node_svcard_t *self, const char *card, bool blocked)
{
    if (!node_svcard_id_ok(card))
        return -1;
    bus_val_t *c = s_entry(self, card);
    if (!c || bus_val_map_set_bool(c, "blocked", blocked) != 0)
        return -1;
    self->dirty = true;
    return 0;
}

int64_t node_svcard_since(const node_svcard_t *self)
{
    return self->since;
}

void node_svcard_set_since(node_svcard_t *self, int64_t version)
{
    if (version != self->since)
        self->dirty = true;
    self->since = version;
}

const char *node_svcard_next_blocked(const node_svcard_t *self, size_t *pos)
{
    size_t n = self ? bus_val_size(self->cards) : 0;
    while (*pos < n) {
        size_t i = (*pos)++;
        bool blocked = false;
        if (bus_val_map_get_bool(bus_val_map_value(self->cards, i), "blocked", &blocked) &&
            blocked)
            return bus_val_map_key(self->cards, i);
    }
    return NULL;
}

size_t node_svcard_count(const node_svcard_t *self, size_t *blocked)
{
    size_t n = bus_val_size(self->cards), b = 0;
    for (size_t i = 0; i < n; i++) {
        bool is = false;
        bus_val_map_get_bool(bus_val_map_value(self->cards, i), "blocked", &is);
        b += is;
    }
    if (blocked)
        *blocked = b;
    return n;
}

int node_svcard_save(node_svcard_t *self, char *why, size_t size)
{
    if (!self->dirty)
        return 0;
    bus_val_t *doc = bus_val_new_map();
    bus_val_t *cards = bus_val_dup(self->cards);
    bus_buf_t buf = {0};
    int rc = -1;
    if (!doc || !cards) {
        bus_val_destroy(&doc);
        bus_val_destroy(&cards);
        snprintf(why, size, "out of memory");
        return -1;
    }
    rc = bus_val_map_set_int(doc, "format", S_FORMAT);
    rc |= bus_val_map_set_int(doc, "since", self->since);
    rc |= bus_val_map_set(doc, "cards", &cards);
    if (rc == 0)
        rc = bus_val_encode(doc, &buf);
    bus_val_destroy(&doc);
    if (rc != 0) {
        bus_buf_free(&buf);
        snprintf(why, size, "out of memory");
        return -1;
    }
    /* not synced: a crash puts an older store back, which the next pull brings up to date */
    rc = node_file_write(self->path, buf.data, buf.len, 0, why, size);
    bus_buf_free(&buf);
    if (rc == 0)
        self->dirty = false;
    return rc;
}
