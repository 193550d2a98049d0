/*  =========================================================================
    device.c - posctl device command: a command for one register's device

    posctl device command --store S --register R --device D --command C
                          [NAME=VALUE ...] [--key K] [--wait-ms N]

    Sends device.command to the devices service, which keeps it until the
    register answers, then polls with the same request every 200 ms until
    the command is done or --wait-ms has passed. The idempotency key makes
    the first request and every poll the same command: a timeout resent, or
    posctl run again with --key K later, never makes the register act twice.
    Without --key a random key is made and printed on stderr, so the
    operator can poll again.

    The command's args are NAME=VALUE positional arguments (text values):
    the option parser keeps the last of a repeated option, so a repeated
    --arg could not carry several. Exit 0 when done and ok; 1 when done and
    not ok, still pending at the deadline, or refused; 2 usage.
    =========================================================================
*/
#include "posctl.h"

#define S_SERVICE "devices"
#define S_POLL_MS 200 /* between two polls of a pending command */

const bus_opt_t posctl_device_opts[] = {
    {"device", BUS_OPT_STR, NULL, 0, 0,
     "device command: the register's device (its name, e.g. printer, drawer, display)"},
    {"command", BUS_OPT_STR, NULL, 0, 0,
     "device command: what the device should do (e.g. print, drawer, display)"},
    {"key", BUS_OPT_STR, NULL, 0, 0,
     "device command: the idempotency key (default: a new random one, printed on stderr)"},
    {"wait-ms", BUS_OPT_INT, "5000", 0, 3600000,
     "device command: how long to wait for the register's answer"},
    {NULL, 0, NULL, 0, 0, NULL}};

static int s_usage(void)
{
    fprintf(stderr, "posctl: usage: device command --store S --register R --device D --command C "
                    "[NAME=VALUE ...] [--key K] [--wait-ms N] [--format table|csv|json]\n");
    return POSCTL_EXIT_USAGE;
}

/*  The args map from the NAME=VALUE arguments from index first on; NULL after saying why. */
static bus_val_t *s_args(bus_config_t *config, int first)
{
    bus_val_t *args = bus_val_new_map();
    for (int i = first; args && i < bus_config_argc(config); i++) {
        const char *pair = bus_config_arg(config, i);
        const char *eq = strchr(pair, '=');
        if (!eq || eq == pair) {
            fprintf(stderr, "posctl: '%s': NAME=VALUE expected\n", pair);
            bus_val_destroy(&args);
            break;
        }
        char *name = strndup(pair, (size_t)(eq - pair));
        if (!name || bus_val_map_get(args, name)) {
            fprintf(stderr, "posctl: '%s': %s\n", pair, name ? "given twice" : "out of memory");
            bus_val_destroy(&args);
        } else if (bus_val_map_set_str(args, name, eq + 1) != 0)
            bus_val_destroy(&args);
        free(name);
    }
    return args;
}

/*  The request body; NULL after saying why. */
static bus_val_t *s_request(bus_config_t *config, const char *key)
{
    static const char *const fields[][2] = {
        {"store", "store"}, {"register", "register"}, {"device", "device"}, {"command", "command"}};
    bus_val_t *args = s_args(config, 2);
    bus_val_t *body = args ? bus_val_new_map() : NULL;
    for (size_t i = 0; body && i < sizeof(fields) / sizeof(fields[0]); i++)
        if (bus_val_map_set_str(body, fields[i][0], bus_config_str(config, fields[i][1])) != 0)
            bus_val_destroy(&body);
    if (!body || bus_val_map_set_str(body, "key", key) != 0 ||
        bus_val_map_set(body, "args", &args) != 0)
        bus_val_destroy(&body);
    bus_val_destroy(&args);
    return body;
}

/*  Send body (not consumed) until the command is done or deadline (ms) passes; the last reply
    (caller destroys), NULL after printing why. */
static bus_msg_t *s_poll(bus_client_t *client, const bus_val_t *body, int64_t deadline)
{
    bus_msg_t *reply = NULL;
    for (;;) {
        bus_val_t *req = bus_val_dup(body);
        bus_msg_destroy(&reply);
        reply = req ? posctl_call(client, S_SERVICE, "device.command", &req) : NULL;
        bus_val_destroy(&req);
        const char *state = reply ? bus_val_map_get_str(bus_msg_body(reply), "state") : NULL;
        if (!reply || (state && strcmp(state, "done") == 0) || bus_now_ms() >= deadline ||
            bus_program_stopping())
            return reply;
        zclock_sleep(S_POLL_MS);
    }
}

int posctl_device(bus_config_t *config)
{
    const char *format = bus_config_str(config, "format");
    if (bus_config_argc(config) < 2 || strcmp(bus_config_arg(config, 1), "command") != 0 ||
        !bus_config_str(config, "store") || !bus_config_str(config, "register") ||
        !bus_config_str(config, "device") || !bus_config_str(config, "command") ||
        (strcmp(format, "table") && strcmp(format, "csv") && strcmp(format, "json")))
        return s_usage();
    char key[BUS_ID_NAME_MAX + 1];
    const char *given = bus_config_str(config, "key");
    if (given)
        snprintf(key, sizeof(key), "%s", given);
    else {
        zuuid_t *uuid = zuuid_new();
        snprintf(key, sizeof(key), "%s", uuid ? zuuid_str_canonical(uuid) : "");
        zuuid_destroy(&uuid);
        fprintf(stderr, "posctl: command key %s\n", key);
    }
    int64_t deadline = bus_now_ms() + bus_config_int(config, "wait-ms");
    bus_val_t *body = s_request(config, key);
    if (!body)
        return POSCTL_EXIT_USAGE;
    bus_conn_cfg_t cfg;
    bus_conn_cfg_from_config(&cfg, config);
    bus_client_t *client = posctl_client(config, &cfg);
    bus_msg_t *reply = client ? s_poll(client, body, deadline) : NULL;
    int rc = POSCTL_EXIT_FAIL;
    if (reply) {
        const bus_val_t *answer = bus_msg_body(reply);
        const char *state = bus_val_map_get_str(answer, "state");
        bool ok = false;
        bus_val_map_get_bool(answer, "ok", &ok);
        posctl_print(answer, format);
        if (state && strcmp(state, "done") == 0)
            rc = ok ? POSCTL_EXIT_OK : POSCTL_EXIT_FAIL;
        else
            fprintf(stderr,
                    "posctl: still pending: the register has not answered; poll again with "
                    "--key %s\n",
                    key);
    }
    bus_msg_destroy(&reply);
    bus_client_destroy(&client);
    bus_val_destroy(&body);
    return rc;
}
