/* entry.c - the `entry` sample: scenarios 40-42, changed functions whose entry is hard to
 * redirect (see README.md for what each target compiles them to).
 *
 * 40: a 4-byte function (x64 `lea; ret`): too short for a 5-byte jump; the alignment fill after it
 *     takes the rest.
 * 41: a loop whose head is the function's entry (clang): its own code branches into the bytes a
 *     jump replaces, so it may be redirected only while no thread is inside it.
 * 42: a function ending in a short tail jump (`jmp rel8`) to a static neighbour: gcc and clang
 *     place the helper next to it. From the image the neighbour is out of reach. */
#include "hf.h"
#include "entry.h"

/* Static (a local symbol) so that the assembler may use a short jump to it; first in the file,
 * where gcc puts static functions anyway, so entry_level follows it closely. */
static HF_NOINLINE int entry_clamp(int x)
{
    return x < 0 ? 0 : x > 100 ? 100 : x;
}

/* ---- scenario 42 ------------------------------------------------------------------------ */
HF_API HF_NOINLINE int entry_level(int x)
{
#if HF_FIX == 42
    return entry_clamp(x - 10); /* the level scale starts at 10 */
#else
    return entry_clamp(x - 1);
#endif
}

/* ---- scenario 40 ------------------------------------------------------------------------ */
HF_API HF_NOINLINE unsigned entry_triple(unsigned x)
{
#if HF_FIX == 40
    return x > 0x55555555u ? 0xffffffffu : x * 3; /* saturates instead of wrapping */
#else
    return x * 3;
#endif
}

/* ---- scenario 41 ------------------------------------------------------------------------ */
/* The root of `i` in a parent-pointer forest written as letters (the parent of i is
 * parent[i] - 'a'). A cycle (bad input) hung the base; the fix gives up after 8 steps. */
HF_API HF_NOINLINE int entry_root(const char *parent, int i)
{
#if HF_FIX == 41
    for (int steps = 0; parent[i] - 'a' != i; ++steps) {
        if (steps == 8)
            return -1;
        i = parent[i] - 'a';
    }
    return i;
#else
    while (parent[i] - 'a' != i)
        i = parent[i] - 'a';
    return i;
#endif
}
