/*  test_text - character limits count characters, and malformed UTF-8 is refused */
#include <pos/text.h>
#include <string.h>
#include "testutil.h"

int main(void)
{
    char name[POS_TEXT_BYTES(POS_NAME_CHARS) + 8] = "";
    for (int i = 0; i < 33; i++)
        strcat(name, "\xe7\x89\x9b"); /* 牛, 3 bytes */
    CHECK(pos_text_chars(name, POS_NAME_CHARS) == 33, "33 Chinese characters (99 bytes) count 33");
    name[0] = '\0';
    for (int i = 0; i < POS_NAME_CHARS; i++)
        strcat(name, "\xe5\xa5\xb6"); /* 奶 */
    CHECK(pos_text_ok(name, POS_NAME_CHARS, true), "120 Chinese characters (360 bytes) accepted");
    strcat(name, "a");
    CHECK(!pos_text_ok(name, POS_NAME_CHARS, true), "121 characters refused");
    CHECK(pos_text_chars("\xf0\x9f\x8d\x9c noodles", 20) == 9, "4-byte character counts once");
    CHECK(pos_text_chars("caf\xc3\xa9", 4) == 4, "2-byte character counts once");
    static const char *bad[] = {"\xc0\xaf",         "\xe0\x80\xaf", "\xed\xa0\x80",
                                "\xf4\x90\x80\x80", "\xe7\x89",     "\x80",
                                "a\x01",            "tab\there",    "del\x7f",
                                "\xc2\x85"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(pos_text_chars(bad[i], 100) == -1, "malformed or control text %zu refused", i);
    CHECK(pos_text_ok("", 10, false) && !pos_text_ok("", 10, true) && !pos_text_ok(NULL, 10, true),
          "empty: fine when optional, refused when required");
    return FINISH("test_text");
}
