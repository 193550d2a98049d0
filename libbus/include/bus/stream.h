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

    An entry is acknowledged only after it was applied, or rejected and
    parked in the dead-letter stream bus_key_dead(group). Failures are
    counted and retried after a delay that doubles (0.1 s up to 5 s, and
    below half of claim_idle_ms, so that a consumer does not claim its own
    failing entries from itself); an entry
    that keeps failing is retried once per delay while new entries go on
    being read.

    Threads: a reader (and the fn it calls) belongs to the thread that
    polls it; bus_stream_reader_counts and the bus_stream_worker_* counter
    getters and set_gather are safe from any thread. bus_stream_dead_list
    and bus_stream_id_* have no shared state.
    =========================================================================
*/
#ifndef BUS_STREAM_H_INCLUDED
#define BUS_STREAM_H_INCLUDED

#include "bus/redis.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BUS_STREAM_ID_MAX 48
/* bus_stream_dead_list: entries per page at most, and bytes of field names and values per page
   (a page holds at least one entry, whatever its size). */
#define BUS_STREAM_DEAD_LIST_MAX   1000
#define BUS_STREAM_DEAD_LIST_BYTES (512 * 1024)

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

/* Read and apply up to count entries from each source, waiting up to block_ms for new ones (0 =
   don't wait; no wait when other work was found). Walks this consumer's own pending entries first
   (after a start, and after failures once the retry delay has passed), claims idle ones from
   others every second (and at the next poll again while a claim finds some and has more to
   scan), then reads new ones. Entries are given to fn whole, whatever their number of fields;
   entries deleted from the stream are acknowledged unseen. Returns the number applied or parked,
   or -1 on a Redis error (see bus_redis_errstr). Every failure is counted (errors). */
int bus_stream_reader_poll(bus_stream_reader_t *self, int count, int block_ms, bus_stream_fn *fn,
                           void *arg);

/* What a reader did: entries applied (and acknowledged); parked as dead letters; taken over
   from other consumers with XAUTOCLAIM (whatever became of them); failures (a Redis call that
   failed, or an entry fn failed alone, which stays pending). Safe from any thread. */
typedef struct bus_stream_counts {
    int64_t applied, parked, claimed, errors;
} bus_stream_counts_t;
void bus_stream_reader_counts(bus_stream_reader_t *self, bus_stream_counts_t *out);

/* A thread that runs a reader until stopped: it owns redis (and whatever arg holds) from the start
   on; fn runs on that thread. A poll that failed without applying anything pauses the loop, 0.1 s
   doubling to 5 s and reset by a clean poll, so a Redis restart is survived without spinning.
   batch entries at most per read, blocking up to block_ms for new ones. */
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
   fields: {name: value}}], last, more}. count <= 0 means 100, at most BUS_STREAM_DEAD_LIST_MAX;
   a page also stops before BUS_STREAM_DEAD_LIST_BYTES of fields (more is then true; pass last as
   after for the next page). ts is the parking time (ms since the epoch); field values that are
   UTF-8 text are strings, others (a sale payload is MessagePack) bin, byte for byte. Entries of
   the key that no reader parked (added by hand) are passed over. NULL on a Redis error, a
   malformed after, or allocation failure. Safe from any thread with its own redis. */
struct bus_val;
struct bus_val *bus_stream_dead_list(bus_redis_t *redis, const char *group, const char *after,
                                     int count);

/* Compare two stream ids ("ms-seq"): <0, 0, >0. Malformed ids compare as 0-0. */
int bus_stream_id_cmp(const char *a, const char *b);
/* Is id a complete stream id "<ms>-<seq>" (digits, shorter than BUS_STREAM_ID_MAX)? */
bool bus_stream_id_valid(const char *id);

#ifdef __cplusplus
}
#endif
#endif
