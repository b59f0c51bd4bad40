// exc.cpp - the `exc` sample, scenario 11: a C++ function that throws and
// catches.  The fix corrects an off-by-one in the range test, which moves
// the throw site and changes the function's unwind / LSDA data.
#include "exc.h"

#define VALUES_LEN 8
extern const int kValues[VALUES_LEN + 1];
const int kValues[VALUES_LEN + 1] = {10, 20, 30, 40, 50, 60, 70, 80,
                                     -999 /* sentinel, never valid */};

const char *RangeError::what() const noexcept { return "index out of range"; }

HF_NOINLINE int checked_lookup(int i)
{
    try {
#if HF_FIX == 11
        if (i < 0 || i >= VALUES_LEN)
            throw RangeError(i);
#else
        if (i < 0 || i > VALUES_LEN)
            throw RangeError(i);
#endif
        return kValues[i];
    } catch (const RangeError &e) {
        return -100 - e.value();
    }
}

HF_NOINLINE int lookup_or_throw(int i)
{
    if (i < 0 || i >= VALUES_LEN)
        throw RangeError(i);
    return kValues[i];
}
