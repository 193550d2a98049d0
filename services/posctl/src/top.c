/*  =========================================================================
    top.c - posctl top: one live screen of the whole system

    Every interval it asks busd for its counters and the instances it routes
    to, asks each instance for its health and counters (the built-in "health"
    and "stats" requests every service answers), and asks the devices
    service for the registers (node.list); rates are the counters' growth
    since the last round. Alerts name what an operator should look at: a
    service with no healthy instance, an unhealthy instance, error replies
    going up, dead letters parked, a consumer falling behind (its group's lag
    above 1000 and not shrinking), a register offline or with sales not yet
    uploaded for long, a device not ok.

    Only requests everyone may make (read-only): posctl top never changes
    anything. --once takes two rounds one interval apart, prints one screen
    without clearing the terminal and exits (1 when there is an alert), for
    scripts and tests.
    =========================================================================
*/
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "posctl.h"

#define S_INSTANCES_MAX 64
#define S_ALERTS_MAX    32
#define S_NAME_MAX      (BUS_SERVICE_NAME_MAX + BUS_INSTANCE_MAX + 2)

const bus_opt_t posctl_top_opts[] = {
    {"interval-ms", BUS_OPT_INT, "2000", 200, 600000, "top: how often the screen is redrawn"},
    {"once", BUS_OPT_BOOL, "false", 0, 0,
     "top: two rounds one interval apart, one screen, exit 1 when there is an alert"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* One instance as one round saw it. */
typedef struct {
    char service[BUS_SERVICE_NAME_MAX + 1];
    char instance[BUS_INSTANCE_MAX + 1];
    bool answered, healthy;
    int64_t uptime_ms;
    int64_t requests, errors, applied, parked; /* -1: the counter does not exist */
    int64_t lag;                               /* a consumer's group lag (stream.lag), or -1 */
} s_inst_t;

typedef struct {
    int64_t at_ms;
    bool busd_ok;
    int64_t busd_requests, busd_events, busd_instances, busd_services;
    s_inst_t inst[S_INSTANCES_MAX];
    int ninst;
} s_round_t;

static int64_t s_counter(const bus_val_t *stats, const char *name)
{
    int64_t v = -1;
    const bus_val_t *counters = bus_val_map_get(stats, "counters");
    if (!bus_val_map_get_int(counters ? counters : stats, name, &v))
        return -1;
    return v;
}

static void s_round(bus_client_t *client, s_round_t *r)
{
    memset(r, 0, sizeof(*r));
    r->at_ms = bus_mono_ms();
    bus_msg_t *m = bus_client_request(client, BUS_BROKER_SERVICE, "stats", NULL);
    r->busd_ok = m != NULL;
    if (m) {
        const bus_val_t *b = bus_msg_body(m);
        r->busd_requests = s_counter(b, "requests");
        r->busd_events = s_counter(b, "events_forwarded");
        r->busd_instances = s_counter(b, "instances");
        r->busd_services = s_counter(b, "services");
    }
    bus_msg_destroy(&m);
    m = bus_client_request(client, BUS_BROKER_SERVICE, "services", NULL);
    const bus_val_t *list = m ? bus_val_map_get(bus_msg_body(m), "instances") : NULL;
    for (size_t i = 0; i < bus_val_size(list) && r->ninst < S_INSTANCES_MAX; i++) {
        const bus_val_t *item = bus_val_arr_get(list, i);
        const char *service = bus_val_map_get_str(item, "service");
        const char *instance = bus_val_map_get_str(item, "instance");
        if (!service || !instance)
            continue;
        s_inst_t *in = &r->inst[r->ninst++];
        snprintf(in->service, sizeof(in->service), "%s", service);
        snprintf(in->instance, sizeof(in->instance), "%s", instance);
        char target[S_NAME_MAX];
        snprintf(target, sizeof(target), "%s@%s", service, instance);
        bus_msg_t *h = bus_client_request(client, target, "health", NULL);
        if (h) {
            in->answered = true;
            bus_val_map_get_bool(bus_msg_body(h), "healthy", &in->healthy);
            bus_val_map_get_int(bus_msg_body(h), "uptime_ms", &in->uptime_ms);
        }
        bus_msg_destroy(&h);
        bus_msg_t *s = bus_client_request(client, target, "stats", NULL);
        const bus_val_t *b = s ? bus_msg_body(s) : NULL;
        in->requests = b ? s_counter(b, "requests") : -1;
        in->errors = b ? s_counter(b, "error_replies") : -1;
        in->applied = b ? s_counter(b, "stream_applied") : -1;
        in->parked = b ? s_counter(b, "stream_parked") : -1;
        bus_msg_destroy(&s);
        in->lag = -1;
        if (in->applied >= 0) { /* a consumer of the sales stream: how far behind it is */
            bus_msg_t *l = bus_client_request(client, target, "stream.lag", NULL);
            if (l)
                bus_val_map_get_int(bus_msg_body(l), "lag", &in->lag);
            bus_msg_destroy(&l);
        }
    }
    bus_msg_destroy(&m);
}

/*  The same instance in the previous round, or NULL. */
static const s_inst_t *s_before(const s_round_t *prev, const s_inst_t *in)
{
    for (int i = 0; prev && i < prev->ninst; i++)
        if (!strcmp(prev->inst[i].service, in->service) &&
            !strcmp(prev->inst[i].instance, in->instance))
            return &prev->inst[i];
    return NULL;
}

/*  A per-second rate as text ("-" without two samples). */
static const char *s_rate(int64_t now, int64_t then, int64_t ms, char *buf, size_t size)
{
    if (now < 0 || then < 0 || ms <= 0) {
        snprintf(buf, size, "-");
        return buf;
    }
    int64_t per10 = (now - then) * 10000 / ms; /* tenths per second, integer arithmetic */
    snprintf(buf, size, "%" PRId64 ".%" PRId64, per10 / 10, per10 % 10);
    return buf;
}

static void s_uptime(int64_t ms, char *buf, size_t size)
{
    int64_t s = ms / 1000;
    if (s < 120)
        snprintf(buf, size, "%" PRId64 "s", s);
    else if (s < 7200)
        snprintf(buf, size, "%" PRId64 "m", s / 60);
    else
        snprintf(buf, size, "%" PRId64 "h", s / 3600);
}

typedef struct {
    char text[S_ALERTS_MAX][160];
    int n;
} s_alerts_t;

static void s_alert(s_alerts_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_alert(s_alerts_t *a, const char *fmt, ...)
{
    if (a->n == S_ALERTS_MAX)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->text[a->n++], sizeof(a->text[0]), fmt, ap);
    va_end(ap);
}

/*  The registers: counts and one line each, alerts for the unwell. */
static void s_nodes(bus_client_t *client, const char *store, s_alerts_t *alerts)
{
    bus_val_t *req = bus_val_new_map();
    if (store)
        bus_val_map_set_str(req, "store", store);
    bus_val_t *all = posctl_call_pages(client, "devices", "node.list", req, "nodes", "after", 1000,
                                       INT64_MAX);
    bus_val_destroy(&req);
    if (!all) {
        printf("\nregisters: the devices service did not answer\n");
        s_alert(alerts, "devices: node.list not answered (is the devices service up?)");
        return;
    }
    const bus_val_t *nodes = bus_val_map_get(all, "nodes");
    int64_t online = 0, unsynced = 0;
    for (size_t i = 0; i < bus_val_size(nodes); i++) {
        bool on = false;
        int64_t u = 0;
        bus_val_map_get_bool(bus_val_arr_get(nodes, i), "online", &on);
        bus_val_map_get_int(bus_val_arr_get(nodes, i), "unsynced", &u);
        online += on;
        unsynced += u;
    }
    printf("\nregisters: %" PRId64 " online, %" PRId64 " offline, %" PRId64
           " sales not yet uploaded\n",
           online, (int64_t)bus_val_size(nodes) - online, unsynced);
    if (bus_val_size(nodes))
        printf("%-8s %-10s %-8s %-12s %-9s %s\n", "store", "register", "state", "heartbeat",
               "unsynced", "devices");
    for (size_t i = 0; i < bus_val_size(nodes) && i < 40; i++) {
        const bus_val_t *n = bus_val_arr_get(nodes, i);
        const char *st = bus_val_map_get_str(n, "store"), *reg = bus_val_map_get_str(n, "register");
        bool on = false;
        int64_t ago = -1, u = 0;
        bus_val_map_get_bool(n, "online", &on);
        bus_val_map_get_int(n, "last_heartbeat_ms_ago", &ago);
        bus_val_map_get_int(n, "unsynced", &u);
        char seen[24], devs[120] = "";
        size_t len = 0;
        const bus_val_t *devices = bus_val_map_get(n, "devices");
        for (size_t k = 0; k < bus_val_size(devices) && len + 40 < sizeof(devs); k++) {
            const bus_val_t *d = bus_val_arr_get(devices, k);
            const char *name = bus_val_map_get_str(d, "name");
            const char *health = bus_val_map_get_str(d, "health");
            len += (size_t)snprintf(devs + len, sizeof(devs) - len, "%s%s:%s", k ? "," : "",
                                    name ? name : "?", health ? health : "?");
            if (health && strcmp(health, "ok") != 0)
                s_alert(alerts, "%s %s: device %s is %s", st ? st : "?", reg ? reg : "?",
                        name ? name : "?", health);
        }
        if (ago < 0)
            snprintf(seen, sizeof(seen), "never");
        else
            snprintf(seen, sizeof(seen), "%" PRId64 "s ago", ago / 1000);
        printf("%-8s %-10s %-8s %-12s %-9" PRId64 " %s\n", st ? st : "?", reg ? reg : "?",
               on ? "online" : "offline", seen, u, devs);
        if (!on)
            s_alert(alerts, "%s %s offline (last heartbeat %s)%s", st ? st : "?", reg ? reg : "?",
                    seen, u ? ": its sales wait on the register" : "");
        else if (u > 100)
            s_alert(alerts, "%s %s: %" PRId64 " sales not uploaded", st ? st : "?",
                    reg ? reg : "?", u);
    }
    bus_val_destroy(&all);
}

/*  One screen from two rounds (prev may be NULL); the alerts found. */
static int s_screen(bus_client_t *client, bus_config_t *config, const s_round_t *prev,
                    const s_round_t *r, bool clear)
{
    s_alerts_t alerts = {.n = 0};
    int64_t ms = prev ? r->at_ms - prev->at_ms : 0;
    char a[24], b[24], c[24], up[16], stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
    if (clear)
        printf("\033[H\033[2J");
    printf("posbus top  %s  (every %.1f s)\n\n", stamp,
           (double)bus_config_int(config, "interval-ms") / 1000.0); /* a duration, not money */
    if (!r->busd_ok) {
        printf("busd: no answer\n");
        s_alert(&alerts, "busd does not answer: nothing reaches the services");
    } else {
        printf("busd: %" PRId64 " services, %" PRId64 " instances, %s requests/s, %s events/s\n",
               r->busd_services, r->busd_instances,
               s_rate(r->busd_requests, prev ? prev->busd_requests : -1, ms, a, sizeof(a)),
               s_rate(r->busd_events, prev ? prev->busd_events : -1, ms, b, sizeof(b)));
    }
    printf("\n%-12s %-40s %-9s %-7s %-8s %-7s %-10s %-7s %s\n", "service", "instance", "state",
           "uptime", "req/s", "errors", "applied/s", "lag", "parked");
    for (int i = 0; i < r->ninst; i++) {
        const s_inst_t *in = &r->inst[i], *was = s_before(prev, in);
        s_uptime(in->uptime_ms, up, sizeof(up));
        const char *state = !in->answered ? "silent" : in->healthy ? "ok" : "UNHEALTHY";
        char errors[24] = "-", parked[24] = "-", lag[24] = "-";
        if (in->errors >= 0)
            snprintf(errors, sizeof(errors), "%" PRId64, in->errors);
        if (in->parked >= 0)
            snprintf(parked, sizeof(parked), "%" PRId64, in->parked);
        if (in->lag >= 0)
            snprintf(lag, sizeof(lag), "%" PRId64, in->lag);
        printf("%-12s %-40.40s %-9s %-7s %-8s %-7s %-10s %-7s %s\n", in->service, in->instance,
               state, in->answered ? up : "-",
               s_rate(in->requests, was ? was->requests : -1, ms, a, sizeof(a)), errors,
               s_rate(in->applied, was ? was->applied : -1, ms, c, sizeof(c)), lag, parked);
        if (was && in->lag > 1000 && was->lag >= 0 && in->lag >= was->lag)
            s_alert(&alerts, "%s@%s: %" PRId64 " sales not yet applied and not shrinking",
                    in->service, in->instance, in->lag);
        if (!in->answered || !in->healthy)
            s_alert(&alerts, "%s@%s is %s", in->service, in->instance, state);
        if (was && in->errors > was->errors && was->errors >= 0)
            s_alert(&alerts, "%s@%s: %" PRId64 " error replies since the last round",
                    in->service, in->instance, in->errors - was->errors);
        if (in->parked > 0)
            s_alert(&alerts, "%s@%s: %" PRId64 " sales parked as dead letters (posctl dead list)",
                    in->service, in->instance, in->parked);
    }
    const char *expect = bus_config_str(config, "expect");
    char *list = strdup(expect ? expect : "");
    char *save = NULL;
    for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        bool found = false;
        for (int i = 0; i < r->ninst && !found; i++)
            found = !strcmp(r->inst[i].service, name) && r->inst[i].healthy;
        if (!found)
            s_alert(&alerts, "%s: no healthy instance", name);
    }
    free(list);
    s_nodes(client, bus_config_str(config, "store"), &alerts);
    printf("\nalerts:%s\n", alerts.n ? "" : " none");
    for (int i = 0; i < alerts.n; i++)
        printf("  ! %s\n", alerts.text[i]);
    fflush(stdout);
    return alerts.n;
}

int posctl_top(bus_config_t *config, const bus_conn_cfg_t *cfg)
{
    bus_client_t *client = posctl_client(config, cfg);
    if (!client)
        return POSCTL_EXIT_FAIL;
    int64_t interval = bus_config_int(config, "interval-ms");
    bool once = bus_config_bool(config, "once");
    bool clear = !once && isatty(STDOUT_FILENO);
    s_round_t *rounds = calloc(2, sizeof(*rounds));
    if (!rounds) {
        bus_client_destroy(&client);
        return POSCTL_EXIT_FAIL;
    }
    int cur = 0, nalerts = 0;
    bool have_prev = false;
    while (!bus_program_stopping()) {
        s_round(client, &rounds[cur]);
        if (!once || have_prev) {
            nalerts = s_screen(client, config, have_prev ? &rounds[1 - cur] : NULL, &rounds[cur],
                               clear);
            if (once)
                break;
        }
        have_prev = true;
        cur = 1 - cur;
        for (int64_t slept = 0; slept < interval && !bus_program_stopping(); slept += 100)
            usleep(100 * 1000);
    }
    free(rounds);
    bus_client_destroy(&client);
    return once && nalerts ? POSCTL_EXIT_FAIL : POSCTL_EXIT_OK;
}
