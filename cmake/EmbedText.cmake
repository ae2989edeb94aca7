# cmake -DIN=FILE -DOUT=FILE.cpp -DNAME=ns::function -P EmbedText.cmake
# Writes a C++ file whose function NAME() returns the bytes of IN as a std::string.
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
string(REGEX MATCH "^(.*)::([^:]+)$" _ "${NAME}")
set(ns "${CMAKE_MATCH_1}")
set(fn "${CMAKE_MATCH_2}")
file(WRITE "${OUT}" "// Generated from ${IN} by cmake/EmbedText.cmake.\n#include <string>\nnamespace ${ns} {\nnamespace {\nconst char kBytes[] = {${bytes}};\n}\nconst std::string& ${fn}() {\n  static const std::string s(kBytes, sizeof kBytes);\n  return s;\n}\n}\n")
