/*  =========================================================================
    bus/redis.h - a Redis connection that survives Redis restarts

    hiredis 0.14 contexts are dead after any I/O error and are not
    thread-safe. This wrapper owns one context per owner thread, drops it on
    an error and reconnects on a later call, with exponential backoff
    between attempts (calls during backoff fail at once, so a service loop
    never stalls on a dead Redis). After every (re)connect it authenticates
    and loads the registered Lua scripts; scripts are called by SHA with a
    NOSCRIPT fallback (after SCRIPT FLUSH or a Redis that lost its cache).

    A command whose reply was lost is reported as failed (NULL) but may have
    been applied: callers retry with the same idempotency key, never assume.
    The password is never copied into error strings.
    =========================================================================
*/
#ifndef BUS_REDIS_H_INCLUDED
#define BUS_REDIS_H_INCLUDED

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>
#include "bus/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bus_redis_cfg {
    const char *host;       /* TCP host, default "127.0.0.1"; ignored when unix_path is set */
    int port;               /* default 6379 */
    const char *unix_path;  /* unix socket path or NULL */
    const char *password;   /* AUTH password or NULL */
    const char *username;   /* ACL user or NULL */
    int connect_timeout_ms; /* 0 = default 1000 */
    int command_timeout_ms; /* 0 = default 2000 */
    int backoff_min_ms;     /* first reconnect delay; 0 = default 100 */
    int backoff_max_ms;     /* cap; 0 = default 5000 */
} bus_redis_cfg_t;

/* Shared options: redis-host, redis-port, redis-socket, redis-user, redis-password-file
   (the password is read from a file, never from a flag), redis-timeout-ms. */
extern const bus_opt_t bus_redis_opts[];

typedef struct bus_redis bus_redis_t;

/* Copies cfg (strings too). Does not connect yet and does not fail if Redis is down. */
bus_redis_t *bus_redis_new(const bus_redis_cfg_t *cfg);
/* From a configuration that includes bus_redis_opts; NULL if the password file is unreadable
   (reason in *err). */
bus_redis_t *bus_redis_new_from_config(bus_config_t *config, const char **err);
void bus_redis_destroy(bus_redis_t **self_p);

/* Connect now (AUTH, load scripts), ignoring backoff. 0 or -1 with errstr. */
int bus_redis_connect(bus_redis_t *self);
bool bus_redis_connected(bus_redis_t *self);
/* 0 if Redis answers PONG. */
int bus_redis_ping(bus_redis_t *self);

/* Run a command; caller frees the reply with freeReplyObject. NULL on I/O error or while in
   backoff (errstr says which). An error reply (REDIS_REPLY_ERROR) is returned as a reply. */
redisReply *bus_redis_command(bus_redis_t *self, const char *fmt, ...);
redisReply *bus_redis_commandargv(bus_redis_t *self, int argc, const char **argv,
                                  const size_t *argvlen);

/* Register a Lua script; returns its handle (>= 0) or -1. Loaded on every (re)connect. */
int bus_redis_script(bus_redis_t *self, const char *lua);
/* EVALSHA script with nkeys keys among argv; on NOSCRIPT loads it and retries once. */
redisReply *bus_redis_evalsha(bus_redis_t *self, int script, int nkeys, int argc, const char **argv,
                              const size_t *argvlen);

/* Pipelining: queue commands, then read their replies in order. Commands queued on a context
   that dies are lost and reported as errors, never resent. */
int bus_redis_append(bus_redis_t *self, const char *fmt, ...);
int bus_redis_appendargv(bus_redis_t *self, int argc, const char **argv, const size_t *argvlen);
int bus_redis_append_evalsha(bus_redis_t *self, int script, int nkeys, int argc, const char **argv,
                             const size_t *argvlen);
redisReply *bus_redis_get_reply(bus_redis_t *self);

/* Is reply a reply at all (the call reached Redis), and not an error? */
bool bus_redis_reply_ok(const redisReply *reply);
/* Is this error reply one that goes away by itself (Redis out of memory, a read-only replica,
   failed background save, loading, busy script, a cluster reconfiguring)? A caller answers
   those with BUS_ERR_UNAVAILABLE and a retry hint, never as a refusal of the request. False for
   NULL, non-error replies and errors about the command itself (script errors, wrong type). */
bool bus_redis_reply_transient(const redisReply *reply);

/* Copy the fields of an HGETALL reply named in texts (as strings) and ints (as integers) into
   the map out; both lists NULL-terminated, either may be NULL. Other fields are left out, so a
   hash can hold what a reply must not show. */
struct bus_val;
void bus_redis_hash_to_map(const redisReply *hgetall, const char *const *texts,
                           const char *const *ints, struct bus_val *out);

const char *bus_redis_errstr(bus_redis_t *self);
uint64_t bus_redis_reconnects(bus_redis_t *self); /* successful reconnects after the first */
uint64_t bus_redis_errors(bus_redis_t *self);     /* I/O errors seen */

#ifdef __cplusplus
}
#endif
#endif
