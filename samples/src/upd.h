/* upd.h - scenario functions of the `upd` sample (scenarios 30-33, 50, 51): what real security updates
 * look like to the differ. */
#ifndef HF_SAMPLES_UPD_H
#define HF_SAMPLES_UPD_H
#include "hf.h"

struct upd_session;

HF_API void upd_report(const char *file, int line, const char *what); /* 30 the error reporter */
HF_API int upd_error_count(void);                          /* 30 the error reporter's count    */
HF_API int upd_scale(int v);                               /* 30 the real fix                   */
HF_API int upd_percent(int part, int whole);               /* 30 only its __LINE__ changes      */
HF_API struct upd_session *upd_session_new(int id);        /* 31 allocates the growing struct   */
HF_API void upd_session_feed(struct upd_session *s, int n);/* 31 uses the new field             */
HF_API int upd_session_total(const struct upd_session *s); /* 31 fields after the new one move  */
HF_API int upd_session_state(const struct upd_session *s); /* 31 as above                       */
HF_API int upd_mode(int v);                                /* 32 calls the old helper / new setter */
HF_API int upd_digits(const char *s);                      /* 33 grows; the import thunks move  */
HF_API int upd_parse_dec(const char *s);                   /* 33 calls the import, unchanged    */
HF_API int upd_parse_hex(const char *s);                   /* 33 calls the import, unchanged    */
HF_API int upd_op_double(int v);                           /* 50 an existing table entry        */
HF_API int upd_op_negate(int v);                           /* 50 an existing table entry        */
HF_API const char *upd_level_name(int level);              /* 50 a new table of strings         */
HF_API int upd_apply_op(int op, int v);                    /* 50 a new table of functions       */
HF_API int upd_on_open(int v);                             /* 51 a handler, unchanged           */
HF_API int upd_on_data(int v);                             /* 51 a handler, unchanged           */
HF_API int upd_on_close(int v);                            /* 51 the fixed handler, no callers  */
HF_API int upd_dispatch(int event, int v);                 /* 51 calls through the table        */
HF_API int upd_weight(int i);                              /* 52 reads the existing table       */
HF_API int upd_band_limit(int band);                       /* 52 reads the new table            */

#endif
