/* core.h - scenario functions of the `core` sample (scenarios 1-5, 7-10, 12, 13, 20). */
#ifndef HF_SAMPLES_CORE_H
#define HF_SAMPLES_CORE_H
#include "hf.h"

HF_API int table_get(int i);                      /* 1  bounds check            */
HF_API int volume_set(int v);                     /* 2  inlined helper, caller A */
HF_API int volume_step(int cur, int delta);       /* 2  inlined helper, caller B */
HF_API int checksum_text(const char *s);          /* 3  calls a new helper       */
HF_API const char *status_text(int code);         /* 4  string literal           */
HF_API int add_sample(int v);                     /* 5  new global               */
extern int g_total;                               /* 5  read by main too         */
HF_API int mask_flags(int x);                     /* 7  shorter than a long jump */
HF_API int next_ticket(void);                     /* 8  static local counter     */
HF_API int op_apply(int op, int x);               /* 9  jump table               */
HF_API int parse_num(const char *s);              /* 10 imported function        */
HF_API int tls_accumulate(int v);                 /* 12 thread-local variable    */
HF_API int digit_count(int x);                    /* 13 grows in fix 13          */
HF_API int mix_hash(int x);                       /* 13 unchanged, moves         */
HF_API int digit_span(const char *s);             /* 20 calls a new import       */

#endif
