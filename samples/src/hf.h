/* hf.h - shared macros for the Hotforge sample programs.
 *
 * Every sample is compiled once without HF_FIX (the baseline) and once per
 * scenario N with -DHF_FIX=N.  A source guards each fix with `#if HF_FIX == N`
 * so that a patched build differs from the baseline by exactly one scenario.
 *
 * HF_PE_DLL is defined by build.sh for the freestanding clang/lld-link PE
 * targets (pe-x64, pe-a64): no libc there, scenario functions are exported.
 * HF_EFI (with HF_PE_DLL) builds the EFI-style image of the nounwind variant:
 * nothing exported, nothing imported.
 */
#ifndef HF_SAMPLES_HF_H
#define HF_SAMPLES_HF_H

#ifndef HF_FIX
#define HF_FIX 0
#endif

/* Keep scenario functions out of line.  On gcc, `noipa` also stops cloning
 * (.constprop/.isra), identical-code folding and interprocedural register
 * allocation, so a change in one function never leaks into its callers'
 * code.  clang does no IPRA by default; `noinline` is enough there. */
#if defined(__clang__)
#define HF_NOINLINE __attribute__((noinline))
#elif defined(__GNUC__)
#define HF_NOINLINE __attribute__((noinline, noipa))
#else
#define HF_NOINLINE
#endif

#if defined(HF_PE_DLL) && !defined(HF_EFI)
#define HF_API __declspec(dllexport)
#else
#define HF_API
#endif

#ifdef __cplusplus
#define HF_EXTERN_C extern "C"
#else
#define HF_EXTERN_C
#endif

#endif /* HF_SAMPLES_HF_H */
