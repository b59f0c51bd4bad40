/* upd.c - the `upd` sample: scenarios 30-33, 50 and 51, shapes real security updates have.
 *
 * 30: an edit above a function moves its __LINE__ (only the line number passed to the error
 *     reporter differs): a line-number-only change, left out of the patch by default.
 * 31: a struct gains a field in the middle: every field after it moves, so code that did not
 *     change reads other offsets, and the allocation grows. Objects that exist already have the
 *     old layout: needs a restart.
 * 32: an old helper is replaced by a new exported setter of the same structure: the two must
 *     not be paired (a patch would redirect the old helper into unrelated code).
 * 33: PE: the import is called without dllimport, so the linker puts `jmp [IAT]` thunks into
 *     .text; a fix that grows .text moves them, which is no change of their callers.
 * 50: fixes that look up new read-only tables of pointers (to string literals, to existing and
 *     to new functions): the copied tables need a fixup per pointer.
 * 51: the fixed function is a callback that nothing calls directly: only a table of handlers
 *     points at it (as vtables and ops structs do). Stripped, nothing but that table's slot
 *     tells which base function it replaces.
 * 52: a fix that looks up a new read-only table placed right after an existing one: gcc Arm64
 *     reaches both through one section anchor, the new one at an offset from the old one's
 *     address after indexing it in a register. */
#include "hf.h"
#include "upd.h"

#if defined(HF_PE_DLL)
int hfplat_strtoi(const char *s, int base); /* no dllimport: called through a linker thunk */
#define UPD_PARSE(s, base) hfplat_strtoi((s), (base))
#else
#include <stdlib.h>
#define UPD_PARSE(s, base) ((int)strtol((s), (char **)0, (base)))
#endif

/* The error reporter: file and line of the last error, as assert-like macros pass them. Not
 * static: gcc reaches statics through a section anchor, whose layout other scenarios change. */
const char *g_error_file;
int g_error_line, g_error_count;

HF_API HF_NOINLINE void upd_report(const char *file, int line, const char *what)
{
    g_error_file = file;
    g_error_line = line + (what != 0);
    ++g_error_count;
}
#define UPD_FAIL(what) upd_report(__FILE__, __LINE__, (what))

HF_API HF_NOINLINE int upd_error_count(void)
{
    return g_error_count + (g_error_file != 0 && g_error_line < 0);
}

/* ---- scenario 30 ------------------------------------------------------------------------ */
HF_API HF_NOINLINE int upd_scale(int v)
{
#if HF_FIX == 30
    if (v < 0) {
        UPD_FAIL("negative scale");
        return 0;
    }
#endif
    if (v > 1000000) { /* long enough to be redirected on every target */
        UPD_FAIL("scale too large");
        return -1;
    }
    return v * 3;
}

/* ---- scenario 31 ------------------------------------------------------------------------ */
struct upd_session {
    int id;
#if HF_FIX == 31
    int rejected; /* the new field, in the middle */
#endif
    int state;
    int total;
};

#if defined(HF_PE_DLL)
struct upd_session g_session_pool[4];
int g_session_used;
#define UPD_ALLOC_SESSION() (g_session_used < 4 ? &g_session_pool[g_session_used++] : 0)
#else
#define UPD_ALLOC_SESSION() ((struct upd_session *)calloc(1, sizeof(struct upd_session)))
#endif

HF_API HF_NOINLINE struct upd_session *upd_session_new(int id)
{
    struct upd_session *s = UPD_ALLOC_SESSION();
    if (s)
        s->id = id;
    return s;
}

HF_API HF_NOINLINE void upd_session_feed(struct upd_session *s, int n)
{
#if HF_FIX == 31
    if (n < 0) {
        ++s->rejected;
        return;
    }
#endif
    s->state = s->state + 1;
    s->total += n;
}

HF_API HF_NOINLINE int upd_session_total(const struct upd_session *s)
{
    return s->state > 0 ? s->total : -1;
}

HF_API HF_NOINLINE int upd_session_state(const struct upd_session *s)
{
    return s->state * 10 + s->total;
}

/* ---- scenario 32 ------------------------------------------------------------------------ */
int g_mode_a, g_mode_b;

#if HF_FIX == 32
HF_API HF_NOINLINE int upd_set_mode(int v)
{
    g_mode_b = v + 2;
    return g_mode_a;
}
#else
HF_API HF_NOINLINE int upd_legacy_mode(int v)
{
    g_mode_a = v + 1;
    return g_mode_b;
}
#endif

HF_API HF_NOINLINE int upd_mode(int v)
{
#if HF_FIX == 32
    int r = upd_set_mode(v) + g_mode_b;
#else
    int r = upd_legacy_mode(v) + g_mode_a;
#endif
    g_mode_a = g_mode_b = 0; /* every call starts from the same state, patched or not */
    return r;
}

/* ---- scenario 33 ------------------------------------------------------------------------ */
HF_API HF_NOINLINE int upd_digits(const char *s)
{
    int n = 0;
    for (; *s; ++s) {
#if HF_FIX == 33
        if (*s == '_' || *s == '\'')
            continue; /* digit separators are no digits, but do not end the number */
#endif
        if (*s < '0' || *s > '9')
            break;
        ++n;
    }
    return n;
}

HF_API HF_NOINLINE int upd_parse_dec(const char *s)
{
    return UPD_PARSE(s, 10) + 1;
}

HF_API HF_NOINLINE int upd_parse_hex(const char *s)
{
    return UPD_PARSE(s, 16) * 2;
}

/* ---- scenario 30, continued: the fix's edit above moves this function's lines ----------- */
#if HF_FIX == 30
#line 4000
#endif
HF_API HF_NOINLINE int upd_percent(int part, int whole)
{
    if (whole <= 0) {
        UPD_FAIL("percent of nothing");
        return -1;
    }
    return part * 100 / whole;
}

/* ---- scenario 50 ------------------------------------------------------------------------ */
HF_API HF_NOINLINE int upd_op_double(int v)
{
    return v * 2;
}

HF_API HF_NOINLINE int upd_op_negate(int v)
{
    return -v;
}

#if HF_FIX == 50
HF_API HF_NOINLINE int upd_op_cube(int v)
{
    return v * v * v;
}

/* One object: gcc reaches two tables through one section anchor, clang turns a table of string
 * pointers into offsets from itself; a copy of one object carries neither (samples/README.md). */
static const struct { const char *name; int (*op)(int); } upd_levels[] = {
    {"quiet", upd_op_double}, {"normal", upd_op_negate}, {"verbose", upd_op_cube}};
#endif

HF_API HF_NOINLINE const char *upd_level_name(int level)
{
#if HF_FIX == 50
    if (level < 0 || level >= 3)
        return "unknown";
    return upd_levels[level].name;
#else
    return level == 0 ? "quiet" : "unknown";
#endif
}

HF_API HF_NOINLINE int upd_apply_op(int op, int v)
{
#if HF_FIX == 50
    if (op < 0 || op >= 3)
        return -1;
    return upd_levels[op].op(v);
#else
    if (op == 0)
        return upd_op_double(v);
    return op == 1 ? upd_op_negate(v) : -1;
#endif
}

/* ---- scenario 51 ------------------------------------------------------------------------ */
HF_API HF_NOINLINE int upd_on_open(int v)
{
    return v > 100 ? 100 : v + 1;
}

HF_API HF_NOINLINE int upd_on_data(int v)
{
    return v > 100 ? 200 : v * 2;
}

/* The fix's store to this counter keeps any compiler from turning its branch into a select,
 * which would leave the handler's shape as it was. Every variant has it, as a common symbol:
 * gcc lays out the globals it reaches through a section anchor in the order it first uses them,
 * and the linker places common ones after those, so the fix moves no other variable. */
__attribute__((common)) int upd_empty_closes;

HF_API HF_NOINLINE int upd_on_close(int v)
{
#if HF_FIX == 51
    if (v <= 0) { /* the fix: an empty stream closes at 0, not at -1, and is counted */
        ++upd_empty_closes;
        return 0;
    }
#endif
    return v > 100 ? 99 : v - 1;
}

/* Reached only through this table, writable as C ops tables often are (.data, with ELF RELATIVE or
 * PE DIR64 relocations). Global, so no compiler proves it constant, and alone in its
 * section: next to scenario 50's table, gcc Arm64 would reach both through one section anchor,
 * and lld relaxes ADRP+ADD into NOP+ADR only for an address at no offset from its section. */
int (*upd_handlers[])(int) = {upd_on_open, upd_on_data, upd_on_close};

HF_API HF_NOINLINE int upd_dispatch(int event, int v)
{
    if (event < 0 || event >= 3)
        return -1;
    return upd_handlers[event](v);
}

/* ---- scenario 52 ------------------------------------------------------------------------ */
/* Read-only and unchanged in every variant. Static, so gcc Arm64 reaches it through the
 * translation unit's .rodata section anchor, of which it is the first object. Its last byte is
 * not zero: an unnamed constant's extent leaves out zeros before an aligned neighbour, and the
 * neighbour differs between variants (docs/differ.md). */
static const short upd_weights[] = {3, 5, 7, -11};

HF_API HF_NOINLINE int upd_weight(int i)
{
    return i < 0 || i >= 4 ? 0 : upd_weights[i];
}

#if HF_FIX == 52
/* Laid out after upd_weights in the same anchor block: gcc forms &upd_weights, adds the index
 * in a register and loads at +10, the offset of upd_bands[0].hi from the anchor. */
static const struct { short lo, hi; } upd_bands[] = {{0, 9}, {10, 99}, {100, 999}};
#endif

HF_API HF_NOINLINE int upd_band_limit(int band)
{
#if HF_FIX == 52
    if (band < 0 || band >= 3)
        return -1;
    return upd_bands[band].hi;
#else
    return band == 0 ? 9 : -1;
#endif
}
