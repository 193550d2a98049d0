/*  =========================================================================
    commands - device commands routed to a register's device

    An operator (or a service) asks a register to act on one of its devices:
    print a document, open the drawer, show a text. The register may be
    offline, so a command is kept in Redis (devcmd:{S}:<key>) until the
    register answers it, and the register learns of it two ways: the event
    command.<S>.<R> published when it is created, and, for a register that
    missed the event (delivery is at most once), the number of commands
    waiting in its heartbeat's reply; it then reads them with
    device.pending and answers each with device.result.

    Exactly once rests on the caller's idempotency key, not on the request
    id: the same key with the same content is the same command (a retry, or
    the operator polling for the result), answered with its current state;
    the same key with other content is a conflict. Create-or-compare is one
    script on the store's hash tag, and the event is published only by the
    request that created the command, so a retry never prints twice. A
    result is taken once: a register resending it changes nothing. A
    register sees and answers only its own commands; another register's key
    is answered not_found, as if it did not exist.

    args and result are MessagePack maps, at most 64 KiB each as encoded
    here; args are compared as this service re-encodes them (the same map,
    keys in the same order, is the same command). A pending command is kept
    until answered; a done one 7 days.

    Load: a command is an operator's action; polls every 200 ms while one
    waits, and one ZCARD more per heartbeat.
    =========================================================================
*/
#include "svc_caller.h"
#include "commands.h"
#include <bus/keys.h>
#include <pos/sale.h>
#include <ctype.h>
#include <pos/text.h>
#include "command_lua.h"
#include "command_result_lua.h"

#define S_RETRY_MS          500 /* hint sent with `unavailable` */
#define S_NUM_MAX           24
#define S_WHY_MAX           200
#define S_DEVICE_MAX        32           /* bytes of a device name */
#define S_COMMAND_MAX       32           /* bytes of a command name */
#define S_KEY_MAX           64           /* bytes of an idempotency key */
#define S_MAP_BYTES         (64 * 1024)  /* encoded args or result */
#define S_ERROR_CHARS       200          /* characters of a result's error text */
#define S_PENDING_MAX       100          /* commands of one device.pending reply */
#define S_PENDING_BYTES     (512 * 1024) /* encoded commands of one reply: under the 1 MiB limit */
#define S_DONE_TTL_S        (7 * 86400)  /* how long a done command is kept */
#define S_ERR_NOT_FOUND     "not_found"
#define S_ERR_CONFLICT      "conflict"
#define S_ERR_UNKNOWN_STORE "unknown_store"

struct devices_commands {
    bus_redis_t *redis;
    bus_pub_t *pub;
    int command, result;
    int64_t *c_created, *c_same, *c_conflicts, *c_pending, *c_results, *c_results_unchanged,
        *c_results_not_found, *c_bad, *c_other_register, *c_redis_errors;
};

/*  Who a register is: its store and register, from the caller's certificate. */
typedef svc_node_id_t s_node_id_t;

/* ---- answers ------------------------------------------------------------------------------ */

static int s_redis_failed(devices_commands_t *self, bus_service_t *svc, redisReply *r,
                          const char *what)
{
    bus_stats_inc(self->c_redis_errors, 1);
    return bus_service_redis_failed(svc, self->redis, r, S_RETRY_MS, what);
}

static int s_bad(devices_commands_t *self, bus_service_t *svc, const char *why)
{
    bus_stats_inc(self->c_bad, 1);
    return bus_service_error(svc, BUS_ERR_BAD_REQUEST, "%s", why);
}

/* ---- checks ------------------------------------------------------------------------------- */

/*  Is text 1..S_COMMAND_MAX bytes of lowercase letters, digits and '_'? */
static bool s_command_ok(const char *text)
{
    size_t n = text ? strlen(text) : 0;
    if (n == 0 || n > S_COMMAND_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)text[i]) && !isdigit((unsigned char)text[i]) && text[i] != '_')
            return false;
    return true;
}

/*  The optional map under field encoded into out ({} when absent). false when it is not a map
    or encodes to more than S_MAP_BYTES. */
static bool s_map_field(const bus_val_t *body, const char *field, bus_buf_t *out)
{
    const bus_val_t *v = bus_val_map_get(body, field);
    bus_val_t *empty = v ? NULL : bus_val_new_map();
    const bus_val_t *map = v ? v : empty;
    bool ok = bus_val_type(map) == BUS_VAL_MAP && bus_val_encode(map, out) == 0 &&
              out->len <= S_MAP_BYTES;
    bus_val_destroy(&empty);
    return ok;
}

/*  A MessagePack map stored by this service, decoded; {} if it is not one. */
static bus_val_t *s_map_decode(const char *data, size_t len)
{
    bus_val_t *map = len ? bus_val_decode(data, len, NULL, NULL) : NULL;
    if (bus_val_type(map) != BUS_VAL_MAP) {
        bus_val_destroy(&map);
        map = bus_val_new_map();
    }
    return map;
}

static int s_caller_node(devices_commands_t *self, bus_service_t *svc, const bus_val_t *body,
                         s_node_id_t *node)
{
    return svc_caller_node(svc, body, node, self->c_bad, self->c_other_register);
}

/*  Is store in the stores set? 0 yes, or -1 after answering unknown_store or a Redis failure. */
static int s_store_known(devices_commands_t *self, bus_service_t *svc, const char *store)
{
    redisReply *r = bus_redis_command(self->redis, "SISMEMBER %s %s", BUS_KEY_STORES, store);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_INTEGER)
        return s_redis_failed(self, svc, r, "store lookup");
    bool known = r->integer == 1;
    freeReplyObject(r);
    if (!known)
        return bus_service_error(svc, S_ERR_UNKNOWN_STORE, "store: '%s' is not registered", store);
    return 0;
}

/* ---- device.command ----------------------------------------------------------------------- */

/*  A device.command request, checked. */
typedef struct {
    const char *store, *reg, *device, *command, *key;
    bus_buf_t args; /* encoded */
} s_command_t;

/*  Check body into cmd. 0, or -1 after answering bad_request. */
static int s_command_parse(devices_commands_t *self, bus_service_t *svc, const bus_val_t *body,
                           s_command_t *cmd)
{
    char why[S_WHY_MAX];
    cmd->store = bus_val_map_get_str(body, "store");
    cmd->reg = bus_val_map_get_str(body, "register");
    cmd->device = bus_val_map_get_str(body, "device");
    cmd->command = bus_val_map_get_str(body, "command");
    cmd->key = bus_val_map_get_str(body, "key");
    if (!bus_identity_id_ok(cmd->store) || !bus_identity_id_ok(cmd->reg)) {
        snprintf(why, sizeof(why), "store and register: ids (1-%d letters, digits, '_') required",
                 BUS_ID_PART_MAX);
        return s_bad(self, svc, why);
    }
    if (!pos_sale_id_ok(cmd->device, S_DEVICE_MAX, "_-.")) {
        snprintf(why, sizeof(why), "device: 1-%d letters, digits, '_', '-', '.' required",
                 S_DEVICE_MAX);
        return s_bad(self, svc, why);
    }
    if (!s_command_ok(cmd->command)) {
        snprintf(why, sizeof(why), "command: 1-%d lowercase letters, digits, '_' required",
                 S_COMMAND_MAX);
        return s_bad(self, svc, why);
    }
    if (!pos_sale_id_ok(cmd->key, S_KEY_MAX, "_-.:")) {
        snprintf(why, sizeof(why), "key: 1-%d letters, digits, '_', '-', '.', ':' required",
                 S_KEY_MAX);
        return s_bad(self, svc, why);
    }
    if (!s_map_field(body, "args", &cmd->args)) {
        snprintf(why, sizeof(why), "args: a map of at most %d bytes (MessagePack), if given",
                 S_MAP_BYTES);
        return s_bad(self, svc, why);
    }
    return 0;
}

/*  Publish command.<S>.<R> {store, register, key, device, command, args}. */
static void s_publish(devices_commands_t *self, const s_command_t *cmd)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_t *args = s_map_decode((const char *)cmd->args.data, cmd->args.len);
    bus_val_map_set_str(body, "store", cmd->store);
    bus_val_map_set_str(body, "register", cmd->reg);
    bus_val_map_set_str(body, "key", cmd->key);
    bus_val_map_set_str(body, "device", cmd->device);
    bus_val_map_set_str(body, "command", cmd->command);
    bus_val_map_set(body, "args", &args);
    bus_val_destroy(&args);
    char topic[BUS_TOPIC_MAX];
    snprintf(topic, sizeof(topic), "command.%s.%s", cmd->store, cmd->reg);
    bus_pub_publish(self->pub, topic, "device.command", &body);
}

/*  Fill reply {key, state[, ok, result, error]} from the script's {status, state, ok, result,
    error}. */
static void s_state_reply(bus_val_t *reply, const char *key, const redisReply *r)
{
    const char *state = r->element[1]->str;
    bus_val_map_set_str(reply, "key", key);
    bus_val_map_set_str(reply, "state", state);
    if (strcmp(state, "done") != 0)
        return;
    bus_val_t *result = s_map_decode(r->element[3]->str, r->element[3]->len);
    bus_val_map_set_bool(reply, "ok", strcmp(r->element[2]->str, "1") == 0);
    bus_val_map_set(reply, "result", &result);
    bus_val_destroy(&result);
    bus_val_map_set_str(reply, "error", r->element[4]->str);
}

static int s_command(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    devices_commands_t *self = arg;
    s_command_t cmd = {0};
    if (s_command_parse(self, svc, bus_msg_body(req), &cmd) != 0 ||
        s_store_known(self, svc, cmd.store) != 0) {
        bus_buf_free(&cmd.args);
        return -1;
    }
    char hash[BUS_KEY_MAX], set[BUS_KEY_MAX], now[S_NUM_MAX], caller[BUS_ID_FRAME_MAX + 1];
    bus_key_devcmd(hash, cmd.store, cmd.key);
    bus_key_devcmds(set, cmd.store, cmd.reg);
    snprintf(now, sizeof(now), "%" PRId64, bus_now_ms());
    if (bus_identity_encode(bus_service_caller(svc), caller, sizeof(caller)) == 0)
        snprintf(caller, sizeof(caller), "?");
    const char *argv[] = {hash,       set,         cmd.reg,
                          cmd.device, cmd.command, (const char *)cmd.args.data,
                          now,        caller,      cmd.key};
    size_t lens[] = {strlen(hash),       strlen(set),         strlen(cmd.reg),
                     strlen(cmd.device), strlen(cmd.command), cmd.args.len,
                     strlen(now),        strlen(caller),      strlen(cmd.key)};
    redisReply *r = bus_redis_evalsha(self->redis, self->command, 2, 9, argv, lens);
    bool shape = bus_redis_reply_ok(r) && r->type == REDIS_REPLY_ARRAY && r->elements == 5;
    for (size_t i = 0; shape && i < 5; i++)
        shape = r->element[i]->type == REDIS_REPLY_STRING;
    if (!shape) {
        bus_buf_free(&cmd.args);
        return s_redis_failed(self, svc, r, "device command");
    }
    const char *status = r->element[0]->str;
    int rc = 0;
    if (strcmp(status, "conflict") == 0) {
        bus_stats_inc(self->c_conflicts, 1);
        rc = bus_service_error(svc, S_ERR_CONFLICT,
                               "key '%s' names another command (register, device, command or "
                               "args differ): use a new key",
                               cmd.key);
    } else {
        bool created = strcmp(status, "created") == 0;
        bus_stats_inc(created ? self->c_created : self->c_same, 1);
        if (created) {
            s_publish(self, &cmd);
            bus_info("devices.command", "store=%s register=%s device=%s command=%s key=%s by=%s",
                     cmd.store, cmd.reg, cmd.device, cmd.command, cmd.key, caller);
        }
        s_state_reply(reply, cmd.key, r);
    }
    freeReplyObject(r);
    bus_buf_free(&cmd.args);
    return rc;
}

/* ---- device.pending ----------------------------------------------------------------------- */

/*  One pending command {key, device, command, args} from HMGET device command args state;
    NULL if it is not one (answered meanwhile, or not this service's). */
static bus_val_t *s_pending_row(const char *key, const redisReply *h)
{
    if (!bus_redis_reply_ok(h) || h->type != REDIS_REPLY_ARRAY || h->elements != 4)
        return NULL;
    for (size_t i = 0; i < 4; i++)
        if (h->element[i]->type != REDIS_REPLY_STRING)
            return NULL;
    if (strcmp(h->element[3]->str, "pending") != 0)
        return NULL;
    bus_val_t *row = bus_val_new_map();
    bus_val_t *args = s_map_decode(h->element[2]->str, h->element[2]->len);
    if (!row || !args || bus_val_map_set_str(row, "key", key) ||
        bus_val_map_set_str(row, "device", h->element[0]->str) ||
        bus_val_map_set_str(row, "command", h->element[1]->str) ||
        bus_val_map_set(row, "args", &args)) {
        bus_val_destroy(&args);
        bus_val_destroy(&row);
    }
    return row;
}

/*  Add the commands named in keys (a ZRANGE reply, up to want of them) to list, oldest first,
    until S_PENDING_BYTES (always at least one). Sets *more when some were left out. 0, or -1
    after answering on svc. */
static int s_pending_read(devices_commands_t *self, bus_service_t *svc, const char *store,
                          const redisReply *keys, size_t want, bus_val_t *list, bool *more)
{
    size_t n = keys->elements < want ? keys->elements : want;
    *more = keys->elements > want;
    redisReply **replies = calloc(n + 1, sizeof(*replies));
    if (!replies)
        return bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    char hash[BUS_KEY_MAX];
    size_t queued = 0;
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        const redisReply *k = keys->element[i];
        /* a key that could not have been written here is skipped, never built into a name */
        const char *name =
            k->type == REDIS_REPLY_STRING && pos_sale_id_ok(k->str, S_KEY_MAX, "_-.:") ? k->str
                                                                                       : "-";
        bus_key_devcmd(hash, store, name);
        ok = bus_redis_append(self->redis, "HMGET %s device command args state", hash) == 0;
        queued += ok ? 1 : 0;
    }
    for (size_t i = 0; i < queued; i++) /* every reply queued, so the connection stays in step */
        replies[i] = bus_redis_get_reply(self->redis);
    int rc = ok ? 0 : s_redis_failed(self, svc, NULL, "pending read");
    bus_buf_t scratch = {0};
    size_t bytes = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!replies[i]) {
            rc = s_redis_failed(self, svc, NULL, "pending read");
            break;
        }
        if (!bus_redis_reply_ok(replies[i])) {
            rc = s_redis_failed(self, svc, replies[i], "pending read");
            replies[i] = NULL;
            break;
        }
        const redisReply *k = keys->element[i];
        bool named = k->type == REDIS_REPLY_STRING && pos_sale_id_ok(k->str, S_KEY_MAX, "_-.:");
        bus_val_t *row = named ? s_pending_row(k->str, replies[i]) : NULL;
        if (!row)
            continue;
        bus_buf_reset(&scratch);
        if (bus_val_encode(row, &scratch) != 0) {
            bus_val_destroy(&row);
            rc = bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
        } else if (bus_val_size(list) > 0 && bytes + scratch.len > S_PENDING_BYTES) {
            bus_val_destroy(&row);
            *more = true;
            break;
        } else {
            bytes += scratch.len;
            if (bus_val_arr_push(list, &row) != 0) {
                bus_val_destroy(&row);
                rc = bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
            }
        }
    }
    for (size_t i = 0; i < queued; i++)
        if (replies[i])
            freeReplyObject(replies[i]);
    free(replies);
    bus_buf_free(&scratch);
    return rc;
}

static int s_pending(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    devices_commands_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    const bus_val_t *cv = bus_val_map_get(body, "count");
    int64_t count = S_PENDING_MAX;
    if (cv && (!bus_val_get_int(cv, &count) || count < 1 || count > S_PENDING_MAX))
        return s_bad(self, svc, "count: an integer from 1 to 100, if given");
    s_node_id_t node;
    if (s_caller_node(self, svc, body, &node) != 0)
        return -1;
    char set[BUS_KEY_MAX];
    bus_key_devcmds(set, node.store, node.reg);
    /* one more than asked: whether more wait */
    redisReply *keys = bus_redis_command(self->redis, "ZRANGE %s 0 %" PRId64, set, count);
    if (!bus_redis_reply_ok(keys) || keys->type != REDIS_REPLY_ARRAY)
        return s_redis_failed(self, svc, keys, "pending set");
    bus_val_t *list = bus_val_new_arr();
    bool more = false;
    int rc = list ? s_pending_read(self, svc, node.store, keys, (size_t)count, list, &more)
                  : bus_service_error(svc, BUS_ERR_INTERNAL, "out of memory");
    freeReplyObject(keys);
    if (rc == 0) {
        bus_stats_inc(self->c_pending, 1);
        bus_val_map_set(reply, "commands", &list);
        bus_val_map_set_bool(reply, "more", more);
    }
    bus_val_destroy(&list);
    return rc;
}

/* ---- device.result ------------------------------------------------------------------------ */

static int s_result(bus_service_t *svc, const bus_msg_t *req, bus_val_t *reply, void *arg)
{
    devices_commands_t *self = arg;
    const bus_val_t *body = bus_msg_body(req);
    char why[S_WHY_MAX];
    const char *key = bus_val_map_get_str(body, "key");
    const bus_val_t *ev = bus_val_map_get(body, "error");
    size_t elen = 0;
    const char *error = ev ? bus_val_get_str(ev, &elen) : "";
    bool ok = false;
    if (!pos_sale_id_ok(key, S_KEY_MAX, "_-.:")) {
        snprintf(why, sizeof(why), "key: 1-%d letters, digits, '_', '-', '.', ':' required",
                 S_KEY_MAX);
        return s_bad(self, svc, why);
    }
    if (!bus_val_map_get_bool(body, "ok", &ok))
        return s_bad(self, svc, "ok: a bool required");
    if (!error || elen != strlen(error) || pos_text_chars(error, S_ERROR_CHARS) < 0) {
        snprintf(why, sizeof(why), "error: text of at most %d characters, if given", S_ERROR_CHARS);
        return s_bad(self, svc, why);
    }
    bus_buf_t result = {0};
    if (!s_map_field(body, "result", &result)) {
        bus_buf_free(&result);
        snprintf(why, sizeof(why), "result: a map of at most %d bytes (MessagePack), if given",
                 S_MAP_BYTES);
        return s_bad(self, svc, why);
    }
    s_node_id_t node;
    if (s_caller_node(self, svc, body, &node) != 0) {
        bus_buf_free(&result);
        return -1;
    }
    char hash[BUS_KEY_MAX], set[BUS_KEY_MAX], now[S_NUM_MAX], ttl[S_NUM_MAX];
    bus_key_devcmd(hash, node.store, key);
    bus_key_devcmds(set, node.store, node.reg);
    snprintf(now, sizeof(now), "%" PRId64, bus_now_ms());
    snprintf(ttl, sizeof(ttl), "%d", S_DONE_TTL_S);
    const char *text = ok ? "" : error; /* an error is kept only for a command that failed */
    const char *argv[] = {hash, set, node.reg, ok ? "1" : "0", (const char *)result.data, text,
                          now,  ttl, key};
    size_t lens[] = {strlen(hash), strlen(set), strlen(node.reg), 1,          result.len,
                     strlen(text), strlen(now), strlen(ttl),      strlen(key)};
    redisReply *r = bus_redis_evalsha(self->redis, self->result, 2, 9, argv, lens);
    bus_buf_free(&result);
    if (!bus_redis_reply_ok(r) || r->type != REDIS_REPLY_INTEGER)
        return s_redis_failed(self, svc, r, "device result");
    long long status = r->integer;
    freeReplyObject(r);
    if (status == 0) {
        bus_stats_inc(self->c_results_not_found, 1);
        return bus_service_error(svc, S_ERR_NOT_FOUND, "no command '%s' for register %s.%s", key,
                                 node.store, node.reg);
    }
    bus_stats_inc(status == 1 ? self->c_results : self->c_results_unchanged, 1);
    if (status == 1)
        bus_info("devices.command.done", "store=%s register=%s key=%s ok=%d", node.store, node.reg,
                 key, ok);
    bus_val_map_set_bool(reply, "ok", true);
    if (status == 2)
        bus_val_map_set_bool(reply, "unchanged", true);
    return 0;
}

/* ---- setup -------------------------------------------------------------------------------- */

devices_commands_t *devices_commands_new(bus_redis_t *redis, bus_pub_t *pub, bus_stats_t *stats)
{
    devices_commands_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->redis = redis;
    self->pub = pub;
    self->command = bus_redis_script(redis, command_lua);
    self->result = bus_redis_script(redis, command_result_lua);
    self->c_created = bus_stats_counter(stats, "commands_created");
    self->c_same = bus_stats_counter(stats, "commands_polled");
    self->c_conflicts = bus_stats_counter(stats, "commands_conflict");
    self->c_pending = bus_stats_counter(stats, "commands_pending_reads");
    self->c_results = bus_stats_counter(stats, "commands_done");
    self->c_results_unchanged = bus_stats_counter(stats, "command_results_unchanged");
    self->c_results_not_found = bus_stats_counter(stats, "command_results_not_found");
    self->c_bad = bus_stats_counter(stats, "bad_requests");
    self->c_other_register = bus_stats_counter(stats, "refused_other_register");
    self->c_redis_errors = bus_stats_counter(stats, "redis_errors");
    if (self->command < 0 || self->result < 0 || !self->c_redis_errors)
        devices_commands_destroy(&self);
    return self;
}

void devices_commands_destroy(devices_commands_t **self_p)
{
    if (self_p && *self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

int devices_commands_methods(devices_commands_t *self, bus_service_t *svc)
{
    /* Operators (and services acting for them) send commands; only a register reads and
       answers its own. Every method is exactly once by itself (the caller's key, a result
       taken once), so the reply cache is skipped: a poll must see the command's state now. */
    enum { OPS = BUS_ROLE_OPERATOR | BUS_ROLE_SERVICE };
    static const bus_method_t methods[] = {
        {"device.command", s_command, BUS_METHOD_IDEMPOTENT, OPS},
        {"device.pending", s_pending, BUS_METHOD_READ, BUS_ROLE_REGISTER},
        {"device.result", s_result, BUS_METHOD_IDEMPOTENT, BUS_ROLE_REGISTER},
        {NULL, NULL, 0, 0}};
    return bus_service_methods(svc, methods, self);
}
