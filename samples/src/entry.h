/* entry.h - scenario functions of the `entry` sample (scenarios 40-42): entries that are hard to
 * redirect. */
#ifndef HF_SAMPLES_ENTRY_H
#define HF_SAMPLES_ENTRY_H
#include "hf.h"

HF_API int entry_level(int x);                     /* 42 tail-calls a static neighbour (jmp rel8) */
HF_API unsigned entry_triple(unsigned x);          /* 40 4 bytes on x64: lea; ret                 */
HF_API int entry_root(const char *parent, int i);  /* 41 clang: its loop's head is the entry      */

#endif
