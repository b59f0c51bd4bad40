/* entry_main.c - driver for the `entry` sample (scenarios 40-42). `entry spin` calls entry_root on
 * a cycle: the base never returns (a thread stays inside the function, for the loaders' tests);
 * a patched process prints "s41 spin done=-1" once the fix is in. */
#define _GNU_SOURCE 1 /* dl_iterate_phdr, for hf_serve.h */
#include "entry.h"
#include "hf_out.h"

#include <string.h>

static const char chain[] = "aabcdefghijk"; /* i -> i - 1 */
static const char cycle[] = "ba";           /* 0 -> 1 -> 0 */

static void run_scenarios(void)
{
    HF_OUT("s40 entry_triple(0x60000000)=0x%x\n", entry_triple(HF_IN(0x60000000u)));
    HF_OUT("s40 entry_triple(7)=%u\n", entry_triple(HF_IN(7u)));
    HF_OUT("s41 entry_root(chain,3)=%d\n", entry_root(chain, HF_IN(3)));
    HF_OUT("s41 entry_root(chain,11)=%d\n", entry_root(chain, HF_IN(11)));
    HF_OUT("s42 entry_level(5)=%d\n", entry_level(HF_IN(5)));
    HF_OUT("s42 entry_level(200)=%d\n", entry_level(HF_IN(200)));
}

int main(int argc, char **argv)
{
    hf_out_init();
    if (argc > 1 && strcmp(argv[1], "spin") == 0) {
        HF_OUT("s41 spin start\n");
        HF_OUT("s41 spin done=%d\n", entry_root(cycle, HF_IN(0)));
        return 0;
    }
    if (!hf_serve(argc, argv, run_scenarios))
        run_scenarios();
    return 0;
}
