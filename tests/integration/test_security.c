/*  =========================================================================
    test_security - CURVE on busd's tcp:// endpoints, and posctl ping

    An enrolled key works; an unknown key, a plaintext client and a client
    that expects another server key are refused; enrolling the unknown key
    (copying its public certificate into the clients directory) lets it in
    without restarting busd; deleting the certificate refuses it again.
    posctl ping reports busd and service instances and fails when an
    expected service is missing.
    =========================================================================
*/
#include "harness.h"

/*  Can a fresh client with these settings get busd's health? */
static bool s_can_talk(const bus_conn_cfg_t *cfg)
{
    const char *err = NULL;
    bus_client_t *client = bus_client_new(cfg, "sec", &err);
    if (!client)
        return false;
    bus_client_set_timeout(client, 700);
    bus_client_set_retries(client, 0);
    bus_msg_t *rep = bus_client_request(client, BUS_BROKER_SERVICE, "health", NULL);
    bool ok = rep != NULL;
    bus_msg_destroy(&rep);
    bus_client_destroy(&client);
    return ok;
}

/*  Poll until s_can_talk(cfg) == want, up to timeout_ms (zauth reloads on directory change). */
static bool s_wait_talk(const bus_conn_cfg_t *cfg, bool want, int timeout_ms)
{
    int64_t deadline = bus_mono_ms() + timeout_ms;
    while (bus_mono_ms() < deadline)
        if (s_can_talk(cfg) == want)
            return true;
    return false;
}

static int s_copy(const char *from, const char *to)
{
    char *argv[] = {"/bin/cp", (char *)from, (char *)to, NULL};
    return h_run(argv, NULL, 0);
}

static void s_test_posctl(h_bus_t *bus)
{
    char cert[PATH_MAX];
    h_cert_path(bus, "operator-t1", cert, sizeof(cert));
    h_start_echo(bus, "echo", "service-echo");
    char out[8192];
    int rc = -1;
    int64_t deadline = bus_mono_ms() + 5000;
    while (bus_mono_ms() < deadline) {
        char *argv[] = {
            "posctl",           "--req-endpoint", bus->req, "--cert", cert, "--server-cert",
            bus->server_public, "--expect",       "echo",   "ping",   NULL};
        rc = h_run(argv, out, sizeof(out));
        if (rc == 0)
            break;
        zclock_sleep(100);
    }
    CHECK(rc == 0, "posctl ping --expect echo exits 0 with echo running");
    CHECK(strstr(out, "busd") && strstr(out, "echo") && strstr(out, "OK"),
          "posctl ping lists busd and echo as OK:\n%s", out);
    char *argv2[] = {
        "posctl",           "--req-endpoint", bus->req,     "--cert", cert, "--server-cert",
        bus->server_public, "--expect",       "echo,sales", "ping",   NULL};
    rc = h_run(argv2, out, sizeof(out));
    CHECK(rc == 1 && strstr(out, "MISSING"), "posctl ping fails when sales is missing (rc %d)", rc);
    char *argv3[] = {"posctl",        "--req-endpoint",   bus->req, "--cert", cert,
                     "--server-cert", bus->server_public, "stats",  "busd",   NULL};
    rc = h_run(argv3, out, sizeof(out));
    CHECK(rc == 0 && strstr(out, "\"requests\""), "posctl stats busd prints counters: %s", out);
}

int main(void)
{
    h_init("test_security");
    h_bus_t bus;
    h_bus_init(&bus);
    CHECK(h_keygen(&bus, "operator", "t1") == 0 && h_keygen(&bus, "service", "echo") == 0,
          "enrolled certificates");
    CHECK(h_keygen(&bus, "operator", "t1") != 0,
          "keygen refuses to overwrite an existing certificate");
    char stranger_dir[PATH_MAX];
    snprintf(stranger_dir, sizeof(stranger_dir), "%s/stranger", h_tmp);
    bus_identity_t stranger_id;
    CHECK(bus_identity_set(&stranger_id, BUS_ROLE_OPERATOR, "stranger", NULL, NULL) == 0 &&
              bus_keygen(stranger_dir, &stranger_id, false) == 0,
          "an unenrolled certificate");
    h_start_busd(&bus);

    char cert[PATH_MAX];
    bus_conn_cfg_t enrolled;
    h_conn(&bus, "operator-t1", &enrolled, cert, sizeof(cert));
    CHECK(s_wait_talk(&enrolled, true, 10000), "enrolled key is accepted");

    char stranger_cert[PATH_MAX];
    snprintf(stranger_cert, sizeof(stranger_cert), "%s/operator-stranger.cert_secret",
             stranger_dir);
    bus_conn_cfg_t stranger = enrolled;
    stranger.cert = stranger_cert;
    CHECK(!s_can_talk(&stranger), "unknown key is refused");

    bus_conn_cfg_t plain = enrolled;
    plain.insecure = true;
    CHECK(!s_can_talk(&plain), "plaintext client is refused by a CURVE busd");

    char wrong_server[PATH_MAX];
    snprintf(wrong_server, sizeof(wrong_server), "%s/operator-stranger.cert", stranger_dir);
    bus_conn_cfg_t mitm = enrolled;
    mitm.server_cert = wrong_server;
    CHECK(!s_can_talk(&mitm), "a client expecting another server key gets nothing");

    char from[PATH_MAX], to[PATH_MAX];
    snprintf(from, sizeof(from), "%s/operator-stranger.cert", stranger_dir);
    snprintf(to, sizeof(to), "%s/operator-stranger.cert", bus.clients);
    CHECK(s_copy(from, to) == 0, "enrol: public certificate copied into clients/");
    int64_t t0 = bus_mono_ms();
    CHECK(s_wait_talk(&stranger, true, 10000),
          "enrolled key accepted without restarting busd "
          "(%" PRId64 " ms)",
          bus_mono_ms() - t0);
    CHECK(unlink(to) == 0, "revoke: certificate removed from clients/");
    t0 = bus_mono_ms();
    CHECK(s_wait_talk(&stranger, false, 10000), "revoked key refused again (%" PRId64 " ms)",
          bus_mono_ms() - t0);
    CHECK(s_can_talk(&enrolled), "other enrolled keys unaffected");

    s_test_posctl(&bus);
    return h_finish();
}
