/*  =========================================================================
    pos/tax.h - tax-inclusive prices, tax per line, summary by rate

    Prices in China are tax-inclusive (含税价). The tax inside a line amount
    g at rate r basis points is round(g * r / (10000 + r)), half away from
    zero, per line. The summary groups lines by rate; its gross column is
    the sum of line amounts, so it adds up exactly to the ticket total, and
    net = gross - tax on every row.
    =========================================================================
*/
#ifndef POS_TAX_H_INCLUDED
#define POS_TAX_H_INCLUDED

#include "pos/money.h"

#ifdef __cplusplus
extern "C" {
#endif

#define POS_BP_100PCT     10000 /* basis points in 100% */
#define POS_TAX_RATES_MAX 16

/* Tax contained in a tax-inclusive amount. rate_bp must be 0..POS_BP_100PCT. */
pos_err_t pos_tax_included(int64_t gross, int rate_bp, int64_t *tax);

typedef struct {
    int rate_bp;
    int64_t gross, tax, net;
} pos_tax_row_t;

typedef struct {
    pos_tax_row_t rows[POS_TAX_RATES_MAX]; /* ascending rate */
    int count;
} pos_tax_summary_t;

void pos_tax_summary_init(pos_tax_summary_t *summary);
/* Add one line (its amount and tax). POS_ELIMIT past POS_TAX_RATES_MAX rates. */
pos_err_t pos_tax_summary_add(pos_tax_summary_t *summary, int rate_bp, int64_t gross, int64_t tax);

#ifdef __cplusplus
}
#endif
#endif
