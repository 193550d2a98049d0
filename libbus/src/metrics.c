/*  =========================================================================
    metrics.c - Prometheus text exposition over HTTP (libmicrohttpd)

    Why the owner renders and the HTTP thread only copies (see also
    bus/metrics.h): the values live in structures of the owner thread that
    have no locks (stats tables are created without locking, histograms are
    plain integers, collectors ask Redis on the owner's hiredis context).
    Letting the HTTP thread read them would need a lock on every hot path,
    or a round trip into the owner's loop per scrape (which then hangs when
    the owner is busy). A page rendered every refresh interval costs a few
    microseconds per counter and one Redis call per collector, whether or
    not anyone scrapes; against the services' loads that is noise.

    Bounds: a page is at most S_PAGE_MAX bytes (a larger one is refused and
    the previous page kept, with a warning); the server takes at most
    S_CONNS_MAX connections, each with S_CONN_MEMORY of buffers and an idle
    timeout of S_CONN_TIMEOUT_S; requests are answered without reading
    bodies: 404 for any path but /metrics, 405 (with Allow) for any method
    but GET and HEAD, 503 before the first page.
    =========================================================================
*/
#include <arpa/inet.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "bus/log.h"
#include "bus/metrics.h"
#include "bus/msg.h"
#include "bus/val.h"

#define S_PAGE_MAX       (4 * 1024 * 1024) /* far above any real page: ~100 bytes a sample */
#define S_PAGE_START     4096
#define S_PREFIX_MAX     80
#define S_NAME_MAX       200
#define S_STATS_MAX      4
#define S_COLLECTORS_MAX 8
#define S_CONNS_MAX      16 /* a Prometheus or two, and a person with curl */
#define S_CONN_TIMEOUT_S 10
#define S_CONN_MEMORY    (32 * 1024)
#define S_CONTENT_TYPE   "text/plain; version=0.0.4; charset=utf-8"

const int64_t bus_hist_bounds_us[BUS_HIST_BUCKETS] = {
    500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000};

const bus_opt_t bus_metrics_opts[] = {
    {"metrics-listen", BUS_OPT_STR, "", 0, 0,
     "serve Prometheus metrics at http://ADDRESS/metrics, e.g. 127.0.0.1:9101 (empty: off)"},
    {"metrics-refresh-ms", BUS_OPT_INT, "1000", 50, 60000,
     "render the metrics page this often (a scrape sees values at most this old)"},
    {NULL, 0, NULL, 0, 0, NULL}};

void bus_hist_observe(bus_hist_t *hist, int64_t us)
{
    if (us < 0)
        us = 0;
    int i = 0;
    while (i < BUS_HIST_BUCKETS && us > bus_hist_bounds_us[i])
        i++;
    hist->bucket[i]++;
    hist->count++;
    hist->sum_us += (uint64_t)us;
}

/*  ---------------------------------------------------------------------
    The page writer
    --------------------------------------------------------------------- */

struct bus_metrics_out {
    char *data;
    size_t len, cap;
    bool failed; /* out of memory or over S_PAGE_MAX: the page is dropped */
    char prefix[S_PREFIX_MAX];
    char family[S_NAME_MAX]; /* full name of the last family whose HELP/TYPE was written */
};

static void s_put(bus_metrics_out_t *out, const char *text, size_t len)
{
    if (out->failed)
        return;
    if (out->len + len + 1 > out->cap) {
        size_t cap = out->cap ? out->cap : S_PAGE_START;
        while (cap < out->len + len + 1)
            cap *= 2;
        char *data = cap <= S_PAGE_MAX ? realloc(out->data, cap) : NULL;
        if (!data) {
            out->failed = true;
            return;
        }
        out->data = data;
        out->cap = cap;
    }
    memcpy(out->data + out->len, text, len);
    out->len += len;
    out->data[out->len] = '\0';
}

static void s_puts(bus_metrics_out_t *out, const char *text)
{
    s_put(out, text, strlen(text));
}

static void s_printf(bus_metrics_out_t *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void s_printf(bus_metrics_out_t *out, const char *fmt, ...)
{
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n > 0)
        s_put(out, text, (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1);
}

/*  Copy text into dst as a metric name part: [a-zA-Z0-9_:], anything else '_'. */
static void s_sanitize(char *dst, size_t cap, const char *text)
{
    size_t i = 0;
    for (; text[i] && i + 1 < cap; i++) {
        char c = text[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == ':';
        dst[i] = ok ? c : '_';
    }
    dst[i] = '\0';
}

/*  The full name posbus_<program>_<name><suffix>. */
static void s_full_name(bus_metrics_out_t *out, char *full, size_t cap, const char *name,
                        const char *suffix)
{
    char clean[S_NAME_MAX];
    s_sanitize(clean, sizeof(clean), name);
    snprintf(full, cap, "%s%s%s", out->prefix, clean, suffix);
}

/*  HELP and TYPE before the first sample of a family. HELP text escapes '\' and newline. */
static void s_family(bus_metrics_out_t *out, const char *full, const char *type, const char *help)
{
    if (strcmp(out->family, full) == 0)
        return;
    snprintf(out->family, sizeof(out->family), "%s", full);
    s_printf(out, "# HELP %s ", full);
    for (const char *p = help ? help : ""; *p; p++) {
        if (*p == '\\')
            s_puts(out, "\\\\");
        else if (*p == '\n')
            s_puts(out, "\\n");
        else
            s_put(out, p, 1);
    }
    s_printf(out, "\n# TYPE %s %s\n", full, type);
}

/*  name{labels[,extra_name="extra_value"]} with label values escaped (\\, \", \n). */
static void s_series(bus_metrics_out_t *out, const char *full, const char *suffix,
                     const char *const *labels, const char *extra_name, const char *extra_value)
{
    s_puts(out, full);
    s_puts(out, suffix);
    bool any = (labels && labels[0]) || extra_name;
    if (!any)
        return;
    s_puts(out, "{");
    bool first = true;
    for (int i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
        char lname[S_NAME_MAX];
        s_sanitize(lname, sizeof(lname), labels[i]);
        s_printf(out, "%s%s=\"", first ? "" : ",", lname);
        for (const char *p = labels[i + 1]; *p; p++) {
            if (*p == '\\' || *p == '"')
                s_put(out, "\\", 1);
            if (*p == '\n')
                s_puts(out, "\\n");
            else
                s_put(out, p, 1);
        }
        s_puts(out, "\"");
        first = false;
    }
    if (extra_name)
        s_printf(out, "%s%s=\"%s\"", first ? "" : ",", extra_name, extra_value);
    s_puts(out, "}");
}

static bool s_ends_with(const char *text, const char *suffix)
{
    size_t n = strlen(text), m = strlen(suffix);
    return n >= m && strcmp(text + n - m, suffix) == 0;
}

void bus_metrics_out_counter(bus_metrics_out_t *out, const char *name, const char *help,
                             const char *const *labels, int64_t value)
{
    char full[S_NAME_MAX];
    s_full_name(out, full, sizeof(full), name, s_ends_with(name, "_total") ? "" : "_total");
    s_family(out, full, "counter", help);
    s_series(out, full, "", labels, NULL, NULL);
    s_printf(out, " %" PRId64 "\n", value);
}

void bus_metrics_out_gauge(bus_metrics_out_t *out, const char *name, const char *help,
                           const char *const *labels, int64_t value)
{
    char full[S_NAME_MAX];
    s_full_name(out, full, sizeof(full), name, "");
    s_family(out, full, "gauge", help);
    s_series(out, full, "", labels, NULL, NULL);
    s_printf(out, " %" PRId64 "\n", value);
}

void bus_metrics_out_gauge_nan(bus_metrics_out_t *out, const char *name, const char *help,
                               const char *const *labels)
{
    char full[S_NAME_MAX];
    s_full_name(out, full, sizeof(full), name, "");
    s_family(out, full, "gauge", help);
    s_series(out, full, "", labels, NULL, NULL);
    s_puts(out, " NaN\n");
}

/*  Microseconds as decimal seconds without floating point: 2500 -> "0.0025". */
static void s_seconds(char *text, size_t cap, uint64_t us)
{
    int n = snprintf(text, cap, "%" PRIu64 ".%06u", us / 1000000, (unsigned)(us % 1000000));
    while (n > 0 && (size_t)n < cap && text[n - 1] == '0')
        text[--n] = '\0';
    if (n > 0 && (size_t)n < cap && text[n - 1] == '.')
        text[--n] = '\0';
}

void bus_metrics_out_histogram(bus_metrics_out_t *out, const char *name, const char *help,
                               const char *const *labels, const bus_hist_t *hist)
{
    char full[S_NAME_MAX], le[32];
    s_full_name(out, full, sizeof(full), name, "");
    s_family(out, full, "histogram", help);
    uint64_t cumulative = 0;
    for (int i = 0; i <= BUS_HIST_BUCKETS; i++) {
        cumulative += hist->bucket[i];
        if (i < BUS_HIST_BUCKETS)
            s_seconds(le, sizeof(le), (uint64_t)bus_hist_bounds_us[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        s_series(out, full, "_bucket", labels, "le", le);
        s_printf(out, " %" PRIu64 "\n", cumulative);
    }
    char sum[32];
    s_seconds(sum, sizeof(sum), hist->sum_us);
    s_series(out, full, "_sum", labels, NULL, NULL);
    s_printf(out, " %s\n", sum);
    s_series(out, full, "_count", labels, NULL, NULL);
    s_printf(out, " %" PRIu64 "\n", hist->count);
}

void bus_metrics_out_stats(bus_metrics_out_t *out, bus_stats_t *stats, const char *const *gauges)
{
    bus_val_t *map = bus_stats_to_val(stats);
    if (!map) {
        out->failed = true;
        return;
    }
    for (size_t i = 0; i < bus_val_size(map); i++) {
        const char *name = bus_val_map_key(map, i);
        int64_t value = 0;
        bus_val_get_int(bus_val_map_value(map, i), &value);
        bool gauge = false;
        for (int g = 0; gauges && gauges[g] && !gauge; g++)
            gauge = strcmp(gauges[g], name) == 0;
        char help[S_NAME_MAX];
        snprintf(help, sizeof(help), "stats %s '%s' (docs/metrics.md)", gauge ? "level" : "counter",
                 name);
        if (gauge)
            bus_metrics_out_gauge(out, name, help, NULL, value);
        else
            bus_metrics_out_counter(out, name, help, NULL, value);
    }
    bus_val_destroy(&map);
}

static void s_out_init(bus_metrics_out_t *out, const char *program)
{
    memset(out, 0, sizeof(*out));
    char clean[S_PREFIX_MAX];
    s_sanitize(clean, sizeof(clean) - 8, program ? program : "posbus");
    snprintf(out->prefix, sizeof(out->prefix), "posbus_%s_", clean);
}

char *bus_metrics_render_page(const char *program, bus_metrics_fn *fn, void *arg, size_t *len)
{
    bus_metrics_out_t out;
    s_out_init(&out, program);
    s_put(&out, "", 0); /* an empty page is still a page */
    if (fn)
        fn(&out, arg);
    if (out.failed || !out.data) {
        free(out.data);
        return NULL;
    }
    if (len)
        *len = out.len;
    return out.data;
}

/*  ---------------------------------------------------------------------
    The server
    --------------------------------------------------------------------- */

int bus_metrics_parse_listen(const char *listen, struct sockaddr_storage *sa, unsigned *sa_len)
{
    if (!listen)
        return -1;
    const char *colon = strrchr(listen, ':');
    if (!colon || !colon[1] || strlen(colon + 1) > 5)
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return -1;
    char host[64];
    size_t hlen = (size_t)(colon - listen);
    if (hlen >= sizeof(host))
        return -1;
    memcpy(host, listen, hlen);
    host[hlen] = '\0';
    memset(sa, 0, sizeof(*sa));
    if (host[0] == '[') {
        if (hlen < 3 || host[hlen - 1] != ']')
            return -1;
        host[hlen - 1] = '\0';
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)sa;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return -1;
        *sa_len = sizeof(*a6);
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)sa;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    if (host[0] == '\0' || strcmp(host, "*") == 0)
        a4->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return -1;
    *sa_len = sizeof(*a4);
    return 0;
}

typedef struct {
    bus_stats_t *stats;
    const char *const *gauges;
} s_stats_src_t;

typedef struct {
    bus_metrics_fn *fn;
    void *arg;
} s_collector_t;

struct bus_metrics {
    char *program;
    struct MHD_Daemon *daemon;
    int port;
    int refresh_ms;
    int64_t next_render;
    bool warned;
    s_stats_src_t stats[S_STATS_MAX];
    int nstats;
    s_collector_t collectors[S_COLLECTORS_MAX];
    int ncollectors;
    pthread_mutex_t lock; /* guards page, page_len */
    char *page;
    size_t page_len;
    int64_t scrapes; /* atomic */
};

static enum MHD_Result s_send(struct MHD_Connection *conn, unsigned status, char *body,
                              enum MHD_ResponseMemoryMode mode, const char *allow)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body, mode);
    if (!resp) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            status == MHD_HTTP_OK ? S_CONTENT_TYPE : "text/plain; charset=utf-8");
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

/*  The HTTP thread: never touches anything but the page, under the lock. */
static enum MHD_Result s_access(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    bus_metrics_t *self = cls;
    if (!url || strcmp(url, "/metrics") != 0)
        return s_send(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n", MHD_RESPMEM_PERSISTENT,
                      NULL);
    if (!method ||
        (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0))
        return s_send(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET\n",
                      MHD_RESPMEM_PERSISTENT, "GET, HEAD");
    char *copy = NULL;
    pthread_mutex_lock(&self->lock);
    if (self->page) {
        copy = malloc(self->page_len + 1);
        if (copy)
            memcpy(copy, self->page, self->page_len + 1);
    }
    pthread_mutex_unlock(&self->lock);
    if (!copy)
        return s_send(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "metrics not rendered yet\n",
                      MHD_RESPMEM_PERSISTENT, NULL);
    __atomic_add_fetch(&self->scrapes, 1, __ATOMIC_RELAXED);
    return s_send(conn, MHD_HTTP_OK, copy, MHD_RESPMEM_MUST_FREE, NULL);
}

bus_metrics_t *bus_metrics_new(const char *program, const char *listen, int refresh_ms,
                               const char **err)
{
    const char *dummy;
    if (!err)
        err = &dummy;
    struct sockaddr_storage sa;
    unsigned sa_len;
    if (bus_metrics_parse_listen(listen, &sa, &sa_len) != 0) {
        *err = "metrics-listen: expected ADDRESS:PORT such as 127.0.0.1:9101 or [::1]:9101";
        return NULL;
    }
    bus_metrics_t *self = calloc(1, sizeof(*self));
    if (!self || pthread_mutex_init(&self->lock, NULL) != 0) {
        free(self);
        *err = "out of memory";
        return NULL;
    }
    self->program = strdup(program ? program : "posbus");
    self->refresh_ms = refresh_ms > 0 ? refresh_ms : 1000;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD;
    if (sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (self->program)
        self->daemon = MHD_start_daemon(
            flags, 0, NULL, NULL, s_access, self, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
            MHD_OPTION_CONNECTION_LIMIT, (unsigned)S_CONNS_MAX, MHD_OPTION_CONNECTION_TIMEOUT,
            (unsigned)S_CONN_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)S_CONN_MEMORY,
            MHD_OPTION_END);
    if (!self->daemon) {
        *err = self->program ? "metrics-listen: cannot listen there (address in use?)"
                             : "out of memory";
        bus_metrics_destroy(&self);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info ? info->port : 0;
    (void)sa_len;
    return self;
}

bus_metrics_t *bus_metrics_new_from_config(bus_config_t *config, const char *program,
                                           const char **err)
{
    *err = NULL;
    const char *listen = bus_config_str(config, "metrics-listen");
    if (!listen || !*listen)
        return NULL;
    return bus_metrics_new(program, listen, (int)bus_config_int(config, "metrics-refresh-ms"), err);
}

void bus_metrics_destroy(bus_metrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_metrics_t *self = *self_p;
    if (self->daemon)
        MHD_stop_daemon(self->daemon);
    pthread_mutex_destroy(&self->lock);
    free(self->page);
    free(self->program);
    free(self);
    *self_p = NULL;
}

int bus_metrics_add_stats(bus_metrics_t *self, bus_stats_t *stats, const char *const *gauges)
{
    if (!self)
        return 0;
    if (self->nstats >= S_STATS_MAX)
        return -1;
    self->stats[self->nstats++] = (s_stats_src_t){stats, gauges};
    return 0;
}

int bus_metrics_add_collector(bus_metrics_t *self, bus_metrics_fn *fn, void *arg)
{
    if (!self)
        return 0;
    if (self->ncollectors >= S_COLLECTORS_MAX)
        return -1;
    self->collectors[self->ncollectors++] = (s_collector_t){fn, arg};
    return 0;
}

static void s_collect_all(bus_metrics_out_t *out, void *arg)
{
    bus_metrics_t *self = arg;
    const char *info[] = {"version", BUS_VERSION, NULL};
    bus_metrics_out_gauge(out, "info", "always 1; the label carries the posbus version", info, 1);
    for (int i = 0; i < self->nstats; i++)
        bus_metrics_out_stats(out, self->stats[i].stats, self->stats[i].gauges);
    for (int i = 0; i < self->ncollectors; i++)
        self->collectors[i].fn(out, self->collectors[i].arg);
    bus_metrics_out_counter(out, "metrics_scrapes", "scrapes of this page answered", NULL,
                            bus_metrics_scrapes(self));
}

int bus_metrics_render(bus_metrics_t *self)
{
    size_t len = 0;
    char *page = bus_metrics_render_page(self->program, s_collect_all, self, &len);
    if (!page) {
        if (!self->warned)
            bus_warn("metrics.render",
                     "page not rendered (over %d bytes or out of memory): "
                     "the previous one is served",
                     S_PAGE_MAX);
        self->warned = true;
        return -1;
    }
    pthread_mutex_lock(&self->lock);
    char *old = self->page;
    self->page = page;
    self->page_len = len;
    pthread_mutex_unlock(&self->lock);
    free(old);
    return 0;
}

void bus_metrics_tick(bus_metrics_t *self)
{
    if (!self)
        return;
    int64_t now = bus_mono_ms();
    if (now < self->next_render)
        return;
    self->next_render = now + self->refresh_ms;
    bus_metrics_render(self);
}

int bus_metrics_port(bus_metrics_t *self)
{
    return self->port;
}

int64_t bus_metrics_scrapes(bus_metrics_t *self)
{
    return __atomic_load_n(&self->scrapes, __ATOMIC_RELAXED);
}
