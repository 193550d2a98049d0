/*  =========================================================================
    drivers.h - the device drivers posnode knows, by name

    One line per driver in drivers.c; each driver lives in its own folder
    (devices/drivers/<driver>/) and is a node_driver_t (node/device.h).
    =========================================================================
*/
#ifndef DRIVERS_H_INCLUDED
#define DRIVERS_H_INCLUDED

#include <node/device.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Every driver, NULL-terminated. */
extern const node_driver_t *const drivers_all[];

/*  The driver named name ("escpos"), or NULL. */
const node_driver_t *drivers_find(const char *name);

#ifdef __cplusplus
}
#endif
#endif
