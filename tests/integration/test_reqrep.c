/*  =========================================================================
    test_reqrep - request/reply through a real busd with CURVE

    Two echo instances share requests; one is killed with SIGKILL and the
    next requests are still answered; a request to a service nobody runs
    gets a clear no_service error; busd is killed and restarted and the
    instances re-register by themselves; garbage sent to busd and to a
    service is counted and changes nothing.
    =========================================================================
*/
#include "harness.h"

static bus_msg_t *s_echo(bus_client_t *client, int64_t n)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_int(body, "n", n);
    return bus_client_request(client, "echo", "echo", &body);
}

static void s_test_spread_and_kill(h_bus_t *bus, bus_client_t *client)
{
    pid_t a = h_start_echo(bus, "echo-a", "service-echo");
    pid_t b = h_start_echo(bus, "echo-b", "service-echo");
    CHECK(h_wait_instances(client, "echo", 2, 5000), "two echo instances registered");

    zhashx_t *seen = zhashx_new();
    int answered = 0;
    for (int i = 0; i < 40; i++) {
        bus_msg_t *rep = s_echo(client, i);
        int64_t n = -1;
        if (rep && bus_val_map_get_int(bus_msg_body(rep), "n", &n) && n == i) {
            answered++;
            zhashx_update(seen, bus_val_map_get_str(bus_msg_body(rep), "instance"), (void *)1);
        }
        bus_msg_destroy(&rep);
    }
    CHECK(answered == 40, "40 of 40 requests answered with their own body (%d)", answered);
    CHECK(zhashx_size(seen) == 2, "requests spread over both instances (%zu seen)",
          zhashx_size(seen));
    zhashx_destroy(&seen);

    h_stop(a, SIGKILL);
    answered = 0;
    int64_t t0 = bus_mono_ms();
    for (int i = 0; i < 40; i++) {
        bus_msg_t *rep = s_echo(client, 1000 + i);
        if (rep)
            answered++;
        bus_msg_destroy(&rep);
    }
    CHECK(answered == 40,
          "after SIGKILL of one instance, 40 of 40 requests answered (%d, %" PRId64 " ms)",
          answered, bus_mono_ms() - t0);
    CHECK(h_wait_instances(client, "echo", 1, 5000), "the killed instance is dropped by busd");

    /* an instance that stops cleanly says goodbye and is gone at once */
    h_stop(b, SIGTERM);
    CHECK(h_wait_instances(client, "echo", 0, 1000), "a stopped instance deregisters at once");
}

static void s_test_no_service(bus_client_t *client)
{
    bus_client_set_retries(client, 0);
    int64_t t0 = bus_mono_ms();
    bus_msg_t *rep = bus_client_request(client, "nosuch", "health", NULL);
    int64_t took = bus_mono_ms() - t0;
    CHECK(!rep && bus_client_errcode(client) == BUS_CLIENT_NO_SERVICE,
          "no instance: clear error '%s'", bus_client_errstr(client));
    CHECK(took < 1000, "no_service answered at once (%" PRId64 " ms)", took);
    bus_msg_destroy(&rep);
    rep = bus_client_request(client, "busd", "no-such-method", NULL);
    CHECK(!rep && bus_client_errcode(client) == BUS_CLIENT_REMOTE &&
              streq(bus_client_remote_code(client), BUS_ERR_UNKNOWN_METHOD),
          "unknown method: %s", bus_client_errstr(client));
    bus_client_set_retries(client, 2);
}

static void s_test_busd_restart(h_bus_t *bus, bus_client_t *client)
{
    pid_t a = h_start_echo(bus, "echo-c", "service-echo");
    CHECK(h_wait_instances(client, "echo", 1, 5000), "echo registered before busd restart");
    h_stop(bus->busd, SIGKILL);
    bus_client_set_timeout(client, 300);
    bus_msg_t *rep = s_echo(client, 1);
    CHECK(!rep && bus_client_errcode(client) == BUS_CLIENT_TIMEOUT,
          "busd down: request times out (%s)", bus_client_errstr(client));
    bus_msg_destroy(&rep);
    h_start_busd(bus);
    bus_client_set_timeout(client, 1000);
    bus_client_set_retries(client, 5);
    int64_t t0 = bus_mono_ms();
    CHECK(h_wait_busd(client, 10000), "client reconnects to the restarted busd");
    CHECK(h_wait_instances(client, "echo", 1, 5000),
          "echo re-registered by itself after busd restart (%" PRId64 " ms)", bus_mono_ms() - t0);
    rep = s_echo(client, 7);
    int64_t n = 0;
    CHECK(rep && bus_val_map_get_int(bus_msg_body(rep), "n", &n) && n == 7,
          "request answered after busd restart");
    bus_msg_destroy(&rep);
    bus_client_set_retries(client, 2);
    bus_client_set_timeout(client, 2000);
    h_stop(a, SIGTERM);
}

/*  A counter from target's stats; -1 (and a failed check saying why) if there was no reply. */
static int64_t s_counter(bus_client_t *client, const char *target, const char *name)
{
    bus_msg_t *rep = h_request(client, target, "stats", NULL, name);
    int64_t v = -1;
    if (rep)
        bus_val_map_get_int(bus_val_map_get(bus_msg_body(rep), "counters"), name, &v);
    bus_msg_destroy(&rep);
    return v;
}

/*  Poll a counter until it reaches at least want (up to timeout_ms); returns the last value. */
static int64_t s_wait_counter(bus_client_t *client, const char *target, const char *name,
                              int64_t want, int timeout_ms)
{
    int64_t deadline = bus_mono_ms() + timeout_ms;
    int64_t v = s_counter(client, target, name);
    while (v < want && bus_mono_ms() < deadline) {
        zclock_sleep(20);
        v = s_counter(client, target, name);
    }
    return v;
}

static void s_test_garbage(h_bus_t *bus, bus_client_t *client)
{
    h_start_echo(bus, "echo-d", "service-echo");
    CHECK(h_wait_instances(client, "echo", 1, 5000), "echo registered for garbage test");
    int64_t bad_before = s_counter(client, "busd", "bad_frames");

    /* a raw DEALER with an enrolled key sends garbage frames to busd and garbage payloads */
    char cert[PATH_MAX];
    bus_conn_cfg_t cfg;
    h_conn(bus, "operator-t2", &cfg, cert, sizeof(cert));
    zsock_t *raw = zsock_new(ZMQ_DEALER);
    const char *err = NULL;
    CHECK(bus_conn_connect(raw, bus->req, &cfg, &err) == 0, "raw socket connected");
    zstr_send(raw, "hello");
    zstr_sendx(raw, "BUS1C", "REQ", NULL);
    zstr_sendx(raw, "BUS9X", "REQ", "echo", "c", "p", NULL);
    zstr_sendx(raw, "BUS1W", "REP", NULL);
    zstr_sendx(raw, "BUS1W", "HB", "", "", NULL);
    uint64_t corr = 42;
    int64_t rejected_before = s_counter(client, "echo", "rejected_requests");
    for (int i = 0; i < 200; i++) {
        byte junk[64];
        for (size_t j = 0; j < sizeof(junk); j++)
            junk[j] = (byte)random();
        zmsg_t *m = zmsg_new();
        zmsg_addstr(m, "BUS1C");
        zmsg_addstr(m, "REQ");
        zmsg_addstr(m, "echo");
        zmsg_addmem(m, &corr, sizeof(corr));
        zmsg_addmem(m, junk, (size_t)(i % 64));
        zmsg_send(&m, raw);
    }
    /* the 200 garbage payloads each get an error reply */
    int errors = 0;
    zsock_set_rcvtimeo(raw, 2000);
    for (int i = 0; i < 200; i++) {
        zmsg_t *m = zmsg_recv(raw);
        if (!m)
            break;
        if (zmsg_size(m) == 4)
            errors++;
        zmsg_destroy(&m);
    }
    CHECK(errors == 200, "each garbage payload answered with an error reply (%d)", errors);
    zsock_destroy(&raw);
    int64_t bad_after = s_wait_counter(client, "busd", "bad_frames", bad_before + 5, 5000);
    CHECK(bad_after >= bad_before + 5,
          "busd counted the 5 bad frames (expected >= %" PRId64 ", got %" PRId64 ")",
          bad_before + 5, bad_after);
    /* every garbage payload was answered, so echo has counted each one already: exactly 200 */
    int64_t rejected_after = s_counter(client, "echo", "rejected_requests");
    CHECK(rejected_after == rejected_before + 200,
          "echo counted 200 rejected requests (expected %" PRId64 ", got %" PRId64 ")",
          rejected_before + 200, rejected_after);
    bus_msg_t *rep = s_echo(client, 99);
    CHECK(rep != NULL, "busd and echo still answer after garbage");
    bus_msg_destroy(&rep);

    /* 2 MiB passes the transport limit (4 MiB) and is refused by the envelope limit (1 MiB);
       8 MiB never gets past busd: that peer is cut off, and echo is not disturbed */
    zsock_t *big = zsock_new(ZMQ_DEALER);
    CHECK(bus_conn_connect(big, bus->req, &cfg, &err) == 0, "second raw socket connected");
    zsock_set_rcvtimeo(big, 2000);
    int64_t registered = s_counter(client, "busd", "instances_registered");
    size_t sizes[] = {2 * 1024 * 1024, 8 * 1024 * 1024};
    for (int k = 0; k < 2; k++) {
        byte *blob = calloc(1, sizes[k]);
        zmsg_t *m = zmsg_new();
        zmsg_addstr(m, "BUS1C");
        zmsg_addstr(m, "REQ");
        zmsg_addstr(m, "echo");
        zmsg_addmem(m, &corr, sizeof(corr));
        zmsg_addmem(m, blob, sizes[k]);
        zmsg_send(&m, big);
        free(blob);
        zmsg_t *answer = zmsg_recv(big);
        bus_msg_t *env = NULL;
        if (answer && zmsg_size(answer) == 4) {
            zframe_t *payload = zmsg_last(answer);
            env = bus_msg_decode(zframe_data(payload), zframe_size(payload), NULL, NULL, NULL);
        }
        const char *text = env ? bus_val_map_get_str(bus_msg_body(env), "message") : NULL;
        if (k == 0)
            CHECK(text && strstr(text, "oversize"), "a 2 MiB request is refused as oversize (%s)",
                  text ? text : "no answer");
        else
            CHECK(answer == NULL, "an 8 MiB request gets no answer: busd cut that peer off");
        bus_msg_destroy(&env);
        zmsg_destroy(&answer);
    }
    zsock_destroy(&big);
    CHECK(s_counter(client, "busd", "instances_registered") == registered,
          "echo kept its connection (no re-registration)");
    rep = s_echo(client, 100);
    CHECK(rep != NULL, "busd still answers others after an oversize frame");
    bus_msg_destroy(&rep);
}

int main(void)
{
    h_init("test_reqrep");
    h_bus_t bus;
    h_bus_init(&bus);
    CHECK(h_keygen(&bus, "service", "echo") == 0 && h_keygen(&bus, "operator", "t1") == 0 &&
              h_keygen(&bus, "operator", "t2") == 0,
          "certificates created with posctl keygen");
    h_start_busd(&bus);
    char cert[PATH_MAX];
    bus_conn_cfg_t cfg;
    h_conn(&bus, "operator-t1", &cfg, cert, sizeof(cert));
    const char *err = NULL;
    bus_client_t *client = bus_client_new(&cfg, "test", &err);
    CHECK(client != NULL, "client created (%s)", err ? err : "ok");
    if (!client)
        return h_finish();
    bus_client_set_timeout(client, 1000);
    CHECK(h_wait_busd(client, 10000), "busd answers health over CURVE");

    s_test_spread_and_kill(&bus, client);
    s_test_no_service(client);
    s_test_busd_restart(&bus, client);
    s_test_garbage(&bus, client);

    bus_client_destroy(&client);
    return h_finish();
}
