/*  =========================================================================
    tax.c - tax inside tax-inclusive amounts

    Tax is computed per line and summed, not computed on the sum: each line
    on the receipt then shows a tax that the per-rate totals add up to, and
    a return of one line reverses exactly the tax that line carried.
    =========================================================================
*/
#include <string.h>
#include "pos/tax.h"

pos_err_t pos_tax_included(int64_t gross, int rate_bp, int64_t *tax)
{
    if (rate_bp < 0 || rate_bp > POS_BP_100PCT)
        return POS_ERANGE;
    return pos_muldiv(gross, rate_bp, POS_BP_100PCT + rate_bp, tax);
}

void pos_tax_summary_init(pos_tax_summary_t *summary)
{
    memset(summary, 0, sizeof(*summary));
}

pos_err_t pos_tax_summary_add(pos_tax_summary_t *summary, int rate_bp, int64_t gross, int64_t tax)
{
    int i = 0;
    while (i < summary->count && summary->rows[i].rate_bp < rate_bp)
        i++;
    if (i == summary->count || summary->rows[i].rate_bp != rate_bp) {
        if (summary->count == POS_TAX_RATES_MAX)
            return POS_ELIMIT;
        memmove(&summary->rows[i + 1], &summary->rows[i],
                (size_t)(summary->count - i) * sizeof(summary->rows[0]));
        memset(&summary->rows[i], 0, sizeof(summary->rows[0]));
        summary->rows[i].rate_bp = rate_bp;
        summary->count++;
    }
    pos_tax_row_t *row = &summary->rows[i];
    if (pos_add(row->gross, gross, &row->gross) != POS_OK ||
        pos_add(row->tax, tax, &row->tax) != POS_OK)
        return POS_EOVERFLOW;
    row->net = row->gross - row->tax;
    return POS_OK;
}
