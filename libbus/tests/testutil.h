/*  Shared by the libbus unit tests: CHECK prints one line per check (a failing check should
    print what it expected and what it got; CHECK_EQ does for integers); FINISH prints the closing
    "N passed, N failed" line and gives the exit code.

    The tests that need a real Redis (test_redis, test_stream) start a private redis-server
    with t_redis_start: a free 127.0.0.1 port, a unix socket and the log in the test's temporary
    directory, no persistence, and a password that is only in a config file of mode 0600, never
    on a command line `ps` shows. Everything here is static inline so that the header stays the
    whole of the test support: no library to build or link. */
#ifndef BUS_TESTUTIL_H_INCLUDED
#define BUS_TESTUTIL_H_INCLUDED

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define T_REDIS_START_MS 5000 /* redis-server must answer this soon after it is spawned */
#define T_REDIS_POLL_MS  50   /* pause between two attempts to reach it */

extern char **environ;

static int t_passed, t_failed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            t_passed++;                                                                            \
            printf("ok   ");                                                                       \
        } else {                                                                                   \
            t_failed++;                                                                            \
            printf("FAIL (%s:%d) ", __FILE__, __LINE__);                                           \
        }                                                                                          \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout); /* kept if a sanitizer aborts the test later */                            \
    } while (0)

/*  CHECK that two integers are equal, printing both either way. */
#define CHECK_EQ(actual, expected, what)                                                           \
    do {                                                                                           \
        long long t_a_ = (long long)(actual), t_e_ = (long long)(expected);                        \
        CHECK(t_a_ == t_e_, "%s (expected %lld, got %lld)", what, t_e_, t_a_);                     \
    } while (0)

#define FINISH(name)                                                                               \
    (printf("%s: %d passed, %d failed\n", name, t_passed, t_failed), t_failed == 0 ? 0 : 1)

/*  A TCP port of 127.0.0.1 that was free a moment ago, or -1 if none could be had. */
static inline int t_free_port(void)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    int port = -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

static inline void t_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/*  True if something on 127.0.0.1:port answers an inline PING with a RESP status or error line
    ("+PONG", or "-NOAUTH" when it wants a password): a Redis that serves commands, not merely
    a socket that is listening. */
static inline bool t_redis_answers(int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval timeout = {0, T_REDIS_POLL_MS * 1000};
    char reply;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    bool answered = connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
                    write(fd, "PING\r\n", 6) == 6 && read(fd, &reply, 1) == 1 &&
                    (reply == '+' || reply == '-');
    close(fd);
    return answered;
}

/*  Kill *pid_p with SIGKILL and reap it; *pid_p becomes 0. Does nothing if *pid_p <= 0. */
static inline void t_kill(pid_t *pid_p)
{
    if (*pid_p > 0) {
        kill(*pid_p, SIGKILL);
        waitpid(*pid_p, NULL, 0);
    }
    *pid_p = 0;
}

/*  Remove dir and everything in it (the test's temporary directory, at exit). */
static inline void t_remove_dir(const char *dir)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

/*  Start redis-server on 127.0.0.1:port (and DIR/redis.sock) with dir as its working
    directory and DIR/redis.log as its log, without persistence, requiring password unless it
    is NULL. The settings go in DIR/redis.conf, created with mode 0600 because it holds the
    password; starting again on the same port (after a kill) rewrites it. Returns the pid once
    the server answers a PING, or -1 if it could not be spawned, exited (the port was taken) or
    did not answer within T_REDIS_START_MS (then it is killed). */
static inline pid_t t_redis_start(const char *dir, int port, const char *password)
{
    char conf[PATH_MAX];
    snprintf(conf, sizeof(conf), "%s/redis.conf", dir);
    int fd = port > 0 ? open(conf, O_WRONLY | O_CREAT | O_TRUNC, 0600) : -1;
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    fprintf(f, "port %d\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir %s\n", port, dir);
    fprintf(f, "unixsocket %s/redis.sock\nlogfile %s/redis.log\n", dir, dir);
    if (password)
        fprintf(f, "requirepass %s\n", password);
    if (fclose(f) != 0)
        return -1;
    char *argv[] = {"redis-server", conf, NULL};
    pid_t pid;
    if (posix_spawnp(&pid, "redis-server", NULL, NULL, argv, environ) != 0)
        return -1;
    for (int waited = 0; waited < T_REDIS_START_MS; waited += T_REDIS_POLL_MS) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return -1;
        if (t_redis_answers(port))
            return pid;
        t_sleep_ms(T_REDIS_POLL_MS);
    }
    t_kill(&pid);
    return -1;
}

/*  Make dir (a mkdtemp template, rewritten in place) the test's temporary directory and start
    a Redis there on a free port with t_redis_start. Returns 0 with *port and *pid set, or -1.
    The caller removes dir and kills *pid at exit, whatever this returned. */
static inline int t_redis_setup(char *dir, const char *password, int *port, pid_t *pid)
{
    *port = -1;
    *pid = -1;
    if (!mkdtemp(dir))
        return -1;
    *port = t_free_port();
    *pid = t_redis_start(dir, *port, password);
    return *pid > 0 ? 0 : -1;
}

#endif
