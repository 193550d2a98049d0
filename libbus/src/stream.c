/*  =========================================================================
    stream.c - Redis Streams consumer groups with pending recovery and dead letters

    One reader is driven by one thread (the worker's, or a test's). A poll
    makes up to three reads, each applied as one batch:

    - a batch of this consumer's own pending entries (its PEL), walked with
      a cursor: from the start (entries a previous run under the same name
      left unacknowledged) and again whenever entries failed and the retry
      delay has passed. The cursor moves past an entry that fails again, so
      one entry that keeps failing is tried once per walk, never re-read at
      the head of the list while everything behind it waits;
    - XAUTOCLAIM of entries other consumers left idle, every S_CLAIM_EVERY_MS;
    - new entries (">"), blocking only when the poll found nothing else.

    An entry is acknowledged only when the apply function applied it, or
    rejected it and it was parked in the dead-letter stream first. A batch
    the function fails is applied again one entry at a time in the same
    poll, so a poison entry cannot hold back the rest. Entries that still
    fail stay pending; the retry delay of the next walk doubles from
    S_RETRY_MIN_MS to S_RETRY_MAX_MS while walks keep failing and is reset
    by a walk that fails nothing. The worker thread sleeps (same bounds,
    doubling) after a poll that failed and made no progress, so neither a
    dead Redis nor a failing entry makes it spin, and new entries are read
    between two retries.

    Parking is at least once: a crash between the XADD to the dead-letter
    stream and the XACK parks the entry again on its next delivery. Dead
    letters are never trimmed; an operator reads them with
    bus_stream_dead_list and deletes them when handled.
    =========================================================================
*/
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bus/keys.h"
#include "bus/msg.h"
#include "bus/stream.h"
#include "bus/val.h"

#define S_CLAIM_IDLE_MS     5000
#define S_CLAIM_EVERY_MS    1000
#define S_NAME_MAX          128
#define S_RETRY_MIN_MS      100
#define S_RETRY_MAX_MS      5000
#define S_XACK_HEAD         3  /* XACK stream group */
#define S_PARK_HEAD         11 /* XADD key * entry id reason r consumer c ts ms */
#define S_DEAD_META         4  /* entry, reason, consumer, ts lead every dead letter */
#define S_DEAD_LIST_DEFAULT 100
#define S_TS_MAX            24

struct bus_stream_reader {
    bus_redis_t *redis;
    char stream[S_NAME_MAX], group[S_NAME_MAX], consumer[S_NAME_MAX];
    char dead_key[BUS_KEY_MAX];
    bool group_ready;
    /* walk of our own pending entries */
    bool walking;                        /* a walk is under way */
    char walk_cursor[BUS_STREAM_ID_MAX]; /* last own pending id handled by this walk */
    bool dirty;                          /* entries failed and are pending with us */
    bool retry_armed;                    /* retry_at is set */
    int64_t retry_at;
    int retry_ms;
    /* taking over from others */
    char claim_cursor[BUS_STREAM_ID_MAX];
    int claim_idle_ms;
    int64_t next_claim;
    /* counters: written by the polling thread, read from any (atomics) */
    int64_t applied, parked, claimed, errors;
};

static void s_count(int64_t *counter, int64_t delta)
{
    __atomic_add_fetch(counter, delta, __ATOMIC_RELAXED);
}

bus_stream_reader_t *bus_stream_reader_new(bus_redis_t *redis, const char *stream,
                                           const char *group, const char *consumer)
{
    bus_stream_reader_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->redis = redis;
    snprintf(self->stream, sizeof(self->stream), "%s", stream);
    snprintf(self->group, sizeof(self->group), "%s", group);
    snprintf(self->consumer, sizeof(self->consumer), "%s", consumer);
    if (!bus_key_dead(self->dead_key, self->group)) {
        free(self);
        return NULL;
    }
    self->walking = true; /* first drain what a previous run left pending */
    strcpy(self->walk_cursor, "0-0");
    strcpy(self->claim_cursor, "0-0");
    self->claim_idle_ms = S_CLAIM_IDLE_MS;
    self->retry_ms = S_RETRY_MIN_MS;
    return self;
}

void bus_stream_reader_destroy(bus_stream_reader_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

void bus_stream_reader_set_claim_idle(bus_stream_reader_t *self, int ms)
{
    self->claim_idle_ms = ms > 0 ? ms : S_CLAIM_IDLE_MS;
}

void bus_stream_reader_counts(bus_stream_reader_t *self, bus_stream_counts_t *out)
{
    out->applied = __atomic_load_n(&self->applied, __ATOMIC_RELAXED);
    out->parked = __atomic_load_n(&self->parked, __ATOMIC_RELAXED);
    out->claimed = __atomic_load_n(&self->claimed, __ATOMIC_RELAXED);
    out->errors = __atomic_load_n(&self->errors, __ATOMIC_RELAXED);
}

/*  Does our group exist on the stream? Asked with a read-only command. */
static bool s_group_exists(bus_stream_reader_t *self)
{
    redisReply *r = bus_redis_command(self->redis, "XINFO GROUPS %s", self->stream);
    bool found = false;
    for (size_t g = 0; r && r->type == REDIS_REPLY_ARRAY && g < r->elements && !found; g++) {
        redisReply *grp = r->element[g];
        for (size_t k = 0; grp->type == REDIS_REPLY_ARRAY && k + 1 < grp->elements; k += 2)
            if (grp->element[k]->type == REDIS_REPLY_STRING &&
                strcmp(grp->element[k]->str, "name") == 0 &&
                grp->element[k + 1]->type == REDIS_REPLY_STRING &&
                strcmp(grp->element[k + 1]->str, self->group) == 0)
                found = true;
    }
    if (r)
        freeReplyObject(r);
    return found;
}

static int s_ensure_group(bus_stream_reader_t *self)
{
    if (self->group_ready)
        return 0;
    redisReply *r =
        bus_redis_command(self->redis, "XGROUP CREATE %s %s 0 MKSTREAM", self->stream, self->group);
    if (!r)
        return -1;
    bool ok = r->type != REDIS_REPLY_ERROR || strstr(r->str, "BUSYGROUP");
    freeReplyObject(r);
    if (!ok)
        ok = s_group_exists(self); /* CREATE is a write: refused (OOM...) even for a group
                                      that exists, which XREADGROUP could read */
    self->group_ready = ok;
    return ok ? 0 : -1;
}

const char *bus_stream_field(const bus_stream_entry_t *entry, const char *name, size_t *len)
{
    for (int i = 0; i < entry->nfields; i++)
        if (strcmp(entry->names[i], name) == 0) {
            if (len)
                *len = entry->lens[i];
            return entry->values[i];
        }
    return NULL;
}

/*  Entries of ours stay pending unapplied: make sure a walk retries them after the delay (a walk
    under way arms the next one when it ends). */
static void s_arm(bus_stream_reader_t *self)
{
    self->dirty = true;
    if (!self->walking && !self->retry_armed) {
        self->retry_at = bus_mono_ms() + self->retry_ms;
        self->retry_armed = true;
    }
}

/*  fn failed an entry alone: count it; it stays pending and is retried. */
static void s_failed(bus_stream_reader_t *self)
{
    s_count(&self->errors, 1);
    s_arm(self);
}

/*  A Redis call failed: count it. Whatever it concerned stays pending. */
static int s_redis_failed(bus_stream_reader_t *self, redisReply *r)
{
    s_count(&self->errors, 1);
    if (r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOGROUP"))
        self->group_ready = false; /* the stream was deleted: recreate next time */
    return -1;
}

/*  Write a rejected entry to the dead-letter stream: entry, reason, consumer, ts, then its own
    fields as they were. 0 when written, -1 on a Redis error (the entry then stays pending). */
static int s_park(bus_stream_reader_t *self, const bus_stream_entry_t *e)
{
    size_t argc = S_PARK_HEAD + 2 * (size_t)e->nfields;
    const char **argv = calloc(argc, sizeof(*argv));
    size_t *argvlen = calloc(argc, sizeof(*argvlen));
    int rc = -1;
    if (!argv || !argvlen)
        goto out_free;
    char ts[S_TS_MAX];
    snprintf(ts, sizeof(ts), "%lld", (long long)bus_now_ms());
    const char *head[S_PARK_HEAD] = {"XADD",         self->dead_key, "*",         "entry",
                                     e->id,          "reason",       e->rejected, "consumer",
                                     self->consumer, "ts",           ts};
    for (size_t i = 0; i < S_PARK_HEAD; i++) {
        argv[i] = head[i];
        argvlen[i] = strlen(head[i]);
    }
    for (int k = 0; k < e->nfields; k++) {
        size_t at = S_PARK_HEAD + 2 * (size_t)k;
        argv[at] = e->names[k];
        argvlen[at] = strlen(e->names[k]);
        argv[at + 1] = e->values[k];
        argvlen[at + 1] = e->lens[k];
    }
    redisReply *r = bus_redis_commandargv(self->redis, (int)argc, argv, argvlen);
    if (r && r->type == REDIS_REPLY_STRING)
        rc = 0;
    else
        s_redis_failed(self, r);
    if (r)
        freeReplyObject(r);
out_free:
    free(argv);
    free(argvlen);
    return rc;
}

/*  One batch being applied: the entries handed to fn, and the ids to acknowledge. */
typedef struct {
    bus_stream_entry_t *entries;
    int n;
    const char **ack; /* XACK stream group id... */
    int nack;
    int napplied, nparked;
} s_batch_t;

/*  fn returned 0 for entry e: queue it for the XACK, parking it first if it was rejected. */
static void s_settle(bus_stream_reader_t *self, s_batch_t *b, const bus_stream_entry_t *e)
{
    if (e->rejected) {
        if (s_park(self, e) != 0) {
            s_arm(self); /* retried: fn rejects it again and we park it then */
            return;
        }
        b->nparked++;
    } else
        b->napplied++;
    b->ack[b->nack++] = e->id;
}

/*  Hand the batch to fn; when it fails a batch of several, hand it the entries one by one. */
static void s_run(bus_stream_reader_t *self, s_batch_t *b, bus_stream_fn *fn, void *arg)
{
    for (int i = 0; i < b->n; i++)
        b->entries[i].rejected = NULL;
    if (fn(b->entries, b->n, arg) == 0) {
        for (int i = 0; i < b->n; i++)
            s_settle(self, b, &b->entries[i]);
        return;
    }
    if (b->n == 1) {
        s_failed(self);
        return;
    }
    for (int i = 0; i < b->n; i++) {
        bus_stream_entry_t *e = &b->entries[i];
        e->rejected = NULL;
        if (fn(e, 1, arg) == 0)
            s_settle(self, b, e);
        else
            s_failed(self);
    }
}

/*  Does this [id, [f, v, ...]] element carry an entry? Sets *gone for an entry deleted from the
    stream (nil fields: acknowledged unseen). */
static bool s_entry_ok(const redisReply *e, bool *gone)
{
    *gone = false;
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
        return false;
    const redisReply *f = e->element[1];
    if (f->type != REDIS_REPLY_ARRAY) {
        *gone = true;
        return false;
    }
    if (f->elements == 0 || f->elements % 2 != 0)
        return false;
    for (size_t k = 0; k < f->elements; k++)
        if (f->element[k]->type != REDIS_REPLY_STRING)
            return false;
    return true;
}

/*  Apply the entries of an array reply [[id, [f, v, ...]], ...]: applied and parked entries are
    acknowledged with one XACK, failed ones stay pending. Entries are given to fn whole, whatever
    their number of fields. claimed: they were taken over with XAUTOCLAIM (counted). Returns the
    number applied or parked, or -1 on a Redis error (counted). */
static int s_apply(bus_stream_reader_t *self, redisReply *entries, bus_stream_fn *fn, void *arg,
                   bool claimed)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY || entries->elements == 0)
        return 0;
    size_t n = entries->elements, nfields = 0;
    for (size_t i = 0; i < n; i++) {
        bool gone;
        if (s_entry_ok(entries->element[i], &gone))
            nfields += entries->element[i]->element[1]->elements / 2;
    }
    s_batch_t b = {0};
    b.entries = calloc(n, sizeof(*b.entries));
    b.ack = calloc(n + S_XACK_HEAD, sizeof(*b.ack));
    const char **strs = calloc(2 * nfields + 1, sizeof(*strs)); /* names and values, pooled */
    size_t *lens = calloc(nfields + 1, sizeof(*lens));
    int rc = 0;
    if (!b.entries || !b.ack || !strs || !lens) {
        rc = s_redis_failed(self, NULL);
        goto out_free;
    }
    b.ack[b.nack++] = "XACK";
    b.ack[b.nack++] = self->stream;
    b.ack[b.nack++] = self->group;
    size_t pool = 0;
    for (size_t i = 0; i < n; i++) {
        redisReply *e = entries->element[i];
        bool gone;
        if (!s_entry_ok(e, &gone)) {
            if (gone)
                b.ack[b.nack++] = e->element[0]->str;
            continue; /* a reply Redis never sends: leave it pending, never ack it unseen */
        }
        redisReply *f = e->element[1];
        bus_stream_entry_t *be = &b.entries[b.n++];
        be->id = e->element[0]->str;
        be->nfields = (int)(f->elements / 2);
        be->names = &strs[2 * pool];
        be->values = &strs[2 * pool + (size_t)be->nfields];
        be->lens = &lens[pool];
        for (int k = 0; k < be->nfields; k++) {
            be->names[k] = f->element[2 * k]->str;
            be->values[k] = f->element[2 * k + 1]->str;
            lens[pool + (size_t)k] = f->element[2 * k + 1]->len;
        }
        pool += (size_t)be->nfields;
    }
    if (claimed)
        s_count(&self->claimed, b.n);
    if (b.n > 0)
        s_run(self, &b, fn, arg);
    if (b.nack > S_XACK_HEAD) {
        redisReply *r = bus_redis_commandargv(self->redis, b.nack, b.ack, NULL);
        if (!r || r->type != REDIS_REPLY_INTEGER) {
            rc = s_redis_failed(self, r); /* redelivered later: applying again is harmless */
            s_arm(self);
        } else {
            s_count(&self->applied, b.napplied);
            s_count(&self->parked, b.nparked);
            rc = b.napplied + b.nparked;
        }
        if (r)
            freeReplyObject(r);
    }
out_free:
    free(b.entries);
    free(b.ack);
    free(strs);
    free(lens);
    return rc;
}

/*  XREADGROUP reply: [[stream, [[id, fields], ...]]] or nil. */
static redisReply *s_entries(redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1)
        return NULL;
    redisReply *s = r->element[0];
    if (s->type != REDIS_REPLY_ARRAY || s->elements != 2)
        return NULL;
    return s->element[1];
}

/*  One batch of our own pending entries after the walk cursor. *seen is set to the number read;
    the walk ends at an empty batch and arms the next one if anything failed. Returns the number
    applied or parked, or -1 on a Redis error (counted). */
static int s_walk_step(bus_stream_reader_t *self, int count, bus_stream_fn *fn, void *arg,
                       int *seen)
{
    *seen = 0;
    redisReply *r =
        bus_redis_command(self->redis, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s %s", self->group,
                          self->consumer, count, self->stream, self->walk_cursor);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        s_redis_failed(self, r);
        if (r)
            freeReplyObject(r);
        return -1;
    }
    redisReply *entries = s_entries(r);
    if (!entries || entries->type != REDIS_REPLY_ARRAY || entries->elements == 0) {
        freeReplyObject(r);
        self->walking = false;
        if (self->dirty) {
            self->retry_at = bus_mono_ms() + self->retry_ms;
            self->retry_armed = true;
            /* stay under claim_idle_ms: our own failing entries must not look abandoned */
            int cap =
                self->claim_idle_ms / 2 < S_RETRY_MAX_MS ? self->claim_idle_ms / 2 : S_RETRY_MAX_MS;
            self->retry_ms = self->retry_ms * 2 < cap ? self->retry_ms * 2 : cap;
            if (self->retry_ms < S_RETRY_MIN_MS)
                self->retry_ms = S_RETRY_MIN_MS;
        } else
            self->retry_ms = S_RETRY_MIN_MS;
        return 0;
    }
    *seen = (int)entries->elements;
    redisReply *last = entries->element[entries->elements - 1];
    if (last->type == REDIS_REPLY_ARRAY && last->elements >= 1 &&
        last->element[0]->type == REDIS_REPLY_STRING)
        snprintf(self->walk_cursor, sizeof(self->walk_cursor), "%s", last->element[0]->str);
    int n = s_apply(self, entries, fn, arg, false);
    freeReplyObject(r);
    return n;
}

/*  Take over entries other consumers left idle for claim_idle_ms. Same returns as s_walk_step. */
static int s_claim(bus_stream_reader_t *self, int count, bus_stream_fn *fn, void *arg, int *seen)
{
    *seen = 0;
    self->next_claim = bus_mono_ms() + S_CLAIM_EVERY_MS;
    redisReply *r = bus_redis_command(self->redis, "XAUTOCLAIM %s %s %s %d %s COUNT %d",
                                      self->stream, self->group, self->consumer,
                                      self->claim_idle_ms, self->claim_cursor, count);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        s_redis_failed(self, r);
        if (r)
            freeReplyObject(r);
        return -1;
    }
    snprintf(self->claim_cursor, sizeof(self->claim_cursor), "%s", r->element[0]->str);
    redisReply *entries = r->element[1];
    *seen = entries->type == REDIS_REPLY_ARRAY ? (int)entries->elements : 0;
    if (*seen > 0 && strcmp(self->claim_cursor, "0-0") != 0)
        self->next_claim = 0; /* a dead instance left more: go on at the next poll */
    int n = s_apply(self, entries, fn, arg, true);
    freeReplyObject(r);
    return n;
}

/*  New entries, waiting up to block_ms (0 = not at all). Same returns as s_walk_step. */
static int s_read_new(bus_stream_reader_t *self, int count, int block_ms, bus_stream_fn *fn,
                      void *arg)
{
    redisReply *r;
    if (block_ms > 0)
        r = bus_redis_command(self->redis, "XREADGROUP GROUP %s %s COUNT %d BLOCK %d STREAMS %s >",
                              self->group, self->consumer, count, block_ms, self->stream);
    else
        r = bus_redis_command(self->redis, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s >",
                              self->group, self->consumer, count, self->stream);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        s_redis_failed(self, r);
        if (r)
            freeReplyObject(r);
        return -1;
    }
    int n = s_apply(self, s_entries(r), fn, arg, false);
    freeReplyObject(r);
    return n;
}

int bus_stream_reader_poll(bus_stream_reader_t *self, int count, int block_ms, bus_stream_fn *fn,
                           void *arg)
{
    if (s_ensure_group(self) != 0)
        return s_redis_failed(self, NULL);
    if (count < 1)
        count = 1;
    int64_t now = bus_mono_ms();
    if (!self->walking && self->dirty && self->retry_armed && now >= self->retry_at) {
        self->walking = true; /* retry what failed, from the start of our pending list */
        self->retry_armed = false;
        self->dirty = false;
        strcpy(self->walk_cursor, "0-0");
    }
    int done = 0, seen = 0, n;
    if (self->walking) {
        if ((n = s_walk_step(self, count, fn, arg, &seen)) < 0)
            return -1;
        done += n;
    }
    if (now >= self->next_claim) {
        int claimed;
        if ((n = s_claim(self, count, fn, arg, &claimed)) < 0)
            return -1;
        done += n;
        seen += claimed;
    }
    if (seen > 0 || self->walking)
        block_ms = 0; /* more work is waiting: do not sit in BLOCK */
    else if (block_ms > 0 && self->retry_armed) {
        int64_t until_retry = self->retry_at - bus_mono_ms();
        if (until_retry < block_ms)
            block_ms = until_retry > 0 ? (int)until_retry : 0;
    }
    if ((n = s_read_new(self, count, block_ms, fn, arg)) < 0)
        return -1;
    return done + n;
}

int bus_stream_id_cmp(const char *a, const char *b)
{
    unsigned long long ams = 0, aseq = 0, bms = 0, bseq = 0;
    sscanf(a ? a : "0-0", "%llu-%llu", &ams, &aseq);
    sscanf(b ? b : "0-0", "%llu-%llu", &bms, &bseq);
    if (ams != bms)
        return ams < bms ? -1 : 1;
    if (aseq != bseq)
        return aseq < bseq ? -1 : 1;
    return 0;
}

bool bus_stream_id_valid(const char *id)
{
    if (!id || strlen(id) >= BUS_STREAM_ID_MAX)
        return false;
    const char *p = id;
    int digits = 0;
    while (*p >= '0' && *p <= '9')
        p++, digits++;
    if (digits == 0 || *p++ != '-')
        return false;
    digits = 0;
    while (*p >= '0' && *p <= '9')
        p++, digits++;
    return digits > 0 && *p == '\0';
}

/*  Is [s, s+len) valid UTF-8 text without NUL (sent as a string), or binary (sent as bin)? */
static bool s_is_text(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t more;
        unsigned int cp;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0)
            more = 1, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0)
            more = 2, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0)
            more = 3, cp = c & 0x07;
        else
            return false;
        if (more >= len - i)
            return false;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const unsigned int least[] = {0, 0x80, 0x800, 0x10000};
        if (cp < least[more] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += more + 1;
    }
    return true;
}

static bus_val_t *s_bytes_val(const redisReply *r)
{
    if (s_is_text((const unsigned char *)r->str, r->len))
        return bus_val_new_strn(r->str, r->len);
    return bus_val_new_bin(r->str, r->len);
}

/*  A dead letter is [id, [entry, e, reason, r, consumer, c, ts, t, f, v, ...]]: the first
    S_DEAD_META pairs are ours by position, so an original field called "reason" is kept apart. */
static const char *const s_dead_meta[S_DEAD_META] = {"entry", "reason", "consumer", "ts"};

/*  Was this entry of the dead-letter stream written by s_park? */
static bool s_dead_ok(const redisReply *e)
{
    bool gone;
    if (!s_entry_ok(e, &gone) || e->element[1]->elements < 2 * S_DEAD_META)
        return false;
    for (int k = 0; k < S_DEAD_META; k++)
        if (strcmp(e->element[1]->element[2 * k]->str, s_dead_meta[k]) != 0)
            return false;
    return true;
}

/*  A dead letter (s_dead_ok) as a map; *bytes: its original fields' bytes. NULL on allocation
    failure. */
static bus_val_t *s_dead_entry(const redisReply *e, size_t *bytes)
{
    const redisReply *f = e->element[1];
    bus_val_t *row = bus_val_new_map();
    bus_val_t *fields = bus_val_new_map();
    if (!row || !fields)
        goto out_free;
    bool ok = bus_val_map_set_str(row, "id", e->element[0]->str) == 0;
    for (int k = 0; k < S_DEAD_META; k++) {
        const char *name = s_dead_meta[k], *v = f->element[2 * k + 1]->str;
        if (strcmp(name, "ts") == 0)
            ok = ok && bus_val_map_set_int(row, name, strtoll(v, NULL, 10)) == 0;
        else
            ok = ok && bus_val_map_set_str(row, name, v) == 0;
    }
    *bytes = 0;
    for (size_t k = 2 * S_DEAD_META; ok && k + 1 < f->elements; k += 2) {
        bus_val_t *v = s_bytes_val(f->element[k + 1]);
        ok = v && bus_val_map_set(fields, f->element[k]->str, &v) == 0;
        *bytes += f->element[k]->len + f->element[k + 1]->len;
    }
    if (ok && bus_val_map_set(row, "fields", &fields) == 0)
        return row;
out_free:
    bus_val_destroy(&fields);
    bus_val_destroy(&row);
    return NULL;
}

bus_val_t *bus_stream_dead_list(bus_redis_t *redis, const char *group, const char *after, int count)
{
    char key[BUS_KEY_MAX], start[BUS_STREAM_ID_MAX + 1];
    if (!group || !bus_key_dead(key, group))
        return NULL;
    if (count < 1)
        count = S_DEAD_LIST_DEFAULT;
    if (count > BUS_STREAM_DEAD_LIST_MAX)
        count = BUS_STREAM_DEAD_LIST_MAX;
    if (after && *after) {
        if (!bus_stream_id_valid(after))
            return NULL;
        snprintf(start, sizeof(start), "(%s", after);
    } else
        strcpy(start, "-");
    redisReply *len = bus_redis_command(redis, "XLEN %s", key);
    if (!len || len->type != REDIS_REPLY_INTEGER) {
        if (len)
            freeReplyObject(len);
        return NULL;
    }
    int64_t total = len->integer;
    freeReplyObject(len);
    redisReply *r = bus_redis_command(redis, "XRANGE %s %s + COUNT %d", key, start, count + 1);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return NULL;
    }
    bus_val_t *out = bus_val_new_map();
    bus_val_t *list = bus_val_new_arr();
    bool ok = out && list && bus_val_map_set_str(out, "group", group) == 0 &&
              bus_val_map_set_int(out, "total", total) == 0;
    const char *last = after && *after ? after : "";
    size_t bytes = 0, i = 0;
    for (; ok && i < r->elements && i < (size_t)count; i++) {
        const redisReply *e = r->element[i];
        if (!s_dead_ok(e)) {
            if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
                e->element[0]->type == REDIS_REPLY_STRING)
                last = e->element[0]->str; /* not ours (added by hand): passed over */
            continue;
        }
        size_t size = 0;
        bus_val_t *row = s_dead_entry(e, &size);
        if (!row) {
            ok = false;
            break;
        }
        if (bus_val_size(list) > 0 && bytes + size > BUS_STREAM_DEAD_LIST_BYTES) {
            bus_val_destroy(&row); /* the next page starts with it */
            break;
        }
        bytes += size;
        last = r->element[i]->element[0]->str;
        ok = bus_val_arr_push(list, &row) == 0;
    }
    ok = ok && bus_val_map_set(out, "entries", &list) == 0 &&
         bus_val_map_set_str(out, "last", last) == 0 &&
         bus_val_map_set_bool(out, "more", i < r->elements) == 0;
    freeReplyObject(r);
    bus_val_destroy(&list);
    if (!ok)
        bus_val_destroy(&out);
    return out;
}

/*  ---------------------------------------------------------------------------------------------
    The worker thread */

struct bus_stream_worker {
    pthread_t thread;
    pthread_mutex_t lock; /* guards stop, for the wake-up */
    pthread_cond_t wake;
    int stop;
    bus_stream_reader_t *reader;
    int batch, block_ms;
    bus_stream_fn *fn;
    void *arg;
    int gather_ms; /* atomic */
};

/*  Sleep ms, or less if stopped. Returns whether the worker is stopping. */
static bool s_worker_wait(bus_stream_worker_t *self, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&self->lock);
    int rc = 0;
    while (!self->stop && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&self->wake, &self->lock, &until);
    bool stop = self->stop;
    pthread_mutex_unlock(&self->lock);
    return stop;
}

static bool s_worker_stopping(bus_stream_worker_t *self)
{
    pthread_mutex_lock(&self->lock);
    bool stop = self->stop;
    pthread_mutex_unlock(&self->lock);
    return stop;
}

static void *s_worker_main(void *data)
{
    bus_stream_worker_t *self = data;
    int backoff = 0;
    while (!s_worker_stopping(self)) {
        int64_t errors = __atomic_load_n(&self->reader->errors, __ATOMIC_RELAXED);
        int n =
            bus_stream_reader_poll(self->reader, self->batch, self->block_ms, self->fn, self->arg);
        bool failed = n < 0 || __atomic_load_n(&self->reader->errors, __ATOMIC_RELAXED) != errors;
        if (failed && n <= 0) {
            /* nothing moved: pause, longer each time, so a dead Redis or a failing entry costs
               one attempt per pause */
            /* capped below half the claim idle time, as the walk's retry delay is: a longer
               pause would let this consumer's own failing entries be claimed as if it were gone */
            int cap = self->reader->claim_idle_ms / 2 < S_RETRY_MAX_MS
                          ? self->reader->claim_idle_ms / 2
                          : S_RETRY_MAX_MS;
            backoff = backoff == 0 ? S_RETRY_MIN_MS : (backoff * 2 < cap ? backoff * 2 : cap);
            s_worker_wait(self, backoff);
            continue;
        }
        if (!failed)
            backoff = 0;
        int gather = __atomic_load_n(&self->gather_ms, __ATOMIC_RELAXED);
        if (n > 0 && n < self->batch && gather > 0)
            s_worker_wait(self, gather);
    }
    return NULL;
}

bus_stream_worker_t *bus_stream_worker_start(bus_redis_t *redis, const char *stream,
                                             const char *group, const char *consumer, int batch,
                                             int block_ms, int claim_idle_ms, bus_stream_fn *fn,
                                             void *arg)
{
    bus_stream_worker_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    pthread_condattr_t attr;
    bool cond_ok = pthread_condattr_init(&attr) == 0;
    cond_ok = cond_ok && pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
              pthread_cond_init(&self->wake, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!cond_ok)
        goto out_free;
    if (pthread_mutex_init(&self->lock, NULL) != 0)
        goto out_cond;
    self->reader = bus_stream_reader_new(redis, stream, group, consumer);
    if (!self->reader)
        goto out_mutex;
    bus_stream_reader_set_claim_idle(self->reader, claim_idle_ms);
    self->batch = batch > 0 ? batch : 1;
    self->block_ms = block_ms;
    self->fn = fn;
    self->arg = arg;
    if (pthread_create(&self->thread, NULL, s_worker_main, self) != 0)
        goto out_reader;
    return self;
out_reader:
    bus_stream_reader_destroy(&self->reader);
out_mutex:
    pthread_mutex_destroy(&self->lock);
out_cond:
    pthread_cond_destroy(&self->wake);
out_free:
    free(self);
    return NULL;
}

void bus_stream_worker_stop(bus_stream_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_stream_worker_t *self = *self_p;
    pthread_mutex_lock(&self->lock);
    self->stop = 1;
    pthread_cond_signal(&self->wake);
    pthread_mutex_unlock(&self->lock);
    pthread_join(self->thread, NULL);
    bus_stream_reader_destroy(&self->reader);
    pthread_mutex_destroy(&self->lock);
    pthread_cond_destroy(&self->wake);
    free(self);
    *self_p = NULL;
}

void bus_stream_worker_set_gather(bus_stream_worker_t *self, int ms)
{
    __atomic_store_n(&self->gather_ms, ms > 0 ? ms : 0, __ATOMIC_RELAXED);
}

int64_t bus_stream_worker_applied(bus_stream_worker_t *self)
{
    return __atomic_load_n(&self->reader->applied, __ATOMIC_RELAXED);
}

int64_t bus_stream_worker_parked(bus_stream_worker_t *self)
{
    return __atomic_load_n(&self->reader->parked, __ATOMIC_RELAXED);
}

int64_t bus_stream_worker_claimed(bus_stream_worker_t *self)
{
    return __atomic_load_n(&self->reader->claimed, __ATOMIC_RELAXED);
}

int64_t bus_stream_worker_errors(bus_stream_worker_t *self)
{
    return __atomic_load_n(&self->reader->errors, __ATOMIC_RELAXED);
}
