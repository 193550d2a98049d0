/*  =========================================================================
    stream.c - Redis Streams consumer groups with pending recovery
    =========================================================================
*/
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include "bus/msg.h"
#include "bus/stream.h"

#define S_CLAIM_IDLE_MS  5000
#define S_CLAIM_EVERY_MS 1000
#define S_NAME_MAX       128

struct bus_stream_reader {
    bus_redis_t *redis;
    char stream[S_NAME_MAX], group[S_NAME_MAX], consumer[S_NAME_MAX];
    bool group_ready;
    bool own_pending_done;
    char claim_cursor[BUS_STREAM_ID_MAX];
    int claim_idle_ms;
    int64_t next_claim;
};

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
    strcpy(self->claim_cursor, "0-0");
    self->claim_idle_ms = S_CLAIM_IDLE_MS;
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

/*  Apply the entries of an array reply [[id, [f, v, ...]], ...] as one batch, then acknowledge
    them with one XACK. Entries whose fields are nil (trimmed away) are acknowledged unseen.
    Returns the number acknowledged, or -1 on a Redis error. */
static int s_apply(bus_stream_reader_t *self, redisReply *entries, bus_stream_fn *fn, void *arg)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY || entries->elements == 0)
        return 0;
    size_t n = entries->elements;
    bus_stream_entry_t *batch = calloc(n, sizeof(*batch));
    const char **ack = calloc(n + 3, sizeof(*ack));
    const char **strs = calloc(n * 2 * 64, sizeof(*strs)); /* names and values, pooled */
    size_t *lens = calloc(n * 64, sizeof(*lens));
    int nb = 0, nack = 0, rc = 0;
    if (!batch || !ack || !strs || !lens) {
        rc = -1;
        goto out_free;
    }
    ack[nack++] = "XACK";
    ack[nack++] = self->stream;
    ack[nack++] = self->group;
    size_t pool = 0;
    for (size_t i = 0; i < n; i++) {
        redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        redisReply *f = e->element[1];
        ack[nack++] = e->element[0]->str;
        if (f->type != REDIS_REPLY_ARRAY || f->elements / 2 > 64)
            continue;
        bus_stream_entry_t *b = &batch[nb++];
        b->id = e->element[0]->str;
        b->nfields = (int)f->elements / 2;
        b->names = &strs[pool * 2];
        b->values = &strs[pool * 2 + (size_t)b->nfields];
        b->lens = &lens[pool];
        for (int k = 0; k < b->nfields; k++) {
            b->names[k] = f->element[2 * k]->str;
            b->values[k] = f->element[2 * k + 1]->str;
            lens[pool + (size_t)k] = f->element[2 * k + 1]->len;
        }
        pool += (size_t)b->nfields;
    }
    if (nb > 0 && fn(batch, nb, arg) != 0)
        goto out_free; /* all stay pending */
    if (nack > 3) {
        redisReply *r = bus_redis_commandargv(self->redis, nack, ack, NULL);
        if (!r)
            rc = -1;
        else {
            freeReplyObject(r);
            rc = nack - 3;
        }
    }
out_free:
    free(batch);
    free(ack);
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

int bus_stream_reader_poll(bus_stream_reader_t *self, int count, int block_ms, bus_stream_fn *fn,
                           void *arg)
{
    if (s_ensure_group(self) != 0)
        return -1;
    int applied = 0;
    if (!self->own_pending_done) {
        /* our own entries delivered before a restart, not yet acknowledged */
        redisReply *r =
            bus_redis_command(self->redis, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s 0",
                              self->group, self->consumer, count, self->stream);
        if (!r)
            return -1;
        redisReply *entries = s_entries(r);
        int n = s_apply(self, entries, fn, arg);
        bool done = !entries || entries->elements == 0;
        freeReplyObject(r);
        if (n < 0)
            return -1;
        if (done)
            self->own_pending_done = true;
        return n;
    }
    if (bus_mono_ms() >= self->next_claim) {
        self->next_claim = bus_mono_ms() + S_CLAIM_EVERY_MS;
        redisReply *r = bus_redis_command(self->redis, "XAUTOCLAIM %s %s %s %d %s COUNT %d",
                                          self->stream, self->group, self->consumer,
                                          self->claim_idle_ms, self->claim_cursor, count);
        if (!r)
            return -1;
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2) {
            snprintf(self->claim_cursor, sizeof(self->claim_cursor), "%s", r->element[0]->str);
            int n = s_apply(self, r->element[1], fn, arg);
            if (n < 0) {
                freeReplyObject(r);
                return -1;
            }
            applied += n;
        }
        freeReplyObject(r);
    }
    redisReply *r;
    if (block_ms > 0)
        r = bus_redis_command(self->redis, "XREADGROUP GROUP %s %s COUNT %d BLOCK %d STREAMS %s >",
                              self->group, self->consumer, count, block_ms, self->stream);
    else
        r = bus_redis_command(self->redis, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s >",
                              self->group, self->consumer, count, self->stream);
    if (!r)
        return -1;
    if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOGROUP"))
        self->group_ready = false; /* the stream was deleted: recreate next time */
    int n = s_apply(self, s_entries(r), fn, arg);
    freeReplyObject(r);
    return n < 0 ? -1 : applied + n;
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

#define S_ERROR_PAUSE_MS 200

struct bus_stream_worker {
    pthread_t thread;
    bus_stream_reader_t *reader;
    bus_redis_t *redis;
    int batch, block_ms;
    bus_stream_fn *fn;
    void *arg;
    volatile int stop;
    int gather_ms;
    int64_t applied, errors;
};

static void *s_worker_main(void *data)
{
    bus_stream_worker_t *self = data;
    while (!__atomic_load_n(&self->stop, __ATOMIC_ACQUIRE)) {
        int n =
            bus_stream_reader_poll(self->reader, self->batch, self->block_ms, self->fn, self->arg);
        int gather = __atomic_load_n(&self->gather_ms, __ATOMIC_RELAXED);
        if (n > 0)
            __atomic_add_fetch(&self->applied, n, __ATOMIC_RELAXED);
        if (n > 0 && n < self->batch && gather > 0) {
            struct timespec ts = {gather / 1000, (gather % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        } else if (n < 0) {
            __atomic_add_fetch(&self->errors, 1, __ATOMIC_RELAXED);
            struct timespec ts = {0, S_ERROR_PAUSE_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
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
    self->reader = bus_stream_reader_new(redis, stream, group, consumer);
    if (!self->reader) {
        free(self);
        return NULL;
    }
    bus_stream_reader_set_claim_idle(self->reader, claim_idle_ms);
    self->redis = redis;
    self->batch = batch > 0 ? batch : 1;
    self->block_ms = block_ms;
    self->fn = fn;
    self->arg = arg;
    if (pthread_create(&self->thread, NULL, s_worker_main, self) != 0) {
        bus_stream_reader_destroy(&self->reader);
        free(self);
        return NULL;
    }
    return self;
}

void bus_stream_worker_stop(bus_stream_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_stream_worker_t *self = *self_p;
    __atomic_store_n(&self->stop, 1, __ATOMIC_RELEASE);
    pthread_join(self->thread, NULL);
    bus_stream_reader_destroy(&self->reader);
    free(self);
    *self_p = NULL;
}

void bus_stream_worker_set_gather(bus_stream_worker_t *self, int ms)
{
    __atomic_store_n(&self->gather_ms, ms > 0 ? ms : 0, __ATOMIC_RELAXED);
}

int64_t bus_stream_worker_applied(bus_stream_worker_t *self)
{
    return __atomic_load_n(&self->applied, __ATOMIC_RELAXED);
}

int64_t bus_stream_worker_errors(bus_stream_worker_t *self)
{
    return __atomic_load_n(&self->errors, __ATOMIC_RELAXED);
}
