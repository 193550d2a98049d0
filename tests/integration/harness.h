/*  =========================================================================
    harness.h - helpers for black-box tests: temporary directories, free
    ports, child processes (busd, services, redis-server), checks.

    Tests start real programs from $POSBUS_BIN (set by ctest) on 127.0.0.1
    ports the kernel hands out, in a private temporary directory, and kill
    every child they started on exit, pass or fail.
    =========================================================================
*/
#ifndef POSBUS_TEST_HARNESS_H_INCLUDED
#define POSBUS_TEST_HARNESS_H_INCLUDED

#include <bus/bus.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

extern char **environ;

static int h_passed, h_failed;
static const char *h_name = "test";
static char h_tmp[PATH_MAX];

#define H_CHILDREN_MAX 64
#define H_STOP_MS      10000 /* a service must exit this soon after SIGTERM */
#define H_REPORT_MAX   6000  /* bytes of a sanitizer report echoed into the test output */

/*  Every child started by h_spawn, kept after it stops so that its log can still be searched for
    sanitizer reports when the test finishes. */
typedef struct {
    pid_t pid;           /* 0 once reaped */
    bool used;
    bool ours;           /* a posbus program (ASan build, must exit 0 on SIGTERM) */
    char name[64];
    char log[PATH_MAX];
    long log_from;       /* this child's part of a log shared by restarts: [from, to) */
    long log_to;         /* -1 while running */
    bool scanned;
} h_child_t;
static h_child_t h_children[H_CHILDREN_MAX];

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            h_passed++;                                                                            \
            printf("ok   ");                                                                       \
        } else {                                                                                   \
            h_failed++;                                                                            \
            printf("FAIL (%s:%d) ", __FILE__, __LINE__);                                           \
        }                                                                                          \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout);                                                                            \
    } while (0)

/*  CHECK that two integers are equal, printing both. */
#define CHECK_EQ(actual, expected, what)                                                           \
    do {                                                                                           \
        int64_t h_a_ = (int64_t)(actual), h_e_ = (int64_t)(expected);                              \
        CHECK(h_a_ == h_e_, "%s (expected %" PRId64 ", got %" PRId64 ")", what, h_e_, h_a_);       \
    } while (0)

static inline long h_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/*  Bytes [from, to) of a file (to < 0: to the end), malloc'd and NUL-terminated; NULL if the file
    cannot be read. */
static inline char *h_read_part(const char *path, long from, long to)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    long end = to >= 0 ? to : h_file_size(path);
    size_t size = end > from ? (size_t)(end - from) : 0;
    char *text = calloc(1, size + 1);
    if (text && fseek(f, from, SEEK_SET) == 0)
        text[fread(text, 1, size, f)] = '\0';
    fclose(f);
    return text;
}

/*  The first sanitizer report in text as a malloc'd copy (up to H_REPORT_MAX bytes), or NULL. */
static inline char *h_sanitizer_report(const char *text)
{
    static const char *const marks[] = {"ERROR: LeakSanitizer", "ERROR: AddressSanitizer",
                                        "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer"};
    const char *first = NULL;
    for (size_t i = 0; text && i < sizeof(marks) / sizeof(marks[0]); i++) {
        const char *at = strstr(text, marks[i]);
        if (at && (!first || at < first))
            first = at;
    }
    return first ? strndup(first, H_REPORT_MAX) : NULL;
}

/*  A failed check per sanitizer report in a child's log; each child's log is searched once. */
static inline void h_scan_child(h_child_t *child)
{
    if (child->scanned)
        return;
    child->scanned = true;
    char *text = h_read_part(child->log, child->log_from, child->log_to);
    char *report = h_sanitizer_report(text);
    free(text);
    if (report)
        CHECK(false, "%s: sanitizer report in %s.log (expected none):\n%s", child->name,
              child->name, report);
    else
        CHECK(true, "%s: no sanitizer report in its log", child->name);
    free(report);
}

static inline h_child_t *h_child(pid_t pid)
{
    for (int i = 0; i < H_CHILDREN_MAX; i++)
        if (h_children[i].used && h_children[i].pid == pid)
            return &h_children[i];
    return NULL;
}

/*  Mark a child reaped with this wait status. */
static inline void h_reaped(h_child_t *child)
{
    child->pid = 0;
    child->log_to = h_file_size(child->log);
}

/*  Wait up to timeout_ms for pid to exit. True if it did (*status set). */
static inline bool h_wait_exit(pid_t pid, int timeout_ms, int *status)
{
    int64_t deadline = bus_mono_ms() + timeout_ms;
    int dummy;
    if (!status)
        status = &dummy;
    while (true) {
        pid_t got = waitpid(pid, status, WNOHANG);
        if (got == pid || (got < 0 && errno == ECHILD)) {
            h_child_t *child = h_child(pid);
            if (child)
                h_reaped(child);
            return got == pid;
        }
        if (bus_mono_ms() >= deadline)
            return false;
        zclock_sleep(10);
    }
}

/*  Kill every child still running with SIGKILL (the emergency path: a signal, or exit before
    h_finish). */
static inline void h_kill_all(void)
{
    for (int i = 0; i < H_CHILDREN_MAX; i++)
        if (h_children[i].used && h_children[i].pid > 0) {
            kill(h_children[i].pid, SIGKILL);
            waitpid(h_children[i].pid, NULL, 0);
            h_reaped(&h_children[i]);
        }
}

static inline void h_cleanup(void)
{
    h_kill_all();
    if (h_tmp[0] && !getenv("POSBUS_KEEP_TMP")) {
        char cmd[PATH_MAX + 16];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h_tmp);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", h_tmp);
    }
}

static inline void h_on_signal(int sig)
{
    h_kill_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

/*  Start the test: temp dir, cleanup at exit, czmq's signal handling off. */
static inline void h_init(const char *name)
{
    h_name = name;
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(h_tmp, sizeof(h_tmp), "/tmp/posbus-%s-XXXXXX", name);
    if (!mkdtemp(h_tmp)) {
        perror("mkdtemp");
        exit(2);
    }
    zsys_handler_set(NULL);
    atexit(h_cleanup);
    signal(SIGINT, h_on_signal);
    signal(SIGTERM, h_on_signal);
    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned)getpid());
}

/*  Stop every child still running with SIGTERM, newest first (services before busd and Redis), so
    that leaks at shutdown are reported; check each exit and every child's log. Then print the
    closing line. Returns the exit code of the test. */
static inline int h_stop(pid_t pid, int sig);
static inline int h_finish(void)
{
    for (int i = H_CHILDREN_MAX - 1; i >= 0; i--)
        if (h_children[i].used && h_children[i].pid > 0)
            h_stop(h_children[i].pid, SIGTERM);
    for (int i = 0; i < H_CHILDREN_MAX; i++)
        if (h_children[i].used)
            h_scan_child(&h_children[i]);
    printf("%s: %d passed, %d failed\n", h_name, h_passed, h_failed);
    return h_failed == 0 ? 0 : 1;
}

/*  A free TCP port on 127.0.0.1 (bound then released; fine for tests). */
static inline int h_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("free port");
        exit(2);
    }
    close(fd);
    return ntohs(addr.sin_port);
}

static inline const char *h_bin(void)
{
    const char *bin = getenv("POSBUS_BIN");
    return bin ? bin : "build/bin";
}

/*  Spawn argv[0] (a program name under POSBUS_BIN unless it contains '/'); output to
    TMP/<logname>.log. Returns the pid, remembered for cleanup. */
static inline pid_t h_spawn(const char *logname, char *const argv[])
{
    char path[PATH_MAX];
    if (strchr(argv[0], '/'))
        snprintf(path, sizeof(path), "%s", argv[0]);
    else
        snprintf(path, sizeof(path), "%s/%s", h_bin(), argv[0]);
    char log[PATH_MAX];
    snprintf(log, sizeof(log), "%s/%s.log", h_tmp, logname);
    long log_from = h_file_size(log);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, path, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "cannot start %s: %s\n", path, strerror(rc));
        return -1;
    }
    for (int i = 0; i < H_CHILDREN_MAX; i++)
        if (!h_children[i].used) {
            h_child_t *child = &h_children[i];
            child->used = true;
            child->pid = pid;
            child->ours = strchr(argv[0], '/') == NULL;
            snprintf(child->name, sizeof(child->name), "%s", logname);
            snprintf(child->log, sizeof(child->log), "%s", log);
            child->log_from = log_from;
            child->log_to = -1;
            break;
        }
    return pid;
}

/*  Signal a child and wait for it; returns its wait status. SIGTERM is a clean stop: the child
    must exit within H_STOP_MS (else it is killed and the check fails), a posbus program with
    status 0, and its log must hold no sanitizer report. */
static inline int h_stop(pid_t pid, int sig)
{
    int status = 0;
    h_child_t *child = h_child(pid);
    if (pid <= 0 || !child)
        return -1;
    kill(pid, sig);
    bool exited = h_wait_exit(pid, sig == SIGTERM ? H_STOP_MS : INT32_MAX, &status);
    if (sig != SIGTERM)
        return status;
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        h_reaped(child);
    }
    CHECK(exited, "%s stopped within %d ms of SIGTERM", child->name, H_STOP_MS);
    if (exited && child->ours)
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "%s exited cleanly on SIGTERM (expected exit 0, got %s %d)", child->name,
              WIFEXITED(status) ? "exit" : "signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    h_scan_child(child);
    return status;
}

/*  Run a program to completion, capturing stdout into out (NUL-terminated); its stderr is passed
    on, and a sanitizer report in it is a failed check. Returns the exit code (128 + signal). */
static inline int h_run(char *const argv[], char *out, size_t out_size)
{
    char path[PATH_MAX];
    if (strchr(argv[0], '/'))
        snprintf(path, sizeof(path), "%s", argv[0]);
    else
        snprintf(path, sizeof(path), "%s/%s", h_bin(), argv[0]);
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    const char *base = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    char err_log[PATH_MAX];
    snprintf(err_log, sizeof(err_log), "%s/run-%s.err", h_tmp, base);
    long err_from = h_file_size(err_log);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addopen(&fa, 2, err_log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    pid_t pid;
    int rc = posix_spawnp(&pid, path, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return -1;
    }
    size_t used = 0;
    ssize_t n;
    char scratch[4096];
    while ((n = read(fds[0], scratch, sizeof(scratch))) > 0) {
        size_t take = (size_t)n;
        if (out && used + take >= out_size)
            take = out_size - used - 1;
        if (out && take > 0) {
            memcpy(out + used, scratch, take);
            used += take;
        }
    }
    if (out)
        out[used] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    /* its stderr goes on to ours; a sanitizer report in it fails the test */
    char *err_text = h_read_part(err_log, err_from, -1);
    char *report = h_sanitizer_report(err_text);
    if (err_text && *err_text)
        fprintf(stderr, "%s", err_text);
    if (report)
        CHECK(false, "%s: sanitizer report:\n%s", base, report);
    free(report);
    free(err_text);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/*  Start a private redis-server on 127.0.0.1:port with this password, without persistence.
    The password is in TMP/<logname>.conf (mode 0600), never on a command line `ps` shows. */
static inline pid_t h_start_redis(const char *logname, int port, const char *password)
{
    char conf[PATH_MAX];
    snprintf(conf, sizeof(conf), "%s/%s.conf", h_tmp, logname);
    int fd = open(conf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    fprintf(f, "port %d\nbind 127.0.0.1\nrequirepass %s\nsave \"\"\nappendonly no\ndir %s\n", port,
            password, h_tmp);
    fclose(f);
    char *argv[] = {"/usr/bin/redis-server", conf, NULL};
    return h_spawn(logname, argv);
}

/*  Write text to TMP/<name> with mode 0600 (a password file). 0 ok. */
static inline int h_write_private(const char *name, const char *text, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", h_tmp, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

/*  A bus topology for tests: busd endpoints on free ports and certificates in TMP/keys. */
typedef struct {
    char pub[64], sub[64], req[64];
    int pub_port, sub_port, req_port;
    char keys[PATH_MAX];
    char server_public[PATH_MAX];
    char server_secret[PATH_MAX];
    char clients[PATH_MAX];
    pid_t busd;
    bool started; /* busd ran on these ports once: a restart keeps them */
} h_bus_t;

static inline void h_bus_ports(h_bus_t *bus)
{
    bus->pub_port = h_free_port();
    bus->sub_port = h_free_port();
    bus->req_port = h_free_port();
    snprintf(bus->pub, sizeof(bus->pub), "tcp://127.0.0.1:%d", bus->pub_port);
    snprintf(bus->sub, sizeof(bus->sub), "tcp://127.0.0.1:%d", bus->sub_port);
    snprintf(bus->req, sizeof(bus->req), "tcp://127.0.0.1:%d", bus->req_port);
}

static inline void h_bus_init(h_bus_t *bus)
{
    bus->started = false;
    h_bus_ports(bus);
    snprintf(bus->keys, sizeof(bus->keys), "%s/keys", h_tmp);
    snprintf(bus->server_public, sizeof(bus->server_public), "%s/busd.cert", bus->keys);
    snprintf(bus->server_secret, sizeof(bus->server_secret), "%s/busd.cert_secret", bus->keys);
    snprintf(bus->clients, sizeof(bus->clients), "%s/clients", bus->keys);
}

/*  Create an enrolled key of role ("service", "operator", "consumer") and name with posctl keygen,
    and busd's certificate if missing. Its file base name is "<role>-<name>": a service's key is
    named after the service it registers ("service-echo"). 0 ok. */
static inline int h_keygen(h_bus_t *bus, const char *role, const char *name)
{
    char *argv[] = {"posctl",     "--keys-dir", bus->keys, "keygen", (char *)role,
                    (char *)name, NULL};
    return h_run(argv, NULL, 0);
}

/*  The secret certificate of key `file` ("operator-t1", "service-echo"). */
static inline void h_cert_path(h_bus_t *bus, const char *file, char *out, size_t size)
{
    snprintf(out, size, "%s/%s.cert_secret", bus->keys, file);
}

static inline pid_t h_start_busd_once(h_bus_t *bus);

static inline pid_t h_start_busd(h_bus_t *bus)
{
    /* a port the kernel handed out may be taken by a test running beside this one before busd
       binds it: busd then exits at once. The first start tries again on new ports (before any
       client knows them); a restart keeps its ports. */
    for (int attempt = 1;; attempt++) {
        int status;
        bus->busd = h_start_busd_once(bus);
        if (bus->busd <= 0 || bus->started || attempt == 5 ||
            !h_wait_exit(bus->busd, 300, &status)) {
            bus->started = true;
            return bus->busd;
        }
        fprintf(stderr, "     (busd exited at start, status %d: trying other ports)\n", status);
        h_bus_ports(bus);
    }
}

static inline pid_t h_start_busd_once(h_bus_t *bus)
{
    char *argv[] = {"busd",
                    "--pub-bind",
                    bus->pub,
                    "--sub-bind",
                    bus->sub,
                    "--req-bind",
                    bus->req,
                    "--cert",
                    bus->server_secret,
                    "--clients-dir",
                    bus->clients,
                    "--log-level",
                    "debug",
                    "--heartbeat-ms",
                    "250",
                    "--heartbeat-timeout-ms",
                    "1500",
                    NULL};
    bus->busd = h_spawn("busd", argv);
    return bus->busd;
}

/*  Connection settings for an in-test client using key `file` ("operator-t1"). */
static inline void h_conn(h_bus_t *bus, const char *file, bus_conn_cfg_t *cfg, char *cert,
                          size_t cert_size)
{
    bus_conn_cfg_defaults(cfg);
    cfg->pub_endpoint = bus->pub;
    cfg->sub_endpoint = bus->sub;
    cfg->req_endpoint = bus->req;
    h_cert_path(bus, file, cert, cert_size);
    cfg->cert = cert;
    cfg->server_cert = bus->server_public;
    cfg->heartbeat_ms = 250;
    cfg->heartbeat_timeout_ms = 1500;
}

/*  A request whose reply the test needs. No reply is a failed check saying so ("what: no reply
    within N ms"), an error reply one naming the error; both return NULL. Takes body_p. */
static inline bus_msg_t *h_request(bus_client_t *client, const char *service, const char *method,
                                   bus_val_t **body_p, const char *what)
{
    int64_t t0 = bus_mono_ms();
    bus_msg_t *rep = bus_client_request(client, service, method, body_p);
    if (rep)
        return rep;
    if (bus_client_errcode(client) == BUS_CLIENT_TIMEOUT)
        CHECK(false, "%s: no reply from %s %s within %" PRId64 " ms (%s)", what, service, method,
              bus_mono_ms() - t0, bus_client_errstr(client));
    else
        CHECK(false, "%s: %s %s failed: %s", what, service, method, bus_client_errstr(client));
    return NULL;
}

/*  Start the echo test service (registered as "echo") with key `file` ("service-echo"). */
static inline pid_t h_start_echo(h_bus_t *bus, const char *logname, const char *file)
{
    char cert[PATH_MAX];
    h_cert_path(bus, file, cert, sizeof(cert));
    char *argv[] = {"bus_echo",
                    "--pub-endpoint",
                    bus->pub,
                    "--sub-endpoint",
                    bus->sub,
                    "--req-endpoint",
                    bus->req,
                    "--cert",
                    cert,
                    "--server-cert",
                    bus->server_public,
                    "--heartbeat-ms",
                    "250",
                    "--heartbeat-timeout-ms",
                    "1500",
                    NULL};
    return h_spawn(logname, argv);
}

/*  Wait until busd answers health (up to timeout_ms); on timeout say why. */
static inline bool h_wait_busd(bus_client_t *client, int timeout_ms)
{
    int64_t deadline = bus_mono_ms() + timeout_ms;
    while (bus_mono_ms() < deadline) {
        bus_msg_t *rep = bus_client_request(client, BUS_BROKER_SERVICE, "health", NULL);
        if (rep) {
            bus_msg_destroy(&rep);
            return true;
        }
    }
    printf("     busd: no health reply within %d ms (%s)\n", timeout_ms,
           bus_client_errstr(client));
    return false;
}

/*  Count registered instances of service (via busd "services"); -1 if busd did not answer. */
static inline int h_instances(bus_client_t *client, const char *service)
{
    bus_msg_t *rep = bus_client_request(client, BUS_BROKER_SERVICE, "services", NULL);
    if (!rep)
        return -1;
    bus_val_t *list = bus_val_map_get(bus_msg_body(rep), "instances");
    int count = 0;
    for (size_t i = 0; i < bus_val_size(list); i++) {
        const char *name = bus_val_map_get_str(bus_val_arr_get(list, i), "service");
        if (name && streq(name, service))
            count++;
    }
    bus_msg_destroy(&rep);
    return count;
}

/*  Wait until service has exactly n instances registered; on timeout say how many there were. */
static inline bool h_wait_instances(bus_client_t *client, const char *service, int n,
                                    int timeout_ms)
{
    int64_t deadline = bus_mono_ms() + timeout_ms;
    int seen = -1;
    while (bus_mono_ms() < deadline) {
        seen = h_instances(client, service);
        if (seen == n)
            return true;
        zclock_sleep(50);
    }
    printf("     %s: %d instances registered after %d ms, expected %d (-1: busd silent)\n",
           service, seen, timeout_ms, n);
    return false;
}

#endif
