/*  =========================================================================
    device_tool - one device and its driver, driven from stdin (tests)

    device_tool DRIVER TRANSPORT [OPTIONS]

    Runs the device as posnode would (node/device.h) and prints one JSON
    line per event on stdout: {"event", "device", "body"}. Commands on
    stdin, one per line:
        submit KEY VERB [text:TEXT | hex:HEX]   queue a job (data as text or hex)
        health | stats                          print {"health": ...} / {"stats": ...}
        quit
    Used by the drivers' black-box tests against the simulators in
    devices/sim. Exit 0 after quit or EOF.
    =========================================================================
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bus/val.h>
#include <node/device.h>

#include "drivers.h"

static pthread_mutex_t s_out = PTHREAD_MUTEX_INITIALIZER;

static void s_print(const char *key, bus_val_t **val_p)
{
    bus_val_t *line = bus_val_new_map();
    bus_val_map_set(line, key, val_p);
    bus_buf_t buf = {0};
    if (bus_val_to_json(line, &buf) == 0) {
        pthread_mutex_lock(&s_out);
        printf("%s\n", (char *)buf.data);
        fflush(stdout);
        pthread_mutex_unlock(&s_out);
    }
    bus_buf_free(&buf);
    bus_val_destroy(&line);
}

static void s_event(void *arg, const char *device, const char *event, bus_val_t **body)
{
    (void)arg;
    bus_val_t *e = bus_val_new_map();
    bus_val_map_set_str(e, "name", event);
    bus_val_map_set_str(e, "device", device);
    if (*body)
        bus_val_map_set(e, "body", body);
    s_print("event", &e);
}

static int s_hex(const char *hex, uint8_t *out, size_t max)
{
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > max)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (uint8_t)v;
    }
    return (int)(n / 2);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: device_tool DRIVER TRANSPORT [OPTIONS]\n");
        return 2;
    }
    const node_driver_t *driver = drivers_find(argv[1]);
    if (!driver) {
        fprintf(stderr, "device_tool: no driver %s\n", argv[1]);
        return 2;
    }
    char why[300];
    node_device_t *dev = node_device_start("dev", driver, argv[2], argc > 3 ? argv[3] : "", s_event,
                                           NULL, why, sizeof(why));
    if (!dev) {
        fprintf(stderr, "device_tool: %s\n", why);
        return 1;
    }
    char line[8192];
    static uint8_t data[4096];
    while (fgets(line, sizeof(line), stdin)) {
        line[strcspn(line, "\n")] = '\0';
        char key[80] = "", verb[40] = "";
        int off = 0;
        if (sscanf(line, "submit %79s %39s %n", key, verb, &off) >= 2) {
            const char *arg = off ? line + off : "";
            int len = 0;
            if (!strncmp(arg, "text:", 5)) {
                len = (int)strlen(arg + 5);
                if (len > (int)sizeof(data))
                    len = -1;
                else
                    memcpy(data, arg + 5, (size_t)len);
            } else if (!strncmp(arg, "hex:", 4)) {
                len = s_hex(arg + 4, data, sizeof(data));
            }
            int rc = len < 0 ? -2 : node_device_submit(dev, key, verb, data, (size_t)len);
            bus_val_t *r = bus_val_new_int(rc);
            s_print("submitted", &r);
        } else if (!strcmp(line, "health")) {
            bus_val_t *h = node_device_health(dev);
            s_print("health", &h);
        } else if (!strcmp(line, "stats")) {
            bus_val_t *h = node_device_stats(dev);
            s_print("stats", &h);
        } else if (!strcmp(line, "quit")) {
            break;
        }
    }
    node_device_stop(&dev);
    return 0;
}
