/*  test_stream - the stream reader and worker against a real redis-server

    A private redis-server with a password runs on a free 127.0.0.1 port in
    a temporary directory. Each case uses its own stream and group. The apply function
    below is the test's oracle: it records which entry (by the index the
    test wrote into it, checked against the id XADD returned) was applied
    how many times, so "applied once" is counted here, not taken from the
    reader's counters, which are checked against it.
    */
#include <bus/msg.h>
#include <bus/stream.h>
#include <bus/val.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

#define T_ENTRIES_MAX   256
#define T_DEADLINE_MS   10000
#define T_WIDE_FIELDS   100
#define T_BINARY_LEN    6
#define T_BACKOFF_MS    2000
#define T_CALLS_SPIN    60 /* fn calls in T_BACKOFF_MS above which the worker spins */
#define T_CLAIM_IDLE_MS 300
#define T_BIG_LEN       (200 * 1024) /* three of these pass BUS_STREAM_DEAD_LIST_BYTES */
#define S_PASSWORD      "stream-secret"

static char s_dir[] = "/tmp/posbus-test-stream-XXXXXX";
static pid_t s_server, s_child;
static int s_port;
static const char s_binary[T_BINARY_LEN] = {'\x93', '\x00', '\xff', 'a', '\x00', '\xc1'};

static bus_redis_t *s_redis(void)
{
    bus_redis_cfg_t cfg = {
        .port = s_port, .password = S_PASSWORD, .backoff_min_ms = 50, .backoff_max_ms = 200};
    return bus_redis_new(&cfg);
}

static void s_cleanup(void)
{
    t_kill(&s_child);
    t_kill(&s_server);
    t_remove_dir(s_dir);
}

/*  ---------------------------------------------------------------------------------------------
    The oracle: what the test wrote, and what the apply function saw */

typedef struct {
    char ids[T_ENTRIES_MAX][BUS_STREAM_ID_MAX]; /* by index n, as XADD returned them */
    int sent;
    int applied[T_ENTRIES_MAX]; /* times entry n was applied */
    int wrong_ids;              /* entries whose id is not the one XADD gave index n */
    int calls, batch_calls;     /* fn calls; those with more than one entry */
    int reject_n;               /* index fn rejects, -1 none */
    int poison_n;               /* index whose presence fails the call, -1 none */
    int poison_seen;            /* calls that held the poison entry */
    bool fail_all, reject_all;
    int wide_fields, wide_matching; /* fields of the widest entry; how many matched */
} s_sink_t;

static void s_sink_init(s_sink_t *sink)
{
    memset(sink, 0, sizeof(*sink));
    sink->reject_n = -1;
    sink->poison_n = -1;
}

static int s_index(const bus_stream_entry_t *e)
{
    const char *n = bus_stream_field(e, "n", NULL);
    int i = n ? atoi(n) : -1;
    return i >= 0 && i < T_ENTRIES_MAX ? i : -1;
}

static int s_apply(bus_stream_entry_t *entries, int n, void *arg)
{
    s_sink_t *sink = arg;
    __atomic_add_fetch(&sink->calls, 1, __ATOMIC_RELAXED);
    if (n > 1)
        sink->batch_calls++;
    if (sink->fail_all)
        return -1;
    for (int k = 0; k < n; k++)
        if (s_index(&entries[k]) == sink->poison_n && sink->poison_n >= 0) {
            sink->poison_seen++;
            return -1; /* nothing of the batch applied */
        }
    for (int k = 0; k < n; k++) {
        bus_stream_entry_t *e = &entries[k];
        if (e->nfields > sink->wide_fields) {
            sink->wide_fields = e->nfields;
            sink->wide_matching = 0;
            for (int f = 0; f < e->nfields; f++) {
                char name[16], value[16];
                snprintf(name, sizeof(name), "f%d", f);
                snprintf(value, sizeof(value), "v%d", f);
                const char *got = bus_stream_field(e, name, NULL);
                if (got && strcmp(got, value) == 0)
                    sink->wide_matching++;
            }
        }
        int i = s_index(e);
        if (i < 0)
            continue;
        if (strcmp(e->id, sink->ids[i]) != 0)
            sink->wrong_ids++;
        if (i == sink->reject_n || sink->reject_all)
            e->rejected = "quantity out of range";
        else
            sink->applied[i]++;
    }
    return 0;
}

/*  Entries applied exactly once among the first sent; *twice counts those applied more. */
static int s_once(const s_sink_t *sink, int *twice)
{
    int once = 0;
    *twice = 0;
    for (int i = 0; i < sink->sent; i++) {
        once += sink->applied[i] == 1;
        *twice += sink->applied[i] > 1;
    }
    return once;
}

/*  XADD entry n = sink->sent to stream with fields n, payload (binary); records its id. */
static int s_add(bus_redis_t *redis, const char *stream, s_sink_t *sink)
{
    char n[16];
    snprintf(n, sizeof(n), "%d", sink->sent);
    const char *argv[] = {"XADD", stream, "*", "n", n, "payload", s_binary};
    size_t lens[] = {4, strlen(stream), 1, 1, strlen(n), 7, T_BINARY_LEN};
    redisReply *r = bus_redis_commandargv(redis, 7, argv, lens);
    int rc = r && r->type == REDIS_REPLY_STRING ? 0 : -1;
    if (rc == 0)
        snprintf(sink->ids[sink->sent++], BUS_STREAM_ID_MAX, "%s", r->str);
    if (r)
        freeReplyObject(r);
    return rc;
}

static long long s_int(bus_redis_t *redis, const char *fmt, const char *a, const char *b)
{
    redisReply *r = bus_redis_command(redis, fmt, a, b);
    long long v = -1;
    if (r && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
             r->element[0]->type == REDIS_REPLY_INTEGER)
        v = r->element[0]->integer; /* XPENDING summary: [count, first, last, consumers] */
    if (r)
        freeReplyObject(r);
    return v;
}

static long long s_pending(bus_redis_t *redis, const char *stream, const char *group)
{
    return s_int(redis, "XPENDING %s %s", stream, group);
}

/*  Poll reader until the oracle has applied want entries or the deadline passes. */
static void s_poll_until(bus_stream_reader_t *reader, s_sink_t *sink, int want, int count)
{
    int64_t deadline = bus_mono_ms() + T_DEADLINE_MS;
    int twice;
    while (s_once(sink, &twice) + twice < want && bus_mono_ms() < deadline)
        bus_stream_reader_poll(reader, count, 50, s_apply, sink);
}

/*  ---------------------------------------------------------------------------------------------
    Cases */

static void s_test_applied_once(bus_redis_t *redis)
{
    s_sink_t sink;
    s_sink_init(&sink);
    for (int i = 0; i < 10; i++)
        s_add(redis, "t:once", &sink);
    bus_stream_reader_t *reader = bus_stream_reader_new(redis, "t:once", "g-once", "c1");
    s_poll_until(reader, &sink, 10, 4);
    int twice, once = s_once(&sink, &twice);
    CHECK(once == 10 && twice == 0 && sink.wrong_ids == 0,
          "10 entries applied once each: expected 10/0 twice/0 wrong ids, got %d/%d/%d", once,
          twice, sink.wrong_ids);
    long long pending = s_pending(redis, "t:once", "g-once");
    CHECK(pending == 0, "nothing pending afterwards: expected 0, got %lld", pending);
    bus_stream_counts_t c;
    bus_stream_reader_counts(reader, &c);
    CHECK(c.applied == 10 && c.parked == 0 && c.errors == 0,
          "counters applied/parked/errors: expected 10/0/0, got %lld/%lld/%lld",
          (long long)c.applied, (long long)c.parked, (long long)c.errors);
    bus_stream_reader_destroy(&reader);
}

static void s_test_reject_one(bus_redis_t *redis)
{
    s_sink_t sink;
    s_sink_init(&sink);
    sink.reject_n = 42;
    for (int i = 0; i < 100; i++)
        s_add(redis, "t:reject", &sink);
    int64_t t0 = bus_now_ms();
    bus_stream_reader_t *reader = bus_stream_reader_new(redis, "t:reject", "g-reject", "c2");
    int n = bus_stream_reader_poll(reader, 100, 0, s_apply, &sink);
    int twice, once = s_once(&sink, &twice);
    CHECK(n == 100 && once == 99 && twice == 0 && sink.applied[42] == 0,
          "batch of 100 with one rejected: expected poll 100, 99 applied once, #42 never; got "
          "poll %d, %d once, %d twice, #42 %d times",
          n, once, twice, sink.applied[42]);
    bus_stream_counts_t c;
    bus_stream_reader_counts(reader, &c);
    CHECK(c.applied == 99 && c.parked == 1 && c.errors == 0,
          "counters applied/parked/errors: expected 99/1/0, got %lld/%lld/%lld",
          (long long)c.applied, (long long)c.parked, (long long)c.errors);
    long long pending = s_pending(redis, "t:reject", "g-reject");
    CHECK(pending == 0,
          "nothing pending (the rejected entry acknowledged after parking): "
          "expected 0, got %lld",
          pending);

    redisReply *r = bus_redis_command(redis, "XRANGE dead:{g-reject} - +");
    bool shape = r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
                 r->element[0]->element[1]->elements == 12;
    CHECK(shape, "one dead letter with 4 own + 2 original fields: got %zu entries",
          r && r->type == REDIS_REPLY_ARRAY ? r->elements : 0);
    if (shape) {
        redisReply *f = r->element[0]->element[1];
        long long ts = atoll(f->element[7]->str);
        CHECK(!strcmp(f->element[0]->str, "entry") && !strcmp(f->element[1]->str, sink.ids[42]),
              "entry = original id: expected %s, got %s=%s", sink.ids[42], f->element[0]->str,
              f->element[1]->str);
        CHECK(!strcmp(f->element[2]->str, "reason") &&
                  !strcmp(f->element[3]->str, "quantity out of range"),
              "reason as fn set it: got %s=%s", f->element[2]->str, f->element[3]->str);
        CHECK(!strcmp(f->element[5]->str, "c2") && ts >= t0 && ts <= bus_now_ms(),
              "consumer c2 and ts in [%lld, now]: got %s, %lld", (long long)t0, f->element[5]->str,
              ts);
        CHECK(!strcmp(f->element[9]->str, "42") && f->element[11]->len == T_BINARY_LEN &&
                  memcmp(f->element[11]->str, s_binary, T_BINARY_LEN) == 0,
              "original fields kept byte for byte: n=%s, payload %zu bytes", f->element[9]->str,
              f->element[11]->len);
    }
    if (r)
        freeReplyObject(r);

    /* five more, all rejected, to page through dead.list */
    sink.reject_n = -1;
    int first = sink.sent;
    for (int i = 0; i < 5; i++)
        s_add(redis, "t:reject", &sink);
    s_sink_t all;
    memcpy(&all, &sink, sizeof(all));
    for (int i = first; i < first + 5; i++) {
        all.reject_n = i;
        bus_stream_reader_poll(reader, 1, 0, s_apply, &all);
    }
    bus_stream_reader_counts(reader, &c);
    CHECK(c.parked == 6, "6 parked in all: got %lld", (long long)c.parked);

    bus_val_t *page = bus_stream_dead_list(redis, "g-reject", NULL, 4);
    int64_t total = -1;
    bool more = false;
    bus_val_map_get_int(page, "total", &total);
    bus_val_map_get_bool(page, "more", &more);
    bus_val_t *entries = bus_val_map_get(page, "entries");
    bus_val_t *e0 = bus_val_arr_get(entries, 0);
    const char *entry0 = bus_val_map_get_str(e0, "entry");
    const char *reason0 = bus_val_map_get_str(e0, "reason");
    CHECK(page && total == 6 && bus_val_size(entries) == 4 && more,
          "dead.list first page: expected total 6, 4 entries, more; got %lld, %zu, %d",
          (long long)total, bus_val_size(entries), more);
    CHECK(entry0 && !strcmp(entry0, sink.ids[42]) && reason0 &&
              !strcmp(reason0, "quantity out of range"),
          "oldest dead letter first, with its reason: expected %s, got %s (%s)", sink.ids[42],
          entry0 ? entry0 : "-", reason0 ? reason0 : "-");
    bus_val_t *fields = bus_val_map_get(e0, "fields");
    const char *n42 = bus_val_map_get_str(fields, "n");
    size_t blen = 0;
    const void *bin = bus_val_get_bin(bus_val_map_get(fields, "payload"), &blen);
    CHECK(n42 && !strcmp(n42, "42") && bin && blen == T_BINARY_LEN &&
              memcmp(bin, s_binary, T_BINARY_LEN) == 0,
          "fields: n as text (%s), payload as %zu binary bytes", n42 ? n42 : "-", blen);
    const char *last = bus_val_map_get_str(page, "last");
    bus_val_t *page2 = bus_stream_dead_list(redis, "g-reject", last, 4);
    bus_val_t *entries2 = bus_val_map_get(page2, "entries");
    more = true;
    bus_val_map_get_bool(page2, "more", &more);
    const char *last_entry = bus_val_map_get_str(bus_val_arr_get(entries2, 1), "entry");
    CHECK(page2 && bus_val_size(entries2) == 2 && !more && last_entry &&
              !strcmp(last_entry, sink.ids[first + 4]),
          "second page after %s: expected 2 entries ending with %s, no more; got %zu, %s, more %d",
          last ? last : "-", sink.ids[first + 4], bus_val_size(entries2),
          last_entry ? last_entry : "-", more);
    bus_val_t *bad = bus_stream_dead_list(redis, "g-reject", "0-0 + COUNT", 4);
    CHECK(!bad, "a malformed after is refused");
    bus_val_destroy(&bad);
    bus_val_destroy(&page2);
    bus_val_destroy(&page);
    bus_stream_reader_destroy(&reader);
}

/*  dead.list pages stop by bytes too, and pass over what no reader parked. */
static void s_test_dead_pages(bus_redis_t *redis)
{
    s_sink_t sink;
    s_sink_init(&sink);
    sink.reject_all = true;
    char *big = malloc(T_BIG_LEN);
    if (!big)
        return;
    memset(big, 'x', T_BIG_LEN);
    for (int i = 0; i < 3; i++) {
        char n[16];
        snprintf(n, sizeof(n), "%d", i);
        const char *argv[] = {"XADD", "t:big", "*", "n", n, "blob", big};
        size_t lens[] = {4, 5, 1, 1, strlen(n), 4, T_BIG_LEN};
        redisReply *r = bus_redis_commandargv(redis, 7, argv, lens);
        if (r && r->type == REDIS_REPLY_STRING)
            snprintf(sink.ids[sink.sent++], BUS_STREAM_ID_MAX, "%s", r->str);
        if (r)
            freeReplyObject(r);
    }
    free(big);
    redisReply *r = bus_redis_command(redis, "XADD dead:{g-big} * note added-by-hand");
    if (r)
        freeReplyObject(r);
    bus_stream_reader_t *reader = bus_stream_reader_new(redis, "t:big", "g-big", "c8");
    bus_stream_reader_poll(reader, 10, 0, s_apply, &sink);
    bus_stream_counts_t c;
    bus_stream_reader_counts(reader, &c);
    CHECK(c.parked == 3, "3 entries of 200 KiB parked: got %lld", (long long)c.parked);
    bus_val_t *page = bus_stream_dead_list(redis, "g-big", NULL, 10);
    bus_val_t *entries = bus_val_map_get(page, "entries");
    bool more = false;
    int64_t total = -1;
    bus_val_map_get_bool(page, "more", &more);
    bus_val_map_get_int(page, "total", &total);
    size_t blen = 0;
    bus_val_get_str(bus_val_map_get(bus_val_map_get(bus_val_arr_get(entries, 0), "fields"), "blob"),
                    &blen);
    CHECK(page && bus_val_size(entries) == 2 && more && total == 4 && blen == T_BIG_LEN,
          "a page stops before %d bytes: expected 2 entries of %d bytes, more, total 4; got %zu "
          "(%zu bytes), more %d, total %lld",
          BUS_STREAM_DEAD_LIST_BYTES, T_BIG_LEN, bus_val_size(entries), blen, more,
          (long long)total);
    bus_val_t *page2 = bus_stream_dead_list(redis, "g-big", bus_val_map_get_str(page, "last"), 10);
    bus_val_t *entries2 = bus_val_map_get(page2, "entries");
    const char *entry = bus_val_map_get_str(bus_val_arr_get(entries2, 0), "entry");
    more = true;
    bus_val_map_get_bool(page2, "more", &more);
    CHECK(page2 && bus_val_size(entries2) == 1 && !more && entry && !strcmp(entry, sink.ids[2]),
          "the next page holds the third (%s), passes over the entry added by hand: got %zu "
          "entries (%s), more %d",
          sink.ids[2], bus_val_size(entries2), entry ? entry : "-", more);
    bus_val_destroy(&page2);
    bus_val_destroy(&page);
    bus_stream_reader_destroy(&reader);
}

static void s_test_poison_batch(bus_redis_t *redis)
{
    s_sink_t sink;
    s_sink_init(&sink);
    sink.poison_n = 7;
    for (int i = 0; i < 20; i++)
        s_add(redis, "t:poison", &sink);
    bus_stream_reader_t *reader = bus_stream_reader_new(redis, "t:poison", "g-poison", "c3");
    bus_stream_reader_poll(reader, 20, 0, s_apply, &sink);
    int twice, once = s_once(&sink, &twice);
    CHECK(once == 19 && twice == 0 && sink.applied[7] == 0,
          "batch failing on entry 7: the other 19 applied one by one in the same poll; expected "
          "19 once, got %d (twice %d)",
          once, twice);
    long long pending = s_pending(redis, "t:poison", "g-poison");
    bus_stream_counts_t c;
    bus_stream_reader_counts(reader, &c);
    CHECK(pending == 1 && c.errors == 1 && c.applied == 19,
          "entry 7 stays pending, counted: expected pending 1, errors 1, applied 19; got "
          "%lld, %lld, %lld",
          pending, (long long)c.errors, (long long)c.applied);

    /* new entries keep flowing while entry 7 keeps failing, and 7 keeps being retried */
    int seen_before = sink.poison_seen;
    for (int i = 0; i < 30; i++)
        s_add(redis, "t:poison", &sink);
    int64_t deadline = bus_mono_ms() + T_DEADLINE_MS;
    while ((s_once(&sink, &twice) < 49 || sink.poison_seen < seen_before + 2) &&
           bus_mono_ms() < deadline)
        bus_stream_reader_poll(reader, 10, 50, s_apply, &sink);
    once = s_once(&sink, &twice);
    CHECK(once == 49 && twice == 0,
          "30 new entries applied beside a failing one: expected 49 "
          "once, got %d (twice %d)",
          once, twice);
    CHECK(sink.poison_seen >= seen_before + 2,
          "the failing entry is retried: %d tries after the "
          "first poll",
          sink.poison_seen - seen_before);
    pending = s_pending(redis, "t:poison", "g-poison");
    CHECK(pending == 1, "and stays pending, never acknowledged unapplied: expected 1, got %lld",
          pending);

    /* the cause goes away: the next retry applies it */
    sink.poison_n = -1;
    s_poll_until(reader, &sink, 50, 10);
    once = s_once(&sink, &twice);
    pending = s_pending(redis, "t:poison", "g-poison");
    CHECK(once == 50 && twice == 0 && pending == 0,
          "once healed it is applied: expected 50 once, 0 pending; got %d, %lld", once, pending);
    bus_stream_reader_destroy(&reader);

    /* a restart under the same name re-reads what it left pending */
    s_sink_t again;
    s_sink_init(&again);
    again.fail_all = true;
    for (int i = 0; i < 3; i++)
        s_add(redis, "t:poison", &sink);
    memcpy(again.ids, sink.ids, sizeof(sink.ids));
    again.sent = sink.sent;
    reader = bus_stream_reader_new(redis, "t:poison", "g-poison", "c3");
    bus_stream_reader_poll(reader, 10, 0, s_apply, &again);
    bus_stream_reader_destroy(&reader);
    again.fail_all = false;
    reader = bus_stream_reader_new(redis, "t:poison", "g-poison", "c3");
    bus_stream_reader_poll(reader, 10, 0, s_apply, &again);
    int first = again.calls;
    once = s_once(&again, &twice);
    pending = s_pending(redis, "t:poison", "g-poison");
    CHECK(once == 3 && pending == 0 && first >= 1,
          "restarted consumer applies its own 3 pending entries in its first poll: got %d, "
          "pending %lld",
          once, pending);
    bus_stream_reader_destroy(&reader);
}

/*  An entry deleted from the stream while pending is acknowledged without reaching fn. */
static void s_test_deleted(bus_redis_t *redis)
{
    s_sink_t sink;
    s_sink_init(&sink);
    sink.fail_all = true;
    for (int i = 0; i < 3; i++)
        s_add(redis, "t:gone", &sink);
    bus_stream_reader_t *reader = bus_stream_reader_new(redis, "t:gone", "g-gone", "c9");
    bus_stream_reader_poll(reader, 10, 0, s_apply, &sink);
    long long pending = s_pending(redis, "t:gone", "g-gone");
    long long deleted = s_int(redis, "XDEL t:gone %s%s", sink.ids[1], "");
    sink.fail_all = false;
    int64_t deadline = bus_mono_ms() + T_DEADLINE_MS;
    while (s_pending(redis, "t:gone", "g-gone") != 0 && bus_mono_ms() < deadline)
        bus_stream_reader_poll(reader, 10, 50, s_apply, &sink);
    long long after = s_pending(redis, "t:gone", "g-gone");
    CHECK(pending == 3 && deleted == 1 && after == 0 && sink.applied[0] == 1 &&
              sink.applied[1] == 0 && sink.applied[2] == 1,
          "a pending entry deleted from the stream is acknowledged unseen: pending %lld -> %lld, "
          "applied %d/%d/%d (expected 3 -> 0, 1/0/1)",
          pending, after, sink.applied[0], sink.applied[1], sink.applied[2]);
    bus_stream_reader_destroy(&reader);
}

/*  A reader started while Redis refuses writes (out of memory) still reads a group that exists:
    XGROUP CREATE is refused then, XREADGROUP and XACK are not. */
static void s_test_group_under_oom(bus_redis_t *redis)
{
    s_sink_t sink;
    s_sink_init(&sink);
    bus_stream_reader_t *first = bus_stream_reader_new(redis, "t:oom", "g-oom", "c1");
    bus_stream_reader_poll(first, 10, 0, s_apply, &sink); /* creates the group */
    bus_stream_reader_destroy(&first);
    for (int i = 0; i < 5; i++)
        s_add(redis, "t:oom", &sink);
    redisReply *r = bus_redis_command(redis, "CONFIG SET maxmemory-policy noeviction");
    if (r)
        freeReplyObject(r);
    r = bus_redis_command(redis, "CONFIG SET maxmemory 1");
    if (r)
        freeReplyObject(r);
    r = bus_redis_command(redis, "XGROUP CREATE t:oom g-oom 0");
    bool refused = r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "OOM");
    if (r)
        freeReplyObject(r);
    bus_stream_reader_t *reader = bus_stream_reader_new(redis, "t:oom", "g-oom", "c2");
    s_poll_until(reader, &sink, 5, 10);
    int twice, once = s_once(&sink, &twice);
    r = bus_redis_command(redis, "CONFIG SET maxmemory 0");
    if (r)
        freeReplyObject(r);
    CHECK(refused && once == 5 && twice == 0,
          "out of memory (XGROUP CREATE refused: %s), a new reader still applied %d of 5 once",
          refused ? "yes" : "no", once);
    bus_stream_reader_destroy(&reader);
}

static void s_test_backoff(bus_redis_t *redis)
{
    s_sink_t sink;
    s_sink_init(&sink);
    sink.fail_all = true;
    for (int i = 0; i < 3; i++)
        s_add(redis, "t:fail", &sink);
    /* delivered to c4 before: a restarted instance finds them pending */
    redisReply *r = bus_redis_command(redis, "XGROUP CREATE t:fail g-fail 0");
    if (r)
        freeReplyObject(r);
    r = bus_redis_command(redis, "XREADGROUP GROUP g-fail c4 COUNT 10 STREAMS t:fail >");
    if (r)
        freeReplyObject(r);
    bus_redis_t *wredis = s_redis();
    bus_stream_worker_t *w =
        bus_stream_worker_start(wredis, "t:fail", "g-fail", "c4", 10, 200, 0, s_apply, &sink);
    int64_t deadline = bus_mono_ms() + T_DEADLINE_MS;
    while (bus_stream_worker_errors(w) == 0 && bus_mono_ms() < deadline)
        t_sleep_ms(10);
    int calls0 = __atomic_load_n(&sink.calls, __ATOMIC_RELAXED);
    int64_t errors0 = bus_stream_worker_errors(w);
    t_sleep_ms(T_BACKOFF_MS); /* the measuring window */
    int calls = __atomic_load_n(&sink.calls, __ATOMIC_RELAXED) - calls0;
    int64_t errors = bus_stream_worker_errors(w);
    CHECK(errors0 >= 3, "failures counted (3 entries failed alone): %lld", (long long)errors0);
    CHECK(calls <= T_CALLS_SPIN, "no spin: %d fn calls in %d ms (at most %d)", calls, T_BACKOFF_MS,
          T_CALLS_SPIN);
    CHECK(calls >= 4 && errors > errors0, "yet retried within %d ms: %d calls, errors %lld -> %lld",
          T_BACKOFF_MS, calls, (long long)errors0, (long long)errors);
    long long pending = s_pending(redis, "t:fail", "g-fail");
    CHECK(pending == 3 && bus_stream_worker_applied(w) == 0,
          "nothing acknowledged: expected 3 pending, 0 applied; got %lld, %lld", pending,
          (long long)bus_stream_worker_applied(w));
    int64_t t0 = bus_mono_ms();
    bus_stream_worker_stop(&w);
    int64_t stop_ms = bus_mono_ms() - t0;
    CHECK(stop_ms < 1000, "stop does not wait out the backoff: %lld ms", (long long)stop_ms);
    bus_redis_destroy(&wredis);
}

static void s_test_wide(bus_redis_t *redis)
{
    const char *argv[3 + 2 * T_WIDE_FIELDS + 2];
    char names[T_WIDE_FIELDS][16], values[T_WIDE_FIELDS][16];
    int argc = 0;
    argv[argc++] = "XADD";
    argv[argc++] = "t:wide";
    argv[argc++] = "*";
    for (int f = 0; f < T_WIDE_FIELDS; f++) {
        snprintf(names[f], sizeof(names[f]), "f%d", f);
        snprintf(values[f], sizeof(values[f]), "v%d", f);
        argv[argc++] = names[f];
        argv[argc++] = values[f];
    }
    argv[argc++] = "n";
    argv[argc++] = "0";
    s_sink_t sink;
    s_sink_init(&sink);
    redisReply *r = bus_redis_commandargv(redis, argc, argv, NULL);
    if (r && r->type == REDIS_REPLY_STRING)
        snprintf(sink.ids[sink.sent++], BUS_STREAM_ID_MAX, "%s", r->str);
    if (r)
        freeReplyObject(r);
    bus_stream_reader_t *reader = bus_stream_reader_new(redis, "t:wide", "g-wide", "c5");
    s_poll_until(reader, &sink, 1, 10);
    CHECK(sink.wide_fields == T_WIDE_FIELDS + 1 && sink.wide_matching == T_WIDE_FIELDS &&
              sink.applied[0] == 1,
          "an entry with %d fields reaches fn whole: got %d fields, %d matching, applied %d",
          T_WIDE_FIELDS + 1, sink.wide_fields, sink.wide_matching, sink.applied[0]);
    long long pending = s_pending(redis, "t:wide", "g-wide");
    CHECK(pending == 0, "and is acknowledged after it: pending %lld", pending);
    bus_stream_reader_destroy(&reader);
}

/*  The child: read held entries under consumer "victim", say so, and wait to be killed. */
static void s_victim(int fd, int held)
{
    bus_redis_t *redis = s_redis();
    redisReply *r = bus_redis_command(
        redis, "XREADGROUP GROUP g-claim victim COUNT %d STREAMS t:claim >", held);
    char ok = r && r->type == REDIS_REPLY_ARRAY ? 'y' : 'n';
    if (write(fd, &ok, 1) != 1)
        _exit(1);
    for (;;)
        pause();
}

static void s_test_claim(bus_redis_t *redis)
{
    const int held = 20, total = 30;
    s_sink_t sink;
    s_sink_init(&sink);
    for (int i = 0; i < total; i++)
        s_add(redis, "t:claim", &sink);
    redisReply *r = bus_redis_command(redis, "XGROUP CREATE t:claim g-claim 0");
    if (r)
        freeReplyObject(r);
    int fds[2];
    char ok = 'n';
    if (pipe(fds) != 0)
        return;
    s_child = fork();
    if (s_child == 0) {
        close(fds[0]);
        s_victim(fds[1], held);
    }
    close(fds[1]);
    if (read(fds[0], &ok, 1) != 1)
        ok = 'n';
    close(fds[0]);
    t_kill(&s_child);
    long long pending = s_pending(redis, "t:claim", "g-claim");
    CHECK(ok == 'y' && pending == held,
          "a killed instance holds %d entries it never acknowledged: got %lld", held, pending);

    bus_stream_reader_t *reader = bus_stream_reader_new(redis, "t:claim", "g-claim", "rescuer");
    bus_stream_reader_set_claim_idle(reader, T_CLAIM_IDLE_MS);
    s_poll_until(reader, &sink, total, 10);
    int twice, once = s_once(&sink, &twice);
    bus_stream_counts_t c;
    bus_stream_reader_counts(reader, &c);
    CHECK(c.claimed == held, "the claim path ran: expected %d claimed, got %lld", held,
          (long long)c.claimed);
    CHECK(once == total && twice == 0 && sink.wrong_ids == 0,
          "every entry applied exactly once: expected %d, got %d (twice %d, wrong ids %d)", total,
          once, twice, sink.wrong_ids);
    pending = s_pending(redis, "t:claim", "g-claim");
    CHECK(pending == 0 && c.applied == total,
          "nothing pending at the end: got %lld; applied counter %lld", pending,
          (long long)c.applied);
    bus_stream_reader_destroy(&reader);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    atexit(s_cleanup);
    CHECK(t_redis_setup(s_dir, S_PASSWORD, &s_port, &s_server) == 0,
          "redis-server started on 127.0.0.1:%d in %s", s_port, s_dir);
    if (s_server <= 0)
        return FINISH("test_stream");
    bus_redis_t *redis = s_redis();
    s_test_applied_once(redis);
    s_test_reject_one(redis);
    s_test_dead_pages(redis);
    s_test_poison_batch(redis);
    s_test_wide(redis);
    s_test_claim(redis);
    s_test_deleted(redis);
    s_test_backoff(redis);
    s_test_group_under_oom(redis);
    CHECK(bus_stream_id_valid("1-0") && bus_stream_id_valid("1700000000000-12") &&
              !bus_stream_id_valid("1-") && !bus_stream_id_valid("-1") &&
              !bus_stream_id_valid("1-2 3") && !bus_stream_id_valid(""),
          "stream id validation");
    bus_redis_destroy(&redis);
    return FINISH("test_stream");
}
