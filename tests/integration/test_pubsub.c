/*  =========================================================================
    test_pubsub - events across processes through a real busd with CURVE

    A subscriber in this process receives events that the echo service
    (another process) publishes; busd is killed with SIGKILL and restarted,
    and the same subscriber and publisher carry on by themselves (ZMTP
    heartbeats plus libzmq's re-subscription on reconnect); prefix filtering
    holds; per-source sequence numbers let the subscriber count a gap.
    =========================================================================
*/
#include "harness.h"

/*  Ask echo to publish count events on topic; returns how many it sent. */
static int64_t s_publish(bus_client_t *client, const char *topic, int count, int interval_ms)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "topic", topic);
    bus_val_map_set_int(body, "count", count);
    bus_val_map_set_int(body, "interval_ms", interval_ms);
    bus_msg_t *rep = h_request(client, "echo", "publish", &body, "ask echo to publish");
    int64_t sent = -1;
    if (rep)
        bus_val_map_get_int(bus_msg_body(rep), "sent", &sent);
    bus_msg_destroy(&rep);
    return sent;
}

/*  Publish until the subscriber sees one event (subscriptions take a moment to propagate). */
static bool s_wait_flowing(bus_client_t *client, bus_sub_t *sub, const char *topic)
{
    int64_t deadline = bus_mono_ms() + 15000;
    while (bus_mono_ms() < deadline) {
        s_publish(client, topic, 1, 0);
        bus_msg_t *msg = bus_sub_recv(sub, 200, NULL, 0);
        if (msg) {
            bus_msg_destroy(&msg);
            /* drain leftovers */
            while ((msg = bus_sub_recv(sub, 100, NULL, 0)))
                bus_msg_destroy(&msg);
            return true;
        }
    }
    return false;
}

/*  Receive up to want events; check topics, order and bodies. Returns how many came. */
static int s_receive(bus_sub_t *sub, int want, const char *prefix, bool *in_order, bool *topics_ok)
{
    char topic[BUS_TOPIC_MAX + 1];
    int got = 0;
    int64_t last_n = -1;
    *in_order = true;
    *topics_ok = true;
    while (got < want) {
        bus_msg_t *msg = bus_sub_recv(sub, 2000, topic, sizeof(topic));
        if (!msg)
            break;
        int64_t n = -1, total = 0;
        bus_val_map_get_int(bus_msg_body(msg), "n", &n);
        bus_val_map_get_int(bus_msg_body(msg), "total_fen", &total);
        if (n != last_n + 1 || total != 1234 + n || !streq(bus_msg_type(msg), "test.event"))
            *in_order = false;
        if (strncmp(topic, prefix, strlen(prefix)) != 0)
            *topics_ok = false;
        last_n = n;
        got++;
        bus_msg_destroy(&msg);
    }
    return got;
}

int main(void)
{
    h_init("test_pubsub");
    h_bus_t bus;
    h_bus_init(&bus);
    CHECK(h_keygen(&bus, "service", "echo") == 0 && h_keygen(&bus, "operator", "t1") == 0,
          "certificates created with posctl keygen");
    h_start_busd(&bus);
    char cert[PATH_MAX];
    bus_conn_cfg_t cfg;
    h_conn(&bus, "operator-t1", &cfg, cert, sizeof(cert));
    bus_client_t *client = bus_client_new(&cfg, "test", NULL);
    bus_sub_t *sub = bus_sub_new(&cfg, NULL);
    CHECK(client && sub, "client and subscriber created");
    if (!client || !sub)
        return h_finish();
    bus_client_set_timeout(client, 2000);
    CHECK(h_wait_busd(client, 10000), "busd up");
    h_start_echo(&bus, "echo", "service-echo");
    CHECK(h_wait_instances(client, "echo", 1, 5000), "publisher service registered");

    bus_sub_subscribe(sub, "test.sale.");
    CHECK(s_wait_flowing(client, sub, "test.sale.warmup"), "events flow from echo to subscriber");

    /* unsubscribed topics are filtered out, subscribed ones arrive complete and in order */
    int64_t sent = s_publish(client, "test.stock.low", 50, 0);
    CHECK(sent == 50, "published 50 stock.low, not subscribed (%" PRId64 " sent)", sent);
    sent = s_publish(client, "test.sale.completed", 1000, 0);
    CHECK(sent == 1000, "published 1000 sale.completed (%" PRId64 " sent)", sent);
    bool in_order, topics_ok;
    int got = s_receive(sub, 1000, "test.sale.", &in_order, &topics_ok);
    CHECK(got == 1000, "subscriber received 1000 of 1000 across processes (%d)", got);
    CHECK(in_order, "events arrived in order with intact bodies");
    CHECK(topics_ok, "only subscribed topics delivered");
    CHECK(bus_sub_codec_stats(sub)->rejected[BUS_REJ_MALFORMED] == 0,
          "no malformed events (%" PRIu64 ")",
          bus_sub_codec_stats(sub)->rejected[BUS_REJ_MALFORMED]);

    /* busd killed and restarted: the same subscriber and publisher recover */
    h_stop(bus.busd, SIGKILL);
    zclock_sleep(300);
    h_start_busd(&bus);
    bus_client_set_retries(client, 10);
    CHECK(h_wait_busd(client, 10000), "busd restarted");
    CHECK(h_wait_instances(client, "echo", 1, 5000), "echo re-registered");
    int64_t t0 = bus_mono_ms();
    CHECK(s_wait_flowing(client, sub, "test.sale.warmup"),
          "events flow again after busd restart, no resubscribe by the test (%" PRId64 " ms)",
          bus_mono_ms() - t0);
    sent = s_publish(client, "test.sale.completed", 500, 0);
    CHECK(sent == 500, "published 500 after restart (%" PRId64 " sent)", sent);
    got = s_receive(sub, 500, "test.sale.", &in_order, &topics_ok);
    CHECK(got == 500 && in_order, "received 500 of 500 in order after busd restart (%d)", got);

    /* a gap: events published while nobody is subscribed are missed and counted as a gap */
    uint64_t gaps_before = bus_sub_gaps(sub);
    bus_sub_unsubscribe(sub, "test.sale.");
    zclock_sleep(300);
    s_publish(client, "test.sale.completed", 5, 0);
    bus_sub_subscribe(sub, "test.sale.");
    CHECK(s_wait_flowing(client, sub, "test.sale.warmup"), "resubscribed");
    s_publish(client, "test.sale.completed", 1, 0);
    bus_msg_t *after = bus_sub_recv(sub, 2000, NULL, 0);
    CHECK(after != NULL, "next sale.completed received after the gap");
    bus_msg_destroy(&after);
    CHECK(bus_sub_gaps(sub) >= gaps_before + 5,
          "missed events are seen as a gap (%" PRIu64 " -> %" PRIu64 ")", gaps_before,
          bus_sub_gaps(sub));

    bus_sub_destroy(&sub);
    bus_client_destroy(&client);
    return h_finish();
}
