/*  test_metrics_log - JSON log lines for collectors (issue #11's "logs as JSON lines"): whatever
    a message carries (bytes that are not UTF-8, control characters, a message cut at the line
    limit in the middle of a character), every line is valid UTF-8, escaped, one object */
#include <bus/log.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

#define S_LONG 5000 /* beyond the line limit */

/*  Is text valid UTF-8 (RFC 3629: no overlongs, surrogates or code points past U+10FFFF)? */
static bool s_utf8_valid(const unsigned char *p)
{
    while (*p) {
        size_t n = *p < 0x80                  ? 1
                   : *p >= 0xc2 && *p < 0xe0  ? 2
                   : *p >= 0xe0 && *p < 0xf0  ? 3
                   : *p >= 0xf0 && *p <= 0xf4 ? 4
                                              : 0;
        if (n == 0)
            return false;
        for (size_t i = 1; i < n; i++)
            if ((p[i] & 0xc0) != 0x80)
                return false;
        if ((n == 3 && p[0] == 0xe0 && p[1] < 0xa0) || (n == 3 && p[0] == 0xed && p[1] >= 0xa0) ||
            (n == 4 && p[0] == 0xf0 && p[1] < 0x90) || (n == 4 && p[0] == 0xf4 && p[1] >= 0x90))
            return false;
        p += n;
    }
    return true;
}

/*  No raw control character inside the line, and no '"' that is not escaped inside a string:
    the line is {"k":"v",...,"k":"v"} of plain strings and one integer. */
static bool s_json_shape(const char *line)
{
    size_t len = strlen(line);
    if (len < 3 || line[0] != '{' || strcmp(line + len - 2, "}\n") != 0)
        return false;
    bool in_string = false;
    for (size_t i = 1; i + 2 < len; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch < 0x20)
            return false;
        if (in_string && ch == '\\') {
            if (!strchr("\"\\/bfnrtu", line[i + 1]))
                return false;
            i++;
        } else if (ch == '"')
            in_string = !in_string;
    }
    return !in_string;
}

static char *s_capture(void (*emit)(void))
{
    FILE *f = tmpfile();
    bus_log_init("prog\xff", BUS_LOG_INFO, true);
    bus_log_set_stream(f);
    emit();
    fflush(f);
    rewind(f);
    char *text = calloc(1, 65536);
    size_t len = fread(text, 1, 65535, f);
    text[len] = '\0';
    fclose(f);
    bus_log_set_stream(NULL);
    return text;
}

static void s_emit_bad_bytes(void)
{
    /* a lone continuation byte, an overlong '/', a surrogate, a cut 3-byte character */
    bus_warn("t.bytes\x80", "a=\x80 b=\xc0\xaf c=\xed\xa0\x80 d=\xe6\x94 e=收 f=\x7f");
}

static void s_emit_long(void)
{
    static char msg[S_LONG + 1];
    for (size_t i = 0; i + 3 <= S_LONG; i += 3)
        memcpy(msg + i, "银", 3);
    msg[S_LONG] = '\0';
    bus_info("t.long", "%s", msg);
    memset(msg, '"', S_LONG);
    bus_info("t.quotes", "%s", msg);
}

int main(void)
{
    char *text = s_capture(s_emit_bad_bytes);
    CHECK(s_utf8_valid((unsigned char *)text), "bad bytes: the line is valid UTF-8:\n%s", text);
    CHECK(s_json_shape(text), "bad bytes: one escaped JSON object");
    CHECK(strstr(text, "a=\\ufffd b=\\ufffd\\ufffd c=\\ufffd\\ufffd\\ufffd d=\\ufffd\\ufffd "
                       "e=收 f=\x7f") &&
              strstr(text, "\"prog\":\"prog\\ufffd\"") && strstr(text, "\"t.bytes\\ufffd\""),
          "each byte that is not UTF-8 is U+FFFD, valid characters kept");
    free(text);

    text = s_capture(s_emit_long);
    char *second = strchr(text, '\n');
    CHECK(second && s_utf8_valid((unsigned char *)text), "a long message: valid UTF-8, not "
                                                         "cut inside a character");
    if (second) {
        char first[4096];
        size_t n = (size_t)(second - text) + 1;
        snprintf(first, sizeof(first), "%.*s", (int)n, text);
        CHECK(n < sizeof(first) && s_json_shape(first), "a long message: one closed object");
        CHECK(s_json_shape(second + 1) && strlen(second + 1) < 4096,
              "a message of quotes, cut: one closed object, no escape cut in half");
    }
    free(text);
    return FINISH("test_metrics_log");
}
