/* core_main.c - driver for the `core` sample: prints what every scenario
 * function computes, one line each, prefixed with the scenario number.
 * This file has no HF_FIX conditionals: it is the same in every variant. */
#define _GNU_SOURCE 1 /* dl_iterate_phdr, for hf_serve.h */
#include "core.h"
#include "hf_out.h"

static void run_scenarios(void)
{

    /* 1: bounds check */
    static const int idx[] = {0, 7, 15, 16, 17, -1};
    for (unsigned k = 0; k < sizeof idx / sizeof idx[0]; ++k)
        HF_OUT("s1 table_get(%d)=%d\n", idx[k], table_get(HF_IN(idx[k])));

    /* 2: inlined helper, both callers */
    HF_OUT("s2 volume_set(-3)=%d\n", volume_set(HF_IN(-3)));
    HF_OUT("s2 volume_set(5)=%d\n", volume_set(HF_IN(5)));
    HF_OUT("s2 volume_set(12)=%d\n", volume_set(HF_IN(12)));
    HF_OUT("s2 volume_step(5,-9)=%d\n", volume_step(HF_IN(5), HF_IN(-9)));
    HF_OUT("s2 volume_step(5,2)=%d\n", volume_step(HF_IN(5), HF_IN(2)));

    /* 3: new helper */
    HF_OUT("s3 checksum_text(\"abc\")=%d\n", checksum_text("abc"));
    HF_OUT("s3 checksum_text(\"a\\tb\\n\")=%d\n", checksum_text("a\tb\n"));

    /* 4: string literal */
    for (int c = 0; c < 6; ++c)
        HF_OUT("s4 status_text(%d)=\"%s\"\n", c, status_text(HF_IN(c)));

    /* 5: new global */
    static const int samples[] = {5, -3, 4, -1, 10};
    for (unsigned k = 0; k < sizeof samples / sizeof samples[0]; ++k)
        HF_OUT("s5 add_sample(%d)=%d\n", samples[k], add_sample(HF_IN(samples[k])));
    /* Read by unpatched code: a patch that kept its own g_total would leave this one at 0. */
    HF_OUT("s5 g_total=%d\n", g_total);

    /* 7: short function */
    HF_OUT("s7 mask_flags(0x1f3)=0x%x\n", mask_flags(HF_IN(0x1f3)));
    HF_OUT("s7 mask_flags(0x42)=0x%x\n", mask_flags(HF_IN(0x42)));

    /* 8: static local counter */
    for (int k = 0; k < 12; ++k)
        HF_OUT("s8 next_ticket()=%d\n", next_ticket());

    /* 9: jump table */
    for (int op = -1; op <= 16; ++op)
        HF_OUT("s9 op_apply(%d,-10)=%d\n", op, op_apply(HF_IN(op), HF_IN(-10)));
    HF_OUT("s9 op_apply(6,20)=%d\n", op_apply(HF_IN(6), HF_IN(20)));

    /* 10: imported function */
    HF_OUT("s10 parse_num(\"42\")=%d\n", parse_num("42"));
    HF_OUT("s10 parse_num(\"0x1f\")=%d\n", parse_num("0x1f"));
    HF_OUT("s10 parse_num(\"017\")=%d\n", parse_num("017"));

    /* 12: thread-local variable */
    static const int tv[] = {3, -4, 10};
    for (unsigned k = 0; k < sizeof tv / sizeof tv[0]; ++k)
        HF_OUT("s12 tls_accumulate(%d)=%d\n", tv[k], tls_accumulate(HF_IN(tv[k])));

    /* 13: grown function and moved neighbour (same output in fix 13) */
    HF_OUT("s13 digit_count(7)=%d\n", digit_count(HF_IN(7)));
    HF_OUT("s13 digit_count(12345)=%d\n", digit_count(HF_IN(12345)));
    HF_OUT("s13 mix_hash(1)=%d\n", mix_hash(HF_IN(1)));
    HF_OUT("s13 mix_hash(4242)=%d\n", mix_hash(HF_IN(4242)));
    HF_OUT("s20 digit_span(\"1234567x\")=%d\n", digit_span("1234567x"));
}

int main(int argc, char **argv)
{
    hf_out_init();
    if (!hf_serve(argc, argv, run_scenarios))
        run_scenarios();
    return 0;
}
