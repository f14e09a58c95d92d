/* libFuzzer target: open arbitrary bytes as a qcow2 image, read every byte
 * of the virtual disk, walk its allocation map and run a consistency check.
 * Must never crash, hang or touch memory it does not own.
 *
 * Built with -Dfuzz=true under clang as a libFuzzer binary. Without
 * libFuzzer, the same file builds with EMBER_FUZZ_STANDALONE into a small
 * self-driving test: it damages a valid image at random and feeds it in. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/block.h"
#include "block/qcow2.h"
#include "core/log.h"
#include "core/util.h"

#define MAX_READ (64 * MiB) /* bound the work per input */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet && !getenv("FUZZ_VERBOSE")) {
        log_set_level(LOG_ERROR);
        quiet = true;
    }
    int fd = memfd_create("fuzz-qcow2", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    if (write_full(fd, data, size) < 0) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    /* No backing files: names inside the input must not reach the host. */
    struct block_open_opts o = { .format = "qcow2", .readonly = true, .no_backing = true,
                                 .l2_cache_size = 4096, .what = "fuzz" };
    struct block_dev *bd;
    if (block_open(path, &o, &bd) == 0) {
        uint64_t len = MIN(block_length(bd), MAX_READ);
        uint8_t *buf = xmalloc(256 * KiB);
        for (uint64_t off = 0; off < len; off += 256 * KiB) {
            uint64_t n = MIN(256 * KiB, len - off);
            if (block_pread(bd, off, buf, n) < 0)
                break;
        }
        for (uint64_t off = 0; off < len;) {
            uint64_t pnum;
            unsigned st;
            if (block_status(bd, off, len - off, &pnum, &st) < 0 || pnum == 0)
                break;
            off += pnum;
        }
        struct qcow2_check_result r;
        qcow2_check(bd, 0, &r);
        free(buf);
        block_close(bd);
    }
    /* Writes into the hostile image: errors are fine, damage to us is not. */
    o.readonly = false;
    if (block_open(path, &o, &bd) == 0) {
        uint64_t len = block_length(bd);
        uint8_t blk[4096];
        memset(blk, 0xa5, sizeof(blk));
        for (int i = 0; i < 8 && len; i++) {
            uint64_t off = (len / 8) * (uint64_t)i;
            uint64_t n = MIN(sizeof(blk), len - off);
            if (i % 3 == 2)
                block_write_zeroes(bd, off, n, i % 2);
            else if (i % 4 == 3)
                block_discard(bd, off, n);
            else
                block_pwrite(bd, off, blk, n);
            block_pread(bd, off, blk, n);
        }
        struct qcow2_check_result r;
        qcow2_check(bd, QCOW2_FIX_LEAKS | QCOW2_FIX_ERRORS, &r);
        block_close(bd);
    }
    close(fd);
    return 0;
}

#ifdef EMBER_FUZZ_STANDALONE
/* Damage a valid image in many small ways and feed each version in. */
int main(int argc, char **argv)
{
    unsigned rounds = argc > 1 ? (unsigned)atoi(argv[1]) : 300;
    char path[] = "/tmp/ember-fuzz-XXXXXX";
    int tfd = mkstemp(path);
    if (tfd < 0)
        return 1;
    close(tfd);
    log_set_level(LOG_ERROR);
    struct qcow2_create_opts co = { .size = 2 * MiB, .cluster_size = 4096, .refcount_bits = 16 };
    if (qcow2_create(path, &co) < 0)
        return 1;
    struct block_open_opts o = { .format = "qcow2" };
    struct block_dev *bd;
    if (block_open(path, &o, &bd) < 0)
        return 1;
    uint8_t blk[8192];
    for (int i = 0; i < 40; i++) {
        memset(blk, i * 13 + 1, sizeof(blk));
        block_pwrite(bd, (uint64_t)i * 40000, blk, sizeof(blk) / (1 + i % 3));
        if (i % 4 == 0) {
            memset(blk + 100, 0, sizeof(blk) - 100);
            qcow2_write_compressed(bd, (uint64_t)i * 4096 * 8, blk, 4096);
        }
    }
    block_write_zeroes(bd, 300000, 20000, false);
    block_close(bd);
    FILE *f = fopen(path, "rb");
    uint8_t *img = xmalloc(4 * MiB);
    size_t n = fread(img, 1, 4 * MiB, f);
    fclose(f);
    unlink(path);
    uint8_t *mut = xmalloc(n);
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    for (unsigned r = 0; r < rounds; r++) {
        memcpy(mut, img, n);
        unsigned flips = 1 + r % 8;
        for (unsigned k = 0; k < flips; k++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            /* Mostly metadata: the first clusters hold header, tables, L2s. */
            size_t pos = (seed >> 33) % (r % 2 ? n : MIN(n, (size_t)8 * 4096));
            mut[pos] ^= (uint8_t)(1u << ((seed >> 20) & 7));
            if (r % 5 == 0)
                mut[pos] = (uint8_t)(seed >> 40);
        }
        LLVMFuzzerTestOneInput(mut, n - (r % 7 == 0 ? (seed >> 24) % n : 0));
    }
    free(mut);
    free(img);
    printf("fed %u damaged images\n", rounds);
    return 0;
}
#endif
