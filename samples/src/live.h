/* live.h - API of the `live` sample (scenario 14). */
#ifndef HF_SAMPLES_LIVE_H
#define HF_SAMPLES_LIVE_H
#include "hf.h"
HF_API int live_score(int i);
#endif
