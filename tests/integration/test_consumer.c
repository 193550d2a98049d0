/*  =========================================================================
    test_consumer - the Python consumer printed in docs/protocol.md decodes
    events published through a real busd over CURVE

    The consumer is taken verbatim from the documentation (the python block
    after the "<!-- consumer -->" marker), so the documentation cannot drift
    from what works. It runs under Debian's /usr/bin/python3 with
    python3-zmq and python3-msgpack.
    =========================================================================
*/
#include "harness.h"

#define S_EVENTS 20

/*  Copy the documented consumer into path. 0 ok. */
static int s_extract_consumer(const char *path)
{
    char doc[PATH_MAX];
    const char *src = getenv("POSBUS_SRC");
    snprintf(doc, sizeof(doc), "%s/docs/protocol.md", src ? src : ".");
    FILE *in = fopen(doc, "r");
    FILE *out = fopen(path, "w");
    if (!in || !out) {
        if (in)
            fclose(in);
        if (out)
            fclose(out);
        return -1;
    }
    char line[4096];
    int state = 0; /* 0 before marker, 1 after marker, 2 inside block, 3 done */
    while (state < 3 && fgets(line, sizeof(line), in)) {
        if (state == 0 && strstr(line, "<!-- consumer -->"))
            state = 1;
        else if (state == 1 && strncmp(line, "```python", 9) == 0)
            state = 2;
        else if (state == 2 && strncmp(line, "```", 3) == 0)
            state = 3;
        else if (state == 2)
            fputs(line, out);
    }
    fclose(in);
    fclose(out);
    return state == 3 ? 0 : -1;
}

static int s_count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        if (c == '\n')
            n++;
    fclose(f);
    return n;
}

int main(void)
{
    h_init("test_consumer");
    h_bus_t bus;
    h_bus_init(&bus);
    CHECK(h_keygen(&bus, "service", "echo") == 0 && h_keygen(&bus, "operator", "t1") == 0 &&
              h_keygen(&bus, "consumer", "py") == 0,
          "certificates created");
    h_start_busd(&bus);
    char cert[PATH_MAX];
    bus_conn_cfg_t cfg;
    h_conn(&bus, "operator-t1", &cfg, cert, sizeof(cert));
    bus_client_t *client = bus_client_new(&cfg, "test", NULL);
    CHECK(client && h_wait_busd(client, 10000), "busd up");
    h_start_echo(&bus, "echo", "service-echo");
    CHECK(h_wait_instances(client, "echo", 1, 5000), "publisher registered");

    char script[PATH_MAX];
    snprintf(script, sizeof(script), "%s/consumer.py", h_tmp);
    CHECK(s_extract_consumer(script) == 0, "consumer extracted from docs/protocol.md");
    char py_cert[PATH_MAX];
    h_cert_path(&bus, "consumer-py", py_cert, sizeof(py_cert));
    char count[16];
    snprintf(count, sizeof(count), "%d", S_EVENTS);
    char *argv[] = {"/usr/bin/python3", script,       bus.sub, py_cert,
                    bus.server_public,  "test.sale.", count,   NULL};
    pid_t py = h_spawn("consumer", argv);
    CHECK(py > 0, "python consumer started");
    /* posctl tail beside it, stopping by itself after 5 events */
    char *tail_argv[] = {"posctl", "--sub-endpoint", bus.sub,           "--cert",
                         cert,     "--server-cert",  bus.server_public, "--count",
                         "5",      "tail",           "test.sale.",      NULL};
    pid_t tail = h_spawn("tail", tail_argv);

    /* publish in small batches until the consumer has printed S_EVENTS lines and exited */
    char out_path[PATH_MAX];
    snprintf(out_path, sizeof(out_path), "%s/consumer.log", h_tmp);
    int status = -1;
    int64_t deadline = bus_mono_ms() + 30000;
    while (bus_mono_ms() < deadline) {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "topic", "test.sale.completed");
        bus_val_map_set_int(body, "count", 1);
        bus_msg_t *rep = bus_client_request(client, "echo", "publish", &body);
        bus_msg_destroy(&rep);
        /* a stock event the consumer must not see */
        body = bus_val_new_map();
        bus_val_map_set_str(body, "topic", "test.stock.low");
        bus_val_map_set_int(body, "count", 1);
        rep = bus_client_request(client, "echo", "publish", &body);
        bus_msg_destroy(&rep);
        if (h_wait_exit(py, 0, &status))
            break;
        zclock_sleep(100);
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "consumer exited by itself after %d events (status %d)", S_EVENTS, status);
    int lines = s_count_lines(out_path);
    CHECK(lines == S_EVENTS, "consumer printed %d event lines (%d)", S_EVENTS, lines);
    char *text = NULL;
    FILE *f = fopen(out_path, "r");
    if (f) {
        text = calloc(1, 1 << 20);
        size_t n = fread(text, 1, (1 << 20) - 1, f);
        text[n] = '\0';
        fclose(f);
    }
    CHECK(text && strstr(text, "\"topic\": \"test.sale.completed\"") &&
              strstr(text, "\"type\": \"test.event\"") && strstr(text, "\"store\": \"S001\"") &&
              strstr(text, "\"total_fen\": 1234"),
          "consumer decoded topic, type and body fields");
    CHECK(text && !strstr(text, "test.stock.low"), "consumer saw only its prefix");
    CHECK(text && !strstr(text, "rejected"), "consumer rejected nothing");
    free(text);

    int tail_status = -1;
    int64_t tail_deadline = bus_mono_ms() + 10000;
    while (bus_mono_ms() < tail_deadline && !h_wait_exit(tail, 0, &tail_status)) {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "topic", "test.sale.completed");
        bus_val_map_set_int(body, "count", 1);
        bus_msg_t *rep = bus_client_request(client, "echo", "publish", &body);
        bus_msg_destroy(&rep);
        zclock_sleep(50);
    }
    char tail_path[PATH_MAX];
    snprintf(tail_path, sizeof(tail_path), "%s/tail.log", h_tmp);
    CHECK(WIFEXITED(tail_status) && WEXITSTATUS(tail_status) == 0 && s_count_lines(tail_path) == 5,
          "posctl tail --count 5 printed 5 lines and exited (%d lines)", s_count_lines(tail_path));
    f = fopen(tail_path, "r");
    char first[4096] = "";
    if (f) {
        if (!fgets(first, sizeof(first), f))
            first[0] = '\0';
        fclose(f);
    }
    CHECK(strncmp(first, "{\"topic\":\"test.sale.completed\",\"msg\":{\"v\":1,", 44) == 0 &&
              strstr(first, "\"type\":\"test.event\"") && strstr(first, "\"store\":\"S001\""),
          "posctl tail prints one decoded JSON object per event: %s", first);
    bus_client_destroy(&client);
    return h_finish();
}
