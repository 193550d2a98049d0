/*  =========================================================================
    bus/bus.h - everything a posbus program needs from libbus, in one include
    =========================================================================
*/
#ifndef BUS_BUS_H_INCLUDED
#define BUS_BUS_H_INCLUDED

#include <czmq.h>
#include <inttypes.h>

#include "bus/val.h"
#include "bus/msg.h"
#include "bus/stats.h"
#include "bus/log.h"
#include "bus/config.h"
#include "bus/curve.h"
#include "bus/conn.h"
#include "bus/proto.h"
#include "bus/pubsub.h"
#include "bus/client.h"
#include "bus/service.h"
#include "bus/redis.h"
#include "bus/program.h"
#include "bus/stream.h"
#include "bus/keys.h"
#include "bus/identity.h"

#endif
