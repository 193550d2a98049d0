/*  =========================================================================
    bus/program.h - what every posbus program's main() does the same way

    Logging options shared by all programs, and signal handling that only
    sets a flag: SIGTERM and SIGINT ask the program to drain and stop.
    czmq's own handler is switched off so that the flag is the one truth.
    =========================================================================
*/
#ifndef BUS_PROGRAM_H_INCLUDED
#define BUS_PROGRAM_H_INCLUDED

#include <stdbool.h>
#include "bus/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* log-level (error|warn|info|debug), log-json, example-config. */
extern const bus_opt_t bus_program_opts[];

/* Set up logging from a loaded configuration that includes bus_program_opts. -1 on a bad level. */
int bus_program_log_init(bus_config_t *config, const char *program);

/* Install SIGTERM/SIGINT handlers that set the stop flag (and ignore SIGPIPE). */
void bus_program_signals(void);
bool bus_program_stopping(void);
/* Ask the program to stop (tests, fatal conditions). */
void bus_program_stop(void);

#ifdef __cplusplus
}
#endif
#endif
