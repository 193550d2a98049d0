/*  =========================================================================
    pos/tradeno.h - a payment intent's id as Alipay's out_trade_no

    posbus's intent ids are <sale_id>-<attempt> (letters, digits, '_' and
    '-', at most 32 bytes); WeChat Pay takes them as they are, but Alipay's
    out_trade_no allows only letters, digits and '_' (at most 64). So Alipay
    is given a wire form, and reconciliation turns its statement's
    out_trade_no back into the intent id.

    The wire form keeps letters and digits and makes every '_' the start of
    a pair: '-' becomes "__" and '_' becomes "_u" (S1-R01-000001-1 is
    S1__R01__000001__1). Mapping '-' to a lone '_' and '_' to "__" would be
    shorter but ambiguous: "_-" and "-_" would both be "___", and store and
    register ids may hold '_'. Every character takes at most two, so an id
    of 32 bytes is at most 64 on the wire.
    =========================================================================
*/
#ifndef POS_TRADENO_H_INCLUDED
#define POS_TRADENO_H_INCLUDED

#include <stddef.h>

#include <pos/money.h>

#ifdef __cplusplus
extern "C" {
#endif

#define POS_ALIPAY_NO_MAX 64 /* bytes of Alipay's out_trade_no */

/*  id's wire form into out (size bytes, POS_ALIPAY_NO_MAX + 1 always suffices for an id of at
    most 32). POS_OK; POS_ESYNTAX when id is empty or holds anything but letters, digits, '_'
    and '-'; POS_ELENGTH when the wire form is longer than POS_ALIPAY_NO_MAX or than out holds.
    out is "" on error. */
pos_err_t pos_tradeno_alipay(const char *id, char *out, size_t size);

/*  The id whose wire form is wire, into out (size bytes; the id is never longer than wire).
    POS_OK; POS_ESYNTAX when wire is empty, holds anything but letters, digits and '_', or has a
    '_' not followed by '_' or 'u' (no wire form of any id: another system's trade);
    POS_ELENGTH when out is too small. out is "" on error. */
pos_err_t pos_tradeno_from_alipay(const char *wire, char *out, size_t size);

#ifdef __cplusplus
}
#endif

#endif
