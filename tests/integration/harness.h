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
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>

extern char **environ;

static int h_passed, h_failed;
static const char *h_name = "test";
#define H_CHILDREN_MAX 64
static pid_t h_children[H_CHILDREN_MAX];
static char h_tmp[PATH_MAX];

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

static inline void h_kill_all(void)
{
    for (int i = 0; i < H_CHILDREN_MAX; i++)
        if (h_children[i] > 0) {
            kill(h_children[i], SIGKILL);
            waitpid(h_children[i], NULL, 0);
            h_children[i] = 0;
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

static inline int h_finish(void)
{
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
        if (h_children[i] == 0) {
            h_children[i] = pid;
            break;
        }
    return pid;
}

/*  Signal a child and wait for it; returns its wait status. */
static inline int h_stop(pid_t pid, int sig)
{
    int status = 0;
    if (pid <= 0)
        return -1;
    kill(pid, sig);
    waitpid(pid, &status, 0);
    for (int i = 0; i < H_CHILDREN_MAX; i++)
        if (h_children[i] == pid)
            h_children[i] = 0;
    return status;
}

/*  Run a program to completion, capturing stdout into out (NUL-terminated). Returns exit code. */
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
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
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
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
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
} h_bus_t;

static inline void h_bus_init(h_bus_t *bus)
{
    bus->pub_port = h_free_port();
    bus->sub_port = h_free_port();
    bus->req_port = h_free_port();
    snprintf(bus->pub, sizeof(bus->pub), "tcp://127.0.0.1:%d", bus->pub_port);
    snprintf(bus->sub, sizeof(bus->sub), "tcp://127.0.0.1:%d", bus->sub_port);
    snprintf(bus->req, sizeof(bus->req), "tcp://127.0.0.1:%d", bus->req_port);
    snprintf(bus->keys, sizeof(bus->keys), "%s/keys", h_tmp);
    snprintf(bus->server_public, sizeof(bus->server_public), "%s/busd.cert", bus->keys);
    snprintf(bus->server_secret, sizeof(bus->server_secret), "%s/busd.cert_secret", bus->keys);
    snprintf(bus->clients, sizeof(bus->clients), "%s/clients", bus->keys);
}

/*  Create certificates with posctl keygen: busd's and one enrolled per name. */
static inline int h_keygen(h_bus_t *bus, const char *name)
{
    char *argv[] = {"posctl", "keygen", bus->keys, (char *)name, NULL};
    return h_run(argv, NULL, 0);
}

static inline void h_cert_path(h_bus_t *bus, const char *name, char *out, size_t size)
{
    snprintf(out, size, "%s/%s.cert_secret", bus->keys, name);
}

static inline pid_t h_start_busd(h_bus_t *bus)
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

/*  Connection settings for an in-test client using certificate `name`. */
static inline void h_conn(h_bus_t *bus, const char *name, bus_conn_cfg_t *cfg, char *cert,
                          size_t cert_size)
{
    bus_conn_cfg_defaults(cfg);
    cfg->pub_endpoint = bus->pub;
    cfg->sub_endpoint = bus->sub;
    cfg->req_endpoint = bus->req;
    h_cert_path(bus, name, cert, cert_size);
    cfg->cert = cert;
    cfg->server_cert = bus->server_public;
    cfg->heartbeat_ms = 250;
    cfg->heartbeat_timeout_ms = 1500;
}

/*  Start the echo test service with certificate `name`. */
static inline pid_t h_start_echo(h_bus_t *bus, const char *logname, const char *name)
{
    char cert[PATH_MAX];
    h_cert_path(bus, name, cert, sizeof(cert));
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

/*  Wait until busd answers health (up to timeout_ms). */
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

/*  Wait until service has exactly n instances registered. */
static inline bool h_wait_instances(bus_client_t *client, const char *service, int n,
                                    int timeout_ms)
{
    int64_t deadline = bus_mono_ms() + timeout_ms;
    while (bus_mono_ms() < deadline) {
        if (h_instances(client, service) == n)
            return true;
        zclock_sleep(50);
    }
    return false;
}

#endif
