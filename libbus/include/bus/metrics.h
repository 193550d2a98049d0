/*  =========================================================================
    bus/metrics.h - Prometheus text exposition over HTTP

    A program that wants to be scraped makes one bus_metrics_t with the
    address to listen on ("127.0.0.1:9101"), tells it what to expose (its
    bus_stats_t tables, and collector callbacks that write their own
    gauges), and calls bus_metrics_tick() from its main loop. GET /metrics
    then answers the Prometheus text format 0.0.4; every metric is named
    posbus_<program>_<name>.

    Threads: the HTTP server (libmicrohttpd) runs on its own thread, but
    every value it serves belongs to the owner thread (stats tables,
    histograms, a collector's own Redis connection). So the owner renders
    the whole page itself, in bus_metrics_tick() every refresh interval,
    into a private buffer, and swaps it in under a mutex; the HTTP thread
    only ever copies the last rendered page under that mutex. A scrape
    never touches owner state, never waits on the owner (a busy or stuck
    owner gives a stale page, not a hung scraper), and the page is a
    consistent snapshot of one moment. The price is staleness of at most
    one refresh interval plus one turn of the owner's loop.

    Writers (bus_metrics_out_*) are for collectors and run on the owner
    thread during rendering. A collector writes every sample of one metric
    one after the other: the HELP and TYPE lines are written before the
    first sample of each name.
    =========================================================================
*/
#ifndef BUS_METRICS_H_INCLUDED
#define BUS_METRICS_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include "bus/config.h"
#include "bus/stats.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Latency histogram buckets, upper bounds in microseconds (0.5 ms .. 2.5 s), plus +Inf. */
#define BUS_HIST_BUCKETS 12
extern const int64_t bus_hist_bounds_us[BUS_HIST_BUCKETS];

/* A latency histogram: one owner thread writes and reads it (no atomics). */
typedef struct {
    uint64_t bucket[BUS_HIST_BUCKETS + 1]; /* per bucket, not cumulative; last is +Inf */
    uint64_t count;
    uint64_t sum_us;
} bus_hist_t;

/* Count one observation of us microseconds (negative counts as 0). */
void bus_hist_observe(bus_hist_t *hist, int64_t us);

/* The page being rendered; collectors write to it. */
typedef struct bus_metrics_out bus_metrics_out_t;

/* Labels are NULL or a NULL-terminated list of name, value pairs: {"group", "inventory", NULL}.
   Label names must be valid Prometheus label names; values are escaped. Metric names are
   given without the posbus_<program>_ prefix; characters outside [a-zA-Z0-9_:] become '_'. */
/* A counter sample; "_total" is appended unless name already ends with it. */
void bus_metrics_out_counter(bus_metrics_out_t *out, const char *name, const char *help,
                             const char *const *labels, int64_t value);
void bus_metrics_out_gauge(bus_metrics_out_t *out, const char *name, const char *help,
                           const char *const *labels, int64_t value);
/* A gauge whose value is not known now (written as NaN). */
void bus_metrics_out_gauge_nan(bus_metrics_out_t *out, const char *name, const char *help,
                               const char *const *labels);
/* A histogram in seconds: name_bucket{le=...}, name_sum, name_count. */
void bus_metrics_out_histogram(bus_metrics_out_t *out, const char *name, const char *help,
                               const char *const *labels, const bus_hist_t *hist);
/* Every value of a stats table: a counter each, except the names in gauges (NULL-terminated,
   may be NULL), which are levels. Owner thread of stats only. */
void bus_metrics_out_stats(bus_metrics_out_t *out, bus_stats_t *stats, const char *const *gauges);

/* Render into a fresh page (for tests and for programs without a server): the text, its length
   in *len, caller frees; NULL on allocation failure or a page over the size limit. */
typedef void(bus_metrics_fn)(bus_metrics_out_t *out, void *arg);
char *bus_metrics_render_page(const char *program, bus_metrics_fn *fn, void *arg, size_t *len);

/* Parse "host:port" (IPv4 address, "*" or "" for every address, or "[IPv6]:port"; port 0 =
   any free one) into *sa, *sa_len. 0, or -1 if malformed. */
struct sockaddr_storage;
int bus_metrics_parse_listen(const char *listen, struct sockaddr_storage *sa, unsigned *sa_len);

typedef struct bus_metrics bus_metrics_t;

/* Options for programs that serve metrics: metrics-listen (empty = off), metrics-refresh-ms. */
extern const bus_opt_t bus_metrics_opts[];

/* Serve GET /metrics on listen for program (its name is the metric prefix), rendering every
   refresh_ms. NULL with *err on a bad address, a port in use or out of memory. */
bus_metrics_t *bus_metrics_new(const char *program, const char *listen, int refresh_ms,
                               const char **err);
/* From a configuration that includes bus_metrics_opts: NULL and *err NULL when metrics-listen
   is empty (off); NULL with *err set on failure. */
bus_metrics_t *bus_metrics_new_from_config(bus_config_t *config, const char *program,
                                           const char **err);
/* Stop the server (waits for the HTTP thread) and free. NULL-safe. */
void bus_metrics_destroy(bus_metrics_t **self_p);
/* Expose every value of stats (owned by the caller, must outlive self), with the names in
   gauges (static, NULL-terminated, may be NULL) as gauges. 0, or -1 when the table is full.
   With self NULL (metrics off) nothing happens and 0 is returned, as for add_collector. */
int bus_metrics_add_stats(bus_metrics_t *self, bus_stats_t *stats, const char *const *gauges);
/* Call fn(out, arg) at every rendering, on the owner thread, in order of adding. 0 or -1. */
int bus_metrics_add_collector(bus_metrics_t *self, bus_metrics_fn *fn, void *arg);
/* Owner thread, from its main loop: render a new page when the refresh interval has passed
   (at once on the first call). NULL-safe. */
void bus_metrics_tick(bus_metrics_t *self);
/* Render a new page now. 0, or -1 when it could not (the previous page stays). */
int bus_metrics_render(bus_metrics_t *self);
/* The port the server listens on (useful with port 0). */
int bus_metrics_port(bus_metrics_t *self);
/* Scrapes answered with 200 since start (read from any thread). */
int64_t bus_metrics_scrapes(bus_metrics_t *self);

#ifdef __cplusplus
}
#endif
#endif
