/*  fuzz_msg - libFuzzer target for the envelope decoder.

    fuzz-sources: libbus/src/val.c libbus/src/msg.c
    fuzz-libs: msgpack libcrypto

    Build and run with scripts/fuzz.sh [--time SECONDS] fuzz_msg (clang, libclang-rt-14-dev);
    seeds in tests/fuzz/corpus/fuzz_msg/ (tests/fuzz/corpus/make_msg_csv_seeds.py writes them).

    Property: decoding never crashes or reads out of bounds, and an accepted envelope re-encodes
    to bytes that decode to an equal envelope (every header field and the body).
    */
#include <bus/msg.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bus_codec_stats_t stats = {0};
    bus_msg_t *msg = bus_msg_decode(data, size, NULL, &stats, NULL);
    if (!msg)
        return 0;
    bus_buf_t buf = {0};
    if (bus_msg_encode(msg, &buf) != 0)
        abort();
    bus_msg_t *again = bus_msg_decode(buf.data, buf.len, NULL, NULL, NULL);
    if (!again || !bus_val_equal(bus_msg_body(msg), bus_msg_body(again)) ||
        strcmp(bus_msg_type(msg), bus_msg_type(again)) != 0 ||
        strcmp(bus_msg_id(msg), bus_msg_id(again)) != 0 ||
        strcmp(bus_msg_src(msg), bus_msg_src(again)) != 0 ||
        bus_msg_seq(msg) != bus_msg_seq(again) || bus_msg_ts(msg) != bus_msg_ts(again))
        abort();
    bus_msg_destroy(&again);
    bus_msg_destroy(&msg);
    bus_buf_free(&buf);
    return 0;
}
