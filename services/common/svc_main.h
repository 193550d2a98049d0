/*  svc_main.h - what every back-office service's main() does first, in one place. */
#ifndef SVC_MAIN_H_INCLUDED
#define SVC_MAIN_H_INCLUDED

#include <bus/bus.h>

/* Build the option table (own options + connection + Redis + logging), load file, environment
   and flags, answer --help and --example-config, set up logging and signal handling. Returns the
   loaded configuration, or NULL when main should return *exit_code (0 after --help or
   --example-config, 2 after printing a configuration error). */
bus_config_t *svc_config_load(const char *program, const bus_opt_t *own, int argc, char **argv,
                              int *exit_code);

#endif
