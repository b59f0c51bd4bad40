/* hf_out.h - output helpers for the hosted sample drivers (not for PE DLLs).
 * Every line is flushed at once, and on Windows stdout is switched to binary
 * mode so lines end in "\n" on every target (no "\r\n"). */
#ifndef HF_SAMPLES_HF_OUT_H
#define HF_SAMPLES_HF_OUT_H
#include <stdio.h>
#if defined(_WIN32)
#include <fcntl.h>
#include <io.h>
#endif

static inline void hf_out_init(void)
{
#if defined(_WIN32)
    _setmode(_fileno(stdout), _O_BINARY);
#endif
}

#define HF_OUT(...)                                                            \
    do {                                                                       \
        printf(__VA_ARGS__);                                                   \
        fflush(stdout);                                                        \
    } while (0)

/* A zero the optimiser cannot see through, added to every driver input. */
static volatile int hf_opaque_zero;
#define HF_IN(x) ((x) + hf_opaque_zero)

#include "hf_serve.h"

#endif
