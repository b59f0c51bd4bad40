/* core.c - the `core` sample: one function (or pair) per scenario.
 * Built as an executable with core_main.c (ELF, mingw) or alone as a
 * freestanding DLL (pe-x64, pe-a64).  See samples/README.md for the table. */
#include "core.h"

#if defined(HF_EFI)
/* Scenario 10 in the EFI-style image (no imports, no exports): pe/efi.c parses. */
int hf_efi_strtoi(const char *s, int base);
#define HF_PARSE(s, base) hf_efi_strtoi((s), (base))
#elif defined(HF_PE_DLL)
/* Scenario 10 on PE: the import comes from our own tiny hfplat.dll (IAT). */
__declspec(dllimport) int hfplat_strtoi(const char *s, int base);
#define HF_PARSE(s, base) hfplat_strtoi((s), (base))
/* Scenario 20 on PE: an hfplat.dll export only fix20 imports. */
__declspec(dllimport) unsigned long long hfplat_strspn(const char *s, const char *accept);
#define HF_SPAN(s, accept) hfplat_strspn((s), (accept))
#else
#include <stdlib.h>
#include <string.h>
/* Scenario 10 on ELF / mingw: libc's strtol, called through the PLT / IAT. */
#define HF_PARSE(s, base) ((int)strtol((s), (char **)0, (base)))
/* Scenario 20 on ELF / mingw: libc's strspn, which only fix20 imports. */
#define HF_SPAN(s, accept) strspn((s), (accept))
#endif

/* ---- Scenario 1: bounds-check fix ------------------------------------
 * The table has TABLE_LEN valid entries plus one internal sentinel slot that
 * must never be returned.  The baseline's check is off by one. */
#define TABLE_LEN 16
const int g_table[TABLE_LEN + 1] = {
    3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3,
    999 /* sentinel, not part of the table */
};

HF_API HF_NOINLINE int table_get(int i)
{
#if HF_FIX == 1
    if (i < 0 || i >= TABLE_LEN)
        return -1;
#else
    if (i < 0 || i > TABLE_LEN)
        return -1;
#endif
    return g_table[i];
}

/* ---- Scenario 2: fix in a static inline helper -----------------------
 * clamp_level() is inlined into both callers; it has no symbol of its own.
 * The baseline forgets the lower bound. */
static inline int clamp_level(int v)
{
#if HF_FIX == 2
    if (v < 0)
        return 0;
#endif
    return v > 9 ? 9 : v;
}

HF_API HF_NOINLINE int volume_set(int v)
{
    return clamp_level(v) * 10;
}

HF_API HF_NOINLINE int volume_step(int cur, int delta)
{
    return clamp_level(cur + delta);
}

/* ---- Scenario 3: the fix calls a new helper --------------------------
 * The fixed checksum skips control characters through normalize_char(),
 * a function that only exists in the fix-3 build. */
#if HF_FIX == 3
HF_API HF_NOINLINE int normalize_char(int c)
{
    if (c < 0x20 || c == 0x7f)
        return 0;
    return c;
}
#endif

HF_API HF_NOINLINE int checksum_text(const char *s)
{
    unsigned h = 17;
    for (; *s; ++s) {
#if HF_FIX == 3
        h = h * 31u + (unsigned)normalize_char((unsigned char)*s);
#else
        h = h * 31u + (unsigned char)*s;
#endif
    }
    return (int)(h & 0x7fffffff);
}

/* ---- Scenario 4: changed string literal ------------------------------
 * A switch over literals: clang turns it into a table of 32-bit offsets from the table to the
 * strings in position-independent code, gcc and the PE builds into compares or pointers. */
HF_API HF_NOINLINE const char *status_text(int code)
{
    switch (code) {
    case 0: return "ok";
    case 1:
#if HF_FIX == 4
        return "warning: disk almost full";
#else
        return "warning: disk ful";
#endif
    case 2: return "error";
    case 3: return "busy";
    case 4: return "offline";
    default: return "unknown";
    }
}

/* ---- Scenario 5: new global variable ---------------------------------
 * g_total exists in the baseline; g_rejected is new in fix 5.  The fix
 * rejects negative samples and counts them. */
int g_total;
#if HF_FIX == 5
int g_rejected;
#endif

HF_API HF_NOINLINE int add_sample(int v)
{
#if HF_FIX == 5
    if (v < 0) {
        g_rejected++;
        return -g_rejected;
    }
#endif
    g_total += v;
    return g_total;
}

/* ---- Scenario 7: function shorter than a long jump --------------------
 * A few bytes on every target (x64 < 14, Arm64 < 16); verify.sh checks it. */
HF_API HF_NOINLINE int mask_flags(int x)
{
#if HF_FIX == 7
    return x & 0xff;
#else
    return x & 0x7f;
#endif
}

/* ---- Scenario 8: static local whose running value must be kept --------
 * The fix skips ticket numbers that are multiples of ten; the counter must
 * carry on from the baseline's value after a live patch. */
HF_API HF_NOINLINE int next_ticket(void)
{
    static int counter = 100;
    counter += 1;
#if HF_FIX == 8
    if (counter % 10 == 0)
        counter += 1;
#endif
    return counter;
}

/* ---- Scenario 9: switch compiled to a jump table ----------------------
 * Sixteen dense cases with different arithmetic, so no compiler can turn it
 * into a value lookup table, and enough cases for clang's AArch64 backend,
 * which wants at least 13 before it builds a jump table. */
HF_API HF_NOINLINE int op_apply(int op, int x)
{
    switch (op) {
    case 0:  return x + 1;
    case 1:  return x * 3;
    case 2:  return x ^ 0x55;
    case 3:  return x - 7;
    case 4:  return (int)((unsigned)x << 2);
    case 5:  return x * x;
#if HF_FIX == 9
    case 6:  return x > 0 ? x % 7 : 0;
#else
    case 6:  return x % 7;
#endif
    case 7:  return ~x;
    case 8:  return x | 0x100;
    case 9:  return x >> 1;
    case 10: return 100 - x;
    case 11: return x * 5 + 2;
    case 12: return x & 0x0f0f;
    case 13: return x + 1000;
    case 14: return x * 11 - 4;
    case 15: return (x ^ 0x3c) + 9;
    default: return -1;
    }
}

/* ---- Scenario 10: calls an imported function ------------------------
 * Parses a number and saturates it to 16 bits (the saturation also keeps the
 * import call a real call rather than a tail jump).  The fix lets the parser
 * auto-detect the base (accepts 0x.. hex and 0.. octal). */
HF_API HF_NOINLINE int parse_num(const char *s)
{
#if HF_FIX == 10
    int v = HF_PARSE(s, 0);
#else
    int v = HF_PARSE(s, 10);
#endif
    return v > 0xffff ? 0xffff : v;
}

/* ---- Scenario 12: thread-local variable ------------------------------
 * Initialised TLS (.tdata / .tls).  The fix accumulates absolute values. */
_Thread_local int tls_sum = 5;

HF_API HF_NOINLINE int tls_accumulate(int v)
{
#if HF_FIX == 12
    tls_sum += v < 0 ? -v : v;
#else
    tls_sum += v;
#endif
    return tls_sum;
}

/* ---- Scenario 13: a function grows, the next one moves ----------------
 * The fix adds handling of negative numbers to digit_count (never reached by
 * the driver, so the output is identical).  mix_hash() is byte-for-byte the
 * same in both builds but sits at a higher address in fix 13. */
HF_API HF_NOINLINE int digit_count(int x)
{
    int n = 1;
#if HF_FIX == 13
    if (x < 0) {
        if (x == -2147483647 - 1)
            return 11;
        x = -x;
        n = 2;
        if (x >= 1000000000)
            return 11;
    }
#endif
    while (x >= 10) {
        x /= 10;
        n++;
    }
    return n;
}

HF_API HF_NOINLINE int mix_hash(int x)
{
    unsigned h = (unsigned)x * 2654435761u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return (int)(h & 0xffff);
}

/* ---- Scenario 20: the fix calls a function the base does not import -----
 * The baseline counts at most 4 leading digits; the fix counts them all with
 * strspn (hfplat_strspn on PE), a new import. */
HF_API HF_NOINLINE int digit_span(const char *s)
{
#if HF_FIX == 20
    return (int)HF_SPAN(s, "0123456789");
#else
    int n = 0;
    while (n < 4 && s[n] >= '0' && s[n] <= '9')
        ++n;
    return n;
#endif
}
