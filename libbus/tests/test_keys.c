/*  test_keys - every Redis key builder gives its documented pattern, and docs/data.md lists each */
#include <bus/keys.h>
#include <stdlib.h>
#include "testutil.h"

int main(void)
{
    const char *src = getenv("POSBUS_SRC");
    char path[1024];
    snprintf(path, sizeof(path), "%s/docs/data.md", src ? src : ".");
    int failed = bus_keys_test(path, true);
    CHECK(failed == 0, "%d key patterns wrong or undocumented", failed);
    return FINISH("test_keys");
}
