/* efi.c - entry point of the EFI-style PE image in the nounwind variant
 * (samples/build.sh): an application linked with /subsystem:efi_application,
 * without .pdata, exports or imports, as EFI applications converted from ELF
 * are.  Function discovery must find core.c's functions from this entry
 * alone.  Never run. */
#include "../core.h"

int hf_efi_strtoi(const char *s, int base)
{
    int value = 0, sign = 1;
    if (*s == '-') { sign = -1; ++s; }
    for (; *s >= '0' && *s <= '9'; ++s) value = value * base + (*s - '0');
    return sign * value;
}

/* A tail call: compiled to a jump into mix_hash, which must stay a function of
 * its own, not part of this one. */
HF_NOINLINE int efi_rehash(int x)
{
    return mix_hash(x + 1);
}

unsigned long long efi_main(void *image, void *system_table)
{
    volatile int sink = (int)(unsigned long long)image;
    (void)system_table;
    sink += table_get(sink) + volume_set(sink) + volume_step(sink, 2) + checksum_text("efi");
    sink += add_sample(sink) + mask_flags(sink) + next_ticket() + op_apply(sink, 3);
    sink += parse_num("42") + tls_accumulate(sink) + digit_count(sink) + efi_rehash(sink);
    sink += status_text(sink)[0];
    return (unsigned long long)sink;
}
