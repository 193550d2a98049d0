/*  =========================================================================
    device.c - one peripheral of the register, on a thread of its own

    The thread: open the transport (backoff 0.5 s doubling to 10 s while it
    fails), attach the driver, then take jobs first in first out; between
    jobs the driver's idle callback looks at the device about once a
    second. A job the driver cannot do yet stays first in the queue.
    =========================================================================
*/
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bus/msg.h>
#include "node/device.h"

#define S_IDLE_MS        1000
#define S_BACKOFF_MIN_MS 500
#define S_BACKOFF_MAX_MS 10000
#define S_RETRY_MS       500  /* a job the device could not do yet */
#define S_DONE_KEYS      4096 /* keys remembered (a ring: the oldest is forgotten) */
#define S_INPUT_POLL_MS  50   /* a driver with input: how long one wait for it lasts */

struct node_device {
    char name[NODE_DEVICE_NAME_MAX + 1];
    const node_driver_t *driver;
    void *state;
    node_transport_t *transport;
    node_device_event_fn event;
    void *event_arg;
    pthread_t thread;
    bool started;

    pthread_mutex_t lock; /* guards what follows */
    pthread_cond_t wake;
    bool stop;
    node_job_t queue[NODE_DEVICE_QUEUE_MAX];
    int head, count;
    char (*done)[NODE_DEVICE_KEY_MAX + 1]; /* ring of keys carried out */
    int ndone, next_done;
    node_health_t health;
    char detail[NODE_DEVICE_DETAIL_MAX + 1];
    uint64_t jobs, jobs_failed;
    node_transport_stats_t tstats;
    int64_t next_idle_ms; /* the device's thread's own */
};

static const char *const s_health_names[] = {"ok", "warn", "error", "offline"};

const char *node_health_name(node_health_t health)
{
    return (int)health >= 0 && health <= NODE_HEALTH_OFFLINE ? s_health_names[health] : "error";
}

static bool s_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > NODE_DEVICE_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool s_key_known(node_device_t *self, const char *key)
{
    for (int i = 0; i < self->ndone; i++)
        if (strcmp(self->done[i], key) == 0)
            return true;
    for (int i = 0; i < self->count; i++)
        if (strcmp(self->queue[(self->head + i) % NODE_DEVICE_QUEUE_MAX].key, key) == 0)
            return true;
    return false;
}

static void s_remember(node_device_t *self, const char *key)
{
    if (!key[0])
        return;
    snprintf(self->done[self->next_done], NODE_DEVICE_KEY_MAX + 1, "%s", key);
    self->next_done = (self->next_done + 1) % S_DONE_KEYS;
    if (self->ndone < S_DONE_KEYS)
        self->ndone++;
}

static bool s_stopping(node_device_t *self)
{
    pthread_mutex_lock(&self->lock);
    bool stop = self->stop;
    pthread_mutex_unlock(&self->lock);
    return stop;
}

/*  Sleep up to ms, woken early by a stop or a new job. */
static void s_wait(node_device_t *self, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&self->lock);
    if (!self->stop)
        pthread_cond_timedwait(&self->wake, &self->lock, &until);
    pthread_mutex_unlock(&self->lock);
}

static void s_copy_stats(node_device_t *self)
{
    pthread_mutex_lock(&self->lock);
    self->tstats = *node_transport_stats(self->transport);
    pthread_mutex_unlock(&self->lock);
}

static void *s_run(void *arg)
{
    node_device_t *self = arg;
    int backoff = S_BACKOFF_MIN_MS;
    char why[NODE_DEVICE_DETAIL_MAX + 1];
    while (!s_stopping(self)) {
        if (!node_transport_is_open(self->transport)) {
            why[0] = '\0';
            int opened = node_transport_open(self->transport, 2000, why, sizeof(why));
            if (opened != 0 || self->driver->attach(self->state, self) != 0) {
                node_transport_close(self->transport);
                if (opened == 0)
                    snprintf(why, sizeof(why), "does not answer");
                node_device_set_health(self, NODE_HEALTH_OFFLINE, why);
                s_copy_stats(self);
                s_wait(self, backoff);
                backoff = backoff * 2 > S_BACKOFF_MAX_MS ? S_BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            backoff = S_BACKOFF_MIN_MS;
        }
        pthread_mutex_lock(&self->lock);
        node_job_t job = {0};
        bool have = self->count > 0;
        if (have)
            job = self->queue[self->head];
        pthread_mutex_unlock(&self->lock);
        if (!have) {
            int64_t now = bus_mono_ms();
            if (now >= self->next_idle_ms) {
                self->driver->idle(self->state, self);
                self->next_idle_ms = now + S_IDLE_MS;
            }
            s_copy_stats(self);
            if (self->driver->input && node_transport_is_open(self->transport)) {
                /* wait for input or a job, whichever comes first */
                struct pollfd p = {.fd = node_transport_fd(self->transport), .events = POLLIN};
                if (poll(&p, 1, S_INPUT_POLL_MS) > 0 && self->driver->input(self->state, self) < 0)
                    node_transport_close(self->transport);
            } else {
                s_wait(self, S_IDLE_MS);
            }
            continue;
        }
        int r = self->driver->run(self->state, self, &job);
        s_copy_stats(self);
        if (r == 0) {
            s_wait(self, S_RETRY_MS);
            continue;
        }
        pthread_mutex_lock(&self->lock);
        self->head = (self->head + 1) % NODE_DEVICE_QUEUE_MAX;
        self->count--;
        if (r > 0) {
            self->jobs++;
            s_remember(self, job.key);
        } else {
            self->jobs_failed++;
        }
        pthread_mutex_unlock(&self->lock);
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "key", job.key);
        bus_val_map_set_str(body, "verb", job.verb);
        bus_val_map_set_bool(body, "ok", r > 0);
        node_device_event(self, r > 0 ? "done" : "failed", &body);
        free(job.data);
    }
    return NULL;
}

node_device_t *node_device_start(const char *name, const node_driver_t *driver,
                                 const char *transport, const char *options,
                                 node_device_event_fn event, void *event_arg, char *why,
                                 size_t size)
{
    if (!s_name_ok(name)) {
        snprintf(why, size, "device name: 1-%d letters, digits, '_' or '-'", NODE_DEVICE_NAME_MAX);
        return NULL;
    }
    node_device_t *self = calloc(1, sizeof(*self));
    if (!self || !(self->done = calloc(S_DONE_KEYS, sizeof(*self->done)))) {
        free(self);
        snprintf(why, size, "out of memory");
        return NULL;
    }
    snprintf(self->name, sizeof(self->name), "%s", name);
    self->driver = driver;
    self->event = event;
    self->event_arg = event_arg;
    self->health = NODE_HEALTH_OFFLINE;
    snprintf(self->detail, sizeof(self->detail), "not opened yet");
    pthread_mutex_init(&self->lock, NULL);
    pthread_condattr_t attr; /* waits on the monotonic clock: a clock set back never stalls */
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&self->wake, &attr);
    pthread_condattr_destroy(&attr);
    char twhy[200];
    if (!(self->transport = node_transport_new(transport, twhy, sizeof(twhy)))) {
        snprintf(why, size, "device %s: %s", name, twhy);
        node_device_stop(&self);
        return NULL;
    }
    if (!(self->state = driver->create(options ? options : "", twhy, sizeof(twhy)))) {
        snprintf(why, size, "device %s (%s): %s", name, driver->name, twhy);
        node_device_stop(&self);
        return NULL;
    }
    if (pthread_create(&self->thread, NULL, s_run, self) != 0) {
        snprintf(why, size, "device %s: cannot start its thread", name);
        node_device_stop(&self);
        return NULL;
    }
    self->started = true;
    return self;
}

void node_device_stop(node_device_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_device_t *self = *self_p;
    if (self->started) {
        pthread_mutex_lock(&self->lock);
        self->stop = true;
        pthread_cond_broadcast(&self->wake);
        pthread_mutex_unlock(&self->lock);
        pthread_join(self->thread, NULL);
    }
    for (int i = 0; i < self->count; i++)
        free(self->queue[(self->head + i) % NODE_DEVICE_QUEUE_MAX].data);
    if (self->state)
        self->driver->destroy(self->state);
    node_transport_destroy(&self->transport);
    pthread_cond_destroy(&self->wake);
    pthread_mutex_destroy(&self->lock);
    free(self->done);
    free(self);
    *self_p = NULL;
}

static int s_submit(node_device_t *self, const char *key, const char *verb, const void *data,
                    size_t len, bool first);

int node_device_submit(node_device_t *self, const char *key, const char *verb, const void *data,
                       size_t len)
{
    return s_submit(self, key, verb, data, len, false);
}

int node_device_submit_first(node_device_t *self, const char *key, const char *verb,
                             const void *data, size_t len)
{
    return s_submit(self, key, verb, data, len, true);
}

static int s_submit(node_device_t *self, const char *key, const char *verb, const void *data,
                    size_t len, bool first)
{
    pthread_mutex_lock(&self->lock);
    int rc = 0;
    if (key && *key && s_key_known(self, key)) {
        rc = 1;
    } else if (self->count == NODE_DEVICE_QUEUE_MAX) {
        rc = -1;
    } else {
        /* first: ahead of the waiting jobs, but after the one running (it is at head) */
        int at = self->count;
        if (first && self->count > 1) {
            at = 1;
            for (int i = self->count; i > 1; i--)
                self->queue[(self->head + i) % NODE_DEVICE_QUEUE_MAX] =
                    self->queue[(self->head + i - 1) % NODE_DEVICE_QUEUE_MAX];
        }
        node_job_t *job = &self->queue[(self->head + at) % NODE_DEVICE_QUEUE_MAX];
        memset(job, 0, sizeof(*job));
        snprintf(job->key, sizeof(job->key), "%s", key ? key : "");
        snprintf(job->verb, sizeof(job->verb), "%s", verb ? verb : "");
        job->data = malloc(len ? len : 1);
        if (!job->data) {
            rc = -1;
        } else {
            if (len)
                memcpy(job->data, data, len);
            job->len = len;
            self->count++;
            pthread_cond_broadcast(&self->wake);
        }
    }
    pthread_mutex_unlock(&self->lock);
    return rc;
}

bus_val_t *node_device_health(node_device_t *self)
{
    bus_val_t *m = bus_val_new_map();
    pthread_mutex_lock(&self->lock);
    bus_val_map_set_str(m, "name", self->name);
    bus_val_map_set_str(m, "kind", self->driver->kind);
    bus_val_map_set_str(m, "health", node_health_name(self->health));
    bus_val_map_set_str(m, "detail", self->detail);
    pthread_mutex_unlock(&self->lock);
    return m;
}

bus_val_t *node_device_stats(node_device_t *self)
{
    bus_val_t *m = bus_val_new_map();
    pthread_mutex_lock(&self->lock);
    bus_val_map_set_str(m, "name", self->name);
    bus_val_map_set_str(m, "driver", self->driver->name);
    bus_val_map_set_int(m, "bytes_in", (int64_t)self->tstats.bytes_in);
    bus_val_map_set_int(m, "bytes_out", (int64_t)self->tstats.bytes_out);
    bus_val_map_set_int(m, "errors", (int64_t)self->tstats.errors);
    bus_val_map_set_int(m, "opens", (int64_t)self->tstats.opens);
    bus_val_map_set_int(m, "reconnects", (int64_t)self->tstats.reconnects);
    bus_val_map_set_int(m, "jobs", (int64_t)self->jobs);
    bus_val_map_set_int(m, "jobs_failed", (int64_t)self->jobs_failed);
    bus_val_map_set_int(m, "queued", self->count);
    bus_val_map_set_str(m, "transport", node_transport_spec(self->transport));
    pthread_mutex_unlock(&self->lock);
    return m;
}

const char *node_device_name(const node_device_t *self)
{
    return self->name;
}

node_transport_t *node_device_transport(node_device_t *self)
{
    return self->transport;
}

void node_device_set_health(node_device_t *self, node_health_t health, const char *detail)
{
    char text[NODE_DEVICE_DETAIL_MAX + 1];
    snprintf(text, sizeof(text), "%s", detail ? detail : "");
    pthread_mutex_lock(&self->lock);
    bool changed = self->health != health || strcmp(self->detail, text) != 0;
    self->health = health;
    snprintf(self->detail, sizeof(self->detail), "%s", text);
    pthread_mutex_unlock(&self->lock);
    if (!changed)
        return;
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "health", node_health_name(health));
    bus_val_map_set_str(body, "detail", text);
    node_device_event(self, "status", &body);
}

void node_device_event(node_device_t *self, const char *event, bus_val_t **body)
{
    if (self->event)
        self->event(self->event_arg, self->name, event, body);
    bus_val_destroy(body);
}

bool node_device_stopping(node_device_t *self)
{
    return s_stopping(self);
}

int node_device_option_int(const char *item, size_t len, const char *name, int min, int max,
                           int *out, char *why, size_t size)
{
    size_t n = strlen(name);
    char text[16];
    if (len <= n + 1 || len - n - 1 >= sizeof(text))
        goto out_bad;
    memcpy(text, item + n + 1, len - n - 1);
    text[len - n - 1] = '\0';
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || end == text || v < min || v > max)
        goto out_bad;
    *out = (int)v;
    return 0;
out_bad:
    snprintf(why, size, "option %s: a number from %d to %d", name, min, max);
    return -1;
}
