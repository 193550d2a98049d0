/*  =========================================================================
    transport.c - bytes to and from a peripheral: a serial line or TCP

    Whatever opened the port, reads and writes go through its file
    descriptor with poll(), so every call has a deadline and the caller
    can poll the same descriptor beside others.
    =========================================================================
*/
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <libserialport.h>

#include <bus/msg.h>
#include "node/transport.h"

typedef enum { S_SERIAL, S_TCP } s_kind_t;

struct node_transport_t {
    char spec[NODE_TRANSPORT_SPEC_MAX];
    s_kind_t kind;
    char path[NODE_TRANSPORT_SPEC_MAX];
    int baud, data, stop;
    char parity; /* 'N', 'E', 'O' */
    char flow;   /* 'N', 'R' (rtscts), 'X' (xonxoff) */
    struct sockaddr_in addr;
    int fd;
    struct sp_port *port; /* when libserialport opened it */
    const char *how;
    node_transport_stats_t stats;
    size_t last_written; /* by the last write call, also when it failed */
};

static int s_fail(char *why, size_t size, const char *what, const char *detail)
{
    if (why && size)
        snprintf(why, size, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
    return -1;
}

/* ---- specs ------------------------------------------------------------------------------ */

static int s_serial_option(node_transport_t *self, const char *opt, char *why, size_t size)
{
    const char *eq = strchr(opt, '=');
    if (!eq)
        return s_fail(why, size, "serial option without '='", opt);
    size_t klen = (size_t)(eq - opt);
    const char *v = eq + 1;
    char *end;
    long n = strtol(v, &end, 10);
    bool num = *v && !*end;
    if (klen == 4 && !strncmp(opt, "baud", 4) && num && n >= 50 && n <= 4000000)
        self->baud = (int)n;
    else if (klen == 4 && !strncmp(opt, "data", 4) && num && n >= 5 && n <= 8)
        self->data = (int)n;
    else if (klen == 4 && !strncmp(opt, "stop", 4) && num && (n == 1 || n == 2))
        self->stop = (int)n;
    else if (klen == 6 && !strncmp(opt, "parity", 6) &&
             (!strcmp(v, "none") || !strcmp(v, "even") || !strcmp(v, "odd")))
        self->parity = (char)(v[0] == 'n' ? 'N' : v[0] == 'e' ? 'E' : 'O');
    else if (klen == 4 && !strncmp(opt, "flow", 4) &&
             (!strcmp(v, "none") || !strcmp(v, "rtscts") || !strcmp(v, "xonxoff")))
        self->flow = (char)(v[0] == 'n' ? 'N' : v[0] == 'r' ? 'R' : 'X');
    else
        return s_fail(why, size, "bad serial option", opt);
    return 0;
}

node_transport_t *node_transport_new(const char *spec, char *why, size_t size)
{
    if (!spec || strlen(spec) >= NODE_TRANSPORT_SPEC_MAX) {
        s_fail(why, size, "a transport spec of at most 255 bytes required", NULL);
        return NULL;
    }
    node_transport_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    snprintf(self->spec, sizeof(self->spec), "%s", spec);
    self->fd = -1;
    self->how = "";
    self->baud = 9600;
    self->data = 8;
    self->stop = 1;
    self->parity = 'N';
    self->flow = 'N';
    char copy[NODE_TRANSPORT_SPEC_MAX];
    snprintf(copy, sizeof(copy), "%s", spec);
    if (!strncmp(copy, "serial:", 7)) {
        self->kind = S_SERIAL;
        char *save = NULL, *tok = strtok_r(copy + 7, ",", &save);
        if (!tok || tok[0] != '/') {
            s_fail(why, size, "serial: an absolute device path required", spec);
            goto fail;
        }
        snprintf(self->path, sizeof(self->path), "%s", tok);
        while ((tok = strtok_r(NULL, ",", &save)))
            if (s_serial_option(self, tok, why, size) != 0)
                goto fail;
        return self;
    }
    if (!strncmp(copy, "tcp:", 4)) {
        self->kind = S_TCP;
        char *colon = strrchr(copy + 4, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || !*(colon + 1) || *end || port < 1 || port > 65535) {
            s_fail(why, size, "tcp: ADDRESS:PORT required", spec);
            goto fail;
        }
        *colon = '\0';
        self->addr.sin_family = AF_INET;
        self->addr.sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, copy + 4, &self->addr.sin_addr) != 1) {
            s_fail(why, size, "tcp: a numeric IPv4 address required", spec);
            goto fail;
        }
        return self;
    }
    s_fail(why, size, "a transport is serial:PATH,... or tcp:ADDRESS:PORT", spec);
fail:
    free(self);
    return NULL;
}

void node_transport_destroy(node_transport_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_transport_close(*self_p);
    free(*self_p);
    *self_p = NULL;
}

/* ---- opening -------------------------------------------------------------------------- */

static speed_t s_speed(int baud)
{
    static const struct {
        int baud;
        speed_t speed;
    } table[] = {{1200, B1200},     {2400, B2400},     {4800, B4800},    {9600, B9600},
                 {19200, B19200},   {38400, B38400},   {57600, B57600},  {115200, B115200},
                 {230400, B230400}, {460800, B460800}, {921600, B921600}};
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].baud == baud)
            return table[i].speed;
    return B0;
}

/*  Whether fd is a pseudo-terminal (a simulator's end of a device). */
static bool s_is_pty(int fd)
{
    char name[64];
    return ttyname_r(fd, name, sizeof(name)) == 0 && strncmp(name, "/dev/pts/", 9) == 0;
}

/*  The same line settings with termios, for a path libserialport refuses (a pseudo-terminal). */
static int s_open_termios(node_transport_t *self, char *why, size_t size)
{
    int fd = open(self->path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return s_fail(why, size, self->path, strerror(errno));
    struct termios t;
    speed_t speed = s_speed(self->baud);
    if (tcgetattr(fd, &t) != 0 || speed == B0) {
        int e = errno;
        close(fd);
        return s_fail(why, size, self->path, speed == B0 ? "unsupported baud rate" : strerror(e));
    }
    cfmakeraw(&t);
    cfsetispeed(&t, speed);
    cfsetospeed(&t, speed);
    t.c_cflag &= (tcflag_t) ~(CSIZE | PARENB | PARODD | CSTOPB | CRTSCTS);
    t.c_cflag |= (tcflag_t)(CLOCAL | CREAD);
    t.c_cflag |= self->data == 5 ? CS5 : self->data == 6 ? CS6 : self->data == 7 ? CS7 : CS8;
    if (self->parity != 'N')
        t.c_cflag |= (tcflag_t)(PARENB | (self->parity == 'O' ? PARODD : 0));
    if (self->stop == 2)
        t.c_cflag |= CSTOPB;
    if (self->flow == 'R')
        t.c_cflag |= CRTSCTS;
    if (self->flow == 'X')
        t.c_iflag |= (tcflag_t)(IXON | IXOFF);
    t.c_cc[VMIN] = 0;
    t.c_cc[VTIME] = 0;
    int set = tcsetattr(fd, TCSANOW, &t);
    if (set != 0 && errno == EINVAL && s_is_pty(fd)) {
        /* a pseudo-terminal has no wire: character size and parity mean nothing there, and
           Linux refuses some combinations (7E1) on a pty once it has been set up; carry on
           with 8 bits, no parity, which is what a pty passes through anyway */
        t.c_cflag &= (tcflag_t) ~(CSIZE | PARENB | PARODD);
        t.c_cflag |= CS8;
        set = tcsetattr(fd, TCSANOW, &t);
    }
    if (set != 0) {
        int e = errno;
        close(fd);
        return s_fail(why, size, self->path, strerror(e));
    }
    self->fd = fd;
    self->how = "termios";
    return 0;
}

static int s_open_serial(node_transport_t *self, char *why, size_t size)
{
    struct sp_port *port = NULL;
    if (sp_get_port_by_name(self->path, &port) != SP_OK)
        return s_open_termios(self, why, size);
    enum sp_parity parity = self->parity == 'E'   ? SP_PARITY_EVEN
                            : self->parity == 'O' ? SP_PARITY_ODD
                                                  : SP_PARITY_NONE;
    enum sp_flowcontrol flow = self->flow == 'R'   ? SP_FLOWCONTROL_RTSCTS
                               : self->flow == 'X' ? SP_FLOWCONTROL_XONXOFF
                                                   : SP_FLOWCONTROL_NONE;
    int fd = -1;
    if (sp_open(port, SP_MODE_READ_WRITE) != SP_OK) {
        sp_free_port(port);
        return s_open_termios(self, why, size);
    }
    if (sp_set_baudrate(port, self->baud) != SP_OK || sp_set_bits(port, self->data) != SP_OK ||
        sp_set_parity(port, parity) != SP_OK || sp_set_stopbits(port, self->stop) != SP_OK ||
        sp_set_flowcontrol(port, flow) != SP_OK || sp_get_port_handle(port, &fd) != SP_OK) {
        char *msg = sp_last_error_message();
        s_fail(why, size, self->path, msg ? msg : "cannot set the line");
        sp_free_error_message(msg);
        sp_close(port);
        sp_free_port(port);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    self->port = port;
    self->fd = fd;
    self->how = "libserialport";
    return 0;
}

static int s_open_tcp(node_transport_t *self, int timeout_ms, char *why, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return s_fail(why, size, "socket", strerror(errno));
    int rc = connect(fd, (struct sockaddr *)&self->addr, sizeof(self->addr));
    if (rc != 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof(err);
        rc = poll(&p, 1, timeout_ms) == 1 &&
                     getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0
                 ? 0
                 : -1;
        if (rc != 0)
            errno = err ? err : ETIMEDOUT;
    }
    if (rc != 0) {
        int e = errno;
        close(fd);
        return s_fail(why, size, self->spec, strerror(e));
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    self->fd = fd;
    self->how = "tcp";
    return 0;
}

int node_transport_open(node_transport_t *self, int timeout_ms, char *why, size_t size)
{
    if (self->fd >= 0)
        return 0;
    int rc = self->kind == S_SERIAL ? s_open_serial(self, why, size)
                                    : s_open_tcp(self, timeout_ms, why, size);
    if (rc != 0) {
        self->stats.errors++;
        return -1;
    }
    if (self->stats.opens++ > 0)
        self->stats.reconnects++;
    return 0;
}

bool node_transport_is_open(const node_transport_t *self)
{
    return self->fd >= 0;
}

void node_transport_close(node_transport_t *self)
{
    if (self->port) {
        sp_close(self->port);
        sp_free_port(self->port);
        self->port = NULL;
    } else if (self->fd >= 0) {
        close(self->fd);
    }
    self->fd = -1;
    self->how = "";
}

int node_transport_fd(const node_transport_t *self)
{
    return self->fd;
}

/* ---- I/O -------------------------------------------------------------------------------- */

static void s_broken(node_transport_t *self)
{
    self->stats.errors++;
    node_transport_close(self);
}

int node_transport_write(node_transport_t *self, const void *data, size_t len, int timeout_ms,
                         char *why, size_t size)
{
    if (self->fd < 0)
        return s_fail(why, size, "not open", NULL);
    const uint8_t *p = data;
    int64_t deadline = bus_mono_ms() + timeout_ms;
    self->last_written = 0;
    while (len > 0) {
        ssize_t n = send(self->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK)
            n = write(self->fd, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            self->stats.bytes_out += (uint64_t)n;
            self->last_written += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            int e = errno;
            s_broken(self);
            return s_fail(why, size, "write", strerror(e));
        }
        int left = (int)(deadline - bus_mono_ms());
        struct pollfd pfd = {.fd = self->fd, .events = POLLOUT};
        if (left <= 0 || poll(&pfd, 1, left) == 0)
            return s_fail(why, size, "write", "timed out (the device takes no more data)");
        if (pfd.revents & (POLLERR | POLLHUP) && !(pfd.revents & POLLOUT)) {
            s_broken(self);
            return s_fail(why, size, "write", "the device went away");
        }
    }
    return 0;
}

ssize_t node_transport_read(node_transport_t *self, void *buf, size_t len, int timeout_ms,
                            char *why, size_t size)
{
    if (self->fd < 0)
        return s_fail(why, size, "not open", NULL);
    struct pollfd pfd = {.fd = self->fd, .events = POLLIN};
    int rc = poll(&pfd, 1, timeout_ms);
    if (rc == 0)
        return 0;
    if (rc < 0 && errno == EINTR)
        return 0;
    ssize_t n = read(self->fd, buf, len);
    if (n > 0) {
        self->stats.bytes_in += (uint64_t)n;
        return n;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    int e = n == 0 ? 0 : errno;
    s_broken(self);
    return s_fail(why, size, "read", e ? strerror(e) : "the device closed the connection");
}

void node_transport_drain(node_transport_t *self)
{
    uint8_t buf[512];
    char why[64];
    while (self->fd >= 0 && node_transport_read(self, buf, sizeof(buf), 0, why, sizeof(why)) > 0)
        ;
}

const node_transport_stats_t *node_transport_stats(const node_transport_t *self)
{
    return &self->stats;
}

const char *node_transport_spec(const node_transport_t *self)
{
    return self->spec;
}

size_t node_transport_last_written(const node_transport_t *self)
{
    return self->last_written;
}

const char *node_transport_kind(const node_transport_t *self)
{
    return self->how;
}

/* ---- the machine's serial ports ------------------------------------------------------------ */

/*  Bytes of the UTF-8 sequence at p (at most left bytes), 0 if none starts there. */
static size_t s_utf8_seq(const unsigned char *p, size_t left)
{
    size_t n = p[0] < 0x80           ? 1
               : (p[0] >> 5) == 0x6  ? 2
               : (p[0] >> 4) == 0xe  ? 3
               : (p[0] >> 3) == 0x1e ? 4
                                     : 0;
    if (n == 0 || n > left)
        return 0;
    for (size_t k = 1; k < n; k++)
        if ((p[k] & 0xc0) != 0x80)
            return 0;
    return n;
}

/*  in as text the back office takes (docs/protocol.md: strict UTF-8, no control characters, at
    most NODE_TRANSPORT_TEXT_MAX characters) into out; "" for NULL. USB strings are whatever
    the device's maker burned in, and sysfs passes them on as they are. */
static void s_port_text(char *out, size_t size, const char *in)
{
    size_t used = 0, chars = 0;
    const unsigned char *p = (const unsigned char *)(in ? in : "");
    while (*p == ' ' || *p == '\t')
        p++;
    size_t left = strlen((const char *)p);
    while (left > 0 && chars < NODE_TRANSPORT_TEXT_MAX) {
        size_t n = s_utf8_seq(p, left);
        bool bad = n == 0 || (n == 1 && (p[0] < 0x20 || p[0] == 0x7f));
        size_t put = bad ? 1 : n;
        if (used + put + 1 > size)
            break;
        if (bad)
            out[used] = '?';
        else
            memcpy(out + used, p, n);
        used += put;
        chars++;
        p += n ? n : 1;
        left -= n ? n : 1;
    }
    while (used > 0 && (out[used - 1] == ' ' || out[used - 1] == '\t'))
        used--;
    out[used] = '\0';
}

/*  Set key to in as bounded text, unless that leaves nothing. */
static int s_port_set_text(bus_val_t *row, const char *key, const char *in)
{
    char text[4 * NODE_TRANSPORT_TEXT_MAX + 1];
    s_port_text(text, sizeof(text), in);
    return text[0] ? bus_val_map_set_str(row, key, text) : 0;
}

bus_val_t *node_transport_port_row(const node_transport_port_t *port)
{
    char name[4 * NODE_TRANSPORT_TEXT_MAX + 1];
    s_port_text(name, sizeof(name), port->name);
    bus_val_t *row = name[0] ? bus_val_new_map() : NULL;
    if (!row)
        return NULL;
    bool ids = port->usb_vid >= 0 && port->usb_vid <= 0xffff && port->usb_pid >= 0 &&
               port->usb_pid <= 0xffff;
    bool where = port->usb_bus >= 0 && port->usb_bus <= 0xffff && port->usb_address >= 0 &&
                 port->usb_address <= 0xffff;
    int rc = bus_val_map_set_str(row, "name", name);
    rc = rc ? rc : s_port_set_text(row, "transport", port->transport);
    rc = rc || !ids ? rc : bus_val_map_set_int(row, "usb_vid", port->usb_vid);
    rc = rc || !ids ? rc : bus_val_map_set_int(row, "usb_pid", port->usb_pid);
    rc = rc || !where ? rc : bus_val_map_set_int(row, "usb_bus", port->usb_bus);
    rc = rc || !where ? rc : bus_val_map_set_int(row, "usb_address", port->usb_address);
    rc = rc ? rc : s_port_set_text(row, "description", port->description);
    rc = rc ? rc : s_port_set_text(row, "manufacturer", port->manufacturer);
    rc = rc ? rc : s_port_set_text(row, "product", port->product);
    rc = rc ? rc : s_port_set_text(row, "serial", port->serial);
    if (rc != 0)
        bus_val_destroy(&row);
    return row;
}

static int s_port_cmp(const void *a, const void *b)
{
    const char *x = sp_get_port_name(*(struct sp_port *const *)a);
    const char *y = sp_get_port_name(*(struct sp_port *const *)b);
    return strcmp(x ? x : "", y ? y : "");
}

bus_val_t *node_transport_ports(size_t max, size_t *total, char *why, size_t size)
{
    struct sp_port **list = NULL;
    if (sp_list_ports(&list) != SP_OK) {
        char *msg = sp_last_error_message();
        s_fail(why, size, "cannot list the serial ports", msg);
        sp_free_error_message(msg);
        return NULL;
    }
    size_t n = 0;
    while (list[n])
        n++;
    /* sorted, so that the same ports make the same list whatever order sysfs gives them in */
    qsort(list, n, sizeof(*list), s_port_cmp);
    if (total)
        *total = n;
    if (max > NODE_TRANSPORT_PORTS_MAX)
        max = NODE_TRANSPORT_PORTS_MAX;
    bus_val_t *rows = bus_val_new_arr();
    for (size_t i = 0; rows && i < n && bus_val_size(rows) < max; i++) {
        enum sp_transport t = sp_get_port_transport(list[i]);
        node_transport_port_t p = {.name = sp_get_port_name(list[i]),
                                   .transport = t == SP_TRANSPORT_USB         ? "usb"
                                                : t == SP_TRANSPORT_BLUETOOTH ? "bluetooth"
                                                                              : "native",
                                   .usb_vid = -1,
                                   .usb_pid = -1,
                                   .usb_bus = -1,
                                   .usb_address = -1,
                                   .description = sp_get_port_description(list[i])};
        if (t == SP_TRANSPORT_USB) {
            if (sp_get_port_usb_vid_pid(list[i], &p.usb_vid, &p.usb_pid) != SP_OK)
                p.usb_vid = p.usb_pid = -1;
            if (sp_get_port_usb_bus_address(list[i], &p.usb_bus, &p.usb_address) != SP_OK)
                p.usb_bus = p.usb_address = -1;
            p.manufacturer = sp_get_port_usb_manufacturer(list[i]);
            p.product = sp_get_port_usb_product(list[i]);
            p.serial = sp_get_port_usb_serial(list[i]);
        }
        bus_val_t *row = node_transport_port_row(&p);
        if (row)
            bus_val_arr_push(rows, &row); /* a port without a name is no port */
    }
    sp_free_port_list(list);
    if (!rows)
        s_fail(why, size, "out of memory", NULL);
    return rows;
}
