/*  =========================================================================
    log.c - levelled, one-line, optionally JSON logging

    A line is assembled in a stack buffer and written with a single write(2)
    on the stream's descriptor: atomic for lines up to PIPE_BUF on pipes and
    never interleaved mid-line with other threads' lines in practice. A
    message too long for the buffer is cut, never split over lines.
    =========================================================================
*/
#include <stdarg.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include "bus/log.h"

#define S_LINE_MAX    2048
#define S_MSG_MAX     1536
#define S_PROGRAM_MAX 64

static char s_program[S_PROGRAM_MAX] = "posbus";
static bus_log_level_t s_level = BUS_LOG_INFO;
static bool s_json;
static FILE *s_stream;

static const char *const s_names[] = {"error", "warn", "info", "debug"};
static const char *const s_upper[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void bus_log_init(const char *program, bus_log_level_t level, bool json)
{
    snprintf(s_program, sizeof(s_program), "%s", program ? program : "posbus");
    s_level = level;
    s_json = json;
}

void bus_log_set_stream(FILE *stream)
{
    s_stream = stream;
}

int bus_log_level_parse(const char *name, bus_log_level_t *level)
{
    for (int i = 0; name && i <= BUS_LOG_DEBUG; i++)
        if (strcmp(name, s_names[i]) == 0) {
            *level = (bus_log_level_t)i;
            return 0;
        }
    return -1;
}

bool bus_log_enabled(bus_log_level_t level)
{
    return level <= s_level;
}

/*  Length of the valid UTF-8 sequence at p (1..4), 0 if p does not start one (a stray
    continuation byte, an overlong form, a surrogate, past U+10FFFF, or cut short). */
static size_t s_utf8_len(const unsigned char *p)
{
    size_t n = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
    if (n == 0 || p[0] > 0xf4)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((n == 3 && p[0] == 0xe0 && p[1] < 0xa0) || (n == 3 && p[0] == 0xed && p[1] >= 0xa0) ||
        (n == 4 && p[0] == 0xf0 && p[1] < 0x90) || (n == 4 && p[0] == 0xf4 && p[1] >= 0x90))
        return 0;
    return n;
}

/*  Append text to line at *used as a JSON string body (no quotes), escaping as needed. Bytes
    that are not UTF-8 become U+FFFD and a character is never cut, so that every line parses as
    JSON whatever a message carries (names from the network, a cut message). */
static void s_json_escape(char *line, size_t *used, size_t cap, const char *text)
{
    static const char hex[] = "0123456789abcdef";
    for (const unsigned char *p = (const unsigned char *)text; *p && *used + 7 < cap; p++) {
        if (*p >= 0x80) {
            size_t n = s_utf8_len(p);
            if (n == 0) {
                memcpy(line + *used, "\\ufffd", 6);
                *used += 6;
            } else {
                memcpy(line + *used, p, n);
                *used += n;
                p += n - 1;
            }
        } else if (*p == '"' || *p == '\\') {
            line[(*used)++] = '\\';
            line[(*used)++] = (char)*p;
        } else if (*p < 0x20) {
            line[(*used)++] = '\\';
            line[(*used)++] = 'u';
            line[(*used)++] = '0';
            line[(*used)++] = '0';
            line[(*used)++] = hex[*p >> 4];
            line[(*used)++] = hex[*p & 0xf];
        } else
            line[(*used)++] = (char)*p;
    }
}

static void s_append(char *line, size_t *used, size_t cap, const char *text)
{
    size_t len = strlen(text);
    if (*used + len >= cap)
        len = cap - *used - 1;
    memcpy(line + *used, text, len);
    *used += len;
}

void bus_log_write(bus_log_level_t level, const char *event, const char *fmt, ...)
{
    if (!bus_log_enabled(level))
        return;
    char msg[S_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!s_json) /* keep one event on one line */
        for (char *p = msg; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';

    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[32];
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(tv.tv_usec / 1000));

    char line[S_LINE_MAX];
    size_t used = 0;
    char head[256];
    if (s_json) {
        snprintf(head, sizeof(head), "{\"ts\":\"%s\",\"prog\":\"", ts);
        s_append(line, &used, sizeof(line), head);
        s_json_escape(line, &used, sizeof(line), s_program);
        snprintf(head, sizeof(head), "\",\"pid\":%d,\"level\":\"%s\",\"event\":\"", (int)getpid(),
                 s_names[level]);
        s_append(line, &used, sizeof(line), head);
        s_json_escape(line, &used, sizeof(line), event);
        s_append(line, &used, sizeof(line), "\",\"msg\":\"");
        s_json_escape(line, &used, sizeof(line), msg);
        s_append(line, &used, sizeof(line), "\"}");
    } else {
        snprintf(head, sizeof(head), "%s %s[%d] %s %s: ", ts, s_program, (int)getpid(),
                 s_upper[level], event);
        s_append(line, &used, sizeof(line), head);
        s_append(line, &used, sizeof(line), msg);
    }
    line[used++] = '\n';
    FILE *stream = s_stream ? s_stream : stderr;
    fflush(stream);
    ssize_t rc = write(fileno(stream), line, used);
    (void)rc;
}
