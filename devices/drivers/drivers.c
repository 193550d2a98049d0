/*  =========================================================================
    drivers.c - the device drivers posnode knows, by name
    =========================================================================
*/
#include <string.h>

#include "canteen.h"
#include "display.h"
#include "drivers.h"
#include "escpos.h"
#include "scanner.h"
#include "toledo8217.h"
#include "zvt.h"

const node_driver_t *const drivers_all[] = {
    &escpos_printer_driver,
    &serial_scanner_driver,
    &vfd_driver,
    &led_price_driver,
    &toledo8217_driver,
    &zvt_driver,
    &canteen_driver,
    NULL,
};

const node_driver_t *drivers_find(const char *name)
{
    for (int i = 0; name && drivers_all[i]; i++)
        if (strcmp(drivers_all[i]->name, name) == 0)
            return drivers_all[i];
    return NULL;
}
