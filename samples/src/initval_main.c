/* initval_main.c - driver for the `initval` sample (scenario 6). */
#define _GNU_SOURCE 1 /* dl_iterate_phdr, for hf_serve.h */
#include "initval.h"
#include "hf_out.h"

static void run_scenarios(void)
{
    HF_OUT("s6 limit_value()=%d\n", limit_value());
    static const int v[] = {5, 15, 25};
    for (unsigned k = 0; k < sizeof v / sizeof v[0]; ++k)
        HF_OUT("s6 over_limit(%d)=%d\n", v[k], over_limit(HF_IN(v[k])));
}

int main(int argc, char **argv)
{
    hf_out_init();
    if (!hf_serve(argc, argv, run_scenarios))
        run_scenarios();
    return 0;
}
