// The C++ tests' check: a failed condition is printed with its place and counted; main returns non-zero if any.
#pragma once

#include <cstdio>

static int failures = 0;

#define EXPECT(cond, what)                                           \
  do {                                                               \
    if (!(cond)) {                                                   \
      std::printf("FAIL: %s (%s:%d)\n", what, __FILE__, __LINE__);   \
      ++failures;                                                    \
    }                                                                \
  } while (0)
