/*  =========================================================================
    redis.c - reconnecting hiredis wrapper with scripts and pipelining

    State machine: no context -> (connect ok) -> context -> (I/O error) ->
    no context + backoff deadline. Every public call first makes sure there
    is a context, which is where reconnection happens; calls inside the
    backoff window fail fast with the last error.
    =========================================================================
*/
#include <errno.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "bus/redis.h"
#include "bus/msg.h"
#include "bus/val.h"

#define S_DEFAULT_HOST       "127.0.0.1"
#define S_DEFAULT_PORT       6379
#define S_CONNECT_TIMEOUT_MS 1000
#define S_COMMAND_TIMEOUT_MS 2000
#define S_BACKOFF_MIN_MS     100
#define S_BACKOFF_MAX_MS     5000
#define S_ERR_MAX            256
#define S_SHA_HEX            (SHA_DIGEST_LENGTH * 2 + 1)
#define S_PASSWORD_MAX       512

const bus_opt_t bus_redis_opts[] = {
    {"redis-host", BUS_OPT_STR, S_DEFAULT_HOST, 0, 0, "Redis host (TCP)"},
    {"redis-port", BUS_OPT_INT, "6379", 1, 65535, "Redis port (TCP)"},
    {"redis-socket", BUS_OPT_STR, NULL, 0, 0, "Redis unix socket (instead of TCP)"},
    {"redis-user", BUS_OPT_STR, NULL, 0, 0, "Redis ACL user (default: the default user)"},
    {"redis-password-file", BUS_OPT_STR, NULL, 0, 0,
     "file holding the Redis password (never put the password itself on a command line)"},
    {"redis-timeout-ms", BUS_OPT_INT, "2000", 10, 600000, "Redis command timeout"},
    {NULL, 0, NULL, 0, 0, NULL}};

typedef struct {
    char *lua;
    char sha[S_SHA_HEX];
} s_script_t;

struct bus_redis {
    char *host, *unix_path, *password, *username;
    int port, connect_timeout_ms, command_timeout_ms, backoff_min_ms, backoff_max_ms;
    redisContext *ctx;
    int backoff_ms;
    int64_t retry_at;
    bool ever_connected;
    uint64_t reconnects, errors;
    s_script_t *scripts;
    int nscripts;
    int pending; /* pipelined replies still to read */
    char errstr[S_ERR_MAX];
    char lasterr[S_ERR_MAX]; /* the I/O error behind the current backoff */
};

static int s_or(int v, int d)
{
    return v > 0 ? v : d;
}

static char *s_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

bus_redis_t *bus_redis_new(const bus_redis_cfg_t *cfg)
{
    bus_redis_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->host = strdup(cfg->host ? cfg->host : S_DEFAULT_HOST);
    self->unix_path = s_dup(cfg->unix_path);
    self->password = s_dup(cfg->password);
    self->username = s_dup(cfg->username);
    self->port = s_or(cfg->port, S_DEFAULT_PORT);
    self->connect_timeout_ms = s_or(cfg->connect_timeout_ms, S_CONNECT_TIMEOUT_MS);
    self->command_timeout_ms = s_or(cfg->command_timeout_ms, S_COMMAND_TIMEOUT_MS);
    self->backoff_min_ms = s_or(cfg->backoff_min_ms, S_BACKOFF_MIN_MS);
    self->backoff_max_ms = s_or(cfg->backoff_max_ms, S_BACKOFF_MAX_MS);
    self->backoff_ms = self->backoff_min_ms;
    if (!self->host)
        bus_redis_destroy(&self);
    return self;
}

bus_redis_t *bus_redis_new_from_config(bus_config_t *config, const char **err)
{
    static const char *const unreadable = "cannot read --redis-password-file";
    char password[S_PASSWORD_MAX] = "";
    const char *file = bus_config_str(config, "redis-password-file");
    if (file) {
        FILE *f = fopen(file, "r");
        if (!f || !fgets(password, sizeof(password), f)) {
            if (f)
                fclose(f);
            if (err)
                *err = unreadable;
            return NULL;
        }
        fclose(f);
        password[strcspn(password, "\r\n")] = '\0';
    }
    bus_redis_cfg_t cfg = {0};
    cfg.host = bus_config_str(config, "redis-host");
    cfg.port = (int)bus_config_int(config, "redis-port");
    cfg.unix_path = bus_config_str(config, "redis-socket");
    cfg.username = bus_config_str(config, "redis-user");
    cfg.password = file ? password : NULL;
    cfg.command_timeout_ms = (int)bus_config_int(config, "redis-timeout-ms");
    bus_redis_t *self = bus_redis_new(&cfg);
    memset(password, 0, sizeof(password));
    return self;
}

void bus_redis_destroy(bus_redis_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_redis_t *self = *self_p;
    if (self->ctx)
        redisFree(self->ctx);
    for (int i = 0; i < self->nscripts; i++)
        free(self->scripts[i].lua);
    free(self->scripts);
    free(self->host);
    free(self->unix_path);
    if (self->password)
        memset(self->password, 0, strlen(self->password));
    free(self->password);
    free(self->username);
    free(self);
    *self_p = NULL;
}

/*  Drop the context after an I/O error and schedule the next attempt. */
static void s_drop(bus_redis_t *self, const char *why)
{
    snprintf(self->lasterr, sizeof(self->lasterr), "%s", why);
    snprintf(self->errstr, sizeof(self->errstr), "redis: %s", why);
    if (self->ctx) {
        redisFree(self->ctx);
        self->ctx = NULL;
    }
    self->errors++;
    self->pending = 0;
    self->retry_at = bus_mono_ms() + self->backoff_ms;
    self->backoff_ms =
        self->backoff_ms * 2 > self->backoff_max_ms ? self->backoff_max_ms : self->backoff_ms * 2;
}

/*  A command on a fresh context during connect: ok unless I/O error or error reply. */
static bool s_setup_command(bus_redis_t *self, redisReply *reply, const char *what)
{
    if (!reply) {
        s_drop(self, self->ctx && self->ctx->errstr[0] ? self->ctx->errstr : "connection lost");
        return false;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        /* never echo AUTH arguments; Redis's message does not contain them */
        char why[S_ERR_MAX];
        snprintf(why, sizeof(why), "%s failed: %.*s", what, (int)(sizeof(why) / 2),
                 reply->str ? reply->str : "");
        freeReplyObject(reply);
        s_drop(self, why);
        return false;
    }
    freeReplyObject(reply);
    return true;
}

int bus_redis_connect(bus_redis_t *self)
{
    if (self->ctx)
        return 0;
    struct timeval tv = {self->connect_timeout_ms / 1000, (self->connect_timeout_ms % 1000) * 1000};
    redisContext *ctx = self->unix_path ? redisConnectUnixWithTimeout(self->unix_path, tv)
                                        : redisConnectWithTimeout(self->host, self->port, tv);
    if (!ctx || ctx->err) {
        char why[S_ERR_MAX];
        snprintf(why, sizeof(why), "cannot connect to %s: %s",
                 self->unix_path ? self->unix_path : self->host,
                 ctx ? ctx->errstr : "out of memory");
        if (ctx)
            redisFree(ctx);
        s_drop(self, why);
        return -1;
    }
    struct timeval ctv = {self->command_timeout_ms / 1000,
                          (self->command_timeout_ms % 1000) * 1000};
    redisSetTimeout(ctx, ctv);
    self->ctx = ctx;
    if (self->password) {
        redisReply *r = self->username
                            ? redisCommand(ctx, "AUTH %s %s", self->username, self->password)
                            : redisCommand(ctx, "AUTH %s", self->password);
        if (!s_setup_command(self, r, "AUTH"))
            return -1;
    }
    for (int i = 0; i < self->nscripts; i++)
        if (!s_setup_command(self, redisCommand(ctx, "SCRIPT LOAD %s", self->scripts[i].lua),
                             "SCRIPT LOAD"))
            return -1;
    if (self->ever_connected)
        self->reconnects++;
    self->ever_connected = true;
    self->backoff_ms = self->backoff_min_ms;
    self->pending = 0;
    self->errstr[0] = '\0';
    return 0;
}

/*  Make sure there is a context, honouring the backoff window. */
static bool s_ready(bus_redis_t *self)
{
    if (self->ctx)
        return true;
    int64_t now = bus_mono_ms();
    if (now < self->retry_at) {
        snprintf(self->errstr, sizeof(self->errstr), "redis unavailable (retrying in %lld ms): %s",
                 (long long)(self->retry_at - now), self->lasterr);
        return false;
    }
    return bus_redis_connect(self) == 0;
}

bool bus_redis_connected(bus_redis_t *self)
{
    return self->ctx != NULL;
}

static redisReply *s_checked(bus_redis_t *self, redisReply *reply)
{
    if (!reply)
        s_drop(self, self->ctx && self->ctx->errstr[0] ? self->ctx->errstr : "connection lost");
    return reply;
}

redisReply *bus_redis_command(bus_redis_t *self, const char *fmt, ...)
{
    if (!s_ready(self))
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *reply = redisvCommand(self->ctx, fmt, ap);
    va_end(ap);
    return s_checked(self, reply);
}

redisReply *bus_redis_commandargv(bus_redis_t *self, int argc, const char **argv,
                                  const size_t *argvlen)
{
    if (!s_ready(self))
        return NULL;
    return s_checked(self, redisCommandArgv(self->ctx, argc, argv, argvlen));
}

int bus_redis_ping(bus_redis_t *self)
{
    redisReply *r = bus_redis_command(self, "PING");
    int rc = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0 ? 0 : -1;
    if (r)
        freeReplyObject(r);
    return rc;
}

int bus_redis_script(bus_redis_t *self, const char *lua)
{
    s_script_t *grown = realloc(self->scripts, (size_t)(self->nscripts + 1) * sizeof(*grown));
    if (!grown)
        return -1;
    self->scripts = grown;
    s_script_t *s = &self->scripts[self->nscripts];
    s->lua = strdup(lua);
    if (!s->lua)
        return -1;
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)lua, strlen(lua), digest);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", digest[i]);
    if (self->ctx) {
        redisReply *r = redisCommand(self->ctx, "SCRIPT LOAD %s", lua);
        if (!s_checked(self, r))
            return self->nscripts++;
        freeReplyObject(r);
    }
    return self->nscripts++;
}

/*  Build EVALSHA argv: EVALSHA sha nkeys argv... (caller frees the arrays). */
static int s_evalsha_args(bus_redis_t *self, int script, int nkeys, int argc, const char **argv,
                          const size_t *argvlen, const char ***out, size_t **outlen)
{
    if (script < 0 || script >= self->nscripts)
        return -1;
    char nk[16]; /* per call: two threads may each drive their own connection */
    snprintf(nk, sizeof(nk), "%d", nkeys);
    const char **a = malloc((size_t)(argc + 3) * sizeof(*a));
    size_t *l = malloc((size_t)(argc + 3) * sizeof(*l));
    if (!a || !l) {
        free(a);
        free(l);
        return -1;
    }
    a[0] = "EVALSHA";
    l[0] = 7;
    a[1] = self->scripts[script].sha;
    l[1] = strlen(a[1]);
    a[2] = strdup(nk);
    l[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        a[3 + i] = argv[i];
        l[3 + i] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    *out = a;
    *outlen = l;
    return argc + 3;
}

static void s_free_args(const char **a, size_t *l)
{
    if (a)
        free((char *)a[2]);
    free(a);
    free(l);
}

redisReply *bus_redis_evalsha(bus_redis_t *self, int script, int nkeys, int argc, const char **argv,
                              const size_t *argvlen)
{
    const char **a;
    size_t *l;
    int n = s_evalsha_args(self, script, nkeys, argc, argv, argvlen, &a, &l);
    if (n < 0) {
        snprintf(self->errstr, sizeof(self->errstr), "redis: unknown script handle %d", script);
        return NULL;
    }
    redisReply *r = bus_redis_commandargv(self, n, a, l);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);
        r = bus_redis_command(self, "SCRIPT LOAD %s", self->scripts[script].lua);
        if (r) {
            freeReplyObject(r);
            r = bus_redis_commandargv(self, n, a, l);
        }
    }
    s_free_args(a, l);
    return r;
}

int bus_redis_append(bus_redis_t *self, const char *fmt, ...)
{
    if (!s_ready(self))
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAppendCommand(self->ctx, fmt, ap);
    va_end(ap);
    if (rc == REDIS_OK)
        self->pending++;
    return rc == REDIS_OK ? 0 : -1;
}

int bus_redis_appendargv(bus_redis_t *self, int argc, const char **argv, const size_t *argvlen)
{
    if (!s_ready(self))
        return -1;
    int rc = redisAppendCommandArgv(self->ctx, argc, argv, argvlen);
    if (rc == REDIS_OK)
        self->pending++;
    return rc == REDIS_OK ? 0 : -1;
}

int bus_redis_append_evalsha(bus_redis_t *self, int script, int nkeys, int argc, const char **argv,
                             const size_t *argvlen)
{
    const char **a;
    size_t *l;
    int n = s_evalsha_args(self, script, nkeys, argc, argv, argvlen, &a, &l);
    if (n < 0)
        return -1;
    int rc = bus_redis_appendargv(self, n, a, l);
    s_free_args(a, l);
    return rc;
}

redisReply *bus_redis_get_reply(bus_redis_t *self)
{
    if (!self->ctx || self->pending <= 0) {
        snprintf(self->errstr, sizeof(self->errstr), "redis: no pipelined reply pending");
        return NULL;
    }
    void *reply = NULL;
    if (redisGetReply(self->ctx, &reply) != REDIS_OK || !reply) {
        s_drop(self, self->ctx->errstr[0] ? self->ctx->errstr : "connection lost");
        return NULL;
    }
    self->pending--;
    return reply;
}

const char *bus_redis_errstr(bus_redis_t *self)
{
    return self->errstr;
}

uint64_t bus_redis_reconnects(bus_redis_t *self)
{
    return self->reconnects;
}

uint64_t bus_redis_errors(bus_redis_t *self)
{
    return self->errors;
}

bool bus_redis_reply_ok(const redisReply *reply)
{
    return reply && reply->type != REDIS_REPLY_ERROR;
}

void bus_redis_hash_to_map(const redisReply *hgetall, const char *const *texts,
                           const char *const *ints, bus_val_t *out)
{
    for (size_t i = 0; hgetall && i + 1 < hgetall->elements; i += 2) {
        const char *f = hgetall->element[i]->str, *v = hgetall->element[i + 1]->str;
        if (!f || !v)
            continue;
        for (int k = 0; texts && texts[k]; k++)
            if (strcmp(f, texts[k]) == 0)
                bus_val_map_set_str(out, f, v);
        for (int k = 0; ints && ints[k]; k++)
            if (strcmp(f, ints[k]) == 0)
                bus_val_map_set_int(out, f, strtoll(v, NULL, 10));
    }
}

bool bus_redis_reply_transient(const redisReply *reply)
{
    static const char *const transient[] = {"OOM",         "READONLY",   "MISCONF",    "LOADING",
                                            "BUSY",        "NOREPLICAS", "MASTERDOWN", "TRYAGAIN",
                                            "CLUSTERDOWN", NULL};
    if (!reply || reply->type != REDIS_REPLY_ERROR || !reply->str)
        return false;
    for (int i = 0; transient[i]; i++) {
        size_t len = strlen(transient[i]);
        if (strncmp(reply->str, transient[i], len) == 0 &&
            (reply->str[len] == ' ' || reply->str[len] == '\0'))
            return true;
    }
    /* a script that failed because a write inside it was refused reports the cause after the
       script name, e.g. "ERR Error running script ... : OOM command not allowed ..." */
    return strstr(reply->str, "OOM command not allowed") != NULL ||
           strstr(reply->str, "-MISCONF") != NULL || strstr(reply->str, "MISCONF ") != NULL ||
           strstr(reply->str, "READONLY You can't write") != NULL;
}
