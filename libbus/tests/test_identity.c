/*  test_identity - roles and names: what a certificate may carry, and the caller frame busd
    hands to services round-trips and refuses anything a forger could slip in */
#include <bus/identity.h>
#include "testutil.h"

static bool s_roundtrip(const bus_identity_t *id)
{
    char frame[BUS_ID_FRAME_MAX + 1];
    bus_identity_t back;
    size_t n = bus_identity_encode(id, frame, sizeof(frame));
    return n > 0 && bus_identity_decode(frame, n, &back) == 0 && back.role == id->role &&
           strcmp(back.name, id->name) == 0 && strcmp(back.store, id->store) == 0 &&
           strcmp(back.reg, id->reg) == 0;
}

static bool s_decodes(const char *frame)
{
    bus_identity_t id;
    return bus_identity_decode(frame, strlen(frame), &id) == 0;
}

int main(void)
{
    bus_identity_t id;
    char file[BUS_ID_FILE_MAX];

    CHECK(bus_identity_set(&id, BUS_ROLE_REGISTER, NULL, "S1", "R01") == 0, "a register");
    CHECK(strcmp(id.name, "S1.R01") == 0, "a register's name is <store>.<register>: %s", id.name);
    CHECK(s_roundtrip(&id), "a register's frame round-trips");
    bus_identity_file(&id, file, sizeof(file));
    CHECK(strcmp(file, "register-S1-R01") == 0, "register file name: %s", file);
    CHECK(bus_identity_set(&id, BUS_ROLE_SERVICE, "sales", NULL, NULL) == 0 && s_roundtrip(&id),
          "a service round-trips");
    bus_identity_file(&id, file, sizeof(file));
    CHECK(strcmp(file, "service-sales") == 0, "service file name: %s", file);
    CHECK(bus_identity_set(&id, BUS_ROLE_OPERATOR, "alice.w", NULL, NULL) == 0 && s_roundtrip(&id),
          "an operator round-trips");
    CHECK(bus_identity_set(&id, BUS_ROLE_CONSUMER, "bi-export", NULL, NULL) == 0 &&
              s_roundtrip(&id),
          "a consumer round-trips");

    CHECK(bus_identity_set(&id, BUS_ROLE_REGISTER, NULL, "S-1", "R01") != 0,
          "a store id with '-' is refused (it separates the file name)");
    CHECK(bus_identity_set(&id, BUS_ROLE_REGISTER, NULL, "S1", "R0123456789012345") != 0,
          "a register id of 17 bytes is refused");
    CHECK(bus_identity_set(&id, BUS_ROLE_SERVICE, "sa les", NULL, NULL) != 0,
          "a name with a space is refused (it would split the frame)");
    CHECK(bus_identity_set(&id, BUS_ROLE_SERVICE, ".hidden", NULL, NULL) != 0,
          "a name starting with '.' is refused");
    CHECK(bus_identity_set(&id, BUS_ROLE_NONE, "x", NULL, NULL) != 0, "no role is refused");

    CHECK(s_decodes("service sales"), "frame 'service sales'");
    CHECK(s_decodes("unchecked -"), "frame 'unchecked -'");
    CHECK(!s_decodes("service"), "frame without a name is refused");
    CHECK(!s_decodes("admin sales"), "frame with an unknown role is refused");
    CHECK(!s_decodes("register S2.R01 S1 R01"), "register frame whose name disagrees is refused");
    CHECK(!s_decodes("register S1.R01 S1"), "register frame without a register is refused");
    CHECK(!s_decodes("service sales extra"), "frame with an extra part is refused");
    CHECK(bus_identity_decode("service\0sales", 13, &id) != 0 && id.role == BUS_ROLE_NONE,
          "frame with a NUL is refused and leaves no role");

    CHECK(bus_role_parse("unchecked") == BUS_ROLE_NONE,
          "'unchecked' is never a role a certificate may claim");
    zcert_t *cert = zcert_new();
    const char *err = NULL;
    CHECK(bus_identity_from_cert(cert, &id, &err) != 0 && err, "a certificate without a role: %s",
          err ? err : "");
    bus_identity_set(&id, BUS_ROLE_REGISTER, NULL, "S9", "R9");
    bus_identity_to_cert(&id, cert);
    bus_identity_t read;
    CHECK(bus_identity_from_cert(cert, &read, &err) == 0 && read.role == BUS_ROLE_REGISTER &&
              strcmp(read.store, "S9") == 0 && strcmp(read.reg, "R9") == 0,
          "a register's certificate metadata reads back");
    zcert_destroy(&cert);
    cert = zcert_new();
    zcert_set_meta(cert, "name", "S1.R1"); /* zcert keeps the first value set for a name */
    bus_identity_to_cert(&id, cert);
    CHECK(bus_identity_from_cert(cert, &read, &err) != 0,
          "a register certificate whose name disagrees with store and register is refused");
    zcert_destroy(&cert);

    CHECK(bus_identity_set(&id, BUS_ROLE_CONSUMER, "bi", NULL, NULL) == 0 &&
              !bus_identity_may(&id, BUS_ROLE_OPERATOR) && bus_identity_may(&id, BUS_ROLES_ALL),
          "a consumer may what the mask allows, nothing else");
    CHECK(bus_identity_set(&id, BUS_ROLE_UNCHECKED, "-", NULL, NULL) != 0 ||
              bus_identity_may(&id, BUS_ROLE_OPERATOR),
          "unchecked passes every mask");
    return FINISH("test_identity");
}
