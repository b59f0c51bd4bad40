/* upd_main.c - driver for the `upd` sample (scenarios 30-33, 50, 51). */
#define _GNU_SOURCE 1 /* dl_iterate_phdr, for hf_serve.h */
#include "upd.h"
#include "hf_out.h"

static void run_scenarios(void)
{
    HF_OUT("s30 upd_scale(-2)=%d\n", upd_scale(HF_IN(-2)));
    HF_OUT("s30 upd_percent(1,4)=%d\n", upd_percent(HF_IN(1), HF_IN(4)));
    HF_OUT("s30 upd_percent(1,0)=%d\n", upd_percent(HF_IN(1), HF_IN(0)));
    HF_OUT("s30 upd_error_count()=%d\n", upd_error_count());
    struct upd_session *s = upd_session_new(HF_IN(7));
    upd_session_feed(s, HF_IN(5));
    upd_session_feed(s, HF_IN(-3));
    HF_OUT("s31 upd_session_total()=%d\n", upd_session_total(s));
    HF_OUT("s31 upd_session_state()=%d\n", upd_session_state(s));
    HF_OUT("s32 upd_mode(4)=%d\n", upd_mode(HF_IN(4)));
    HF_OUT("s33 upd_digits(\"12_345\")=%d\n", upd_digits("12_345"));
    HF_OUT("s33 upd_parse_dec(\"41\")=%d\n", upd_parse_dec("41"));
    HF_OUT("s33 upd_parse_hex(\"ff\")=%d\n", upd_parse_hex("ff"));
    HF_OUT("s50 upd_level_name(0)=%s\n", upd_level_name(HF_IN(0)));
    HF_OUT("s50 upd_level_name(2)=%s\n", upd_level_name(HF_IN(2)));
    HF_OUT("s50 upd_apply_op(1,5)=%d\n", upd_apply_op(HF_IN(1), HF_IN(5)));
    HF_OUT("s50 upd_apply_op(2,3)=%d\n", upd_apply_op(HF_IN(2), HF_IN(3)));
    HF_OUT("s51 upd_dispatch(0,4)=%d\n", upd_dispatch(HF_IN(0), HF_IN(4)));
    HF_OUT("s51 upd_dispatch(2,0)=%d\n", upd_dispatch(HF_IN(2), HF_IN(0)));
    HF_OUT("s51 upd_dispatch(2,7)=%d\n", upd_dispatch(HF_IN(2), HF_IN(7)));
    HF_OUT("s52 upd_weight(2)=%d\n", upd_weight(HF_IN(2)));
    HF_OUT("s52 upd_band_limit(0)=%d\n", upd_band_limit(HF_IN(0)));
    HF_OUT("s52 upd_band_limit(2)=%d\n", upd_band_limit(HF_IN(2)));
}

int main(int argc, char **argv)
{
    hf_out_init();
    if (!hf_serve(argc, argv, run_scenarios))
        run_scenarios();
    return 0;
}
