/* reallib-harness LIBRARY.so lzma|tiff|archive
 *
 * Drives a real Debian library in a loop for the live tests on real security updates
 * (tests/reallib_test.cpp): it loads the library given by path (dlopen, so the same program runs
 * on the baseline and on the patched build), then reads one input per stdin line and prints one
 * line per input: the result code, the output size and an FNV-1a checksum of the output. An
 * empty line is answered with "hf-round-end", so a test can send a batch and read until then.
 * Single-threaded (qemu-user cannot run threads here). A crash inside the library (SIGSEGV,
 * SIGBUS) is caught and printed as the result of that input; the process goes on.
 *
 * The -dev headers of the versions under test are not used: the few prototypes and constants
 * the harness needs are declared below from the libraries' public, stable ABI.
 *
 * Inputs, by mode:
 *   lzma     PATH [PATH...]   decodes each file with lzma_auto_decoder, one after another on the
 *                             same lzma_stream (a reused stream is what the update fixes), with an
 *                             allocator that refuses blocks over 256 MiB
 *   tiff     PATH [abgr]      reads every strip or tile of every directory; `abgr` asks PixarLog
 *                             images for 8-bit ABGR samples (the update fixes that decoder)
 *   tiff-write PATH W H SPP COMPRESSION   writes an 8-bit image (an input for the tiff mode)
 *   archive  read PATH        lists an archive (every format and filter): entries, names, data
 *            zipcrypt SIZE    writes the header of a stored, zipcrypt-encrypted zip entry of SIZE
 *                             bytes (the update refuses sizes that overflow with the encryption
 *                             header)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *library;
static const char *library_path;

static void *symbol(const char *name)
{
    void *s = dlsym(library, name);
    if (!s) {
        fprintf(stderr, "reallib-harness: %s has no symbol %s\n", library_path, name);
        exit(2);
    }
    return s;
}
/* LOAD(name, return type, parameters...): a local function pointer to the library's `name`. */
#define LOAD(name, ret, ...) ret (*name)(__VA_ARGS__) = (ret(*)(__VA_ARGS__))symbol(#name)

/* FNV-1a, 64 bits. */
static uint64_t fnv(uint64_t h, const void *data, size_t size)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < size; ++i)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
static const uint64_t fnv_start = 0xcbf29ce484222325ull;

static unsigned char *read_whole(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t capacity = 1 << 16, used = 0;
    unsigned char *data = malloc(capacity);
    for (size_t got; (got = fread(data + used, 1, capacity - used, f)) > 0;) {
        used += got;
        if (used == capacity)
            data = realloc(data, capacity *= 2);
    }
    fclose(f);
    *size = used;
    return data;
}

/* Crashes inside the library end the current input, not the process. */
static sigjmp_buf crash_return;
static volatile sig_atomic_t crash_armed;
static void on_crash(int signal)
{
    if (!crash_armed) {
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigaction(signal, &dfl, NULL);
        raise(signal);
        return;
    }
    crash_armed = 0;
    siglongjmp(crash_return, signal);
}

/* ---------------------------------------------------------------- liblzma -- */
typedef struct {
    void *(*alloc)(void *opaque, size_t nmemb, size_t size);
    void (*free)(void *opaque, void *ptr);
    void *opaque;
} lzma_allocator;

typedef struct {
    const uint8_t *next_in;
    size_t avail_in;
    uint64_t total_in;
    uint8_t *next_out;
    size_t avail_out;
    uint64_t total_out;
    const lzma_allocator *allocator;
    void *internal;
    void *reserved_ptr[4];
    uint64_t seek_pos, reserved_int2;
    size_t reserved_int3, reserved_int4;
    int reserved_enum1, reserved_enum2;
} lzma_stream;

enum { LZMA_OK = 0, LZMA_STREAM_END = 1, LZMA_FINISH = 3 };

static void *limited_alloc(void *opaque, size_t nmemb, size_t size)
{
    (void)opaque;
    if (size && nmemb > (256u << 20) / size)
        return NULL;
    return malloc(nmemb * size);
}
static void plain_free(void *opaque, void *ptr)
{
    (void)opaque;
    free(ptr);
}
static const lzma_allocator limited = {limited_alloc, plain_free, NULL};

static void lzma_input(char *line)
{
    LOAD(lzma_auto_decoder, int, lzma_stream *, uint64_t, uint32_t);
    LOAD(lzma_code, int, lzma_stream *, int);
    LOAD(lzma_end, void, lzma_stream *);
    /* Static: it must keep its value across the siglongjmp of a crash. */
    static lzma_stream stream;
    memset(&stream, 0, sizeof stream);
    stream.allocator = &limited;
    const char *separator = "";
    for (char *path = strtok(line, " "); path; path = strtok(NULL, " ")) {
        size_t size = 0;
        unsigned char *in = read_whole(path, &size);
        printf("%s", separator);
        separator = " | ";
        if (!in) {
            printf("unreadable");
            continue;
        }
        int crash = sigsetjmp(crash_return, 1);
        if (crash) {
            printf("crashed signal %d", crash);
            free(in);
            memset(&stream, 0, sizeof stream); /* the stream is lost with its memory */
            stream.allocator = &limited;
            continue;
        }
        crash_armed = 1;
        int ret = lzma_auto_decoder(&stream, UINT64_MAX, 0);
        uint64_t h = fnv_start;
        if (ret == LZMA_OK) {
            static uint8_t out[1 << 16];
            stream.next_in = in;
            stream.avail_in = size;
            do {
                stream.next_out = out;
                stream.avail_out = sizeof out;
                ret = lzma_code(&stream, LZMA_FINISH);
                h = fnv(h, out, sizeof out - stream.avail_out);
            } while (ret == LZMA_OK);
        }
        crash_armed = 0;
        printf("ret %d out %" PRIu64 " fnv %016" PRIx64, ret, stream.total_out, h);
        free(in);
    }
    lzma_end(&stream);
    printf("\n");
}

/* ---------------------------------------------------------------- libtiff -- */
typedef struct tiff TIFF;
typedef void (*TIFFErrorHandler)(const char *module, const char *fmt, va_list ap);
enum {
    TIFFTAG_IMAGEWIDTH = 256, TIFFTAG_IMAGELENGTH = 257, TIFFTAG_BITSPERSAMPLE = 258,
    TIFFTAG_COMPRESSION = 259, TIFFTAG_PHOTOMETRIC = 262, TIFFTAG_SAMPLESPERPIXEL = 277,
    TIFFTAG_ROWSPERSTRIP = 278, TIFFTAG_PLANARCONFIG = 284, TIFFTAG_PIXARLOGDATAFMT = 65549,
    COMPRESSION_PIXARLOG = 32909, PIXARLOGDATAFMT_8BITABGR = 1,
    PHOTOMETRIC_MINISBLACK = 1, PHOTOMETRIC_RGB = 2, PLANARCONFIG_CONTIG = 1,
};

static int tiff_errors;
static char tiff_first_error[160];
static void tiff_error(const char *module, const char *fmt, va_list ap)
{
    if (tiff_errors++ == 0) {
        int n = snprintf(tiff_first_error, sizeof tiff_first_error, "%s: ", module ? module : "");
        vsnprintf(tiff_first_error + n, sizeof tiff_first_error - (size_t)n, fmt, ap);
        for (char *c = tiff_first_error; *c; ++c)
            if (*c == '\n')
                *c = ' ';
    }
}
static void tiff_warning(const char *module, const char *fmt, va_list ap)
{
    (void)module, (void)fmt, (void)ap;
}

static void tiff_handlers(void)
{
    LOAD(TIFFSetErrorHandler, TIFFErrorHandler, TIFFErrorHandler);
    LOAD(TIFFSetWarningHandler, TIFFErrorHandler, TIFFErrorHandler);
    TIFFSetErrorHandler(tiff_error);
    TIFFSetWarningHandler(tiff_warning);
    tiff_errors = 0;
    tiff_first_error[0] = 0;
}

static void tiff_input(char *line)
{
    LOAD(TIFFOpen, TIFF *, const char *, const char *);
    LOAD(TIFFClose, void, TIFF *);
    LOAD(TIFFGetField, int, TIFF *, uint32_t, ...);
    LOAD(TIFFSetField, int, TIFF *, uint32_t, ...);
    LOAD(TIFFReadDirectory, int, TIFF *);
    LOAD(TIFFIsTiled, int, TIFF *);
    LOAD(TIFFNumberOfStrips, uint32_t, TIFF *);
    LOAD(TIFFNumberOfTiles, uint32_t, TIFF *);
    LOAD(TIFFStripSize, int64_t, TIFF *);
    LOAD(TIFFTileSize, int64_t, TIFF *);
    LOAD(TIFFReadEncodedStrip, int64_t, TIFF *, uint32_t, void *, int64_t);
    LOAD(TIFFReadEncodedTile, int64_t, TIFF *, uint32_t, void *, int64_t);
    tiff_handlers();
    char *path = strtok(line, " "), *option = strtok(NULL, " ");
    int abgr = option && strcmp(option, "abgr") == 0;
    static TIFF *tif;
    static unsigned char *buffer;
    static unsigned dirs, blocks, failed;
    static uint64_t bytes, h;
    dirs = blocks = failed = 0;
    bytes = 0;
    h = fnv_start;
    buffer = NULL;
    tif = NULL;
    int crash = sigsetjmp(crash_return, 1);
    if (crash) {
        printf("crashed signal %d after %u dirs %u blocks ", crash, dirs, blocks);
    } else {
        crash_armed = 1;
        tif = TIFFOpen(path, "r");
        for (int more = tif != NULL; more; more = TIFFReadDirectory(tif), ++dirs) {
            uint16_t compression = 0;
            TIFFGetField(tif, TIFFTAG_COMPRESSION, &compression);
            if (abgr && compression == COMPRESSION_PIXARLOG)
                TIFFSetField(tif, TIFFTAG_PIXARLOGDATAFMT, (int)PIXARLOGDATAFMT_8BITABGR);
            int tiled = TIFFIsTiled(tif);
            uint32_t count = tiled ? TIFFNumberOfTiles(tif) : TIFFNumberOfStrips(tif);
            int64_t size = tiled ? TIFFTileSize(tif) : TIFFStripSize(tif);
            if (size <= 0 || size > (64 << 20))
                continue;
            /* Twice the size the library is told: writes past what it may fill land here and
             * show in the checksum instead of corrupting the heap. */
            buffer = malloc((size_t)size * 2);
            for (uint32_t b = 0; b < count && b < 4096; ++b) {
                memset(buffer, 0xa5, (size_t)size * 2);
                int64_t got = tiled ? TIFFReadEncodedTile(tif, b, buffer, size)
                                    : TIFFReadEncodedStrip(tif, b, buffer, size);
                ++blocks;
                if (got < 0)
                    ++failed;
                else
                    bytes += (uint64_t)got;
                h = fnv(h, buffer, (size_t)size * 2);
            }
            free(buffer);
            buffer = NULL;
        }
    }
    crash_armed = 0;
    free(buffer);
    if (tif && !crash)
        TIFFClose(tif);
    printf("%s dirs %u blocks %u failed %u bytes %" PRIu64 " fnv %016" PRIx64 " errors %d%s%s\n",
           tif ? "opened" : "unopened", dirs, blocks, failed, bytes, h, tiff_errors,
           tiff_errors ? " first " : "", tiff_first_error);
}

/* An 8-bit image with a gradient, for PixarLog (which Debian builds in) and the other codecs. */
static void tiff_write_input(char *line)
{
    LOAD(TIFFOpen, TIFF *, const char *, const char *);
    LOAD(TIFFClose, void, TIFF *);
    LOAD(TIFFSetField, int, TIFF *, uint32_t, ...);
    LOAD(TIFFWriteEncodedStrip, int64_t, TIFF *, uint32_t, void *, int64_t);
    tiff_handlers();
    char *path = strtok(line, " ");
    unsigned width = 0, height = 0, spp = 0, compression = 0;
    char *rest = strtok(NULL, "");
    if (!path || !rest || sscanf(rest, "%u %u %u %u", &width, &height, &spp, &compression) != 4 ||
        !width || !height || !spp || width > 4096 || height > 4096 || spp > 4) {
        printf("usage: tiff-write PATH W H SPP COMPRESSION\n");
        return;
    }
    TIFF *tif = TIFFOpen(path, "w");
    if (!tif) {
        printf("unopened errors %d first %s\n", tiff_errors, tiff_first_error);
        return;
    }
    TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, width);
    TIFFSetField(tif, TIFFTAG_IMAGELENGTH, height);
    TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, spp);
    TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, spp >= 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK);
    TIFFSetField(tif, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(tif, TIFFTAG_COMPRESSION, compression);
    TIFFSetField(tif, TIFFTAG_ROWSPERSTRIP, 8);
    size_t row = (size_t)width * spp;
    unsigned char *strip = malloc(row * 8);
    int64_t written = 0;
    for (unsigned y = 0; y < height; y += 8) {
        unsigned rows = height - y < 8 ? height - y : 8;
        for (size_t i = 0; i < row * rows; ++i)
            strip[i] = (unsigned char)(i * 7 + y * 3 + i / row);
        int64_t r = TIFFWriteEncodedStrip(tif, y / 8, strip, (int64_t)(row * rows));
        written = r < 0 ? -1 : written < 0 ? written : written + r;
    }
    free(strip);
    TIFFClose(tif);
    printf("written %" PRId64 " errors %d\n", written, tiff_errors);
}

/* ------------------------------------------------------------- libarchive -- */
struct archive;
struct archive_entry;
enum { ARCHIVE_EOF = 1, ARCHIVE_OK = 0, ARCHIVE_WARN = -20, AE_IFREG = 0100000 };

static void archive_read_input(char *path)
{
    LOAD(archive_read_new, struct archive *, void);
    LOAD(archive_read_support_filter_all, int, struct archive *);
    LOAD(archive_read_support_format_all, int, struct archive *);
    LOAD(archive_read_open_filename, int, struct archive *, const char *, size_t);
    LOAD(archive_read_next_header, int, struct archive *, struct archive_entry **);
    LOAD(archive_read_data, long, struct archive *, void *, size_t);
    LOAD(archive_entry_pathname, const char *, struct archive_entry *);
    LOAD(archive_error_string, const char *, struct archive *);
    LOAD(archive_read_free, int, struct archive *);
    static struct archive *a;
    static unsigned entries;
    static uint64_t bytes, h;
    entries = 0;
    bytes = 0;
    h = fnv_start;
    int ret = 0;
    int crash = sigsetjmp(crash_return, 1);
    if (crash) {
        printf("crashed signal %d after %u entries", crash, entries);
    } else {
        crash_armed = 1;
        a = archive_read_new();
        archive_read_support_filter_all(a);
        archive_read_support_format_all(a);
        ret = archive_read_open_filename(a, path, 10240);
        struct archive_entry *entry;
        while (ret >= ARCHIVE_WARN && (ret = archive_read_next_header(a, &entry)) >= ARCHIVE_WARN) {
            ++entries;
            const char *name = archive_entry_pathname(entry);
            if (name)
                h = fnv(h, name, strlen(name) + 1);
            static char data[1 << 16];
            long got;
            while ((got = archive_read_data(a, data, sizeof data)) > 0) {
                h = fnv(h, data, (size_t)got);
                bytes += (uint64_t)got;
            }
            if (got < ARCHIVE_WARN) {
                ret = (int)got;
                break;
            }
        }
        const char *error = ret < ARCHIVE_WARN ? archive_error_string(a) : NULL;
        printf("ret %d entries %u bytes %" PRIu64 " fnv %016" PRIx64 "%s%s", ret, entries, bytes, h,
               error ? " error " : "", error ? error : "");
        crash_armed = 0;
        archive_read_free(a);
    }
    crash_armed = 0;
    printf("\n");
}

static void archive_zipcrypt_input(const char *size_text)
{
    LOAD(archive_write_new, struct archive *, void);
    LOAD(archive_write_set_format_zip, int, struct archive *);
    LOAD(archive_write_set_options, int, struct archive *, const char *);
    LOAD(archive_write_set_passphrase, int, struct archive *, const char *);
    LOAD(archive_write_open_memory, int, struct archive *, void *, size_t, size_t *);
    LOAD(archive_write_header, int, struct archive *, struct archive_entry *);
    LOAD(archive_error_string, const char *, struct archive *);
    LOAD(archive_write_free, int, struct archive *);
    LOAD(archive_entry_new, struct archive_entry *, void);
    LOAD(archive_entry_free, void, struct archive_entry *);
    LOAD(archive_entry_set_pathname, void, struct archive_entry *, const char *);
    LOAD(archive_entry_set_filetype, void, struct archive_entry *, unsigned);
    LOAD(archive_entry_set_perm, void, struct archive_entry *, unsigned);
    LOAD(archive_entry_set_size, void, struct archive_entry *, int64_t);
    LOAD(archive_entry_set_mtime, void, struct archive_entry *, int64_t, long);
    int64_t size = strtoll(size_text, NULL, 0);
    static unsigned char out[1 << 16];
    size_t used = 0;
    struct archive *a = archive_write_new();
    archive_write_set_format_zip(a);
    int options = archive_write_set_options(a, "zip:encryption=zipcrypt,zip:compression=store");
    archive_write_set_passphrase(a, "hotforge");
    archive_write_open_memory(a, out, sizeof out, &used);
    struct archive_entry *entry = archive_entry_new();
    archive_entry_set_pathname(entry, "big.bin");
    archive_entry_set_filetype(entry, AE_IFREG);
    archive_entry_set_perm(entry, 0644);
    archive_entry_set_mtime(entry, 1700000000, 0);
    archive_entry_set_size(entry, size);
    int ret = archive_write_header(a, entry);
    const char *error = ret != ARCHIVE_OK ? archive_error_string(a) : NULL;
    /* The header bytes hold the sizes the entry was given. */
    printf("options %d header %d bytes %zu fnv %016" PRIx64 "%s%s\n", options, ret, used, fnv(fnv_start, out, used),
           error ? " error " : "", error ? error : "");
    archive_entry_free(entry);
    archive_write_free(a);
}

static void archive_input(char *line)
{
    char *verb = strtok(line, " "), *argument = strtok(NULL, "");
    if (verb && argument && strcmp(verb, "read") == 0)
        archive_read_input(argument);
    else if (verb && argument && strcmp(verb, "zipcrypt") == 0)
        archive_zipcrypt_input(argument);
    else
        printf("usage: read PATH | zipcrypt SIZE\n");
}

/* ------------------------------------------------------------------- main -- */
int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: reallib-harness LIBRARY.so lzma|tiff|archive\n");
        return 2;
    }
    library_path = argv[1];
    library = dlopen(library_path, RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        fprintf(stderr, "reallib-harness: %s\n", dlerror());
        return 2;
    }
    void (*handle)(char *) = NULL;
    if (strcmp(argv[2], "lzma") == 0)
        handle = lzma_input;
    else if (strcmp(argv[2], "tiff") == 0)
        handle = tiff_input;
    else if (strcmp(argv[2], "archive") == 0)
        handle = archive_input;
    if (!handle) {
        fprintf(stderr, "reallib-harness: unknown mode %s\n", argv[2]);
        return 2;
    }
    struct sigaction crash = {.sa_handler = on_crash, .sa_flags = SA_NODEFER};
    sigaction(SIGSEGV, &crash, NULL);
    sigaction(SIGBUS, &crash, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    char *line = NULL;
    size_t capacity = 0;
    for (;;) {
        errno = 0;
        ssize_t length = getline(&line, &capacity, stdin);
        if (length < 0 && errno == EINTR) { /* a signal (the agent's) while waiting */
            clearerr(stdin);
            continue;
        }
        if (length < 0)
            break;
        if (length > 0 && line[length - 1] == '\n')
            line[--length] = 0;
        if (length == 0)
            printf("hf-round-end\n");
        else if (strncmp(line, "tiff-write ", 11) == 0 && handle == tiff_input)
            tiff_write_input(line + 11);
        else
            handle(line);
        fflush(stdout);
    }
    free(line);
    return 0;
}
