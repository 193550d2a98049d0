/*  test_config - option tables from defaults, file, environment and flags */
#include <bus/config.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "testutil.h"

static const bus_opt_t s_table[] = {{"name", BUS_OPT_STR, "posbus", 0, 0, "a name"},
                                    {"port", BUS_OPT_INT, "5560", 1, 65535, "a port"},
                                    {"verbose", BUS_OPT_BOOL, "false", 0, 0, "talk more"},
                                    {"secret-file", BUS_OPT_STR, NULL, 0, 0, "where the secret is"},
                                    {NULL, 0, NULL, 0, 0, NULL}};
static const bus_opt_t s_shared[] = {{"hwm", BUS_OPT_INT, "100", 0, 0, "high-water mark"},
                                     {NULL, 0, NULL, 0, 0, NULL}};

static int s_load(bus_config_t *c, int argc, const char **argv)
{
    return bus_config_load(c, argc, (char **)argv);
}

int main(void)
{
    char dir[] = "/tmp/posbus-test-config-XXXXXX";
    if (!mkdtemp(dir))
        return 2;
    char file[256];
    snprintf(file, sizeof(file), "%s/test.conf", dir);
    FILE *f = fopen(file, "w");
    fprintf(f, "# comment\n\nname = \"from file\"\nport=6000\nverbose = yes\n");
    fclose(f);
    unsetenv("POSBUS_CONFIG");

    bus_config_t *c = bus_config_new("test", s_table);
    CHECK(bus_config_add(c, s_shared) == 0, "shared table added");
    CHECK(bus_config_add(c, s_shared) != 0, "a table added twice is refused");
    const char *none[] = {"prog"};
    CHECK(s_load(c, 1, none) == 0, "defaults load");
    CHECK(strcmp(bus_config_str(c, "name"), "posbus") == 0 && bus_config_int(c, "port") == 5560 &&
              !bus_config_bool(c, "verbose") && bus_config_str(c, "secret-file") == NULL &&
              strcmp(bus_config_source(c, "port"), "default") == 0,
          "defaults and unset options");
    bus_config_destroy(&c);

    c = bus_config_new("test", s_table);
    setenv("POSBUS_PORT", "7000", 1);
    const char *argv1[] = {"prog", "--config", file, "--name=flag",
                           "ping", "-2",       "--", "--not-option"};
    CHECK(s_load(c, 8, argv1) == 0, "file + env + flags load: %s", bus_config_error(c));
    CHECK(strcmp(bus_config_str(c, "name"), "flag") == 0 &&
              strcmp(bus_config_source(c, "name"), "flag") == 0,
          "flag beats file");
    CHECK(bus_config_int(c, "port") == 7000 && strcmp(bus_config_source(c, "port"), "env") == 0,
          "environment beats file");
    CHECK(bus_config_bool(c, "verbose") && strcmp(bus_config_source(c, "verbose"), "file") == 0,
          "file beats default (yes = true)");
    CHECK(bus_config_argc(c) == 3 && strcmp(bus_config_arg(c, 0), "ping") == 0 &&
              strcmp(bus_config_arg(c, 1), "-2") == 0 &&
              strcmp(bus_config_arg(c, 2), "--not-option") == 0,
          "positional arguments kept, a negative number too; -- ends options");
    bus_config_destroy(&c);
    unsetenv("POSBUS_PORT");

    c = bus_config_new("test", s_table);
    const char *argv2[] = {"prog", "--port", "70000"};
    CHECK(s_load(c, 3, argv2) == -1 && strstr(bus_config_error(c), "between"),
          "out of bounds refused: %s", bus_config_error(c));
    bus_config_destroy(&c);

    c = bus_config_new("test", s_table);
    const char *argv3[] = {"prog", "--port", "12x"};
    CHECK(s_load(c, 3, argv3) == -1, "not an integer refused: %s", bus_config_error(c));
    bus_config_destroy(&c);

    c = bus_config_new("test", s_table);
    const char *argv4[] = {"prog", "--nope"};
    CHECK(s_load(c, 2, argv4) == -1 && strstr(bus_config_error(c), "unknown option"),
          "unknown flag refused: %s", bus_config_error(c));
    bus_config_destroy(&c);

    c = bus_config_new("test", s_table);
    const char *argv5[] = {"prog", "--verbose", "--no-verbose", "--port"};
    CHECK(s_load(c, 4, argv5) == -1 && strstr(bus_config_error(c), "needs a value"),
          "missing value refused: %s", bus_config_error(c));
    bus_config_destroy(&c);

    c = bus_config_new("test", s_table);
    const char *argv6[] = {"prog", "--verbose", "--no-verbose"};
    CHECK(s_load(c, 3, argv6) == 0 && !bus_config_bool(c, "verbose"), "--no-name sets false");
    bus_config_destroy(&c);

    f = fopen(file, "w");
    fprintf(f, "name = ok\nbogus = 1\n");
    fclose(f);
    c = bus_config_new("test", s_table);
    const char *argv7[] = {"prog", "-c", file};
    CHECK(s_load(c, 3, argv7) == -1 && strstr(bus_config_error(c), "test.conf:2"),
          "unknown key in a file names file and line: %s", bus_config_error(c));
    bus_config_destroy(&c);

    c = bus_config_new("test", s_table);
    setenv("POSBUS_VERBOSE", "maybe", 1);
    CHECK(s_load(c, 1, none) == -1 && strstr(bus_config_error(c), "POSBUS_VERBOSE"),
          "bad environment value names the variable: %s", bus_config_error(c));
    unsetenv("POSBUS_VERBOSE");
    bus_config_destroy(&c);

    c = bus_config_new("test", s_table);
    const char *argv8[] = {"prog", "--help"};
    CHECK(s_load(c, 2, argv8) == 1, "--help returns 1");
    CHECK(bus_config_set(c, "port", "1") == 0 && bus_config_int(c, "port") == 1 &&
              bus_config_set(c, "port", "0") == -1,
          "set is checked like any other source");
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    bus_config_write_example(c, mem);
    fclose(mem);
    CHECK(strstr(text, "# port = 5560") && strstr(text, "# a port (int, 1..65535)"),
          "example file has every option, its help and default");
    free(text);
    bus_config_destroy(&c);

    unlink(file);
    rmdir(dir);
    return FINISH("test_config");
}
