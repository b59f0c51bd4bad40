/* live.c - the `live` sample, scenario 14: the function that a long-running,
 * multi-threaded process calls in a loop, for live patching.
 * Fixed value = baseline value + 1000, for every input, so a test sees the
 * switch on the first call after the patch is applied. */
#include "live.h"

HF_API HF_NOINLINE int live_score(int i)
{
    int acc = 0;
    for (int k = 0; k <= (i & 7); ++k)
        acc += k * 3 + i;
#if HF_FIX == 14
    acc += 1000;
#endif
    return acc;
}
