/*  =========================================================================
    nodes.c - posctl node list|devices: the registers the devices service
    knows, and their peripherals (health and the statistics each register
    reports with its heartbeats) and serial ports

    Asks devices for node.list and follows its pages (at most 1000 nodes or
    512 KiB each), so a large fleet prints like a small one. json prints the
    pages as one reply; table and csv one row per node with the devices
    folded into one cell ("name:health,..."), so a row stays one line.
    node devices prints two tables, one after the other with an empty line
    between: a row per device, then a row per serial port of each register
    (a register without ports, or one that never said, gets a row saying
    so, so that no register is silently missing).
    =========================================================================
*/
#include "posctl.h"

#define S_DEVICES_CELL 1024
#define S_PAGE_MAX     1000 /* the most rows node.list returns in one page */

/*  "scanner:ok,printer:warn" for a node's devices. */
static void s_devices_cell(const bus_val_t *devices, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < bus_val_size(devices); i++) {
        const bus_val_t *d = bus_val_arr_get(devices, i);
        const char *name = bus_val_map_get_str(d, "name");
        const char *health = bus_val_map_get_str(d, "health");
        int n = snprintf(out + used, size - used, "%s%s:%s", used ? "," : "", name ? name : "?",
                         health ? health : "?");
        if (n < 0 || (size_t)n >= size - used)
            break;
        used += (size_t)n;
    }
}

/*  The reply's nodes as flat rows for posctl_print. */
static bus_val_t *s_rows(const bus_val_t *nodes)
{
    bus_val_t *body = bus_val_new_map(), *rows = bus_val_new_arr();
    static const char *const ints[] = {"last_seq", "committed_seq", "unsynced", "config_version",
                                       NULL};
    for (size_t i = 0; body && rows && i < bus_val_size(nodes); i++) {
        const bus_val_t *n = bus_val_arr_get(nodes, i);
        bus_val_t *row = bus_val_new_map();
        const char *store = bus_val_map_get_str(n, "store");
        const char *reg = bus_val_map_get_str(n, "register");
        const char *version = bus_val_map_get_str(n, "version");
        bool online = false;
        int64_t ago = -1, v = 0;
        bus_val_map_get_bool(n, "online", &online);
        bus_val_map_get_int(n, "last_heartbeat_ms_ago", &ago);
        char seen[32], devices[S_DEVICES_CELL];
        if (ago < 0)
            snprintf(seen, sizeof(seen), "never");
        else
            snprintf(seen, sizeof(seen), "%" PRId64 ".%01" PRId64 "s ago", ago / 1000,
                     (ago % 1000) / 100);
        s_devices_cell(bus_val_map_get(n, "devices"), devices, sizeof(devices));
        bus_val_map_set_str(row, "store", store ? store : "");
        bus_val_map_set_str(row, "register", reg ? reg : "");
        bus_val_map_set_str(row, "state", online ? "online" : "offline");
        bus_val_map_set_str(row, "heartbeat", seen);
        bus_val_map_set_str(row, "version", version ? version : "");
        for (int k = 0; ints[k]; k++) {
            v = 0;
            bus_val_map_get_int(n, ints[k], &v);
            bus_val_map_set_int(row, ints[k], v);
        }
        bus_val_map_set_str(row, "devices", devices);
        bus_val_arr_push(rows, &row);
    }
    if (body && rows)
        bus_val_map_set(body, "rows", &rows);
    bus_val_destroy(&rows);
    return body;
}

/*  One row per device of every node: health and the statistics its register reported. */
static bus_val_t *s_device_rows(const bus_val_t *nodes)
{
    static const char *const ints[] = {"bytes_in", "bytes_out",  "jobs",   "jobs_failed",
                                       "errors",   "reconnects", "queued", NULL};
    bus_val_t *body = bus_val_new_map(), *rows = bus_val_new_arr();
    for (size_t i = 0; body && rows && i < bus_val_size(nodes); i++) {
        const bus_val_t *n = bus_val_arr_get(nodes, i);
        const bus_val_t *devices = bus_val_map_get(n, "devices");
        for (size_t j = 0; j < bus_val_size(devices); j++) {
            const bus_val_t *d = bus_val_arr_get(devices, j);
            const bus_val_t *st = bus_val_map_get(d, "stats");
            bus_val_t *row = bus_val_new_map();
            static const char *const strs[] = {"name", "kind", "health", "detail", NULL};
            const char *store = bus_val_map_get_str(n, "store");
            const char *reg = bus_val_map_get_str(n, "register");
            bus_val_map_set_str(row, "store", store ? store : "");
            bus_val_map_set_str(row, "register", reg ? reg : "");
            for (int k = 0; strs[k]; k++) {
                const char *v = bus_val_map_get_str(d, strs[k]);
                bus_val_map_set_str(row, strcmp(strs[k], "name") ? strs[k] : "device", v ? v : "");
            }
            for (int k = 0; ints[k]; k++) {
                int64_t v = 0;
                bus_val_map_get_int(st, ints[k], &v);
                bus_val_map_set_int(row, ints[k], v);
            }
            bus_val_arr_push(rows, &row);
        }
    }
    if (body && rows)
        bus_val_map_set(body, "rows", &rows);
    bus_val_destroy(&rows);
    return body;
}

/*  One row per serial port of every node: USB ids as VID:PID in hex, and the device using it. */
static bus_val_t *s_port_rows(const bus_val_t *nodes)
{
    static const char *const strs[] = {"description", "manufacturer", "product", "serial", NULL};
    bus_val_t *body = bus_val_new_map(), *rows = bus_val_new_arr();
    for (size_t i = 0; body && rows && i < bus_val_size(nodes); i++) {
        const bus_val_t *n = bus_val_arr_get(nodes, i);
        const bus_val_t *ports = bus_val_map_get(n, "ports");
        const char *store = bus_val_map_get_str(n, "store");
        const char *reg = bus_val_map_get_str(n, "register");
        size_t count = bus_val_size(ports);
        for (size_t j = 0; j < (count ? count : 1); j++) {
            const bus_val_t *p = bus_val_arr_get(ports, j); /* NULL: the row saying none */
            const char *name = bus_val_map_get_str(p, "name");
            const char *transport = bus_val_map_get_str(p, "transport");
            const char *device = bus_val_map_get_str(p, "device");
            int64_t vid = -1, pid = -1;
            char usb[16] = "";
            if (bus_val_map_get_int(p, "usb_vid", &vid) && bus_val_map_get_int(p, "usb_pid", &pid))
                snprintf(usb, sizeof(usb), "%04" PRIx64 ":%04" PRIx64, vid & 0xffff, pid & 0xffff);
            if (!p)
                name = bus_val_type(ports) == BUS_VAL_ARR ? "(none)" : "(not reported)";
            bus_val_t *row = bus_val_new_map();
            bus_val_map_set_str(row, "store", store ? store : "");
            bus_val_map_set_str(row, "register", reg ? reg : "");
            bus_val_map_set_str(row, "port", name ? name : "");
            bus_val_map_set_str(row, "transport", transport ? transport : "");
            bus_val_map_set_str(row, "usb_id", usb);
            for (int k = 0; strs[k]; k++) {
                const char *v = bus_val_map_get_str(p, strs[k]);
                bus_val_map_set_str(row, strs[k], v ? v : "");
            }
            bus_val_map_set_str(row, "used_by", device ? device : "");
            bus_val_arr_push(rows, &row);
        }
    }
    if (body && rows)
        bus_val_map_set(body, "rows", &rows);
    bus_val_destroy(&rows);
    return body;
}

int posctl_node_list(bus_config_t *config)
{
    const char *format = bus_config_str(config, "format");
    bool devices_view =
        bus_config_argc(config) == 2 && !strcmp(bus_config_arg(config, 1), "devices");
    if (bus_config_argc(config) != 2 ||
        (strcmp(format, "table") && strcmp(format, "csv") && strcmp(format, "json"))) {
        fprintf(stderr, "posctl: usage: node list|devices [--store S] [--format table|csv|json]\n");
        return POSCTL_EXIT_USAGE;
    }
    bus_conn_cfg_t cfg;
    bus_conn_cfg_from_config(&cfg, config);
    bus_client_t *client = posctl_client(config, &cfg);
    if (!client)
        return POSCTL_EXIT_FAIL;
    bus_val_t *req = bus_val_new_map();
    const char *store = bus_config_str(config, "store");
    if (store)
        bus_val_map_set_str(req, "store", store);
    bus_val_t *all = posctl_call_pages(client, "devices", "node.list", req, "nodes", "after",
                                       S_PAGE_MAX, INT64_MAX);
    bus_val_destroy(&req);
    int rc = all ? POSCTL_EXIT_OK : POSCTL_EXIT_FAIL;
    if (all)
        bus_val_map_set_int(all, "count", (int64_t)bus_val_size(bus_val_map_get(all, "nodes")));
    if (all && strcmp(format, "json") == 0)
        posctl_print(all, format);
    else if (all) {
        const bus_val_t *nodes = bus_val_map_get(all, "nodes");
        bus_val_t *rows = devices_view ? s_device_rows(nodes) : s_rows(nodes);
        bus_val_t *ports = devices_view ? s_port_rows(nodes) : NULL;
        if (bus_val_size(nodes) == 0 && strcmp(format, "table") == 0)
            printf("no nodes%s%s\n", store ? " in store " : "", store ? store : "");
        else if (rows && (ports || !devices_view)) {
            posctl_print(rows, format);
            if (ports && bus_val_size(nodes) > 0) {
                printf("\n");
                posctl_print(ports, format);
            }
        } else
            rc = POSCTL_EXIT_FAIL;
        bus_val_destroy(&rows);
        bus_val_destroy(&ports);
    }
    bus_val_destroy(&all);
    bus_client_destroy(&client);
    return rc;
}
