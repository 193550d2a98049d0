/*  test_ports - the machine's serial ports as the register reports them to the back office

    - a port's row: USB ids, bus and address kept when in range and left out when not; every
      string cut to NODE_TRANSPORT_TEXT_MAX characters without splitting a UTF-8 character;
      control characters and bytes that are not UTF-8 replaced by '?'; blanks trimmed, and a
      string left empty left out; no row for a port without a name (what a USB device or an
      odd sysfs entry may hand libserialport must never make a list the devices service
      refuses);
    - the list: as many rows as libserialport lists (at most the bound asked for, never more
      than NODE_TRANSPORT_PORTS_MAX), sorted by name, each with a name and a known transport;
    - prints the cost of one listing as "node.ports_list_ms: N". */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <libserialport.h>

#include "node/transport.h"
#include "testutil.h"

static double t_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/*  Characters of UTF-8 text s. */
static size_t t_chars(const char *s)
{
    size_t n = 0;
    for (; s && *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

static void t_rows(void)
{
    node_transport_port_t usb = {.name = "/dev/ttyUSB0",
                                 .transport = "usb",
                                 .usb_vid = 0x0403,
                                 .usb_pid = 0x6001,
                                 .usb_bus = 1,
                                 .usb_address = 7,
                                 .description = "FT232R USB UART - A50285BI",
                                 .manufacturer = "FTDI",
                                 .product = "FT232R USB UART",
                                 .serial = "A50285BI"};
    bus_val_t *row = node_transport_port_row(&usb);
    int64_t vid = 0, pid = 0, bus = 0, addr = 0;
    CHECK(row && bus_val_map_get_int(row, "usb_vid", &vid) && vid == 0x0403 &&
              bus_val_map_get_int(row, "usb_pid", &pid) && pid == 0x6001 &&
              bus_val_map_get_int(row, "usb_bus", &bus) && bus == 1 &&
              bus_val_map_get_int(row, "usb_address", &addr) && addr == 7,
          "a USB port keeps its vendor and product ids, bus and address");
    CHECK(row && !strcmp(bus_val_map_get_str(row, "name"), "/dev/ttyUSB0") &&
              !strcmp(bus_val_map_get_str(row, "transport"), "usb") &&
              !strcmp(bus_val_map_get_str(row, "manufacturer"), "FTDI") &&
              !strcmp(bus_val_map_get_str(row, "product"), "FT232R USB UART") &&
              !strcmp(bus_val_map_get_str(row, "serial"), "A50285BI"),
          "and its name, transport, manufacturer, product and serial");
    bus_val_destroy(&row);

    node_transport_port_t native = {.name = "/dev/ttyS0",
                                    .transport = "native",
                                    .usb_vid = -1,
                                    .usb_pid = -1,
                                    .usb_bus = -1,
                                    .usb_address = -1,
                                    .description = "ttyS0"};
    row = node_transport_port_row(&native);
    CHECK(row && bus_val_size(row) == 3 && !bus_val_map_get(row, "usb_vid") &&
              !bus_val_map_get(row, "manufacturer") && !bus_val_map_get(row, "serial"),
          "a native port has name, transport and description only (unknowns left out)");
    bus_val_destroy(&row);

    node_transport_port_t odd = native;
    odd.usb_vid = 70000; /* one of a pair out of range: neither is kept */
    odd.usb_pid = 1;
    odd.usb_bus = 2;
    odd.usb_address = -5;
    row = node_transport_port_row(&odd);
    CHECK(row && !bus_val_map_get(row, "usb_vid") && !bus_val_map_get(row, "usb_pid") &&
              !bus_val_map_get(row, "usb_bus"),
          "ids out of 0..65535 are left out, with their pair");
    bus_val_destroy(&row);

    char long_ascii[300], long_han[400], edge[80], bad[] = "FT\x01\xff\xc3X\x7f";
    memset(long_ascii, 'A', sizeof(long_ascii) - 1);
    long_ascii[sizeof(long_ascii) - 1] = '\0';
    long_han[0] = '\0';
    for (int i = 0; i < 100; i++)
        strcat(long_han, "电"); /* 3 bytes each */
    memset(edge, 'a', 63);
    snprintf(edge + 63, sizeof(edge) - 63, "电电");
    node_transport_port_t strs = native;
    strs.name = long_ascii;
    strs.description = long_han;
    strs.manufacturer = edge;
    strs.product = bad;
    strs.serial = "  \t ";
    strs.transport = "usb";
    row = node_transport_port_row(&strs);
    const char *name = bus_val_map_get_str(row, "name");
    const char *desc = bus_val_map_get_str(row, "description");
    const char *man = bus_val_map_get_str(row, "manufacturer");
    const char *prod = bus_val_map_get_str(row, "product");
    CHECK(name && strlen(name) == NODE_TRANSPORT_TEXT_MAX, "a 299-byte name is cut to %d (got %zu)",
          NODE_TRANSPORT_TEXT_MAX, name ? strlen(name) : 0);
    CHECK(desc && t_chars(desc) == NODE_TRANSPORT_TEXT_MAX &&
              strlen(desc) == 3 * NODE_TRANSPORT_TEXT_MAX,
          "100 Chinese characters are cut to %d characters, whole (got %zu bytes)",
          NODE_TRANSPORT_TEXT_MAX, desc ? strlen(desc) : 0);
    CHECK(man && t_chars(man) == NODE_TRANSPORT_TEXT_MAX && strlen(man) == 66 &&
              !strcmp(man + 63, "电"),
          "the cut falls after a whole character: %s", man ? man + 60 : "(none)");
    CHECK(prod && !strcmp(prod, "FT???X?"),
          "control characters and bytes that are not UTF-8 become '?': %s", prod ? prod : "");
    CHECK(row && !bus_val_map_get(row, "serial"), "a string of blanks is left out");
    bus_val_destroy(&row);

    strs.product = "  Prolific USB-Serial  ";
    row = node_transport_port_row(&strs);
    CHECK(row && !strcmp(bus_val_map_get_str(row, "product"), "Prolific USB-Serial"),
          "blanks around a string are trimmed");
    bus_val_destroy(&row);

    node_transport_port_t nameless = native;
    nameless.name = NULL;
    CHECK(!node_transport_port_row(&nameless), "no row for a port without a name");
    nameless.name = "\x01";
    row = node_transport_port_row(&nameless);
    CHECK(row && !strcmp(bus_val_map_get_str(row, "name"), "?"),
          "a name of a control character is kept as '?' (still a port)");
    bus_val_destroy(&row);
}

static void t_list(void)
{
    struct sp_port **list = NULL;
    size_t listed = 0;
    CHECK(sp_list_ports(&list) == SP_OK, "libserialport lists the ports");
    while (list && list[listed])
        listed++;
    sp_free_port_list(list);

    char why[256];
    size_t total = 999;
    bus_val_t *none = node_transport_ports(0, &total, why, sizeof(why));
    CHECK(none && bus_val_type(none) == BUS_VAL_ARR && bus_val_size(none) == 0,
          "a bound of 0: an empty list");
    CHECK_EQ(total, listed, "the total is what libserialport lists");
    bus_val_destroy(&none);

    bus_val_t *ports = node_transport_ports(1000, &total, why, sizeof(why));
    size_t want = listed < NODE_TRANSPORT_PORTS_MAX ? listed : NODE_TRANSPORT_PORTS_MAX;
    CHECK(ports && bus_val_size(ports) == want, "%zu ports listed, at most %d reported: %zu",
          listed, NODE_TRANSPORT_PORTS_MAX, bus_val_size(ports));
    bool sorted = true, shaped = true;
    for (size_t i = 0; i < bus_val_size(ports); i++) {
        const bus_val_t *p = bus_val_arr_get(ports, i);
        const char *name = bus_val_map_get_str(p, "name");
        const char *t = bus_val_map_get_str(p, "transport");
        shaped = shaped && name && t &&
                 (!strcmp(t, "native") || !strcmp(t, "usb") || !strcmp(t, "bluetooth"));
        if (i > 0)
            sorted = sorted &&
                     strcmp(bus_val_map_get_str(bus_val_arr_get(ports, i - 1), "name"), name) < 0;
        printf("     %s %s\n", name ? name : "?", t ? t : "?");
    }
    CHECK(shaped, "every port has a name and a transport native, usb or bluetooth");
    CHECK(sorted, "sorted by name");
    bus_val_destroy(&ports);

    if (listed > 1) {
        bus_val_t *one = node_transport_ports(1, NULL, why, sizeof(why));
        CHECK(one && bus_val_size(one) == 1, "a bound of 1 with %zu ports: 1", listed);
        bus_val_destroy(&one);
    }

    int runs = 50;
    double t0 = t_wall_ms();
    for (int i = 0; i < runs; i++) {
        bus_val_t *p = node_transport_ports(NODE_TRANSPORT_PORTS_MAX, NULL, why, sizeof(why));
        bus_val_destroy(&p);
    }
    printf("node.ports_list_ms: %.3f\n", (t_wall_ms() - t0) / runs);
}

int main(void)
{
    t_rows();
    t_list();
    return FINISH("test_ports");
}
