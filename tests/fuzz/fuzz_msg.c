/*  fuzz_msg - libFuzzer target for the envelope decoder (not built by CMake).

    Build and run from the repository root (needs clang and libclang-rt-14-dev):
      clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Ilibbus/include \
        tests/fuzz/fuzz_msg.c libbus/src/val.c libbus/src/msg.c \
        $(pkg-config --cflags --libs msgpack libcrypto) -o build/fuzz_msg
      build/fuzz_msg -max_total_time=60

    Property: decoding never crashes or reads out of bounds, and an accepted envelope re-encodes
    to bytes that decode to an equal envelope.
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
        bus_msg_seq(msg) != bus_msg_seq(again))
        abort();
    bus_msg_destroy(&again);
    bus_msg_destroy(&msg);
    bus_buf_free(&buf);
    return 0;
}
