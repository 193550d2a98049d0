/*  test_redis - the reconnecting Redis connection against a real redis-server

    A private redis-server with a password runs on a free 127.0.0.1 port and
    a unix socket in a temporary directory. It is killed with SIGKILL in the
    middle; calls fail fast during backoff, and once the server is back the
    connection, its AUTH and its scripts come back by themselves.
    */
#include <bus/msg.h>
#include <bus/redis.h>
#include <string.h>
#include "testutil.h"

#define S_PASSWORD "secret"

static char s_dir[] = "/tmp/posbus-test-redis-XXXXXX";
static pid_t s_server;
static int s_port;

static void s_cleanup(void)
{
    t_kill(&s_server);
    t_remove_dir(s_dir);
}

int main(void)
{
    atexit(s_cleanup);
    CHECK(t_redis_setup(s_dir, S_PASSWORD, &s_port, &s_server) == 0,
          "redis-server started on 127.0.0.1:%d in %s", s_port, s_dir);

    bus_redis_cfg_t wrong = {.port = s_port, .password = "not-it"};
    bus_redis_t *r = bus_redis_new(&wrong);
    CHECK(bus_redis_connect(r) == -1 && strstr(bus_redis_errstr(r), "AUTH") &&
              !strstr(bus_redis_errstr(r), "not-it"),
          "wrong password refused, password not echoed: %s", bus_redis_errstr(r));
    bus_redis_destroy(&r);

    char sock[300];
    snprintf(sock, sizeof(sock), "%s/redis.sock", s_dir);
    bus_redis_cfg_t unix_cfg = {.unix_path = sock, .password = S_PASSWORD};
    r = bus_redis_new(&unix_cfg);
    redisReply *reply = bus_redis_command(r, "SET %s %s", "k", "via-unix");
    CHECK(reply && reply->type == REDIS_REPLY_STATUS, "SET over the unix socket");
    freeReplyObject(reply);
    bus_redis_destroy(&r);

    bus_redis_cfg_t cfg = {
        .port = s_port, .password = S_PASSWORD, .backoff_min_ms = 200, .backoff_max_ms = 400};
    r = bus_redis_new(&cfg);
    reply = bus_redis_command(r, "GET %s", "k");
    CHECK(reply && reply->type == REDIS_REPLY_STRING && strcmp(reply->str, "via-unix") == 0,
          "GET over TCP sees the value");
    freeReplyObject(reply);

    int script = bus_redis_script(r, "return redis.call('INCRBY', KEYS[1], ARGV[1])");
    const char *args[] = {"counter", "5"};
    reply = bus_redis_evalsha(r, script, 1, 2, args, NULL);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 5, "script by SHA");
    freeReplyObject(reply);
    reply = bus_redis_command(r, "SCRIPT FLUSH");
    freeReplyObject(reply);
    reply = bus_redis_evalsha(r, script, 1, 2, args, NULL);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 10,
          "after SCRIPT FLUSH the NOSCRIPT fallback reloads and runs it");
    freeReplyObject(reply);

    for (int i = 0; i < 1000; i++)
        bus_redis_append(r, "INCR %s", "piped");
    int in_order = 0;
    for (int i = 0; i < 1000; i++) {
        reply = bus_redis_get_reply(r);
        if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == i + 1)
            in_order++;
        if (reply)
            freeReplyObject(reply);
    }
    CHECK(in_order == 1000, "1000 pipelined INCRs answered in order (%d)", in_order);

    /* kill -9 in the middle */
    t_kill(&s_server);
    reply = bus_redis_command(r, "PING");
    CHECK(!reply && !bus_redis_connected(r), "after SIGKILL the next command fails: %s",
          bus_redis_errstr(r));
    int64_t t0 = bus_mono_ms();
    reply = bus_redis_command(r, "PING");
    CHECK(!reply && bus_mono_ms() - t0 < 50 && strstr(bus_redis_errstr(r), "retrying in"),
          "during backoff a call fails at once: %s", bus_redis_errstr(r));
    CHECK(bus_redis_append(r, "PING") == -1, "pipelining refuses while down");

    s_server = t_redis_start(s_dir, s_port, S_PASSWORD);
    CHECK(s_server > 0, "redis-server restarted on the same port");
    int ok = -1;
    for (int i = 0; i < 50 && ok != 0; i++) {
        ok = bus_redis_ping(r);
        if (ok != 0)
            t_sleep_ms(100);
    }
    CHECK(ok == 0 && bus_redis_reconnects(r) == 1, "reconnected by itself (reconnects %llu)",
          (unsigned long long)bus_redis_reconnects(r));
    reply = bus_redis_evalsha(r, script, 1, 2, args, NULL);
    CHECK(reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 5,
          "scripts loaded again after the restart (fresh server counts from 0)");
    freeReplyObject(reply);
    CHECK(bus_redis_errors(r) >= 1, "I/O errors counted (%llu)",
          (unsigned long long)bus_redis_errors(r));
    bus_redis_destroy(&r);

    bus_redis_cfg_t nobody = {.port = t_free_port()};
    r = bus_redis_new(&nobody);
    CHECK(bus_redis_ping(r) == -1 && strstr(bus_redis_errstr(r), "cannot connect"),
          "a stopped server is an error, not a crash: %s", bus_redis_errstr(r));
    bus_redis_destroy(&r);
    return FINISH("test_redis");
}
