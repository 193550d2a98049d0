/*  =========================================================================
    test_health - a service reports Redis reachability in its health

    The echo service watches a real redis-server (password from a file).
    Health says redis: true; the server is killed and health turns
    unhealthy (posctl ping fails) while the service keeps answering; the
    server comes back and health recovers by itself.
    =========================================================================
*/
#include "harness.h"

#define S_PASSWORD "hunter2"

/*  Health of the one echo instance: -1 no answer, else healthy (1/0); *redis set. */
static int s_health(bus_client_t *client, bool *redis)
{
    bus_msg_t *rep = bus_client_request(client, "echo", "health", NULL);
    if (!rep)
        return -1;
    bool healthy = false;
    *redis = false;
    bus_val_map_get_bool(bus_msg_body(rep), "healthy", &healthy);
    bus_val_map_get_bool(bus_msg_body(rep), "redis", redis);
    bus_msg_destroy(&rep);
    return healthy ? 1 : 0;
}

/*  Poll health until it is want (1 healthy with redis true, 0 unhealthy with redis false).
    On timeout *last says what was seen last ("no answer" or the two flags). */
static bool s_wait_health(bus_client_t *client, int want, int timeout_ms, char *last, size_t size)
{
    int64_t deadline = bus_mono_ms() + timeout_ms;
    bool redis = false;
    snprintf(last, size, "nothing");
    while (bus_mono_ms() < deadline) {
        int healthy = s_health(client, &redis);
        if (healthy == want && redis == (want == 1))
            return true;
        if (healthy < 0)
            snprintf(last, size, "no answer");
        else
            snprintf(last, size, "healthy %s, redis %s", healthy ? "true" : "false",
                     redis ? "true" : "false");
        zclock_sleep(100);
    }
    return false;
}

int main(void)
{
    h_init("test_health");
    h_bus_t bus;
    h_bus_init(&bus);
    CHECK(h_keygen(&bus, "service", "echo") == 0 && h_keygen(&bus, "operator", "t1") == 0,
          "certificates");
    h_start_busd(&bus);
    int redis_port = h_free_port();
    pid_t redis = h_start_redis("redis", redis_port, S_PASSWORD);
    char pass_file[PATH_MAX];
    CHECK(redis > 0 && h_write_private("redis.pass", S_PASSWORD "\n", pass_file,
                                       sizeof(pass_file)) == 0,
          "redis-server started, password in files of mode 0600 only");

    char cert[PATH_MAX], port[16];
    h_cert_path(&bus, "service-echo", cert, sizeof(cert));
    snprintf(port, sizeof(port), "%d", redis_port);
    char *argv[] = {"bus_echo",
                    "--req-endpoint",
                    bus.req,
                    "--pub-endpoint",
                    bus.pub,
                    "--cert",
                    cert,
                    "--server-cert",
                    bus.server_public,
                    "--heartbeat-ms",
                    "250",
                    "--redis-port",
                    port,
                    "--redis-password-file",
                    pass_file,
                    NULL};
    h_spawn("echo", argv);

    bus_conn_cfg_t cfg;
    char tcert[PATH_MAX];
    h_conn(&bus, "operator-t1", &cfg, tcert, sizeof(tcert));
    bus_client_t *client = bus_client_new(&cfg, "test", NULL);
    bus_client_set_timeout(client, 1000);
    CHECK(h_wait_busd(client, 10000) && h_wait_instances(client, "echo", 1, 5000),
          "busd and echo up");
    char last[64];
    CHECK(s_wait_health(client, 1, 5000, last, sizeof(last)),
          "health: healthy, redis true (within 5 s; last seen: %s)", last);

    h_stop(redis, SIGKILL);
    CHECK(s_wait_health(client, 0, 5000, last, sizeof(last)),
          "redis killed: health says unhealthy, redis false (within 5 s; last seen: %s)", last);
    char *ping[] = {"posctl",        "--req-endpoint",  bus.req, "--cert", tcert,
                    "--server-cert", bus.server_public, "ping",  NULL};
    char out[4096];
    int rc = h_run(ping, out, sizeof(out));
    CHECK(rc == 1 && strstr(out, "UNHEALTHY"),
          "posctl ping fails and shows the instance unhealthy (expected exit 1, got %d):\n%s", rc,
          out);
    bus_val_t *body = bus_val_new_map();
    bus_msg_t *rep = h_request(client, "echo", "echo", &body, "echo while Redis is down");
    CHECK(rep != NULL, "the service keeps answering while Redis is down");
    bus_msg_destroy(&rep);

    h_start_redis("redis", redis_port, S_PASSWORD);
    CHECK(s_wait_health(client, 1, 15000, last, sizeof(last)),
          "redis back: health recovers by itself (within 15 s; last seen: %s)", last);
    rc = h_run(ping, out, sizeof(out));
    CHECK(rc == 0, "posctl ping passes again (expected exit 0, got %d):\n%s", rc, out);
    bus_client_destroy(&client);
    return h_finish();
}
