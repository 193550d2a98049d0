/*  test_log - one line per event, levels checked before formatting, JSON escaping */
#include <bus/log.h>
#include <stdlib.h>
#include <string.h>
#include "testutil.h"

static int s_formatted;

static const char *s_counted(void)
{
    s_formatted++;
    return "x";
}

static char *s_capture(bus_log_level_t level, bool json, void (*emit)(void))
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = tmpfile();
    bus_log_init("testprog", level, json);
    bus_log_set_stream(f);
    emit();
    fflush(f);
    rewind(f);
    text = calloc(1, 8192);
    len = fread(text, 1, 8191, f);
    text[len] = '\0';
    fclose(f);
    bus_log_set_stream(NULL);
    return text;
}

static void s_emit_levels(void)
{
    bus_error("t.error", "code=%d", 1);
    bus_warn("t.warn", "w");
    bus_info("t.info", "multi\nline");
    bus_debug("t.debug", "%s", s_counted());
}

static void s_emit_json(void)
{
    bus_info("t.json", "quote=\" back=\\ nl=\n ctl=\x01 utf8=收银机");
}

int main(void)
{
    bus_log_level_t level;
    CHECK(bus_log_level_parse("warn", &level) == 0 && level == BUS_LOG_WARN, "parse warn");
    CHECK(bus_log_level_parse("loud", &level) == -1, "unknown level refused");

    char *text = s_capture(BUS_LOG_INFO, false, s_emit_levels);
    int lines = 0;
    for (char *p = text; *p; p++)
        lines += *p == '\n';
    CHECK(lines == 3, "info level: error, warn and info lines, no debug (%d lines)", lines);
    CHECK(s_formatted == 0, "a disabled level formats nothing");
    CHECK(strstr(text, "testprog[") && strstr(text, "ERROR t.error: code=1") &&
              strstr(text, "INFO t.info: multi line"),
          "text lines carry program, pid, level, event; newlines folded:\n%s", text);
    free(text);

    text = s_capture(BUS_LOG_DEBUG, false, s_emit_levels);
    CHECK(s_formatted == 1 && strstr(text, "DEBUG t.debug: x"), "debug level formats debug");
    free(text);

    text = s_capture(BUS_LOG_INFO, true, s_emit_json);
    CHECK(strstr(text, "\"prog\":\"testprog\"") && strstr(text, "\"level\":\"info\"") &&
              strstr(text, "\"event\":\"t.json\"") &&
              strstr(text, "quote=\\\" back=\\\\ nl=\\u000a ctl=\\u0001 utf8=收银机") &&
              strchr(text, '\n') == text + strlen(text) - 1,
          "JSON line escaped and on one line:\n%s", text);
    free(text);
    return FINISH("test_log");
}
