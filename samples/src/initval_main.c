/* initval_main.c - driver for the `initval` sample (scenario 6). */
#include "initval.h"
#include "hf_out.h"

int main(void)
{
    hf_out_init();
    HF_OUT("s6 limit_value()=%d\n", limit_value());
    static const int v[] = {5, 15, 25};
    for (unsigned k = 0; k < sizeof v / sizeof v[0]; ++k)
        HF_OUT("s6 over_limit(%d)=%d\n", v[k], over_limit(HF_IN(v[k])));
    return 0;
}
