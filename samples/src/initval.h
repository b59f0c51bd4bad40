/* initval.h - API of the `initval` sample (scenario 6). */
#ifndef HF_SAMPLES_INITVAL_H
#define HF_SAMPLES_INITVAL_H
#include "hf.h"
extern int g_limit;
HF_API int over_limit(int v);
HF_API int limit_value(void);
#endif
