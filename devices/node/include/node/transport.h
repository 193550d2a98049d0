/*  =========================================================================
    node/transport.h - bytes to and from a peripheral: a serial line or TCP

    A device driver talks to its device through a transport and never
    cares which: a serial port (RS-232, USB-CDC) with the line settings
    from the configuration, or a TCP connection (a network printer on port
    9100, a card terminal). Serial ports are opened with libserialport;
    a path libserialport refuses (it looks ports up in sysfs, so it refuses
    pseudo-terminals, which device simulators use) is opened with plain
    termios instead, with the same settings, so the same driver code runs
    against hardware and simulators. Every call is bounded by a timeout:
    a device that stops answering never blocks its caller for longer.

    Spec strings (configuration and command line):
        serial:PATH[,baud=9600][,data=8][,parity=none|even|odd][,stop=1|2]
                   [,flow=none|rtscts|xonxoff]
        tcp:ADDRESS:PORT          (a numeric IPv4 address)

    The machine's serial ports, as libserialport lists them (with their USB
    vendor and product ids), are a separate question the uplink asks now
    and then for the back office: node_transport_ports below.

    Not thread-safe: one transport, one thread. Never prints.
    =========================================================================
*/
#ifndef NODE_TRANSPORT_H_INCLUDED
#define NODE_TRANSPORT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <bus/val.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NODE_TRANSPORT_SPEC_MAX 256

typedef struct {
    uint64_t bytes_in, bytes_out;
    uint64_t errors;     /* failed opens, reads and writes */
    uint64_t opens;      /* successful opens (the first one and every reconnect) */
    uint64_t reconnects; /* opens after the first */
} node_transport_stats_t;

typedef struct node_transport_t node_transport_t;

/*  A transport for spec (see above); nothing is opened yet. NULL with why for a bad spec. */
node_transport_t *node_transport_new(const char *spec, char *why, size_t size);
void node_transport_destroy(node_transport_t **self_p);

/*  Open it (a TCP connect waits at most timeout_ms). 0, or -1 with why. */
int node_transport_open(node_transport_t *self, int timeout_ms, char *why, size_t size);
bool node_transport_is_open(const node_transport_t *self);
void node_transport_close(node_transport_t *self);

/*  The file descriptor to poll for input, -1 while closed. */
int node_transport_fd(const node_transport_t *self);

/*  Write all len bytes within timeout_ms. 0, or -1 with why (the transport is closed after an
    error; a timeout leaves it open: the device may just be slow, e.g. out of paper). */
int node_transport_write(node_transport_t *self, const void *data, size_t len, int timeout_ms,
                         char *why, size_t size);

/*  How many bytes the last write call wrote, also when it failed or timed out part-way (a
    driver resumes after them, never sending a byte twice). */
size_t node_transport_last_written(const node_transport_t *self);

/*  Read what is there, waiting at most timeout_ms for the first byte: the number of bytes, 0 on
    a timeout, -1 with why at the end of the connection or on an error (then closed). */
ssize_t node_transport_read(node_transport_t *self, void *buf, size_t len, int timeout_ms,
                            char *why, size_t size);

/*  Throw away input already received (stale answers before a new question). */
void node_transport_drain(node_transport_t *self);

const node_transport_stats_t *node_transport_stats(const node_transport_t *self);
const char *node_transport_spec(const node_transport_t *self);
/*  "libserialport", "termios" or "tcp": how it is open (for health details); "" when closed. */
const char *node_transport_kind(const node_transport_t *self);

/* ---- the machine's serial ports ------------------------------------------------------------ */

#define NODE_TRANSPORT_PORTS_MAX 64 /* ports reported; a machine with more reports the first */
#define NODE_TRANSPORT_TEXT_MAX  64 /* characters of a port's name and of each of its strings */

/*  One port as libserialport describes it; strings may be NULL (unknown) and hold any bytes
    (they come from sysfs and from the USB device itself). */
typedef struct {
    const char *name;         /* "/dev/ttyUSB0" */
    const char *transport;    /* "native", "usb" or "bluetooth" */
    int usb_vid, usb_pid;     /* -1 unknown */
    int usb_bus, usb_address; /* -1 unknown */
    const char *description, *manufacturer, *product, *serial;
} node_transport_port_t;

/*  A port as the map sent to the back office: {name, transport, [usb_vid, usb_pid, usb_bus,
    usb_address], [description], [manufacturer], [product], [serial]}; unknown values are left
    out, ids outside 0..65535 too; every string is cut to NODE_TRANSPORT_TEXT_MAX characters of
    UTF-8 with control characters and bytes that are not UTF-8 as '?', surrounding blanks
    trimmed (a string left empty is left out). NULL when out of memory or without a name. */
bus_val_t *node_transport_port_row(const node_transport_port_t *port);

/*  The serial ports libserialport lists (sp_list_ports), as rows of node_transport_port_row
    sorted by name: the first max of them (at most NODE_TRANSPORT_PORTS_MAX); *total gets how
    many there are (may be NULL). NULL with why when the list cannot be read. Costs about half a
    millisecond on a machine with 70 ttys in /sys/class/tty, more with legacy 8250 UARTs: for
    those libserialport opens each port to ask the driver whether it exists. */
bus_val_t *node_transport_ports(size_t max, size_t *total, char *why, size_t size);

#ifdef __cplusplus
}
#endif
#endif
