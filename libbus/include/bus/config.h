/*  =========================================================================
    bus/config.h - one option table per program

    Each program declares its options once (name, type, default, bounds,
    help) and may add shared tables (bus_conn_opts, bus_program_opts). Values
    are read, later winning, from:
      1. the table's defaults,
      2. a file given with --config FILE / -c FILE (or env POSBUS_CONFIG):
         `name = value` lines, '#' comments, optional quotes around values,
      3. the environment: POSBUS_<NAME>, upper case with '-' as '_',
      4. flags: --name value, --name=value; bool options also --name / --no-name.
    Every value is type- and bound-checked; an unknown name in a file or on
    the command line is an error with its file and line. Arguments that are
    not options are kept in order (posctl's commands), negative numbers
    ("-2") included; "--" ends options.
    =========================================================================
*/
#ifndef BUS_CONFIG_H_INCLUDED
#define BUS_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { BUS_OPT_STR, BUS_OPT_INT, BUS_OPT_BOOL } bus_opt_type_t;

typedef struct bus_opt {
    const char *name; /* "redis-port": --redis-port, POSBUS_REDIS_PORT, file key redis-port */
    bus_opt_type_t type;
    const char *def;  /* default as text; NULL = unset */
    int64_t min, max; /* bounds for BUS_OPT_INT; both 0 = unbounded */
    const char *help;
} bus_opt_t;
/* A table ends with an entry whose name is NULL. */

typedef struct bus_config bus_config_t;

bus_config_t *bus_config_new(const char *program, const bus_opt_t *table);
/* Add another table (shared options). -1 on a name already present or allocation failure. */
int bus_config_add(bus_config_t *self, const bus_opt_t *table);
void bus_config_destroy(bus_config_t **self_p);

/* Read file, environment and flags as above. 0 ok; 1 when --help/-h was given (the caller prints
   usage); -1 on an error, described by bus_config_error(). */
int bus_config_load(bus_config_t *self, int argc, char **argv);
const char *bus_config_error(bus_config_t *self);

/* Values. Asking for a name not in the tables is a programmer error (assert). */
const char *bus_config_str(bus_config_t *self, const char *name); /* NULL if unset */
int64_t bus_config_int(bus_config_t *self, const char *name);
bool bus_config_bool(bus_config_t *self, const char *name);
/* Where the value came from: "default", "file", "env", "flag" or "set". */
const char *bus_config_source(bus_config_t *self, const char *name);
/* Set a value programmatically, checked like any other. 0 or -1 (see error). */
int bus_config_set(bus_config_t *self, const char *name, const char *value);

/* Positional arguments. */
int bus_config_argc(bus_config_t *self);
const char *bus_config_arg(bus_config_t *self, int index);

/* Option list with defaults and help, for --help. */
void bus_config_usage(bus_config_t *self, FILE *out);
/* An annotated example configuration file: every option, help as comments, defaults
   commented out. */
void bus_config_write_example(bus_config_t *self, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
