/* ember-img: create, inspect, check and convert raw and qcow2 images.
 * Command line, outputs and exit codes follow qemu-img's so scripts written
 * for one work with the other. */
#include "block/block.h"
#include "block/qcow2.h"
#include "core/log.h"
#include "core/util.h"
#include "ember-version.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define COPY_CHUNK (2 * MiB)

static bool quiet;

/* ------------------------------------------------------------------ help */

static const char usage_text[] =
    "usage: ember-img COMMAND [options]\n"
    "Create, inspect, check and convert raw and qcow2 disk images (qemu-img compatible).\n"
    "\n"
    "Commands:\n"
    "  create   [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]\n"
    "  info     [-f fmt] [--output=human|json] [--backing-chain] [-U] filename\n"
    "  check    [-q] [-f fmt] [--output=human|json] [-r leaks|all] [-U] filename\n"
    "  convert  [-c] [-p] [-q] [-n] [-f fmt] [-O output_fmt] [-o options] [-t cache]\n"
    "           [-B backing_file [-F backing_fmt]] [-S sparse_size] [-m num] [-W] [-U]\n"
    "           filename [filename2 ...] output_filename\n"
    "  resize   [-q] [-f fmt] [--shrink] [--preallocation=mode] filename [+|-]size\n"
    "  commit   [-q] [-f fmt] [-d] [-p] [-b base] filename\n"
    "  rebase   [-q] [-f fmt] [-p] [-u] -b backing_file [-F backing_fmt] filename\n"
    "  map      [-f fmt] [--output=human|json] [--start-offset=off] [--max-length=len] filename\n"
    "  compare  [-q] [-f fmt] [-F fmt] [-p] [-s] [-U] filename1 filename2\n"
    "  measure  [--output=human|json] [-O output_fmt] [-o options] [--size N | [-f fmt] filename]\n"
    "  amend    [-q] [-f fmt] -o options filename   (compat, lazy_refcounts, size,\n"
    "           backing_file, backing_fmt)\n"
    "  snapshot [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename\n"
    "\n"
    "Parameters:\n"
    "  fmt          raw or qcow2; guessed from the file when omitted\n"
    "  size         bytes, or with a suffix k/K, M, G, T, P, E (binary units)\n"
    "  options      comma-separated name=value list; '-o help' lists them\n"
    "  -q           quiet: print nothing but errors\n"
    "  -p           show a progress bar\n"
    "  -u           create/rebase without opening the backing file\n"
    "  -c           convert: write compressed clusters (qcow2 only)\n"
    "  -S size      convert: treat zero runs of this size as holes (default 4k, 0 = off)\n"
    "  -m num       convert: clusters compressed in parallel with -c (1..16, default 8)\n"
    "  -t cache     convert: output cache mode; unsafe (default, as qemu-img: no flush at the\n"
    "               end), or none|writeback|writethrough|directsync (flushed when done)\n"
    "\n"
    "qcow2 options (-o): size, compat=0.10|1.1, cluster_size, preallocation=off|metadata|falloc|full,\n"
    "  lazy_refcounts=on|off, refcount_bits=1..64, compression_type=zlib|zstd, extended_l2=on|off,\n"
    "  backing_file, backing_fmt\n"
    "raw options (-o): size, preallocation=off|falloc|full\n";

static void usage(FILE *f)
{
    fputs(usage_text, f);
}

static _Noreturn void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static _Noreturn void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", log_prog());
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'ember-img --help' for more information.\n");
    exit(1);
}

/* ------------------------------------------------------------------ helpers */

static char *size_to_str(uint64_t val)
{
    static const char *suffixes[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" };
    int i;
    frexp((double)val / (1000.0 / 1024.0), &i);
    i = (i - 1) / 10;
    if (i < 0)
        i = 0;
    if (i > 6)
        i = 6;
    uint64_t div = 1ULL << (i * 10);
    return xasprintf("%0.3g %sB", (double)val / (double)div, suffixes[i]);
}

static int parse_img_size(const char *s, uint64_t *out)
{
    char buf[64];
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, s, n + 1);
    if (buf[n - 1] == 'b' || buf[n - 1] == 'B') /* qemu-img ignores a trailing 'b' */
        buf[n - 1] = 0;
    if (!buf[0])
        return -EINVAL;
    return parse_size(buf, 1, out);
}

static const char *probe_format(const char *filename)
{
    uint8_t head[8] = { 0 };
    int fd = open(filename, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return "raw";
    if (pread(fd, head, sizeof(head), 0) < 0)
        memset(head, 0, sizeof(head));
    close(fd);
    static const uint8_t magic[4] = { 'Q', 'F', 'I', 0xfb };
    return memcmp(head, magic, 4) == 0 ? "qcow2" : "raw";
}

static int open_image(const char *filename, const char *fmt, bool readonly, bool no_backing,
                      struct block_dev **bd)
{
    struct block_open_opts o = {
        .format = fmt ? fmt : probe_format(filename),
        .readonly = readonly,
        .what = filename,
        .no_barriers = !readonly,
        .no_backing = no_backing,
    };
    return block_open(filename, &o, bd);
}

static uint64_t disk_usage(const char *filename)
{
    struct stat st;
    return stat(filename, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

static uint64_t div_up(uint64_t a, uint64_t b)
{
    return a / b + (a % b != 0);
}

/* An I/O buffer: page-aligned, so the kernel copies whole pages (reads into
 * misaligned buffers cost about twice the CPU). Free with free(). */
static void *io_buf(size_t size)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, size) != 0)
        die("out of memory (%zu bytes)", size);
    return p;
}

static bool is_zero(const uint8_t *p, size_t n)
{
    if (n == 0)
        return true;
    return p[0] == 0 && memcmp(p, p + 1, n - 1) == 0;
}

static void progress(bool show, uint64_t done, uint64_t total)
{
    if (!show)
        return;
    double pct = total ? 100.0 * (double)done / (double)total : 100.0;
    printf("    (%.2f/100%%)\r", pct);
    fflush(stdout);
}

static void progress_end(bool show)
{
    if (show) {
        printf("    (100.00/100%%)\n");
        fflush(stdout);
    }
}

/* Options -o name=value,... */
struct kv {
    char *key, *val;
};

struct kvlist {
    struct kv items[32];
    int n;
};

static void kv_parse(struct kvlist *l, const char *s)
{
    char *dup = xstrdup(s), *save = NULL;
    for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (l->n >= (int)ARRAY_SIZE(l->items))
            usage_error("too many options in '%s'", s);
        char *eq = strchr(tok, '=');
        l->items[l->n].key = xstrdup(tok);
        if (eq) {
            l->items[l->n].key[eq - tok] = 0;
            l->items[l->n].val = xstrdup(eq + 1);
        } else {
            l->items[l->n].val = NULL;
        }
        l->n++;
    }
    free(dup);
}

static void kv_free(struct kvlist *l)
{
    for (int i = 0; i < l->n; i++) {
        free(l->items[i].key);
        free(l->items[i].val);
    }
    l->n = 0;
}

struct create_spec {
    const char *fmt;
    uint64_t size;
    bool have_size;
    struct qcow2_create_opts q;
};

static int bool_opt(const char *key, const char *v, bool *out)
{
    if (!v || parse_bool(v, out) < 0)
        return log_fail(-EINVAL, "invalid value for %s: '%s' (use on or off)", key, v ? v : "");
    return 0;
}

/* Apply -o options to a create spec; fmt decides which are valid. */
static int apply_create_opts(struct create_spec *c, const struct kvlist *l)
{
    bool is_qcow2 = strcmp(c->fmt, "qcow2") == 0;
    for (int i = 0; i < l->n; i++) {
        const char *k = l->items[i].key, *v = l->items[i].val;
        uint64_t n;
        if (strcmp(k, "help") == 0) {
            printf("Supported options:\n  size=<size>\n  preallocation=off|%sfalloc|full\n",
                   is_qcow2 ? "metadata|" : "");
            if (is_qcow2)
                printf("  compat=0.10|1.1\n  cluster_size=<size>\n  lazy_refcounts=on|off\n"
                       "  refcount_bits=1|2|4|8|16|32|64\n  compression_type=zlib|zstd\n"
                       "  extended_l2=on|off\n  backing_file=<file>\n  backing_fmt=<fmt>\n");
            exit(0);
        }
        if (!v)
            return log_fail(-EINVAL, "option '%s' needs a value", k);
        if (strcmp(k, "size") == 0) {
            if (parse_img_size(v, &n) < 0)
                return log_fail(-EINVAL, "invalid size '%s'", v);
            c->size = n;
            c->have_size = true;
        } else if (strcmp(k, "preallocation") == 0) {
            if (strcmp(v, "off") == 0)
                c->q.prealloc = QCOW2_PREALLOC_OFF;
            else if (strcmp(v, "metadata") == 0 && is_qcow2)
                c->q.prealloc = QCOW2_PREALLOC_METADATA;
            else if (strcmp(v, "falloc") == 0)
                c->q.prealloc = QCOW2_PREALLOC_FALLOC;
            else if (strcmp(v, "full") == 0)
                c->q.prealloc = QCOW2_PREALLOC_FULL;
            else
                return log_fail(-EINVAL, "invalid preallocation mode '%s'", v);
        } else if (!is_qcow2) {
            return log_fail(-EINVAL, "invalid option '%s' for format raw", k);
        } else if (strcmp(k, "compat") == 0) {
            if (strcmp(v, "0.10") == 0 || strcmp(v, "v2") == 0)
                c->q.version = 2;
            else if (strcmp(v, "1.1") == 0 || strcmp(v, "v3") == 0)
                c->q.version = 3;
            else
                return log_fail(-EINVAL, "invalid compat level '%s' (0.10 or 1.1)", v);
        } else if (strcmp(k, "cluster_size") == 0) {
            if (parse_img_size(v, &n) < 0 || n > 2 * MiB)
                return log_fail(-EINVAL, "invalid cluster_size '%s'", v);
            c->q.cluster_size = (uint32_t)n;
        } else if (strcmp(k, "lazy_refcounts") == 0) {
            if (bool_opt(k, v, &c->q.lazy_refcounts) < 0)
                return -EINVAL;
        } else if (strcmp(k, "extended_l2") == 0) {
            if (bool_opt(k, v, &c->q.extended_l2) < 0)
                return -EINVAL;
        } else if (strcmp(k, "refcount_bits") == 0) {
            if (parse_u64(v, 64, &n) < 0 || n == 0)
                return log_fail(-EINVAL, "invalid refcount_bits '%s'", v);
            c->q.refcount_bits = (uint32_t)n;
        } else if (strcmp(k, "compression_type") == 0) {
            if (strcmp(v, "zlib") == 0)
                c->q.compression_type = 0;
            else if (strcmp(v, "zstd") == 0)
                c->q.compression_type = 1;
            else
                return log_fail(-EINVAL, "invalid compression_type '%s' (zlib or zstd)", v);
        } else if (strcmp(k, "backing_file") == 0) {
            c->q.backing_file = v;
        } else if (strcmp(k, "backing_fmt") == 0) {
            c->q.backing_fmt = v;
        } else if (strcmp(k, "encryption") == 0 || strcmp(k, "encrypt.format") == 0) {
            return log_fail(-ENOTSUP, "encrypted images are not supported");
        } else if (strcmp(k, "data_file") == 0) {
            return log_fail(-ENOTSUP, "external data files are not supported");
        } else {
            return log_fail(-EINVAL, "invalid option '%s' for format qcow2", k);
        }
    }
    return 0;
}

static int create_raw(const char *filename, uint64_t size, enum qcow2_prealloc prealloc)
{
    int fd = open(filename, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return log_fail(-errno, "%s: cannot create: %s", filename, strerror(errno));
    int ret = 0;
    if (ftruncate(fd, (off_t)size) < 0)
        ret = log_fail(-errno, "%s: cannot resize: %s", filename, strerror(errno));
    if (ret == 0 && size && prealloc != QCOW2_PREALLOC_OFF &&
        fallocate(fd, 0, 0, (off_t)size) < 0 && prealloc == QCOW2_PREALLOC_FALLOC)
        ret = log_fail(-errno, "%s: preallocation failed: %s", filename, strerror(errno));
    if (ret == 0 && prealloc == QCOW2_PREALLOC_FULL) {
        /* Write real zeroes so every block is allocated. */
        void *z = xzalloc(MiB);
        for (uint64_t off = 0; off < size && ret == 0; off += MiB)
            ret = pwrite_full(fd, z, MIN(MiB, size - off), off);
        free(z);
        if (ret < 0)
            log_error("%s: write failed: %s", filename, strerror(-ret));
    }
    close(fd);
    return ret;
}

/* Resolve a backing name the way the image will: relative to its directory. */
static char *backing_path(const char *image, const char *backing)
{
    if (backing[0] == '/' || !strchr(image, '/'))
        return xstrdup(backing);
    char *dir = xstrdup(image);
    char *r = xasprintf("%s/%s", dirname(dir), backing);
    free(dir);
    return r;
}

static int do_create(const char *filename, struct create_spec *c, bool unsafe)
{
    const char *bfile = c->q.backing_file;
    if (bfile && strcmp(c->fmt, "qcow2") != 0)
        return log_fail(-EINVAL, "%s: backing files need the qcow2 format", filename);
    if (bfile && (!c->have_size || !c->q.backing_fmt) && !unsafe) {
        char *bp = backing_path(filename, bfile);
        struct block_dev *bb;
        int ret = open_image(bp, c->q.backing_fmt, true, false, &bb);
        if (ret < 0) {
            log_error("%s: could not open backing file '%s'", filename, bp);
            free(bp);
            return ret;
        }
        if (!c->have_size) {
            c->size = block_length(bb);
            c->have_size = true;
        }
        if (!c->q.backing_fmt)
            c->q.backing_fmt = block_format_name(bb); /* static string */
        block_close(bb);
        free(bp);
    }
    if (!c->have_size)
        return log_fail(-EINVAL, "%s: image size must be given", filename);
    if (!quiet) {
        if (strcmp(c->fmt, "raw") == 0) {
            printf("Formatting '%s', fmt=raw size=%llu\n", filename, (unsigned long long)c->size);
        } else {
            printf("Formatting '%s', fmt=qcow2 cluster_size=%u extended_l2=%s "
                   "compression_type=%s size=%llu",
                   filename, c->q.cluster_size ? c->q.cluster_size : 65536,
                   c->q.extended_l2 ? "on" : "off", c->q.compression_type ? "zstd" : "zlib",
                   (unsigned long long)c->size);
            if (bfile)
                printf(" backing_file=%s", bfile);
            if (c->q.backing_fmt)
                printf(" backing_fmt=%s", c->q.backing_fmt);
            printf(" lazy_refcounts=%s refcount_bits=%u\n", c->q.lazy_refcounts ? "on" : "off",
                   c->q.refcount_bits ? c->q.refcount_bits : 16);
        }
        fflush(stdout);
    }
    if (strcmp(c->fmt, "raw") == 0)
        return create_raw(filename, c->size, c->q.prealloc);
    c->q.size = c->size;
    return qcow2_create(filename, &c->q);
}

static const char *check_fmt(const char *fmt)
{
    if (fmt && strcmp(fmt, "raw") != 0 && strcmp(fmt, "qcow2") != 0)
        usage_error("unknown format '%s' (supported: raw, qcow2)", fmt);
    return fmt;
}

/* ------------------------------------------------------------------ create */

static int cmd_create(int argc, char **argv)
{
    struct create_spec c = { .fmt = "raw" };
    struct kvlist opts = { .n = 0 };
    const char *bfile = NULL, *bfmt = NULL;
    bool unsafe = false;
    int ch;
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' }, { 0 } };
    while ((ch = getopt_long(argc, argv, "+hf:o:b:F:uq", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': c.fmt = check_fmt(optarg); break;
        case 'o': kv_parse(&opts, optarg); break;
        case 'b': bfile = optarg; break;
        case 'F': bfmt = check_fmt(optarg); break;
        case 'u': unsafe = true; break;
        case 'q': quiet = true; break;
        case 'h': usage(stdout); exit(0);
        default: usage_error("invalid option for create");
        }
    }
    if (optind >= argc)
        usage_error("create: missing filename");
    const char *filename = argv[optind++];
    if (apply_create_opts(&c, &opts) < 0)
        return 1;
    if (bfile)
        c.q.backing_file = bfile;
    if (bfmt)
        c.q.backing_fmt = bfmt;
    if (optind < argc) {
        if (parse_img_size(argv[optind], &c.size) < 0)
            usage_error("invalid image size '%s'", argv[optind]);
        c.have_size = true;
        optind++;
    }
    if (optind < argc)
        usage_error("create: unexpected argument '%s'", argv[optind]);
    int ret = do_create(filename, &c, unsafe);
    kv_free(&opts);
    return ret < 0 ? 1 : 0;
}

/* ------------------------------------------------------------------ snapshots */

static void snapshot_dump_header(void)
{
    printf("%-9s %-17s %7s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
}

static void snapshot_dump(const struct qcow2_snapshot *s)
{
    char date[32], clock[32], icount[24] = "";
    time_t t = (time_t)s->date_sec;
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
    uint64_t secs = s->vm_clock_nsec / 1000000000ULL;
    snprintf(clock, sizeof(clock), "%02llu:%02llu:%02llu.%03llu",
             (unsigned long long)(secs / 3600), (unsigned long long)(secs / 60 % 60),
             (unsigned long long)(secs % 60),
             (unsigned long long)(s->vm_clock_nsec / 1000000 % 1000));
    if (s->icount != UINT64_MAX)
        snprintf(icount, sizeof(icount), "%llu", (unsigned long long)s->icount);
    char *size = size_to_str(s->vm_state_size);
    printf("%-9s %-17s %7s%20s%13s%11s\n", s->id, s->name, size, date, clock, icount);
    free(size);
}

static json_t *snapshots_json(const struct qcow2_snapshot *sn, uint32_t n)
{
    json_t *arr = json_array();
    for (uint32_t i = 0; i < n; i++) {
        json_t *o = json_object();
        if (sn[i].icount != UINT64_MAX)
            json_object_set_new(o, "icount", json_integer((json_int_t)sn[i].icount));
        json_object_set_new(o, "vm-clock-nsec",
                            json_integer((json_int_t)(sn[i].vm_clock_nsec % 1000000000ULL)));
        json_object_set_new(o, "name", json_string(sn[i].name));
        json_object_set_new(o, "date-sec", json_integer(sn[i].date_sec));
        json_object_set_new(o, "date-nsec", json_integer(sn[i].date_nsec));
        json_object_set_new(o, "vm-clock-sec",
                            json_integer((json_int_t)(sn[i].vm_clock_nsec / 1000000000ULL)));
        json_object_set_new(o, "id", json_string(sn[i].id));
        json_object_set_new(o, "vm-state-size", json_integer((json_int_t)sn[i].vm_state_size));
        json_array_append_new(arr, o);
    }
    return arr;
}

static int cmd_snapshot(int argc, char **argv)
{
    const char *fmt = NULL, *name = NULL;
    int action = 0, ch;
    static const struct option lo[] = {
        { "force-share", no_argument, NULL, 'U' }, { "help", no_argument, NULL, 'h' }, { 0 },
    };
    while ((ch = getopt_long(argc, argv, "hf:lqUa:c:d:", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = check_fmt(optarg); break;
        case 'l': case 'a': case 'c': case 'd':
            if (action)
                usage_error("snapshot: give only one of -l, -a, -c, -d");
            action = ch;
            name = optarg;
            break;
        case 'q': quiet = true; break;
        case 'U': break;
        case 'h': usage(stdout); exit(0);
        default: usage_error("invalid option for snapshot");
        }
    }
    if (!action || optind != argc - 1)
        usage_error("snapshot: expected -l, -a, -c or -d and one filename");
    struct block_dev *bd;
    if (open_image(argv[optind], fmt, action == 'l', true, &bd) < 0)
        return 1;
    int rc = 0;
    if (strcmp(block_format_name(bd), "qcow2") != 0) {
        log_error("%s: only qcow2 images have internal snapshots", argv[optind]);
        rc = 1;
    } else if (action != 'l') {
        int ret = action == 'c' ? qcow2_snapshot_create(bd, name)
                : action == 'd' ? qcow2_snapshot_delete(bd, name)
                                : qcow2_snapshot_apply(bd, name);
        if (ret < 0)
            rc = 1; /* the block layer has named the image and the problem */
    } else {
        struct qcow2_snapshot *sn;
        uint32_t n;
        if (qcow2_snapshots_read(bd, &sn, &n) < 0) {
            rc = 1;
        } else {
            if (n && !quiet) {
                printf("Snapshot list:\n");
                snapshot_dump_header();
                for (uint32_t i = 0; i < n; i++)
                    snapshot_dump(&sn[i]);
            }
            qcow2_snapshots_free(sn, n);
        }
    }
    block_close(bd);
    return rc;
}

/* ------------------------------------------------------------------ info */

static json_t *info_json(const char *filename, struct block_dev *bd)
{
    json_t *o = json_object();
    if (strcmp(block_format_name(bd), "qcow2") == 0) {
        struct qcow2_snapshot *sn;
        uint32_t n;
        if (qcow2_snapshots_read(bd, &sn, &n) == 0) {
            if (n)
                json_object_set_new(o, "snapshots", snapshots_json(sn, n));
            qcow2_snapshots_free(sn, n);
        }
    }
    json_object_set_new(o, "virtual-size", json_integer((json_int_t)block_length(bd)));
    json_object_set_new(o, "filename", json_string(filename));
    bool q = strcmp(block_format_name(bd), "qcow2") == 0;
    struct qcow2_info qi;
    if (q) {
        qcow2_get_info(bd, &qi);
        json_object_set_new(o, "cluster-size", json_integer(qi.cluster_size));
    }
    json_object_set_new(o, "format", json_string(block_format_name(bd)));
    json_object_set_new(o, "actual-size", json_integer((json_int_t)disk_usage(filename)));
    if (q) {
        json_t *data = json_object();
        json_object_set_new(data, "compat", json_string(qi.version >= 3 ? "1.1" : "0.10"));
        json_object_set_new(data, "compression-type",
                            json_string(qi.compression_type ? "zstd" : "zlib"));
        if (qi.version >= 3)
            json_object_set_new(data, "lazy-refcounts", json_boolean(qi.lazy_refcounts));
        json_object_set_new(data, "refcount-bits", json_integer(qi.refcount_bits));
        if (qi.version >= 3) {
            json_object_set_new(data, "corrupt", json_boolean(qi.corrupt));
            json_object_set_new(data, "extended-l2", json_boolean(qi.extended_l2));
        }
        json_t *fs = json_object();
        json_object_set_new(fs, "type", json_string("qcow2"));
        json_object_set_new(fs, "data", data);
        json_object_set_new(o, "format-specific", fs);
        if (qi.backing_file) {
            if (qi.backing_fmt)
                json_object_set_new(o, "backing-filename-format", json_string(qi.backing_fmt));
            char *full = backing_path(filename, qi.backing_file);
            json_object_set_new(o, "full-backing-filename", json_string(full));
            free(full);
            json_object_set_new(o, "backing-filename", json_string(qi.backing_file));
        }
        json_object_set_new(o, "dirty-flag", json_boolean(qi.dirty));
    } else {
        json_object_set_new(o, "dirty-flag", json_false());
    }
    return o;
}

static void info_human(const char *filename, struct block_dev *bd)
{
    char *vs = size_to_str(block_length(bd)), *ds = size_to_str(disk_usage(filename));
    printf("image: %s\nfile format: %s\nvirtual size: %s (%llu bytes)\ndisk size: %s\n", filename,
           block_format_name(bd), vs, (unsigned long long)block_length(bd), ds);
    free(vs);
    free(ds);
    if (strcmp(block_format_name(bd), "qcow2") != 0)
        return;
    struct qcow2_info qi;
    qcow2_get_info(bd, &qi);
    printf("cluster_size: %u\n", qi.cluster_size);
    if (qi.backing_file) {
        char *full = backing_path(filename, qi.backing_file);
        if (strcmp(full, qi.backing_file) != 0)
            printf("backing file: %s (actual path: %s)\n", qi.backing_file, full);
        else
            printf("backing file: %s\n", qi.backing_file);
        free(full);
        if (qi.backing_fmt)
            printf("backing file format: %s\n", qi.backing_fmt);
    }
    if (qi.dirty)
        printf("cleanly shut down: no\n");
    struct qcow2_snapshot *sn;
    uint32_t n;
    if (qcow2_snapshots_read(bd, &sn, &n) == 0) {
        if (n) {
            printf("Snapshot list:\n");
            snapshot_dump_header();
            for (uint32_t i = 0; i < n; i++)
                snapshot_dump(&sn[i]);
        }
        qcow2_snapshots_free(sn, n);
    }
    printf("Format specific information:\n    compat: %s\n    compression type: %s\n",
           qi.version >= 3 ? "1.1" : "0.10", qi.compression_type ? "zstd" : "zlib");
    if (qi.version >= 3)
        printf("    lazy refcounts: %s\n", qi.lazy_refcounts ? "true" : "false");
    printf("    refcount bits: %u\n", qi.refcount_bits);
    if (qi.version >= 3)
        printf("    corrupt: %s\n    extended l2: %s\n", qi.corrupt ? "true" : "false",
               qi.extended_l2 ? "true" : "false");
}

static int cmd_info(int argc, char **argv)
{
    const char *fmt = NULL, *output = "human";
    bool chain = false;
    int ch;
    enum { OPT_OUTPUT = 256, OPT_CHAIN };
    static const struct option lo[] = {
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "backing-chain", no_argument, NULL, OPT_CHAIN },
        { "force-share", no_argument, NULL, 'U' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    while ((ch = getopt_long(argc, argv, "hf:U", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = check_fmt(optarg); break;
        case 'U': break;
        case OPT_OUTPUT: output = optarg; break;
        case OPT_CHAIN: chain = true; break;
        case 'h': usage(stdout); exit(0);
        default: usage_error("invalid option for info");
        }
    }
    if (strcmp(output, "human") != 0 && strcmp(output, "json") != 0)
        usage_error("--output must be human or json");
    if (optind != argc - 1)
        usage_error("info: expected one filename");
    const char *filename = argv[optind];
    struct block_dev *bd;
    /* Open the chain only when asked for it; a missing backing file should
     * not stop info from describing the image itself. */
    if (open_image(filename, fmt, true, !chain, &bd) < 0)
        return 1;
    bool json = strcmp(output, "json") == 0;
    json_t *arr = json_array();
    char *name = xstrdup(filename);
    int n = 0;
    for (struct block_dev *cur = bd; cur; cur = chain ? block_backing(cur) : NULL, n++) {
        const char *fname = n == 0 ? filename : block_filename(cur);
        if (json) {
            json_array_append_new(arr, info_json(fname, cur));
        } else {
            if (n)
                printf("\n");
            info_human(fname, cur);
        }
    }
    if (json) {
        json_t *out = chain ? json_incref(arr) : json_incref(json_array_get(arr, 0));
        char *s = json_dumps(out, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(out);
    }
    json_decref(arr);
    free(name);
    block_close(bd);
    return 0;
}

/* ------------------------------------------------------------------ check */

static void check_print(const char *filename, const struct qcow2_check_result *r, bool json)
{
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "image-end-offset", json_integer((json_int_t)r->image_end_offset));
        json_object_set_new(o, "total-clusters", json_integer((json_int_t)r->total_clusters));
        json_object_set_new(o, "check-errors", json_integer((json_int_t)r->check_errors));
        if (r->corruptions)
            json_object_set_new(o, "corruptions", json_integer((json_int_t)r->corruptions));
        if (r->leaks)
            json_object_set_new(o, "leaks", json_integer((json_int_t)r->leaks));
        if (r->corruptions_fixed)
            json_object_set_new(o, "corruptions-fixed",
                                json_integer((json_int_t)r->corruptions_fixed));
        if (r->leaks_fixed)
            json_object_set_new(o, "leaks-fixed", json_integer((json_int_t)r->leaks_fixed));
        if (r->allocated_clusters)
            json_object_set_new(o, "allocated-clusters",
                                json_integer((json_int_t)r->allocated_clusters));
        json_object_set_new(o, "filename", json_string(filename));
        json_object_set_new(o, "format", json_string("qcow2"));
        if (r->fragmented_clusters)
            json_object_set_new(o, "fragmented-clusters",
                                json_integer((json_int_t)r->fragmented_clusters));
        if (r->compressed_clusters)
            json_object_set_new(o, "compressed-clusters",
                                json_integer((json_int_t)r->compressed_clusters));
        char *s = json_dumps(o, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(o);
        return;
    }
    if (quiet)
        return;
    if (!r->corruptions && !r->leaks && !r->check_errors)
        printf("No errors were found on the image.\n");
    if (r->corruptions)
        printf("\n%llu errors were found on the image.\nData may be corrupted, or further "
               "writes to the image may corrupt it.\n", (unsigned long long)r->corruptions);
    if (r->leaks)
        printf("\n%llu leaked clusters were found on the image.\nThis means waste of disk space, "
               "but no harm to data.\n", (unsigned long long)r->leaks);
    if (r->check_errors)
        printf("\n%llu internal errors have occurred during the check.\n",
               (unsigned long long)r->check_errors);
    if (r->total_clusters && r->allocated_clusters)
        printf("%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
               (unsigned long long)r->allocated_clusters, (unsigned long long)r->total_clusters,
               100.0 * (double)r->allocated_clusters / (double)r->total_clusters,
               100.0 * (double)r->fragmented_clusters / (double)r->allocated_clusters,
               100.0 * (double)r->compressed_clusters / (double)r->allocated_clusters);
    printf("Image end offset: %llu\n", (unsigned long long)r->image_end_offset);
}

static int cmd_check(int argc, char **argv)
{
    const char *fmt = NULL, *output = "human";
    int fix = 0, ch;
    enum { OPT_OUTPUT = 256 };
    static const struct option lo[] = {
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "repair", required_argument, NULL, 'r' },
        { "force-share", no_argument, NULL, 'U' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    while ((ch = getopt_long(argc, argv, "hf:r:qUT:", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = check_fmt(optarg); break;
        case 'r':
            if (strcmp(optarg, "leaks") == 0)
                fix = QCOW2_FIX_LEAKS;
            else if (strcmp(optarg, "all") == 0)
                fix = QCOW2_FIX_LEAKS | QCOW2_FIX_ERRORS;
            else
                usage_error("-r must be 'leaks' or 'all'");
            break;
        case 'q': quiet = true; break;
        case 'U': case 'T': break;
        case OPT_OUTPUT: output = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: usage_error("invalid option for check");
        }
    }
    if (strcmp(output, "human") != 0 && strcmp(output, "json") != 0)
        usage_error("--output must be human or json");
    if (optind != argc - 1)
        usage_error("check: expected one filename");
    const char *filename = argv[optind];
    bool json = strcmp(output, "json") == 0;
    struct block_dev *bd;
    if (open_image(filename, fmt, !fix, true, &bd) < 0)
        return 1;
    if (strcmp(block_format_name(bd), "qcow2") != 0) {
        block_close(bd);
        log_error("%s: this image format does not support checks", filename);
        return 63;
    }
    struct qcow2_check_result r;
    if (qcow2_check(bd, fix, &r) < 0) {
        block_close(bd);
        log_error("%s: check failed", filename);
        return 1;
    }
    if (fix && (r.leaks_fixed || r.corruptions_fixed)) {
        if (!json && !quiet)
            printf("The following inconsistencies were found and repaired:\n\n"
                   "    %llu leaked clusters\n    %llu corruptions\n\n"
                   "Double checking the fixed image now...\n",
                   (unsigned long long)r.leaks_fixed, (unsigned long long)r.corruptions_fixed);
        struct qcow2_check_result again;
        if (qcow2_check(bd, 0, &again) < 0) {
            block_close(bd);
            return 1;
        }
        again.leaks_fixed = r.leaks_fixed;
        again.corruptions_fixed = r.corruptions_fixed;
        r = again;
    }
    block_close(bd);
    check_print(filename, &r, json);
    if (r.check_errors)
        return 1;
    if (r.corruptions)
        return 2;
    if (r.leaks)
        return 3;
    return 0;
}

/* ------------------------------------------------------------------ convert */

struct source {
    struct block_dev *bd;
    uint64_t start; /* offset of this source in the concatenated stream */
};

/* Read [off, off+len) of the sources laid end to end. */
static int read_concat(struct source *src, int nsrc, uint64_t off, uint8_t *buf, uint64_t len)
{
    for (int i = 0; i < nsrc && len; i++) {
        uint64_t slen = block_length(src[i].bd);
        if (off >= src[i].start + slen)
            continue;
        uint64_t in = off - src[i].start, n = MIN(len, slen - in);
        int ret = block_pread(src[i].bd, in, buf, n);
        if (ret < 0)
            return ret;
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

enum unit_action { UNIT_SKIP, UNIT_ZERO, UNIT_DATA };

/* What convert does with one -S unit of source data: skip it when a fresh
 * target already reads it back (zeroes, or the -B base's bytes), write it as
 * zeroes when it is zero and sparse output is on, else write the bytes. */
static enum unit_action unit_classify(const uint8_t *data, const uint8_t *base_data, uint64_t len,
                                      bool fresh, bool sparse)
{
    bool zero = is_zero(data, len);
    bool same = base_data ? memcmp(data, base_data, len) == 0 : zero;
    if (fresh && same)
        return UNIT_SKIP;
    return zero && sparse ? UNIT_ZERO : UNIT_DATA;
}

/* ---- convert: a reader thread fills chunks of the source while the main
 * thread writes earlier ones (and, with -c, worker threads compress). */

#define PIPE_SLOTS 8
#define MAX_COMPRESS_THREADS 16 /* qemu-img's -m limit */
#define COMPRESS_BATCH 256           /* at most this many clusters per chunk with -c */
#define COMPRESS_CHUNK (4 * MiB)     /* and about this many bytes */

struct conv_chunk {
    uint64_t doff, len;     /* where in the output */
    bool hole;              /* the source reads as zeroes here and stores no data */
    bool base_zero;         /* hole: the -B base reads as zeroes here too */
    bool end;               /* no more chunks; err says why */
    int err;
    uint8_t *buf, *bbuf;    /* source bytes, -B base bytes (NULL without -B) */
    /* plain: what to do with the bytes, worked out by the reader */
    struct conv_run { uint64_t off, len; enum unit_action act; } *runs;
    unsigned nruns;
    /* -c: per cluster of the chunk; jobs are claimed and counted under the
     * pipe's lock */
    uint8_t *out;
    uint64_t clen[COMPRESS_BATCH];
    int cret[COMPRESS_BATCH];
    bool skip[COMPRESS_BATCH];
    int njobs, next_job, done_jobs;
};

struct conv_pipe {
    struct source *src;
    int nsrc;
    struct block_dev *base;
    uint64_t total;
    uint64_t cs;            /* -c: chunks of whole clusters of this size; 0: plain */
    uint64_t chunk_clusters;
    bool fresh;             /* the target reads as zeroes (or its backing) before we write */
    uint64_t sparse;        /* plain: -S unit, 0 = off */
    struct block_dev *dst;
    int nworkers;
    pthread_t workers[MAX_COMPRESS_THREADS];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct conv_chunk slot[PIPE_SLOTS];
    uint64_t produced, consumed;
    bool stop;              /* the writer gave up */
    pthread_t reader;
};

static int read_base(struct block_dev *base, uint64_t off, uint8_t *buf, uint64_t len)
{
    uint64_t bl = block_length(base), have = off < bl ? MIN(len, bl - off) : 0;
    memset(buf + have, 0, len - have);
    return have ? block_pread(base, off, buf, have) : 0;
}

/* Next free slot for the reader, or NULL once the writer has stopped. */
static struct conv_chunk *pipe_slot_wait(struct conv_pipe *p)
{
    pthread_mutex_lock(&p->lock);
    while (p->produced - p->consumed >= PIPE_SLOTS && !p->stop)
        pthread_cond_wait(&p->cond, &p->lock);
    struct conv_chunk *c = p->stop ? NULL : &p->slot[p->produced % PIPE_SLOTS];
    pthread_mutex_unlock(&p->lock);
    return c;
}

static void pipe_publish(struct conv_pipe *p)
{
    pthread_mutex_lock(&p->lock);
    p->produced++;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* Split a plain chunk into runs of -S units that need the same action
 * (done by the reader, so the writer only writes). */
static void classify_runs(const struct conv_pipe *p, struct conv_chunk *c)
{
    uint64_t unit = p->sparse ? p->sparse : c->len;
    c->nruns = 0;
    for (uint64_t pos = 0; pos < c->len;) {
        enum unit_action act = UNIT_SKIP;
        uint64_t run = 0;
        while (pos + run < c->len) {
            uint64_t q = pos + run, u = MIN(unit - ((c->doff + q) % unit), c->len - q);
            enum unit_action a = unit_classify(c->buf + q, c->bbuf ? c->bbuf + q : NULL, u,
                                               p->fresh, p->sparse != 0);
            if (run && a != act)
                break;
            act = a;
            run += u;
        }
        c->runs[c->nruns++] = (struct conv_run){ pos, run, act };
        pos += run;
    }
}

/* Plain convert: one run of equal allocation status, at most COPY_CHUNK. */
static int read_plain_chunk(struct conv_pipe *p, struct source *s, uint64_t off,
                            struct conv_chunk *c)
{
    uint64_t len = block_length(s->bd), doff = s->start + off;
    uint64_t n = MIN(COPY_CHUNK - (doff % COPY_CHUNK), len - off), pnum;
    unsigned st;
    int ret = block_status(s->bd, off, n, &pnum, &st);
    if (ret < 0)
        return ret;
    c->doff = doff;
    c->len = pnum;
    c->hole = (st & BLOCK_STATUS_ZERO) && !(st & BLOCK_STATUS_DATA);
    if (c->hole) {
        c->base_zero = true;
        if (p->base && doff < block_length(p->base)) {
            uint64_t m = MIN(pnum, block_length(p->base) - doff), bn;
            unsigned bst;
            c->base_zero = block_status(p->base, doff, m, &bn, &bst) == 0 && bn == m &&
                           (bst & BLOCK_STATUS_ZERO) && !(bst & BLOCK_STATUS_DATA);
        }
        return 0;
    }
    if ((ret = block_pread(s->bd, off, c->buf, pnum)) < 0 ||
        (p->base && (ret = read_base(p->base, doff, c->bbuf, pnum)) < 0))
        return ret;
    classify_runs(p, c);
    return 0;
}

/* convert -c: COMPRESS_BATCH whole clusters of the concatenated sources. */
/* Does [off, off+len) of the concatenated sources read as zeroes without
 * storing data (a hole), by the sources' allocation status alone? */
static bool concat_is_hole(struct source *src, int nsrc, uint64_t off, uint64_t len)
{
    for (int i = 0; i < nsrc; i++) {
        uint64_t slen = block_length(src[i].bd), pnum;
        unsigned st;
        if (off < src[i].start || off - src[i].start >= slen)
            continue;
        uint64_t in = off - src[i].start;
        return len <= slen - in && block_status(src[i].bd, in, len, &pnum, &st) == 0 &&
               pnum == len && (st & BLOCK_STATUS_ZERO) && !(st & BLOCK_STATUS_DATA);
    }
    return false;
}

static int read_cluster_chunk(struct conv_pipe *p, uint64_t doff, struct conv_chunk *c)
{
    c->doff = doff;
    c->len = MIN(p->cs * p->chunk_clusters, p->total - doff);
    c->hole = false;
    c->njobs = (int)div_up(c->len, p->cs);
    c->next_job = c->done_jobs = 0;
    if (p->fresh && !p->base && concat_is_hole(p->src, p->nsrc, doff, c->len)) {
        /* A fresh target already reads zeroes there: nothing to read or write. */
        for (int i = 0; i < c->njobs; i++) {
            c->skip[i] = true;
            c->cret[i] = 0;
        }
        return 0;
    }
    int ret = read_concat(p->src, p->nsrc, doff, c->buf, c->len);
    if (ret == 0 && p->base)
        ret = read_base(p->base, doff, c->bbuf, c->len);
    if (ret < 0)
        return ret;
    /* Clusters a fresh target already reads back need no writing. */
    for (int i = 0; i < c->njobs; i++) {
        uint64_t o = (uint64_t)i * p->cs, len = MIN(p->cs, c->len - o);
        bool same = p->base ? memcmp(c->buf + o, c->bbuf + o, len) == 0
                            : is_zero(c->buf + o, len);
        c->skip[i] = p->fresh && same;
        c->cret[i] = 0;
    }
    return 0;
}

static void *conv_reader(void *opaque)
{
    struct conv_pipe *p = opaque;
    int err = 0;
    struct conv_chunk *c;
    if (p->cs) {
        for (uint64_t doff = 0; doff < p->total && !err; doff += c->len) {
            if (!(c = pipe_slot_wait(p)))
                return NULL;
            c->end = false;
            if ((err = read_cluster_chunk(p, doff, c)) == 0)
                pipe_publish(p);
        }
    } else {
        for (int i = 0; i < p->nsrc && !err; i++) {
            uint64_t len = block_length(p->src[i].bd);
            for (uint64_t off = 0; off < len && !err; off += c->len) {
                if (!(c = pipe_slot_wait(p)))
                    return NULL;
                c->end = false;
                if ((err = read_plain_chunk(p, &p->src[i], off, c)) == 0)
                    pipe_publish(p);
            }
        }
    }
    if (!(c = pipe_slot_wait(p)))
        return NULL;
    c->end = true;
    c->err = err;
    c->len = 0;
    c->njobs = c->next_job = c->done_jobs = 0;
    pipe_publish(p);
    return NULL;
}

static int pipe_start(struct conv_pipe *p, struct source *src, int nsrc, uint64_t total,
                      struct block_dev *base, uint64_t cs, bool fresh, uint64_t sparse)
{
    memset(p, 0, sizeof(*p));
    p->src = src;
    p->nsrc = nsrc;
    p->total = total;
    p->base = base;
    p->cs = cs;
    p->fresh = fresh;
    p->sparse = sparse;
    p->chunk_clusters = cs ? MIN(COMPRESS_BATCH, MAX(COMPRESS_CHUNK / cs, 1)) : 0;
    uint64_t size = cs ? cs * p->chunk_clusters : COPY_CHUNK;
    for (int i = 0; i < PIPE_SLOTS; i++) {
        p->slot[i].buf = io_buf(size);
        p->slot[i].bbuf = base ? io_buf(size) : NULL;
        p->slot[i].out = cs ? io_buf(size) : NULL;
        /* at most one run per -S unit (512 bytes at least) */
        p->slot[i].runs = cs ? NULL : xcalloc(COPY_CHUNK / 512 + 1, sizeof(struct conv_run));
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    if (pthread_create(&p->reader, NULL, conv_reader, p) != 0)
        return log_fail(-EAGAIN, "cannot start a reader thread");
    return 0;
}

/* The oldest chunk not yet released (waits for the reader). */
static struct conv_chunk *pipe_peek(struct conv_pipe *p, uint64_t index)
{
    pthread_mutex_lock(&p->lock);
    while (p->produced <= index)
        pthread_cond_wait(&p->cond, &p->lock);
    struct conv_chunk *c = &p->slot[index % PIPE_SLOTS];
    pthread_mutex_unlock(&p->lock);
    return c;
}

static void pipe_release(struct conv_pipe *p)
{
    pthread_mutex_lock(&p->lock);
    p->consumed++;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static void pipe_finish(struct conv_pipe *p)
{
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->reader, NULL);
    for (int t = 0; t < p->nworkers; t++)
        pthread_join(p->workers[t], NULL);
    for (int i = 0; i < PIPE_SLOTS; i++) {
        free(p->slot[i].buf);
        free(p->slot[i].bbuf);
        free(p->slot[i].out);
        free(p->slot[i].runs);
    }
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
}

/* A compression worker: takes the next cluster of the oldest chunk that
 * has one left, whichever chunk that is, so no worker waits for the others
 * at chunk boundaries. */
static void *compress_worker(void *opaque)
{
    struct conv_pipe *p = opaque;
    pthread_mutex_lock(&p->lock);
    while (!p->stop) {
        struct conv_chunk *c = NULL;
        int i = 0;
        for (uint64_t k = p->consumed; k < p->produced && !c; k++) {
            struct conv_chunk *x = &p->slot[k % PIPE_SLOTS];
            if (x->end)
                break;
            if (x->next_job < x->njobs) {
                c = x;
                i = x->next_job++;
            }
        }
        if (!c) {
            pthread_cond_wait(&p->cond, &p->lock);
            continue;
        }
        pthread_mutex_unlock(&p->lock);
        uint64_t o = (uint64_t)i * p->cs;
        if (!c->skip[i])
            c->cret[i] = qcow2_compress(p->dst, c->buf + o, MIN(p->cs, c->len - o), c->out + o,
                                        &c->clen[i]);
        pthread_mutex_lock(&p->lock);
        if (++c->done_jobs == c->njobs)
            pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Store a compressed chunk's clusters in order (plainly where compression
 * did not pay). */
static int compress_store(struct block_dev *dst, const struct conv_chunk *c, uint64_t cs)
{
    int ret = 0;
    for (int i = 0, j; i < c->njobs && ret == 0; i = j) {
        uint64_t o = (uint64_t)i * cs;
        j = i + 1;
        if (c->skip[i])
            continue;
        if (c->cret[i] == 0) {
            ret = qcow2_write_precompressed(dst, c->doff + o, c->out + o, c->clen[i]);
            continue;
        }
        /* Clusters that did not compress, one after another: one write. */
        while (j < c->njobs && !c->skip[j] && c->cret[j] != 0)
            j++;
        ret = block_pwrite(dst, c->doff + o, c->buf + o, MIN((uint64_t)(j - i) * cs, c->len - o));
    }
    return ret;
}

/* convert -c: the reader fills chunks, nw workers compress their clusters,
 * and this thread stores the chunks in order as they complete. */
static int convert_compressed(struct source *src, int nsrc, uint64_t total, struct block_dev *dst,
                              struct block_dev *base, bool fresh, bool show, int nw)
{
    uint64_t cs = qcow2_cluster_size(dst);
    struct conv_pipe p;
    int ret = pipe_start(&p, src, nsrc, total, base, cs, fresh, 0);
    if (ret < 0)
        return ret;
    p.dst = dst;
    for (int t = 0; t < nw; t++) {
        if (pthread_create(&p.workers[p.nworkers], NULL, compress_worker, &p) == 0)
            p.nworkers++;
    }
    if (p.nworkers == 0) {
        pipe_finish(&p);
        return log_fail(-EAGAIN, "cannot start compression threads");
    }
    for (uint64_t k = 0; ret == 0; k++) {
        struct conv_chunk *c = pipe_peek(&p, k);
        if (c->end) {
            ret = c->err;
            break;
        }
        pthread_mutex_lock(&p.lock);
        while (c->done_jobs < c->njobs)
            pthread_cond_wait(&p.cond, &p.lock);
        pthread_mutex_unlock(&p.lock);
        ret = compress_store(dst, c, cs);
        progress(show && ret == 0, c->doff + c->len, total);
        pipe_release(&p);
    }
    pipe_finish(&p);
    return ret;
}

/* Write one chunk of a plain convert. */
static int convert_write_chunk(const struct conv_chunk *c, struct block_dev *dst, bool fresh)
{
    if (c->hole)
        return !fresh || !c->base_zero ? block_write_zeroes(dst, c->doff, c->len, false) : 0;
    int err = 0;
    for (unsigned i = 0; i < c->nruns && !err; i++) {
        const struct conv_run *r = &c->runs[i];
        if (r->act == UNIT_ZERO)
            err = block_write_zeroes(dst, c->doff + r->off, r->len, false);
        else if (r->act == UNIT_DATA)
            err = block_pwrite(dst, c->doff + r->off, c->buf + r->off, r->len);
    }
    return err;
}

static int convert_plain(struct source *src, int nsrc, uint64_t total, struct block_dev *dst,
                         struct block_dev *base, bool fresh, uint64_t sparse, bool show)
{
    struct conv_pipe p;
    int err = pipe_start(&p, src, nsrc, total, base, 0, fresh, sparse);
    if (err < 0)
        return err;
    for (uint64_t k = 0; !err; k++) {
        struct conv_chunk *c = pipe_peek(&p, k);
        if (c->end) {
            err = c->err;
            break;
        }
        err = convert_write_chunk(c, dst, fresh);
        progress(show, c->doff + c->len, total);
        pipe_release(&p);
    }
    pipe_finish(&p);
    return err;
}

static int cmd_convert(int argc, char **argv)
{
    const char *fmt = NULL, *ofmt = "raw", *bfile = NULL, *bfmt = NULL;
    struct kvlist opts = { .n = 0 };
    bool compress = false, show = false, no_create = false, durable = false;
    uint64_t sparse = 4096, parallel = 8; /* -m: requests at once, qemu-img's default */
    int ch;
    static const struct option lo[] = {
        { "help", no_argument, NULL, 'h' },
        { "force-share", no_argument, NULL, 'U' },
        { "target-is-zero", no_argument, NULL, 'Z' },
        { 0 },
    };
    while ((ch = getopt_long(argc, argv, "hf:O:o:B:F:cpqnS:Wm:t:T:UCr:l:", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = check_fmt(optarg); break;
        case 'O': ofmt = check_fmt(optarg); break;
        case 'o': kv_parse(&opts, optarg); break;
        case 'B': bfile = optarg; break;
        case 'F': bfmt = check_fmt(optarg); break;
        case 'c': compress = true; break;
        case 'p': show = true; break;
        case 'q': quiet = true; break;
        case 'n': no_create = true; break;
        case 'S':
            if (parse_img_size(optarg, &sparse) < 0 || (sparse && sparse % 512))
                usage_error("-S must be a multiple of 512 (or 0)");
            break;
        case 't':
            /* Output cache mode. Like qemu-img, convert defaults to "unsafe":
             * nothing is flushed; any other mode makes the result durable. */
            if (strcmp(optarg, "unsafe") == 0)
                durable = false;
            else if (strcmp(optarg, "none") == 0 || strcmp(optarg, "writeback") == 0 ||
                     strcmp(optarg, "writethrough") == 0 || strcmp(optarg, "directsync") == 0)
                durable = true;
            else
                usage_error("invalid cache mode '%s'", optarg);
            break;
        case 'm':
            if (parse_u64(optarg, MAX_COMPRESS_THREADS, &parallel) < 0 || parallel == 0)
                usage_error("-m must be between 1 and %d", MAX_COMPRESS_THREADS);
            break;
        case 'W': case 'T': case 'U': case 'C': case 'r': case 'Z': break;
        case 'l': usage_error("internal snapshots are not supported");
        case 'h': usage(stdout); exit(0);
        default: usage_error("invalid option for convert");
        }
    }
    if (quiet)
        show = false;
    if (argc - optind < 2)
        usage_error("convert: expected source file(s) and an output file");
    if (compress && strcmp(ofmt, "qcow2") != 0)
        usage_error("compression is only supported for qcow2 output");
    const char *out = argv[argc - 1];
    int nsrc = argc - 1 - optind, rc = 1;
    struct source *src = xcalloc((size_t)nsrc, sizeof(*src));
    uint64_t total = 0;
    for (int i = 0; i < nsrc; i++) {
        if (open_image(argv[optind + i], fmt, true, false, &src[i].bd) < 0)
            goto out;
        src[i].start = total;
        total += block_length(src[i].bd);
    }
    struct block_dev *dst = NULL, *base = NULL;
    if (!no_create) {
        struct create_spec c = { .fmt = ofmt };
        if (apply_create_opts(&c, &opts) < 0)
            goto out;
        if (bfile)
            c.q.backing_file = bfile;
        if (bfmt)
            c.q.backing_fmt = bfmt;
        c.size = total;
        c.have_size = true;
        bool q0 = quiet;
        quiet = true;
        int ret = do_create(out, &c, false);
        quiet = q0;
        if (ret < 0)
            goto out;
    }
    if (open_image(out, no_create ? probe_format(out) : ofmt, false, true, &dst) < 0)
        goto out;
    if (no_create && block_length(dst) < total) {
        log_error("%s: output image is smaller than the input", out);
        goto close_dst;
    }
    if (bfile) {
        char *bp = backing_path(out, bfile);
        int ret = open_image(bp, bfmt, true, false, &base);
        free(bp);
        if (ret < 0)
            goto close_dst;
    }
    bool fresh = !no_create; /* a new target reads as zeroes (or as its backing) */
    int err = 0;
    uint8_t *buf = NULL, *bbuf = NULL;
    if (compress) {
        progress(show, 0, total);
        err = convert_compressed(src, nsrc, total, dst, base, fresh, show, (int)parallel);
        goto finish;
    }
    progress(show, 0, total);
    err = convert_plain(src, nsrc, total, dst, base, fresh, sparse, show);
finish:
    if (!err && durable)
        err = block_flush(dst) < 0 ? -EIO : 0;
    if (!err && durable && !no_create && strcmp(block_format_name(dst), "qcow2") == 0) {
        /* Tools skip the per-write barriers; make the result durable now. */
        int fd = open(out, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (fsync(fd) < 0)
                err = -errno;
            close(fd);
        }
    }
    progress_end(show && !err);
    if (err)
        log_error("%s: conversion failed: %s", out, strerror(-err));
    else
        rc = 0;
    free(buf);
    free(bbuf);
    if (base)
        block_close(base);
close_dst:
    block_close(dst);
out:
    for (int i = 0; i < nsrc; i++)
        block_close(src[i].bd);
    free(src);
    kv_free(&opts);
    return rc;
}

/* ------------------------------------------------------------------ resize */

static int cmd_resize(int argc, char **argv)
{
    const char *fmt = NULL;
    bool shrink = false;
    enum qcow2_prealloc prealloc = QCOW2_PREALLOC_OFF;
    int ch;
    enum { OPT_SHRINK = 256, OPT_PREALLOC };
    static const struct option lo[] = {
        { "shrink", no_argument, NULL, OPT_SHRINK },
        { "preallocation", required_argument, NULL, OPT_PREALLOC },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    /* "-1G" is a size, not an option: stop at the first non-option. */
    while ((ch = getopt_long(argc, argv, "+hf:q", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = check_fmt(optarg); break;
        case 'q': quiet = true; break;
        case OPT_SHRINK: shrink = true; break;
        case OPT_PREALLOC:
            if (strcmp(optarg, "off") == 0)
                prealloc = QCOW2_PREALLOC_OFF;
            else if (strcmp(optarg, "falloc") == 0)
                prealloc = QCOW2_PREALLOC_FALLOC;
            else if (strcmp(optarg, "full") == 0)
                prealloc = QCOW2_PREALLOC_FULL;
            else
                usage_error("invalid preallocation mode '%s'", optarg);
            break;
        case 'h': usage(stdout); exit(0);
        default: usage_error("invalid option for resize");
        }
    }
    /* Allow options after the filename too (qemu-img style). */
    while (optind < argc && strcmp(argv[optind], "--shrink") == 0 && ++optind)
        shrink = true;
    if (argc - optind != 2)
        usage_error("resize: expected a filename and a size");
    const char *filename = argv[optind], *sz = argv[optind + 1];
    int sign = 0;
    if (*sz == '+' || *sz == '-')
        sign = *sz++ == '+' ? 1 : -1;
    uint64_t n;
    if (parse_img_size(sz, &n) < 0)
        usage_error("invalid size '%s'", argv[optind + 1]);
    struct block_dev *bd;
    if (open_image(filename, fmt, false, true, &bd) < 0)
        return 1;
    uint64_t cur = block_length(bd), want = sign > 0 ? cur + n : sign < 0 ? cur - n : n;
    if (sign < 0 && n > cur) {
        block_close(bd);
        log_error("%s: new size would be negative", filename);
        return 1;
    }
    int ret = 0;
    if (strcmp(block_format_name(bd), "qcow2") == 0) {
        if (prealloc != QCOW2_PREALLOC_OFF)
            ret = log_fail(-ENOTSUP, "%s: preallocation on resize is not supported for qcow2",
                           filename);
        else if (want < cur && !shrink)
            ret = log_fail(-EINVAL, "%s: use the --shrink option to shrink an image "
                           "(data past the new end is lost)", filename);
        else if (want < cur)
            ret = qcow2_shrink(bd, want);
        else
            ret = qcow2_grow(bd, want);
        block_close(bd);
    } else {
        block_close(bd);
        if (want < cur && !shrink)
            ret = log_fail(-EINVAL, "%s: use the --shrink option to shrink an image "
                           "(data past the new end is lost)", filename);
        int fd = ret == 0 ? open(filename, O_WRONLY | O_CLOEXEC) : -1;
        if (ret == 0 && (fd < 0 || ftruncate(fd, (off_t)want) < 0))
            ret = log_fail(-errno, "%s: cannot resize: %s", filename, strerror(errno));
        if (ret == 0 && want > cur && prealloc != QCOW2_PREALLOC_OFF &&
            fallocate(fd, 0, (off_t)cur, (off_t)(want - cur)) < 0)
            ret = log_fail(-errno, "%s: preallocation failed: %s", filename, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    if (ret < 0)
        return 1;
    if (!quiet)
        printf("Image resized.\n");
    return 0;
}

/* ------------------------------------------------------------------ commit */

/* Is the run at off decided by an image above base (top included), rather
 * than by base or below? *pnum: the length of the run with that answer. */
static int allocated_above(struct block_dev *top, struct block_dev *base, uint64_t off,
                           uint64_t len, uint64_t *pnum, bool *alloc)
{
    *pnum = len;
    *alloc = false;
    for (struct block_dev *b = top; b && b != base; b = block_backing(b)) {
        if (off >= block_length(b)) {
            *alloc = true; /* past a shorter image: the image above reads zeroes */
            return 0;
        }
        uint64_t n;
        unsigned st;
        int ret = block_status(b, off, MIN(*pnum, block_length(b) - off), &n, &st);
        if (ret < 0)
            return ret;
        *pnum = n;
        if (st & BLOCK_STATUS_ALLOCATED) {
            *alloc = true;
            return 0;
        }
    }
    return 0;
}

/* Copy into dst (a writable open of `base`) what the images above base
 * store, read through top so the result is what top shows. */
static int copy_allocated(struct block_dev *top, struct block_dev *base, struct block_dev *dst,
                          bool show)
{
    uint64_t len = MIN(block_length(top), block_length(dst));
    uint8_t *buf = io_buf(COPY_CHUNK);
    int ret = 0;
    for (uint64_t off = 0; off < len && ret == 0;) {
        uint64_t pnum;
        bool alloc;
        if ((ret = allocated_above(top, base, off, MIN(COPY_CHUNK, len - off), &pnum, &alloc)) < 0)
            break;
        if (alloc && (ret = block_pread(top, off, buf, pnum)) == 0)
            ret = is_zero(buf, pnum) ? block_write_zeroes(dst, off, pnum, false)
                                     : block_pwrite(dst, off, buf, pnum);
        off += pnum;
        progress(show, off, len);
    }
    free(buf);
    if (ret == 0)
        ret = block_flush(dst);
    return ret;
}

/* The image of top's backing chain that `name` names (as given, or relative
 * to top's directory, like backing file names), compared by real path. */
static struct block_dev *chain_find(struct block_dev *top, const char *top_name, const char *name)
{
    char want[2][PATH_MAX], real[PATH_MAX];
    char *rel = backing_path(top_name, name);
    bool ok0 = realpath(name, want[0]) != NULL, ok1 = realpath(rel, want[1]) != NULL;
    free(rel);
    for (struct block_dev *b = block_backing(top); b; b = block_backing(b)) {
        if (!realpath(block_filename(b), real))
            continue;
        if ((ok0 && strcmp(real, want[0]) == 0) || (ok1 && strcmp(real, want[1]) == 0))
            return b;
    }
    return NULL;
}

static int cmd_commit(int argc, char **argv)
{
    const char *fmt = NULL, *base_name = NULL;
    bool show = false, drop = false;
    int ch;
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' }, { 0 } };
    while ((ch = getopt_long(argc, argv, "hf:qdpb:t:r:", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = check_fmt(optarg); break;
        case 'q': quiet = true; break;
        case 'd': drop = true; break;
        case 'p': show = true; break;
        case 'b': base_name = optarg; break;
        case 't': case 'r': break;
        case 'h': usage(stdout); exit(0);
        default: usage_error("invalid option for commit");
        }
    }
    if (optind != argc - 1)
        usage_error("commit: expected one filename");
    const char *filename = argv[optind];
    struct block_dev *top;
    if (open_image(filename, fmt, true, false, &top) < 0)
        return 1;
    struct block_dev *base = block_backing(top);
    if (!base) {
        block_close(top);
        log_error("%s: image has no backing file to commit to", filename);
        return 1;
    }
    if (base_name) {
        /* Images between base and top no longer match base afterwards; the
         * top keeps its data so it stays valid (-b implies -d). */
        base = chain_find(top, filename, base_name);
        drop = true;
        if (!base) {
            log_error("%s: '%s' is not in the image's backing chain", filename, base_name);
            block_close(top);
            return 1;
        }
    }
    struct block_dev *dst;
    int ret = open_image(block_filename(base), block_format_name(base), false, true, &dst);
    if (ret == 0) {
        ret = copy_allocated(top, base, dst, show && !quiet);
        block_close(dst);
    }
    const char *top_fmt = block_format_name(top);
    block_close(top);
    /* Like qemu-img: the committed data now lives below, so the top image
     * is emptied unless -d keeps it. */
    if (ret == 0 && !drop && strcmp(top_fmt, "qcow2") == 0) {
        struct block_dev *w;
        ret = open_image(filename, "qcow2", false, true, &w);
        if (ret == 0) {
            ret = qcow2_make_empty(w);
            block_close(w);
        }
    }
    if (ret < 0) {
        log_error("%s: commit failed: %s", filename, strerror(-ret));
        return 1;
    }
    progress_end(show && !quiet);
    if (!quiet)
        printf("Image committed.\n");
    return 0;
}

/* ------------------------------------------------------------------ rebase */

static int cmd_rebase(int argc, char **argv)
{
    const char *fmt = NULL, *bfile = NULL, *bfmt = NULL;
    bool unsafe = false, show = false;
    int ch;
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' }, { 0 } };
    while ((ch = getopt_long(argc, argv, "hf:qub:F:pt:T:U", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = check_fmt(optarg); break;
        case 'q': quiet = true; break;
        case 'u': unsafe = true; break;
        case 'b': bfile = optarg; break;
        case 'F': bfmt = check_fmt(optarg); break;
        case 'p': show = true; break;
        case 't': case 'T': case 'U': break;
        case 'h': usage(stdout); exit(0);
        default: usage_error("invalid option for rebase");
        }
    }
    if (!bfile)
        usage_error("rebase: -b backing_file is required ('' removes the backing file)");
    if (optind != argc - 1)
        usage_error("rebase: expected one filename");
    const char *filename = argv[optind];
    const char *newb = *bfile ? bfile : NULL;
    struct block_dev *img;
    int ret;
    if (unsafe) {
        if (open_image(filename, fmt, false, true, &img) < 0)
            return 1;
        ret = qcow2_set_backing(img, newb, newb ? (bfmt ? bfmt : probe_format(
                                                    backing_path(filename, newb))) : NULL);
        block_close(img);
        return ret < 0 ? 1 : 0;
    }
    /* Safe: copy into the image every cluster where old and new backing differ. */
    if (open_image(filename, fmt, true, false, &img) < 0)
        return 1;
    struct block_dev *nb = NULL, *w = NULL;
    char *np = newb ? backing_path(filename, newb) : NULL;
    if (np && open_image(np, bfmt, true, false, &nb) < 0) {
        block_close(img);
        free(np);
        return 1;
    }
    const char *nfmt = nb ? block_format_name(nb) : NULL;
    ret = open_image(filename, block_format_name(img), false, true, &w);
    uint64_t len = block_length(img);
    uint8_t *a = io_buf(COPY_CHUNK), *b = io_buf(COPY_CHUNK);
    struct block_dev *old = block_backing(img);
    for (uint64_t off = 0; off < len && ret == 0;) {
        uint64_t pnum;
        unsigned st;
        if ((ret = block_status(img, off, MIN(COPY_CHUNK, len - off), &pnum, &st)) < 0)
            break;
        if (!(st & BLOCK_STATUS_ALLOCATED)) {
            uint64_t olen = old ? block_length(old) : 0, nlen = nb ? block_length(nb) : 0;
            memset(a, 0, pnum);
            memset(b, 0, pnum);
            if (off < olen)
                ret = block_pread(old, off, a, MIN(pnum, olen - off));
            if (ret == 0 && off < nlen)
                ret = block_pread(nb, off, b, MIN(pnum, nlen - off));
            if (ret == 0 && memcmp(a, b, pnum) != 0)
                ret = block_pwrite(w, off, a, pnum);
        }
        off += pnum;
        progress(show && !quiet, off, len);
    }
    free(a);
    free(b);
    if (ret == 0)
        ret = qcow2_set_backing(w, newb, nfmt);
    if (w)
        block_close(w);
    if (nb)
        block_close(nb);
    block_close(img);
    free(np);
    if (ret < 0) {
        log_error("%s: rebase failed: %s", filename, strerror(-ret));
        return 1;
    }
    progress_end(show && !quiet);
    return 0;
}

/* ------------------------------------------------------------------ map */

struct map_ent {
    uint64_t start, length, offset;
    int depth;
    bool present, zero, data, has_offset;
    const char *file;
};

/* Status at `off` through the chain: the layer that decides it. */
static int map_one(struct block_dev *bd, uint64_t off, uint64_t len, int depth, struct map_ent *e)
{
    uint64_t pnum, host = 0;
    unsigned st;
    bool q = strcmp(block_format_name(bd), "qcow2") == 0;
    int ret = q ? qcow2_map(bd, off, len, &pnum, &st, &host) : block_status(bd, off, len, &pnum, &st);
    if (ret < 0)
        return ret;
    struct block_dev *below = block_backing(bd);
    if (!(st & BLOCK_STATUS_ALLOCATED) && below && off < block_length(below))
        return map_one(below, off, MIN(pnum, block_length(below) - off), depth + 1, e);
    e->start = off;
    e->length = pnum;
    e->depth = depth;
    e->file = block_filename(bd);
    e->present = (st & BLOCK_STATUS_ALLOCATED) != 0;
    e->zero = (st & BLOCK_STATUS_ZERO) != 0;
    e->data = (st & BLOCK_STATUS_DATA) != 0;
    e->has_offset = false;
    if (!q) {
        e->has_offset = true; /* raw: guest offset = file offset, holes included */
        e->offset = off;
    } else if (q && host) {
        e->has_offset = true;
        e->offset = host;
    }
    if (!e->present)
        e->zero = true, e->data = false;
    return 0;
}

static void map_print(const struct map_ent *e, bool json, bool first)
{
    if (json) {
        printf("%s{ \"start\": %llu, \"length\": %llu, \"depth\": %d, \"present\": %s, "
               "\"zero\": %s, \"data\": %s",
               first ? "[" : ",\n", (unsigned long long)e->start, (unsigned long long)e->length,
               e->depth, e->present ? "true" : "false", e->zero ? "true" : "false",
               e->data ? "true" : "false");
        if (e->has_offset)
            printf(", \"offset\": %llu", (unsigned long long)e->offset);
        printf("}");
    } else if (e->data && e->has_offset) {
        printf("%#-16llx%#-16llx%#-16llx%s\n", (unsigned long long)e->start,
               (unsigned long long)e->length, (unsigned long long)e->offset, e->file);
    }
}

static int cmd_map(int argc, char **argv)
{
    const char *fmt = NULL, *output = "human";
    uint64_t start = 0, maxlen = UINT64_MAX;
    int ch;
    enum { OPT_OUTPUT = 256, OPT_START, OPT_MAX };
    static const struct option lo[] = {
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "start-offset", required_argument, NULL, OPT_START },
        { "max-length", required_argument, NULL, OPT_MAX },
        { "force-share", no_argument, NULL, 'U' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    while ((ch = getopt_long(argc, argv, "hf:U", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = check_fmt(optarg); break;
        case 'U': break;
        case OPT_OUTPUT: output = optarg; break;
        case OPT_START:
            if (parse_img_size(optarg, &start) < 0)
                usage_error("invalid --start-offset '%s'", optarg);
            break;
        case OPT_MAX:
            if (parse_img_size(optarg, &maxlen) < 0)
                usage_error("invalid --max-length '%s'", optarg);
            break;
        case 'h': usage(stdout); exit(0);
        default: usage_error("invalid option for map");
        }
    }
    bool json = strcmp(output, "json") == 0;
    if (!json && strcmp(output, "human") != 0)
        usage_error("--output must be human or json");
    if (optind != argc - 1)
        usage_error("map: expected one filename");
    struct block_dev *bd;
    if (open_image(argv[optind], fmt, true, false, &bd) < 0)
        return 1;
    uint64_t len = block_length(bd), end = maxlen > len - MIN(start, len) ? len : start + maxlen;
    if (!json)
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    struct map_ent cur = { 0 }, next;
    bool have = false, first = true;
    int ret = 0;
    for (uint64_t off = start; off < end; off += next.length) {
        if ((ret = map_one(bd, off, MIN(end - off, 1ULL << 30), 0, &next)) < 0)
            break;
        if (have && cur.depth == next.depth && cur.present == next.present &&
            cur.zero == next.zero && cur.data == next.data && cur.file == next.file &&
            cur.has_offset == next.has_offset &&
            (!cur.has_offset || cur.offset + cur.length == next.offset)) {
            cur.length += next.length;
            continue;
        }
        if (have) {
            map_print(&cur, json, first);
            first = false;
        }
        cur = next;
        have = true;
    }
    if (have && ret == 0)
        map_print(&cur, json, first);
    if (json)
        printf(first && !have ? "[]\n" : "]\n");
    block_close(bd);
    if (ret < 0) {
        log_error("%s: map failed: %s", argv[optind], strerror(-ret));
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ compare */

/* Status of the run at off through the whole backing chain: ALLOCATED when
 * some image of the chain decides it (qemu's block status "above"). */
static int chain_status(struct block_dev *bd, uint64_t off, uint64_t len, uint64_t *pnum,
                        unsigned *status)
{
    int ret = block_status(bd, off, len, pnum, status);
    if (ret < 0 || (*status & BLOCK_STATUS_ALLOCATED))
        return ret;
    struct block_dev *below = block_backing(bd);
    if (below && off < block_length(below))
        return chain_status(below, off, MIN(*pnum, block_length(below) - off), pnum, status);
    return 0;
}

static int cmd_compare(int argc, char **argv)
{
    const char *fmt1 = NULL, *fmt2 = NULL;
    bool strict = false, show = false;
    int ch;
    static const struct option lo[] = {
        { "force-share", no_argument, NULL, 'U' }, { "help", no_argument, NULL, 'h' }, { 0 },
    };
    while ((ch = getopt_long(argc, argv, "hf:F:T:pqsU", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt1 = check_fmt(optarg); break;
        case 'F': fmt2 = check_fmt(optarg); break;
        case 'p': show = true; break;
        case 'q': quiet = true; break;
        case 's': strict = true; break;
        case 'T': case 'U': break;
        case 'h': usage(stdout); exit(0);
        default: usage_error("invalid option for compare");
        }
    }
    if (argc - optind != 2)
        usage_error("compare: expected two filenames");
    if (!fmt2)
        fmt2 = fmt1;
    struct block_dev *a, *b;
    if (open_image(argv[optind], fmt1, true, false, &a) < 0)
        return 2;
    if (open_image(argv[optind + 1], fmt2, true, false, &b) < 0) {
        block_close(a);
        return 2;
    }
    uint64_t la = block_length(a), lb = block_length(b), common = MIN(la, lb);
    uint8_t *ba = io_buf(COPY_CHUNK), *bb = io_buf(COPY_CHUNK);
    int rc = 0;
    if (strict && la != lb) {
        if (!quiet)
            printf("Strict mode: Image size mismatch!\n");
        rc = 1;
    }
    for (uint64_t off = 0; off < MAX(la, lb) && rc == 0;) {
        uint64_t n = MIN(COPY_CHUNK, MAX(la, lb) - off);
        if (off < common)
            n = MIN(n, common - off);
        if (off < common) {
            uint64_t pa, pb;
            unsigned sa, sb;
            if (chain_status(a, off, n, &pa, &sa) == 0 && chain_status(b, off, n, &pb, &sb) == 0) {
                n = MIN(pa, pb);
                if (strict && sa != sb) {
                    /* Like qemu-img -s: allocation must match, not just content. */
                    if (!quiet)
                        printf("Strict mode: Offset %llu block status mismatch!\n",
                               (unsigned long long)off);
                    rc = 1;
                    break;
                }
                /* Ranges both images know to be zero need not be read. */
                if ((sa & BLOCK_STATUS_ZERO) && !(sa & BLOCK_STATUS_DATA) &&
                    (sb & BLOCK_STATUS_ZERO) && !(sb & BLOCK_STATUS_DATA)) {
                    off += n;
                    progress(show && !quiet, off, MAX(la, lb));
                    continue;
                }
            }
        }
        int ret = 0;
        if (off >= la) /* past the shorter image: compare with zeroes */
            memset(ba, 0, n);
        if (off >= lb)
            memset(bb, 0, n);
        if (off < la)
            ret = block_pread(a, off, ba, n);
        if (ret == 0 && off < lb)
            ret = block_pread(b, off, bb, n);
        if (ret < 0) {
            log_error("error while reading: %s", strerror(-ret));
            rc = 2;
            break;
        }
        if (memcmp(ba, bb, n) != 0) {
            uint64_t i = 0;
            while (ba[i] == bb[i])
                i++;
            if (!quiet)
                printf("Content mismatch at offset %llu!\n",
                       (unsigned long long)ALIGN_DOWN(off + i, 512));
            rc = 1;
            break;
        }
        off += n;
        progress(show && !quiet, off, MAX(la, lb));
    }
    if (rc == 0 && !quiet) {
        if (la != lb)
            printf("Warning: Image size mismatch!\n");
        printf("Images are identical.\n");
    }
    free(ba);
    free(bb);
    block_close(a);
    block_close(b);
    return rc;
}

/* ------------------------------------------------------------------ measure */

static uint64_t refcount_meta_size(uint64_t clusters, uint64_t cs, unsigned order)
{
    uint64_t per_table = cs / 8, per_block = cs * 8 / (1u << order);
    uint64_t table = 0, blocks = 0, n = 0, last;
    do {
        last = n;
        blocks = div_up(clusters + table + blocks, per_block);
        table = div_up(blocks, per_table);
        n = clusters + blocks + table;
    } while (n != last);
    return (blocks + table) * cs;
}

static uint64_t qcow2_full_size(uint64_t size, uint64_t cs, unsigned order, bool ext)
{
    uint64_t esz = ext ? 16 : 8, aligned = ALIGN_UP(size, cs), meta = cs;
    uint64_t nl2e = ALIGN_UP(aligned / cs, cs / esz);
    meta += nl2e * esz;
    uint64_t nl1e = ALIGN_UP(nl2e * esz / cs, cs / 8);
    meta += nl1e * 8;
    meta += refcount_meta_size((meta + aligned) / cs, cs, order);
    return meta + aligned;
}

static int cmd_measure(int argc, char **argv)
{
    const char *fmt = NULL, *ofmt = "raw", *output = "human";
    struct kvlist opts = { .n = 0 };
    uint64_t size = 0;
    bool have_size = false;
    int ch;
    enum { OPT_OUTPUT = 256, OPT_SIZE };
    static const struct option lo[] = {
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "size", required_argument, NULL, OPT_SIZE },
        { "force-share", no_argument, NULL, 'U' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    while ((ch = getopt_long(argc, argv, "hf:O:o:U", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = check_fmt(optarg); break;
        case 'O': ofmt = check_fmt(optarg); break;
        case 'o': kv_parse(&opts, optarg); break;
        case 'U': break;
        case OPT_OUTPUT: output = optarg; break;
        case OPT_SIZE:
            if (parse_img_size(optarg, &size) < 0)
                usage_error("invalid --size '%s'", optarg);
            have_size = true;
            break;
        case 'h': usage(stdout); exit(0);
        default: usage_error("invalid option for measure");
        }
    }
    if (have_size == (optind < argc))
        usage_error("measure: give either --size or one filename");
    struct create_spec c = { .fmt = ofmt };
    if (apply_create_opts(&c, &opts) < 0)
        return 1;
    kv_free(&opts);
    uint64_t cs = c.q.cluster_size ? c.q.cluster_size : 64 * KiB;
    unsigned order = (unsigned)__builtin_ctz(c.q.refcount_bits ? c.q.refcount_bits : 16);
    bool isq = strcmp(ofmt, "qcow2") == 0;
    uint64_t data = 0;
    bool src_qcow2 = false;
    if (!have_size) {
        struct block_dev *bd;
        if (open_image(argv[optind], fmt, true, false, &bd) < 0)
            return 1;
        size = block_length(bd);
        if (isq && strcmp(block_format_name(bd), "qcow2") == 0) {
            struct qcow2_info qi;
            qcow2_get_info(bd, &qi);
            src_qcow2 = qi.version >= 3; /* only v3 can carry bitmaps */
        }
        uint64_t gran = isq ? cs : 1, counted_end = 0;
        for (uint64_t off = 0; off < size;) {
            uint64_t pnum;
            unsigned st;
            if (block_status(bd, off, MIN(size - off, 1ULL << 30), &pnum, &st) < 0) {
                block_close(bd);
                return 1;
            }
            if ((st & BLOCK_STATUS_DATA) && !(st & BLOCK_STATUS_ZERO)) {
                uint64_t a = ALIGN_DOWN(off, gran), e = ALIGN_UP(off + pnum, gran);
                /* Do not count a cluster twice when runs share it. */
                a = MAX(a, counted_end);
                if (e > a)
                    data += e - a;
                counted_end = MAX(counted_end, e);
            }
            off += pnum;
        }
        block_close(bd);
    } else {
        data = 0; /* a new, empty image */
    }
    uint64_t full, required;
    if (isq) {
        full = qcow2_full_size(ALIGN_UP(size, 512), cs, order, c.q.extended_l2);
        required = full - ALIGN_UP(ALIGN_UP(size, 512), cs) + MIN(data, ALIGN_UP(size, cs));
    } else {
        full = size;
        required = size; /* qemu-img counts a raw target as fully allocated */
    }
    /* Bitmaps are reported for qcow2 sources only (there are none to copy). */
    if (strcmp(output, "json") == 0) {
        printf("{\n%s    \"required\": %llu,\n    \"fully-allocated\": %llu\n}\n",
               src_qcow2 ? "    \"bitmaps\": 0,\n" : "", (unsigned long long)required,
               (unsigned long long)full);
    } else {
        printf("required size: %llu\nfully allocated size: %llu\n%s", (unsigned long long)required,
               (unsigned long long)full, src_qcow2 ? "bitmaps size: 0\n" : "");
    }
    return 0;
}

/* ------------------------------------------------------------------ amend */

static int cmd_amend(int argc, char **argv)
{
    const char *fmt = NULL;
    struct kvlist opts = { .n = 0 };
    int ch;
    static const struct option lo[] = {
        { "force", no_argument, NULL, 'Z' }, { "help", no_argument, NULL, 'h' }, { 0 },
    };
    while ((ch = getopt_long(argc, argv, "hf:o:qpt:", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = check_fmt(optarg); break;
        case 'o': kv_parse(&opts, optarg); break;
        case 'q': quiet = true; break;
        case 'p': case 't': case 'Z': break;
        case 'h': usage(stdout); exit(0);
        default: usage_error("invalid option for amend");
        }
    }
    if (optind != argc - 1 || opts.n == 0)
        usage_error("amend: expected -o options and one filename");
    const char *filename = argv[optind];
    struct block_dev *bd;
    if (open_image(filename, fmt, false, true, &bd) < 0)
        return 1;
    int ret = 0;
    if (strcmp(block_format_name(bd), "qcow2") != 0)
        ret = log_fail(-ENOTSUP, "%s: amend supports qcow2 images only", filename);
    struct qcow2_info qi;
    if (ret == 0)
        qcow2_get_info(bd, &qi);
    const char *nb = ret == 0 ? qi.backing_file : NULL, *nf = ret == 0 ? qi.backing_fmt : NULL;
    char *keep_b = nb ? xstrdup(nb) : NULL, *keep_f = nf ? xstrdup(nf) : NULL;
    bool change_backing = false;
    struct qcow2_amend_opts ao = { .version = 0, .lazy_refcounts = -1 };
    for (int i = 0; i < opts.n && ret == 0; i++) {
        const char *k = opts.items[i].key, *v = opts.items[i].val;
        uint64_t n;
        if (!v) {
            ret = log_fail(-EINVAL, "option '%s' needs a value", k);
        } else if (strcmp(k, "size") == 0) {
            if (parse_img_size(v, &n) < 0)
                ret = log_fail(-EINVAL, "invalid size '%s'", v);
            else if (n != block_length(bd))
                ret = qcow2_grow(bd, n);
        } else if (strcmp(k, "compat") == 0) {
            if (strcmp(v, "0.10") == 0 || strcmp(v, "v2") == 0)
                ao.version = 2;
            else if (strcmp(v, "1.1") == 0 || strcmp(v, "v3") == 0)
                ao.version = 3;
            else
                ret = log_fail(-EINVAL, "%s: invalid compat level '%s' (0.10 or 1.1)", filename, v);
        } else if (strcmp(k, "lazy_refcounts") == 0) {
            bool on;
            if ((ret = bool_opt(k, v, &on)) == 0)
                ao.lazy_refcounts = on;
        } else if (strcmp(k, "backing_file") == 0) {
            free(keep_b);
            keep_b = xstrdup(v);
            change_backing = true;
        } else if (strcmp(k, "backing_fmt") == 0) {
            free(keep_f);
            keep_f = xstrdup(v);
            change_backing = true;
        } else {
            ret = log_fail(-ENOTSUP, "%s: changing '%s' is not supported by amend", filename, k);
        }
    }
    if (ret == 0 && change_backing)
        ret = qcow2_set_backing(bd, keep_b, keep_f);
    if (ret == 0 && (ao.version || ao.lazy_refcounts >= 0))
        ret = qcow2_amend(bd, &ao);
    free(keep_b);
    free(keep_f);
    block_close(bd);
    kv_free(&opts);
    return ret < 0 ? 1 : 0;
}

/* ------------------------------------------------------------------ main */

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
};

static const struct command commands[] = {
    { "create", cmd_create }, { "info", cmd_info },     { "check", cmd_check },
    { "convert", cmd_convert }, { "resize", cmd_resize }, { "commit", cmd_commit },
    { "rebase", cmd_rebase }, { "map", cmd_map },       { "compare", cmd_compare },
    { "measure", cmd_measure }, { "amend", cmd_amend },     { "snapshot", cmd_snapshot },
};

int main(int argc, char **argv)
{
    log_set_prog("ember-img");
    if (argc < 2)
        usage_error("missing command");
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
        printf("ember-img version %s\n", EMBER_VERSION);
        return 0;
    }
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        if (strcmp(cmd, commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    usage_error("unknown command '%s'", cmd);
}
