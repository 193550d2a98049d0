/*  =========================================================================
    bus/stream.h - consuming a Redis Stream through a consumer group

    Each scaled instance of a consumer (inventory, reporting) reads new
    entries with XREADGROUP under its own consumer name and acknowledges an
    entry only after its own atomic, idempotent update. Entries that another
    instance read but never acknowledged (it was killed) are taken over with
    XAUTOCLAIM once they have been idle for claim_idle_ms, and an instance
    restarted under the same name first re-reads its own pending entries
    (XREADGROUP with id 0). So every entry is applied, and the idempotent
    apply makes a second delivery harmless.
    =========================================================================
*/
#ifndef BUS_STREAM_H_INCLUDED
#define BUS_STREAM_H_INCLUDED

#include "bus/redis.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BUS_STREAM_ID_MAX 48

typedef struct bus_stream_reader bus_stream_reader_t;

/* One stream entry: its id and field/value pairs (values may be binary; lens gives sizes).
   rejected starts NULL; the apply function sets it (to a string that lives at least until the
   function returns) for an entry that can never apply: malformed, or refused by the script's
   validation. Such an entry is parked, not retried: it is written to the dead-letter stream
   bus_key_dead(group) with the reason and its original fields, counted, and only then
   acknowledged. */
typedef struct bus_stream_entry {
    const char *id;
    int nfields;
    const char **names;
    const char **values;
    const size_t *lens;
    const char *rejected;
} bus_stream_entry_t;

/* Called with a batch of entries read together. Return 0 when every entry was applied or
   rejected (see above): the applied ones are acknowledged with one XACK, the rejected ones parked
   first. Return -1 to leave them all pending: the reader then applies the same entries one at a
   time, so one bad entry cannot hold back the others, and an entry that still fails alone stays
   pending and is retried after a backoff (failures are counted). Applying must be idempotent per
   entry: an entry can be delivered again after a crash before the XACK. Return -1 only for
   failures that may pass (Redis down or refusing writes); anything permanent is a rejection. */
typedef int(bus_stream_fn)(bus_stream_entry_t *entries, int n, void *arg);

/* Look up a field of an entry; NULL if absent (*len set when found and len not NULL). */
const char *bus_stream_field(const bus_stream_entry_t *entry, const char *name, size_t *len);

/* A reader of stream in group as consumer; creates the group (MKSTREAM, from the start) if
   missing. NULL on allocation failure (Redis may be down: creation is retried on read). */
bus_stream_reader_t *bus_stream_reader_new(bus_redis_t *redis, const char *stream,
                                           const char *group, const char *consumer);
void bus_stream_reader_destroy(bus_stream_reader_t **self_p);
void bus_stream_reader_set_claim_idle(bus_stream_reader_t *self, int ms);

/* Read and apply up to count entries, waiting up to block_ms for new ones (0 = don't wait). First
   drains this consumer's own pending entries, then periodically claims idle ones from others.
   Returns the number applied, or -1 on a Redis error (see bus_redis_errstr). */
int bus_stream_reader_poll(bus_stream_reader_t *self, int count, int block_ms, bus_stream_fn *fn,
                           void *arg);

/* A thread that runs a reader until stopped: it owns redis (and whatever arg holds) from the start
   on; fn runs on that thread. A Redis error pauses the loop briefly and it carries on, so a Redis
   restart is survived. batch entries at most per read, blocking up to block_ms for new ones. */
typedef struct bus_stream_worker bus_stream_worker_t;
bus_stream_worker_t *bus_stream_worker_start(bus_redis_t *redis, const char *stream,
                                             const char *group, const char *consumer, int batch,
                                             int block_ms, int claim_idle_ms, bus_stream_fn *fn,
                                             void *arg);
/* After a read that returned less than a full batch, wait this long before the next one, so
   entries gather and are applied together (fewer Redis calls per entry, more latency). 0 = read
   again at once. Safe to call while the worker runs. */
void bus_stream_worker_set_gather(bus_stream_worker_t *self, int ms);
/* Stop (within block_ms), join, and destroy; redis is handed back to the caller. */
void bus_stream_worker_stop(bus_stream_worker_t **self_p);
/* Counters, read from any thread: entries applied; entries parked as dead letters; entries
   taken over from other consumers (XAUTOCLAIM); failed reads or applies (each one backs off). */
int64_t bus_stream_worker_applied(bus_stream_worker_t *self);
int64_t bus_stream_worker_parked(bus_stream_worker_t *self);
int64_t bus_stream_worker_claimed(bus_stream_worker_t *self);
int64_t bus_stream_worker_errors(bus_stream_worker_t *self);

/* The dead letters of group, oldest first, after stream id after (NULL or "" = from the start),
   at most count: a map {group, total (all parked), entries: [{id, entry, reason, consumer, ts,
   fields: {name: value}}], last, more}. Binary field values are given as they are (a sale
   payload is MessagePack). NULL on a Redis error. Safe from any thread with its own redis. */
struct bus_val;
struct bus_val *bus_stream_dead_list(bus_redis_t *redis, const char *group, const char *after,
                                     int count);

/* Compare two stream ids ("ms-seq"): <0, 0, >0. Malformed ids compare as 0-0. */
int bus_stream_id_cmp(const char *a, const char *b);

#ifdef __cplusplus
}
#endif
#endif
