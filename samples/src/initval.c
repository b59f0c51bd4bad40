/* initval.c - the `initval` sample, scenario 6: the fix changes the initial
 * value of an existing initialised global.  No function changes; the patch
 * must be refused ("needs restart"): a running process already holds the
 * old value and may have changed it. */
#include "hf.h"
#include "initval.h"

#if HF_FIX == 6
int g_limit = 20;
#else
int g_limit = 10;
#endif

HF_API HF_NOINLINE int over_limit(int v)
{
    return v > g_limit;
}

HF_API HF_NOINLINE int limit_value(void)
{
    return g_limit;
}
