/*  test_metrics - the Prometheus page: names, labels escaped, histogram buckets cumulative and in
    seconds without floating point, stats as counters and gauges, listen addresses parsed, and the
    HTTP server: 200 with the last rendered page, 503 before the first, 404, 405, garbage and a
    page re-rendered while scrapers hammer it from other threads */
#include <bus/metrics.h>
#include <bus/msg.h>
#include <pthread.h>
#include <sys/socket.h>
#include "testutil.h"

#define S_SCRAPERS 4
#define S_SCRAPES  50
#define S_RENDERS  200

static void s_sample_page(bus_metrics_out_t *out, void *arg)
{
    bus_stats_t *stats = arg;
    const char *labels[] = {"group", "in\"v\\e\nntory", NULL};
    bus_metrics_out_gauge(out, "stream_lag_entries", "lag\nof a group", labels, 7);
    const char *other[] = {"group", "reporting", NULL};
    bus_metrics_out_gauge(out, "stream_lag_entries", NULL, other, 0);
    bus_metrics_out_gauge_nan(out, "unknown", "not known", NULL);
    bus_metrics_out_counter(out, "bad.name-x", "sanitized", NULL, 3);
    bus_metrics_out_counter(out, "already_total", "kept", NULL, 4);
    bus_hist_t h = {0};
    bus_hist_observe(&h, 100);     /* <= 0.0005 */
    bus_hist_observe(&h, 500);     /* == 0.0005: le is inclusive */
    bus_hist_observe(&h, 30000);   /* <= 0.05 */
    bus_hist_observe(&h, 9000000); /* +Inf */
    bus_hist_observe(&h, -5);      /* counts as 0 */
    const char *method[] = {"method", "stock.get", NULL};
    bus_metrics_out_histogram(out, "request_duration_seconds", "latency", method, &h);
    if (stats)
        bus_metrics_out_stats(out, stats, (const char *const[]){"level", NULL});
}

static void s_test_page(void)
{
    bus_stats_t *stats = bus_stats_new();
    bus_stats_add(stats, "requests", 5);
    bus_stats_set(stats, "level", -2);
    size_t len = 0;
    char *page = bus_metrics_render_page("inv-entory", s_sample_page, stats, &len);
    CHECK(page && strlen(page) == len, "a page is rendered, its length given");
    if (!page) {
        bus_stats_destroy(&stats);
        return;
    }
    CHECK(strstr(page, "# HELP posbus_inv_entory_stream_lag_entries lag\\nof a group\n"
                       "# TYPE posbus_inv_entory_stream_lag_entries gauge\n"
                       "posbus_inv_entory_stream_lag_entries{group=\"in\\\"v\\\\e\\nntory\"} 7\n"
                       "posbus_inv_entory_stream_lag_entries{group=\"reporting\"} 0\n"),
          "a family's HELP/TYPE once, label values escaped, program name sanitized");
    CHECK(strstr(page, "posbus_inv_entory_unknown NaN\n"), "an unknown gauge is NaN");
    CHECK(strstr(page, "# TYPE posbus_inv_entory_bad_name_x_total counter\n"
                       "posbus_inv_entory_bad_name_x_total 3\n"),
          "a counter gets _total, bad characters become _");
    CHECK(strstr(page, "posbus_inv_entory_already_total 4\n"), "_total is not doubled");
    CHECK(strstr(page, "_bucket{method=\"stock.get\",le=\"0.0005\"} 3\n"),
          "le is inclusive and -5 us counts in the first bucket");
    CHECK(strstr(page, "_bucket{method=\"stock.get\",le=\"0.05\"} 4\n"), "buckets are cumulative");
    CHECK(strstr(page, "_bucket{method=\"stock.get\",le=\"2.5\"} 4\n"), "2.5 s bound in seconds");
    CHECK(strstr(page, "_bucket{method=\"stock.get\",le=\"+Inf\"} 5\n"), "+Inf counts everything");
    CHECK(strstr(page, "posbus_inv_entory_request_duration_seconds_sum{method=\"stock.get\"} "
                       "9.0306\n"),
          "sum in seconds, exact");
    CHECK(strstr(page, "posbus_inv_entory_request_duration_seconds_count{method=\"stock.get\"} "
                       "5\n"),
          "count");
    CHECK(strstr(page, "# TYPE posbus_inv_entory_requests_total counter\n"
                       "posbus_inv_entory_requests_total 5\n"),
          "a stats counter");
    CHECK(strstr(page, "# TYPE posbus_inv_entory_level gauge\nposbus_inv_entory_level -2\n"),
          "a stats level named as a gauge");
    free(page);
    bus_stats_destroy(&stats);

    page = bus_metrics_render_page("p", NULL, NULL, &len);
    CHECK(page && len == 0, "an empty page is a page");
    free(page);
}

static void s_test_listen(void)
{
    struct sockaddr_storage sa;
    unsigned sa_len = 0;
    CHECK(bus_metrics_parse_listen("127.0.0.1:9101", &sa, &sa_len) == 0 &&
              sa.ss_family == AF_INET && ntohs(((struct sockaddr_in *)&sa)->sin_port) == 9101,
          "127.0.0.1:9101");
    CHECK(bus_metrics_parse_listen("*:0", &sa, &sa_len) == 0 &&
              ((struct sockaddr_in *)&sa)->sin_addr.s_addr == htonl(INADDR_ANY),
          "*:0 is every address");
    CHECK(bus_metrics_parse_listen("[::1]:80", &sa, &sa_len) == 0 && sa.ss_family == AF_INET6,
          "[::1]:80");
    const char *bad[] = {"",        "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:9x",
                         "host:80", "[::1:80",   "[]:80",      "1.2.3.4:-1",      "::1:80",
                         NULL};
    for (int i = 0; bad[i]; i++)
        CHECK(bus_metrics_parse_listen(bad[i], &sa, &sa_len) == -1, "'%s' is refused", bad[i]);
}

/*  Send request to port, return the response (caller frees) or NULL. */
static char *s_http(int port, const char *request)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        write(fd, request, strlen(request)) != (ssize_t)strlen(request)) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    shutdown(fd, SHUT_WR);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t n;
    while (buf && (n = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (len + 1 >= cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
            }
            buf = bigger;
        }
    }
    close(fd);
    if (buf)
        buf[len] = '\0';
    return buf;
}

static bool s_status(int port, const char *request, const char *status)
{
    char *r = s_http(port, request);
    bool ok = r && strncmp(r, status, strlen(status)) == 0;
    if (!ok)
        printf("     got: %.80s\n", r ? r : "(nothing)");
    free(r);
    return ok;
}

typedef struct {
    int port;
    int good;
} s_scraper_t;

static void *s_scraper(void *arg_)
{
    s_scraper_t *arg = arg_;
    for (int i = 0; i < S_SCRAPES; i++) {
        char *r =
            s_http(arg->port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        /* a page is whole: it ends with the scrape counter's last line */
        if (r && strncmp(r, "HTTP/1.1 200", 12) == 0 && strstr(r, "posbus_t_metrics_scrapes"))
            arg->good++;
        free(r);
    }
    return NULL;
}

static void s_test_server(void)
{
    const char *err = NULL;
    CHECK(!bus_metrics_new("t", "127.0.0.1:x", 100, &err) && err, "a bad address: %s",
          err ? err : "?");
    bus_metrics_t *m = bus_metrics_new("t", "127.0.0.1:0", 100, &err);
    CHECK(m && bus_metrics_port(m) > 0, "listens on a free port (%d)", m ? bus_metrics_port(m) : 0);
    if (!m)
        return;
    int port = bus_metrics_port(m);
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    bus_metrics_t *dup = bus_metrics_new("t", listen, 100, &err);
    CHECK(!dup, "a port in use is refused: %s", err ? err : "?");
    bus_metrics_destroy(&dup);

    const char *get = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    CHECK(s_status(port, get, "HTTP/1.1 503"), "503 before the first page");
    bus_stats_t *stats = bus_stats_new();
    int64_t *c = bus_stats_counter(stats, "sales");
    CHECK(bus_metrics_add_stats(m, stats, NULL) == 0, "stats added");
    CHECK(bus_metrics_add_collector(m, s_sample_page, NULL) == 0, "collector added");
    CHECK(bus_metrics_add_collector(NULL, s_sample_page, NULL) == 0, "adding to NULL is a no-op");
    bus_metrics_tick(m);
    char *r = s_http(port, get);
    CHECK(r && strstr(r, "HTTP/1.1 200") == r && strstr(r, "text/plain; version=0.0.4") &&
              strstr(r, "posbus_t_sales_total 0\n") && strstr(r, "posbus_t_info{version="),
          "200, the exposition content type, the stats and info");
    free(r);
    *c = 41; /* owner thread: nothing is rendered until the next tick is due */
    bus_metrics_tick(m);
    r = s_http(port, get);
    CHECK(r && strstr(r, "posbus_t_sales_total 0\n"), "a tick before the interval keeps the page");
    free(r);
    CHECK(bus_metrics_render(m) == 0, "render now");
    r = s_http(port, get);
    CHECK(r && strstr(r, "posbus_t_sales_total 41\n"), "the new page is served");
    free(r);
    CHECK(s_status(port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                   "HTTP/1.1 200"),
          "HEAD 200");
    CHECK(s_status(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 404"),
          "404 for /");
    CHECK(s_status(port, "GET /metrics/x?y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                   "HTTP/1.1 404"),
          "404 for another path");
    r = s_http(port, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     "Connection: close\r\n\r\nhello");
    CHECK(r && strncmp(r, "HTTP/1.1 405", 12) == 0 && strstr(r, "Allow: GET, HEAD"),
          "405 with Allow for POST");
    free(r);
    CHECK(s_status(port, "DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                   "HTTP/1.1 405"),
          "405 for DELETE");
    r = s_http(port, "\x01\x02garbage\r\n\r\n");
    free(r);
    static char huge[70100];
    memset(huge, 'a', 70000);
    memcpy(huge, "GET /", 5);
    snprintf(huge + 70000, sizeof(huge) - 70000, " HTTP/1.1\r\nHost: x\r\n\r\n");
    r = s_http(port, huge);
    CHECK(!r || strncmp(r, "HTTP/1.1 2", 10) != 0, "a 70 kB request line is not answered 2xx");
    free(r);
    CHECK(s_status(port, get, "HTTP/1.1 200"), "still serving after garbage");

    /* scrapers on other threads while the owner re-renders: every page whole (ASan/TSan) */
    pthread_t threads[S_SCRAPERS];
    s_scraper_t args[S_SCRAPERS];
    for (int i = 0; i < S_SCRAPERS; i++) {
        args[i] = (s_scraper_t){port, 0};
        pthread_create(&threads[i], NULL, s_scraper, &args[i]);
    }
    for (int i = 0; i < S_RENDERS; i++) {
        bus_stats_inc(c, 1);
        bus_metrics_render(m);
    }
    int good = 0;
    for (int i = 0; i < S_SCRAPERS; i++) {
        pthread_join(threads[i], NULL);
        good += args[i].good;
    }
    CHECK_EQ(good, S_SCRAPERS * S_SCRAPES, "whole pages while the page is re-rendered");
    CHECK(bus_metrics_scrapes(m) >= S_SCRAPERS * S_SCRAPES, "scrapes counted (%lld)",
          (long long)bus_metrics_scrapes(m));
    bus_metrics_destroy(&m);
    CHECK(!m, "destroy nulls the pointer");
    bus_metrics_destroy(&m);
    bus_metrics_tick(NULL);
    bus_stats_destroy(&stats);
}

int main(void)
{
    s_test_page();
    s_test_listen();
    s_test_server();
    return FINISH("test_metrics");
}
