/*  =========================================================================
    program.c - shared main() plumbing: logging options, stop flag
    =========================================================================
*/
#include <czmq.h>
#include <signal.h>
#include "bus/program.h"
#include "bus/log.h"

const bus_opt_t bus_program_opts[] = {
    {"log-level", BUS_OPT_STR, "info", 0, 0, "error, warn, info or debug"},
    {"log-json", BUS_OPT_BOOL, "false", 0, 0, "log JSON lines instead of text"},
    {"example-config", BUS_OPT_BOOL, "false", 0, 0,
     "print an annotated example configuration file and exit"},
    {NULL, 0, NULL, 0, 0, NULL}};

static volatile sig_atomic_t s_stop;

int bus_program_log_init(bus_config_t *config, const char *program)
{
    bus_log_level_t level;
    if (bus_log_level_parse(bus_config_str(config, "log-level"), &level) != 0)
        return -1;
    bus_log_init(program, level, bus_config_bool(config, "log-json"));
    return 0;
}

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

void bus_program_signals(void)
{
    zsys_handler_set(NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

bool bus_program_stopping(void)
{
    return s_stop != 0;
}

void bus_program_stop(void)
{
    s_stop = 1;
}
