/*  =========================================================================
    test_health - a service reports Redis reachability in its health

    The echo service watches a real redis-server (password from a file).
    Health says redis: true; the server is killed and health turns
    unhealthy (posctl ping fails) while the service keeps answering; the
    server comes back and health recovers by itself.
    =========================================================================
*/
#include "harness.h"

static pid_t s_redis(int port)
{
    char p[16], dir[PATH_MAX];
    snprintf(p, sizeof(p), "%d", port);
    snprintf(dir, sizeof(dir), "%s", h_tmp);
    char *argv[] = {"/usr/bin/redis-server",
                    "--port",
                    p,
                    "--bind",
                    "127.0.0.1",
                    "--requirepass",
                    "hunter2",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    dir,
                    NULL};
    return h_spawn("redis", argv);
}

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

static bool s_wait_health(bus_client_t *client, int want, int timeout_ms)
{
    int64_t deadline = bus_mono_ms() + timeout_ms;
    bool redis;
    while (bus_mono_ms() < deadline) {
        if (s_health(client, &redis) == want && redis == (want == 1))
            return true;
        zclock_sleep(100);
    }
    return false;
}

int main(void)
{
    h_init("test_health");
    h_bus_t bus;
    h_bus_init(&bus);
    CHECK(h_keygen(&bus, "svc") == 0 && h_keygen(&bus, "t1") == 0, "certificates");
    h_start_busd(&bus);
    int redis_port = h_free_port();
    pid_t redis = s_redis(redis_port);
    char pass_file[PATH_MAX];
    snprintf(pass_file, sizeof(pass_file), "%s/redis.pass", h_tmp);
    FILE *f = fopen(pass_file, "w");
    fprintf(f, "hunter2\n");
    fclose(f);

    char cert[PATH_MAX], port[16];
    h_cert_path(&bus, "svc", cert, sizeof(cert));
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
    h_conn(&bus, "t1", &cfg, tcert, sizeof(tcert));
    bus_client_t *client = bus_client_new(&cfg, "test", NULL);
    bus_client_set_timeout(client, 1000);
    CHECK(h_wait_busd(client, 10000) && h_wait_instances(client, "echo", 1, 5000),
          "busd and echo up");
    CHECK(s_wait_health(client, 1, 5000), "health: healthy, redis true");

    h_stop(redis, SIGKILL);
    CHECK(s_wait_health(client, 0, 5000), "redis killed: health says unhealthy, redis false");
    char *ping[] = {"posctl",        "--req-endpoint",  bus.req, "--cert", tcert,
                    "--server-cert", bus.server_public, "ping",  NULL};
    char out[4096];
    CHECK(h_run(ping, out, sizeof(out)) == 1 && strstr(out, "UNHEALTHY"),
          "posctl ping fails and shows the instance unhealthy:\n%s", out);
    bus_val_t *body = bus_val_new_map();
    bus_msg_t *rep = bus_client_request(client, "echo", "echo", &body);
    CHECK(rep != NULL, "the service keeps answering while Redis is down");
    bus_msg_destroy(&rep);

    s_redis(redis_port);
    CHECK(s_wait_health(client, 1, 15000), "redis back: health recovers by itself");
    CHECK(h_run(ping, out, sizeof(out)) == 0, "posctl ping passes again");
    bus_client_destroy(&client);
    return h_finish();
}
