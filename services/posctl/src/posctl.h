/*  posctl internals shared by its command files. */
#ifndef POSCTL_H_INCLUDED
#define POSCTL_H_INCLUDED

#include <bus/bus.h>

#define POSCTL_EXIT_OK    0
#define POSCTL_EXIT_FAIL  1
#define POSCTL_EXIT_USAGE 2

/* A client from the loaded configuration (timeout-ms, retries); NULL after printing why. */
bus_client_t *posctl_client(bus_config_t *config, const bus_conn_cfg_t *cfg);
/* Send a request and print the error on failure; the reply or NULL. */
bus_msg_t *posctl_call(bus_client_t *client, const char *service, const char *method,
                       bus_val_t **body_p);
/* Print a reply body as JSON, or as table/csv when flat enough. */
void posctl_print(const bus_val_t *body, const char *format);
/* Print one CSV cell to stdout, quoted when needed, then a comma or (last) a newline. */
void posctl_print_csv_cell(const char *text, bool last);

int posctl_store(bus_config_t *config, const bus_conn_cfg_t *cfg);
int posctl_catalog(bus_config_t *config, const bus_conn_cfg_t *cfg);
int posctl_stock(bus_config_t *config, const bus_conn_cfg_t *cfg);
int posctl_report(bus_config_t *config, const bus_conn_cfg_t *cfg);
int posctl_sim(bus_config_t *config, const bus_conn_cfg_t *cfg);
int posctl_dead(bus_config_t *config, const bus_conn_cfg_t *cfg);
int posctl_tail_from(bus_config_t *config, const bus_conn_cfg_t *cfg, const char *prefix,
                     const char *from);

/* Options of these commands, added to posctl's table. */
extern const bus_opt_t posctl_retail_opts[];

#endif
