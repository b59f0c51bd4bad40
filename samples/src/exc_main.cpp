// exc_main.cpp - driver for the `exc` sample (scenario 11).
#include "exc.h"
#include "hf_out.h"

static void run_scenarios()
{
    static const int idx[] = {0, 3, 7, 8, 9, -2};
    for (int i : idx)
        HF_OUT("s11 checked_lookup(%d)=%d\n", i, checked_lookup(HF_IN(i)));
    static const int idx2[] = {2, 8};
    for (int i : idx2) {
        try {
            HF_OUT("s11 lookup_or_throw(%d)=%d\n", i, lookup_or_throw(HF_IN(i)));
        } catch (const RangeError &e) {
            HF_OUT("s11 lookup_or_throw(%d) threw %s (%d)\n", i, e.what(), e.value());
        }
    }
}

int main(int argc, char **argv)
{
    hf_out_init();
    if (!hf_serve(argc, argv, run_scenarios))
        run_scenarios();
    return 0;
}
