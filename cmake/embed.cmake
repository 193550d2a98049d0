# Turn a text file (a Lua script) into a C header holding it as a NUL-terminated char array,
# so services carry their scripts inside the binary while the scripts stay readable .lua files.
# Usage at build time: cmake -DIN=file.lua -DOUT=file.h -DNAME=symbol -P embed.cmake
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes ${hex})
file(WRITE ${OUT} "/* generated from ${IN}; do not edit */\nstatic const char ${NAME}[] = {${bytes}0x00};\n")
