/*  =========================================================================
    bus/log.h - one line per event

    Every posbus program logs through this module: a level checked before
    anything is formatted, the program name and pid on every line, a constant
    dotted event name to grep for ("redis.reconnect"), then details as
    key=value text. Text lines for people, JSON lines (--log-json) for log
    collectors. Each line is written with one write(2) so lines from several
    threads never interleave. Secrets are never passed to the logger.
    =========================================================================
*/
#ifndef BUS_LOG_H_INCLUDED
#define BUS_LOG_H_INCLUDED

#include <stdbool.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { BUS_LOG_ERROR = 0, BUS_LOG_WARN, BUS_LOG_INFO, BUS_LOG_DEBUG } bus_log_level_t;

/* Process-wide setup; before it, the program name is "posbus" and the level info. */
void bus_log_init(const char *program, bus_log_level_t level, bool json);
/* Send lines to stream instead of stderr (tests). */
void bus_log_set_stream(FILE *stream);
/* "error", "warn", "info", "debug" -> level; -1 for anything else. */
int bus_log_level_parse(const char *name, bus_log_level_t *level);
bool bus_log_enabled(bus_log_level_t level);
void bus_log_write(bus_log_level_t level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define bus_error(...)                                                                             \
    do {                                                                                           \
        if (bus_log_enabled(BUS_LOG_ERROR))                                                        \
            bus_log_write(BUS_LOG_ERROR, __VA_ARGS__);                                             \
    } while (0)
#define bus_warn(...)                                                                              \
    do {                                                                                           \
        if (bus_log_enabled(BUS_LOG_WARN))                                                         \
            bus_log_write(BUS_LOG_WARN, __VA_ARGS__);                                              \
    } while (0)
#define bus_info(...)                                                                              \
    do {                                                                                           \
        if (bus_log_enabled(BUS_LOG_INFO))                                                         \
            bus_log_write(BUS_LOG_INFO, __VA_ARGS__);                                              \
    } while (0)
#define bus_debug(...)                                                                             \
    do {                                                                                           \
        if (bus_log_enabled(BUS_LOG_DEBUG))                                                        \
            bus_log_write(BUS_LOG_DEBUG, __VA_ARGS__);                                             \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
