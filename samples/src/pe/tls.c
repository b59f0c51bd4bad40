/* tls.c - hand-made static TLS support for the freestanding PE DLLs.
 *
 * clang compiles `_Thread_local` for *-windows-msvc into `.tls$` data reached
 * through `_tls_index` and the TEB's ThreadLocalStoragePointer.  Normally the
 * MSVC CRT supplies the TLS directory; without a CRT we define it here:
 * `.tls` sorts before the compiler's `.tls$` and `.tls$ZZZ` after it, so
 * [_tls_start, _tls_end) brackets the TLS template, and lld-link points the
 * TLS data directory at `_tls_used`. */
typedef unsigned int hf_u32;

typedef void (*hf_tls_callback)(void *module, hf_u32 reason, void *reserved);

struct hf_tls_directory64 {
    const void *StartAddressOfRawData;
    const void *EndAddressOfRawData;
    hf_u32 *AddressOfIndex;
    const hf_tls_callback *AddressOfCallBacks;
    hf_u32 SizeOfZeroFill;
    hf_u32 Characteristics;
};

_Static_assert(sizeof(struct hf_tls_directory64) == 0x28, "IMAGE_TLS_DIRECTORY64 size");

hf_u32 _tls_index;

__attribute__((section(".tls"))) char _tls_start = 0;
__attribute__((section(".tls$ZZZ"))) char _tls_end = 0;

/* No TLS callbacks: a null-terminated empty list. */
static const hf_tls_callback hf_tls_callbacks[1] = {0};

const struct hf_tls_directory64 _tls_used = {
    &_tls_start, &_tls_end, &_tls_index, hf_tls_callbacks, 0, 0,
};
