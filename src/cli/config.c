/* The QEMU-compatible command line, parsed once into struct vm_config.
 *
 * Every error is one line naming the option and what was expected, and the
 * parser returns -1; nothing is opened or checked against the host here
 * (files are opened when the machine is built). Option arguments of the
 * "key=value,key=value" kind follow QEMU: a literal comma is written ",,". */
#include "cli/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "ember-version.h"

#define CONFIG_DEFAULT_RAM (128 * MiB)
#define CONFIG_MIN_RAM (2 * MiB)
#define CONFIG_MAX_RAM (1024 * GiB)
#define CONFIG_MAX_CPUS 255 /* xAPIC IDs; 255 is the broadcast ID */
#define CONFIG_MAX_QUEUES 64
#define KV_MAX 32

/* --- key=value lists ---------------------------------------------------- */

struct kv {
    char *key, *val;
    bool used;
};

struct kvlist {
    char opt[64]; /* "-drive", "-device virtio-blk-pci": names the option in messages */
    struct kv items[KV_MAX];
    unsigned n;
};

static int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(LOG_ERROR, fmt, ap);
    va_end(ap);
    return -1;
}

static void kv_free(struct kvlist *l)
{
    for (unsigned i = 0; i < l->n; i++) {
        free(l->items[i].key);
        free(l->items[i].val);
    }
    l->n = 0;
}

/* Split one item (already unescaped) into key and value. The first item may
 * omit "key=" when implied_key is given (e.g. the driver name of -device). */
static int kv_add_item(struct kvlist *l, const char *item, const char *implied_key)
{
    if (l->n == KV_MAX)
        return cli_error("%s: too many options (at most %d)", l->opt, KV_MAX);
    const char *eq = strchr(item, '=');
    struct kv *kv = &l->items[l->n];
    if (l->n == 0 && implied_key && (!eq || item == eq)) {
        if (!*item)
            return cli_error("%s: missing %s", l->opt, implied_key);
        kv->key = xstrdup(implied_key);
        kv->val = xstrdup(item);
    } else if (eq && eq != item) {
        kv->key = strndup(item, (size_t)(eq - item));
        kv->val = xstrdup(eq + 1);
        if (!kv->key)
            die("out of memory");
    } else {
        return cli_error("%s: '%s': expected key=value", l->opt, item);
    }
    kv->used = false;
    l->n++;
    return 0;
}

/* Parse "a=1,b=x,,y" into items; ",," is a literal comma. */
static int kv_parse(const char *opt, const char *arg, const char *implied_key, struct kvlist *l)
{
    snprintf(l->opt, sizeof(l->opt), "%s", opt);
    l->n = 0;
    size_t len = strlen(arg);
    char *item = xmalloc(len + 1);
    size_t o = 0;
    for (size_t i = 0;; i++) {
        if (arg[i] == ',' && arg[i + 1] == ',') {
            item[o++] = ',';
            i++;
            continue;
        }
        if (arg[i] == ',' || arg[i] == '\0') {
            item[o] = '\0';
            if (o == 0 && arg[i] == '\0' && l->n > 0) /* trailing comma */
                break;
            if (kv_add_item(l, item, implied_key) < 0) {
                free(item);
                kv_free(l);
                return -1;
            }
            o = 0;
            if (arg[i] == '\0')
                break;
            continue;
        }
        item[o++] = arg[i];
    }
    free(item);
    return 0;
}

/* Value of the last occurrence of key (QEMU: later wins), marked used. */
static const char *kv_get(struct kvlist *l, const char *key)
{
    const char *val = NULL;
    for (unsigned i = 0; i < l->n; i++) {
        if (!strcmp(l->items[i].key, key)) {
            l->items[i].used = true;
            val = l->items[i].val;
        }
    }
    return val;
}

/* Every key must have been consumed; "expected" lists the accepted ones. */
static int kv_check_unused(const struct kvlist *l, const char *expected)
{
    for (unsigned i = 0; i < l->n; i++) {
        if (!l->items[i].used)
            return cli_error("%s: unknown option '%s': expected %s", l->opt, l->items[i].key,
                             expected);
    }
    return 0;
}

static int kv_get_bool(struct kvlist *l, const char *key, bool *out)
{
    const char *v = kv_get(l, key);
    if (!v)
        return 0;
    if (parse_bool(v, out) < 0)
        return cli_error("%s: %s='%s': expected on or off", l->opt, key, v);
    return 0;
}

static int kv_get_uint(struct kvlist *l, const char *key, uint64_t max, uint64_t *out)
{
    const char *v = kv_get(l, key);
    if (!v)
        return 0;
    if (parse_u64(v, max, out) < 0)
        return cli_error("%s: %s='%s': expected a number from 0 to %llu", l->opt, key, v,
                         (unsigned long long)max);
    return 0;
}

static void replace_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src ? xstrdup(src) : NULL;
}

/* --- individual options ------------------------------------------------- */

static int parse_mem(struct vm_config *cfg, const char *arg)
{
    struct kvlist l;
    if (kv_parse("-m", arg, "size", &l) < 0)
        return -1;
    int ret = -1;
    const char *size = kv_get(&l, "size");
    kv_get(&l, "slots"); /* memory hotplug: accepted, not supported */
    kv_get(&l, "maxmem");
    if (kv_check_unused(&l, "size, slots or maxmem") < 0)
        goto out;
    if (!size) {
        cli_error("-m: missing size: expected e.g. -m 512M or -m size=2G");
        goto out;
    }
    uint64_t bytes;
    int err = parse_size(size, MiB, &bytes);
    if (err == -ERANGE || (!err && bytes > CONFIG_MAX_RAM)) {
        cli_error("-m: size '%s' is too large: at most 1T", size);
        goto out;
    }
    if (err) {
        cli_error("-m: invalid size '%s': expected a number with an optional K/M/G suffix", size);
        goto out;
    }
    if (bytes < CONFIG_MIN_RAM) {
        cli_error("-m: size '%s' is too small: at least 2M", size);
        goto out;
    }
    cfg->ram_size = ALIGN_UP(bytes, 4096);
    ret = 0;
out:
    kv_free(&l);
    return ret;
}

static int smp_get(struct kvlist *l, const char *key, unsigned *out)
{
    uint64_t v = 0;
    const char *s = kv_get(l, key);
    if (!s)
        return 0;
    if (parse_u64(s, CONFIG_MAX_CPUS, &v) < 0 || v == 0)
        return cli_error("-smp: %s='%s': expected a number from 1 to %d", key, s, CONFIG_MAX_CPUS);
    *out = (unsigned)v;
    return 0;
}

/* -smp [cpus=]N[,sockets=S][,dies=1][,cores=C][,threads=T][,maxcpus=M]; missing
 * values are derived like QEMU does (prefer sockets, then cores). */
static int parse_smp(struct vm_config *cfg, const char *arg)
{
    struct kvlist l;
    if (kv_parse("-smp", arg, "cpus", &l) < 0)
        return -1;
    unsigned cpus = 0, sockets = 0, dies = 0, cores = 0, threads = 0, maxcpus = 0;
    int ret = -1;
    if (smp_get(&l, "cpus", &cpus) < 0 || smp_get(&l, "sockets", &sockets) < 0 ||
        smp_get(&l, "dies", &dies) < 0 || smp_get(&l, "cores", &cores) < 0 ||
        smp_get(&l, "threads", &threads) < 0 || smp_get(&l, "maxcpus", &maxcpus) < 0 ||
        kv_check_unused(&l, "cpus, sockets, cores, threads or maxcpus") < 0)
        goto out;
    if (dies > 1) {
        cli_error("-smp: dies=%u: only one die per socket is supported", dies);
        goto out;
    }
    unsigned want = maxcpus ? maxcpus : cpus;
    if (!threads)
        threads = 1;
    if (!want)
        want = (sockets ? sockets : 1) * (cores ? cores : 1) * threads;
    if (!sockets && !cores) {
        sockets = 1;
        cores = (want + threads - 1) / threads;
    } else if (!sockets) {
        sockets = (want + cores * threads - 1) / (cores * threads);
    } else if (!cores) {
        cores = (want + sockets * threads - 1) / (sockets * threads);
    }
    uint64_t slots = (uint64_t)sockets * cores * threads;
    if (!cpus)
        cpus = maxcpus ? maxcpus : (unsigned)MIN(slots, (uint64_t)CONFIG_MAX_CPUS);
    if (!maxcpus)
        maxcpus = cpus;
    if (maxcpus < cpus) {
        cli_error("-smp: maxcpus=%u is less than the %u CPUs requested", maxcpus, cpus);
        goto out;
    }
    if (slots < maxcpus || slots > CONFIG_MAX_CPUS) {
        cli_error("-smp: sockets (%u) x cores (%u) x threads (%u) = %llu: expected %u CPUs "
                  "(at most %d)", sockets, cores, threads, (unsigned long long)slots, maxcpus,
                  CONFIG_MAX_CPUS);
        goto out;
    }
    cfg->nr_cpus = cpus;
    cfg->max_cpus = maxcpus;
    cfg->sockets = sockets;
    cfg->cores = cores;
    cfg->threads = threads;
    ret = 0;
out:
    kv_free(&l);
    return ret;
}

static const char *drive_format_check(const char *fmt)
{
    if (!fmt || !strcmp(fmt, "raw") || !strcmp(fmt, "qcow2"))
        return NULL;
    return fmt;
}

static struct drive_config *find_drive(struct vm_config *cfg, const char *id)
{
    for (unsigned i = 0; i < cfg->nr_drives; i++) {
        if (!strcmp(cfg->drives[i].id, id))
            return &cfg->drives[i];
    }
    return NULL;
}

static struct device_config *new_device(struct vm_config *cfg, const char *opt,
                                        enum device_kind kind)
{
    if (cfg->nr_devices == CONFIG_MAX_DEVICES) {
        cli_error("%s: too many devices (at most %d)", opt, CONFIG_MAX_DEVICES);
        return NULL;
    }
    struct device_config *d = &cfg->devices[cfg->nr_devices++];
    memset(d, 0, sizeof(*d));
    d->kind = kind;
    d->num_queues = 1;
    return d;
}

static int parse_drive(struct vm_config *cfg, const char *arg)
{
    struct kvlist l;
    if (kv_parse("-drive", arg, NULL, &l) < 0)
        return -1;
    int ret = -1;
    const char *file = kv_get(&l, "file");
    const char *iface = kv_get(&l, "if");
    const char *format = kv_get(&l, "format");
    const char *id = kv_get(&l, "id");
    const char *cache = kv_get(&l, "cache");
    const char *media = kv_get(&l, "media");
    const char *l2_cache = kv_get(&l, "l2-cache-size");
    kv_get(&l, "aio");     /* the block layer picks io_uring itself */
    kv_get(&l, "discard"); /* discards are always passed down */
    bool readonly = false;
    if (kv_get_bool(&l, "readonly", &readonly) < 0 ||
        kv_check_unused(&l, "file, if, format, readonly, id, cache, media, aio, discard or "
                            "l2-cache-size") < 0)
        goto out;
    if (!file || !*file) {
        cli_error("-drive: missing file=: expected e.g. -drive file=disk.qcow2,if=virtio");
        goto out;
    }
    if (iface && strcmp(iface, "virtio") && strcmp(iface, "none")) {
        cli_error("-drive: if=%s: expected if=virtio or if=none (Ember has no IDE/SCSI)", iface);
        goto out;
    }
    if (drive_format_check(format)) {
        cli_error("-drive: format=%s: expected raw or qcow2", format);
        goto out;
    }
    if (cache && strcmp(cache, "none") && strcmp(cache, "writeback") &&
        strcmp(cache, "writethrough") && strcmp(cache, "directsync") && strcmp(cache, "unsafe")) {
        cli_error("-drive: cache=%s: expected none, writeback, writethrough, directsync or unsafe",
                  cache);
        goto out;
    }
    uint64_t l2_cache_size = 0;
    if (l2_cache && (parse_size(l2_cache, 1, &l2_cache_size) < 0 || l2_cache_size == 0)) {
        cli_error("-drive: l2-cache-size=%s: expected a size in bytes, e.g. 4M", l2_cache);
        goto out;
    }
    if (media && strcmp(media, "disk")) {
        cli_error("-drive: media=%s: only media=disk is supported", media);
        goto out;
    }
    if (cfg->nr_drives == CONFIG_MAX_DRIVES) {
        cli_error("-drive: too many drives (at most %d)", CONFIG_MAX_DRIVES);
        goto out;
    }
    char *drive_id = id ? xstrdup(id) : xasprintf("drive%u", cfg->nr_drives);
    if (!*drive_id || find_drive(cfg, drive_id)) {
        cli_error("-drive: id '%s' %s", drive_id, *drive_id ? "is used twice" : "is empty");
        free(drive_id);
        goto out;
    }
    struct drive_config *d = &cfg->drives[cfg->nr_drives++];
    *d = (struct drive_config){
        .id = drive_id,
        .file = xstrdup(file),
        .format = format ? xstrdup(format) : NULL,
        .interface = xstrdup(iface ? iface : "virtio"),
        .readonly = readonly,
        .l2_cache_size = l2_cache_size,
    };
    if (!strcmp(d->interface, "virtio")) {
        struct device_config *dev = new_device(cfg, "-drive", DEVICE_VIRTIO_BLK);
        if (!dev)
            goto out;
        dev->drive = xstrdup(d->id);
        d->used = true;
    }
    ret = 0;
out:
    kv_free(&l);
    return ret;
}

/* -chardev BACKEND,id=ID[,path=P]: remembered as a chardev_open() spec. */
struct chardev_def {
    char *id, *spec;
};

struct parse_state {
    struct chardev_def chardevs[CONFIG_MAX_DEVICES];
    unsigned nr_chardevs;
    bool serial_given, nographic_serial;
    bool accel_from_cli; /* -accel/-enable-kvm seen: -machine accel= does not override */
    /* virtconsole chardev= ids by device index, resolved once every -chardev is known. */
    char *console_chardev[CONFIG_MAX_DEVICES];
};

static const char *find_chardev(const struct parse_state *ps, const char *id)
{
    for (unsigned i = 0; i < ps->nr_chardevs; i++) {
        if (!strcmp(ps->chardevs[i].id, id))
            return ps->chardevs[i].spec;
    }
    return NULL;
}

static int parse_chardev(struct parse_state *ps, const char *arg)
{
    struct kvlist l;
    if (kv_parse("-chardev", arg, "backend", &l) < 0)
        return -1;
    int ret = -1;
    const char *backend = kv_get(&l, "backend");
    const char *id = kv_get(&l, "id");
    const char *path = kv_get(&l, "path");
    kv_get(&l, "mux");    /* stdio is always muxed with the Ctrl-A escape */
    kv_get(&l, "signal"); /* Ctrl-C reaches the guest in raw mode either way */
    if (kv_check_unused(&l, "id, path, mux or signal") < 0)
        goto out;
    if (!backend) {
        cli_error("-chardev: missing the backend: expected e.g. -chardev stdio,id=con0");
        goto out;
    }
    if (!id || !*id) {
        cli_error("-chardev: missing id=: expected e.g. -chardev stdio,id=con0");
        goto out;
    }
    if (find_chardev(ps, id)) {
        cli_error("-chardev: id '%s' is used twice", id);
        goto out;
    }
    char *spec;
    if (!strcmp(backend, "stdio")) {
        spec = xstrdup("stdio");
    } else if (!strcmp(backend, "file")) {
        if (!path || !*path) {
            cli_error("-chardev: file backend needs path=: expected -chardev file,id=%s,path=FILE", id);
            goto out;
        }
        spec = xasprintf("file:%s", path);
    } else if (!strcmp(backend, "null") || !strcmp(backend, "none")) {
        spec = xstrdup("none");
    } else {
        cli_error("-chardev: backend '%s': expected stdio, file or null", backend);
        goto out;
    }
    if (ps->nr_chardevs == ARRAY_SIZE(ps->chardevs)) {
        free(spec);
        cli_error("-chardev: too many character devices");
        goto out;
    }
    ps->chardevs[ps->nr_chardevs++] = (struct chardev_def){.id = xstrdup(id), .spec = spec};
    ret = 0;
out:
    kv_free(&l);
    return ret;
}

/* "stdio", "mon:stdio", "file:PATH", "none", "null" -> chardev spec. */
static int parse_serial(struct vm_config *cfg, struct parse_state *ps, const char *arg)
{
    if (ps->serial_given)
        return cli_error("-serial: given twice: Ember has one serial port (COM1)");
    const char *spec;
    if (!strcmp(arg, "stdio") || !strcmp(arg, "mon:stdio"))
        spec = "stdio";
    else if (!strcmp(arg, "none") || !strcmp(arg, "null"))
        spec = "none";
    else if (!strncmp(arg, "file:", 5) && arg[5])
        spec = arg;
    else
        return cli_error("-serial: '%s': expected stdio, mon:stdio, file:PATH, none or null", arg);
    replace_str(&cfg->serial, spec);
    ps->serial_given = true;
    return 0;
}

static int parse_debug_exit(struct vm_config *cfg, struct kvlist *l)
{
    uint64_t iobase = 0x501, iosize = 2; /* QEMU's defaults */
    kv_get(l, "id");
    if (kv_get_uint(l, "iobase", 0xffff, &iobase) < 0 ||
        kv_get_uint(l, "iosize", 4, &iosize) < 0 ||
        kv_check_unused(l, "iobase or iosize") < 0)
        return -1;
    if (iosize != 1 && iosize != 2 && iosize != 4)
        return cli_error("%s: iosize=%llu: expected 1, 2 or 4", l->opt,
                         (unsigned long long)iosize);
    if (iobase + iosize > 0x10000)
        return cli_error("-device isa-debug-exit: iobase=%#llx: the port range passes 0xffff",
                         (unsigned long long)iobase);
    struct device_config *d = new_device(cfg, "-device", DEVICE_ISA_DEBUG_EXIT);
    if (!d)
        return -1;
    d->iobase = (uint16_t)iobase;
    d->iosize = (uint8_t)iosize;
    return 0;
}

static int parse_virtio_blk(struct vm_config *cfg, struct kvlist *l)
{
    const char *drive = kv_get(l, "drive");
    const char *id = kv_get(l, "id");
    const char *serial = kv_get(l, "serial");
    uint64_t queues = 1;
    if (kv_get_uint(l, "num-queues", CONFIG_MAX_QUEUES, &queues) < 0 ||
        kv_check_unused(l, "drive, id, serial or num-queues") < 0)
        return -1;
    if (!drive || !*drive)
        return cli_error("-device virtio-blk-pci: missing drive=: expected drive=ID of a -drive if=none,id=ID");
    if (queues == 0)
        return cli_error("-device virtio-blk-pci: num-queues=0: expected 1 to %d", CONFIG_MAX_QUEUES);
    if (serial && strlen(serial) > 20)
        return cli_error("-device virtio-blk-pci: serial '%s' is longer than 20 characters", serial);
    struct device_config *d = new_device(cfg, "-device", DEVICE_VIRTIO_BLK);
    if (!d)
        return -1;
    d->drive = xstrdup(drive);
    d->id = id ? xstrdup(id) : NULL;
    d->serial = serial ? xstrdup(serial) : NULL;
    d->num_queues = (unsigned)queues;
    return 0;
}

static int parse_virtconsole(struct vm_config *cfg, struct parse_state *ps, struct kvlist *l)
{
    const char *chardev = kv_get(l, "chardev");
    kv_get(l, "id");
    kv_get(l, "name");
    if (kv_check_unused(l, "chardev, id or name") < 0)
        return -1;
    struct device_config *serial = NULL;
    for (unsigned i = cfg->nr_devices; i-- > 0;) {
        if (cfg->devices[i].kind == DEVICE_VIRTIO_SERIAL) {
            serial = &cfg->devices[i];
            break;
        }
    }
    if (!serial)
        return cli_error("-device virtconsole: needs a -device virtio-serial-pci before it");
    if (serial->console)
        return cli_error("-device virtconsole: the virtio-serial-pci device already has a console "
                         "(one console port per device)");
    serial->console = true;
    if (chardev)
        ps->console_chardev[serial - cfg->devices] = xstrdup(chardev);
    return 0;
}

static int parse_device(struct vm_config *cfg, struct parse_state *ps, const char *arg)
{
    struct kvlist l;
    if (kv_parse("-device", arg, "driver", &l) < 0)
        return -1;
    const char *drv = kv_get(&l, "driver");
    int ret;
    if (drv)
        snprintf(l.opt, sizeof(l.opt), "-device %s", drv);
    if (!drv) {
        ret = cli_error("-device: missing the device name: expected e.g. -device virtio-rng-pci");
    } else if (!strcmp(drv, "isa-debug-exit")) {
        ret = parse_debug_exit(cfg, &l);
    } else if (!strcmp(drv, "virtio-blk-pci") || !strcmp(drv, "virtio-blk")) {
        ret = parse_virtio_blk(cfg, &l);
    } else if (!strcmp(drv, "virtio-rng-pci") || !strcmp(drv, "virtio-rng")) {
        kv_get(&l, "id");
        kv_get(&l, "rng");
        ret = kv_check_unused(&l, "id");
        if (!ret && !new_device(cfg, "-device", DEVICE_VIRTIO_RNG))
            ret = -1;
    } else if (!strcmp(drv, "virtio-serial-pci") || !strcmp(drv, "virtio-serial")) {
        kv_get(&l, "id");
        kv_get(&l, "max_ports");
        ret = kv_check_unused(&l, "id or max_ports");
        if (!ret && !new_device(cfg, "-device", DEVICE_VIRTIO_SERIAL))
            ret = -1;
    } else if (!strcmp(drv, "virtconsole")) {
        ret = parse_virtconsole(cfg, ps, &l);
    } else {
        ret = cli_error("-device: unknown device '%s': expected virtio-blk-pci, virtio-rng-pci, "
                        "virtio-serial-pci, virtconsole or isa-debug-exit", drv);
    }
    kv_free(&l);
    return ret;
}

static int set_accel(struct vm_config *cfg, const char *opt, const char *list)
{
    /* "kvm", "tcg", "kvm:tcg" (QEMU's old -machine accel= syntax). */
    char *copy = xstrdup(list), *save = NULL;
    for (char *name = strtok_r(copy, ":", &save); name; name = strtok_r(NULL, ":", &save)) {
        if (strcmp(name, "kvm") && strcmp(name, "tcg")) {
            cli_error("%s: accelerator '%s': expected kvm, tcg or kvm:tcg", opt, name);
            free(copy);
            return -1;
        }
    }
    free(copy);
    if (!*list || list[strlen(list) - 1] == ':' || *list == ':')
        return cli_error("%s: '%s': expected kvm, tcg or kvm:tcg", opt, list);
    replace_str(&cfg->accel, list);
    return 0;
}

/* -accel NAME[,prop=...]; repeated -accel options are tried in order. */
static int parse_accel(struct vm_config *cfg, struct parse_state *ps, const char *arg)
{
    struct kvlist l;
    if (kv_parse("-accel", arg, "accel", &l) < 0)
        return -1;
    const char *name = kv_get(&l, "accel");
    for (unsigned i = 0; i < l.n; i++)
        l.items[i].used = true; /* thread=, tb-size=, ...: tuning we do not have */
    int ret;
    if (!name) {
        ret = cli_error("-accel: missing the accelerator: expected kvm, tcg or kvm:tcg");
    } else if (ps->accel_from_cli && cfg->accel) {
        char *joined = xasprintf("%s:%s", cfg->accel, name);
        ret = set_accel(cfg, "-accel", joined);
        free(joined);
    } else {
        ret = set_accel(cfg, "-accel", name);
    }
    ps->accel_from_cli = true;
    kv_free(&l);
    return ret;
}

static int parse_machine(struct vm_config *cfg, struct parse_state *ps, const char *arg)
{
    struct kvlist l;
    if (kv_parse("-machine", arg, "type", &l) < 0)
        return -1;
    int ret = 0;
    const char *type = kv_get(&l, "type");
    const char *accel = kv_get(&l, "accel");
    /* Other properties (usb=, vmport=, kernel-irqchip=, ...) describe
     * hardware choices of QEMU's boards; Ember has one board, so they are ignored. */
    if (type && strcmp(type, "pc") && strcmp(type, "q35") && strcmp(type, "ember") &&
        strncmp(type, "pc-", 3)) {
        ret = cli_error("-machine: type '%s': expected pc or q35 (both mean Ember's PC)", type);
    } else if (accel && !ps->accel_from_cli) {
        ret = set_accel(cfg, "-machine accel=", accel);
    }
    kv_free(&l);
    return ret;
}

static int parse_name(struct vm_config *cfg, const char *arg)
{
    struct kvlist l;
    if (kv_parse("-name", arg, "guest", &l) < 0)
        return -1;
    const char *guest = kv_get(&l, "guest");
    for (unsigned i = 0; i < l.n; i++)
        l.items[i].used = true; /* process=, debug-threads= */
    int ret = 0;
    if (!guest || !*guest)
        ret = cli_error("-name: missing the name: expected -name NAME");
    else
        replace_str(&cfg->name, guest);
    kv_free(&l);
    return ret;
}

/* CPUID feature names as QEMU spells them, for -cpu host,-feat / feat=off. */
static const struct cpu_flag_name {
    const char *name;
    uint32_t leaf, subleaf;
    uint8_t reg, bit;
} cpu_flag_names[] = {
#define R_EAX 0
#define R_EBX 1
#define R_ECX 2
#define R_EDX 3
    {"sse3", 1, 0, R_ECX, 0},          {"pclmulqdq", 1, 0, R_ECX, 1},
    {"ssse3", 1, 0, R_ECX, 9},         {"fma", 1, 0, R_ECX, 12},
    {"cx16", 1, 0, R_ECX, 13},         {"pcid", 1, 0, R_ECX, 17},
    {"sse4.1", 1, 0, R_ECX, 19},       {"sse4_1", 1, 0, R_ECX, 19},
    {"sse4.2", 1, 0, R_ECX, 20},       {"sse4_2", 1, 0, R_ECX, 20},
    {"x2apic", 1, 0, R_ECX, 21},       {"movbe", 1, 0, R_ECX, 22},
    {"popcnt", 1, 0, R_ECX, 23},       {"tsc-deadline", 1, 0, R_ECX, 24},
    {"aes", 1, 0, R_ECX, 25},          {"xsave", 1, 0, R_ECX, 26},
    {"avx", 1, 0, R_ECX, 28},          {"f16c", 1, 0, R_ECX, 29},
    {"rdrand", 1, 0, R_ECX, 30},       {"hypervisor", 1, 0, R_ECX, 31},
    {"fsgsbase", 7, 0, R_EBX, 0},      {"bmi1", 7, 0, R_EBX, 3},
    {"hle", 7, 0, R_EBX, 4},           {"avx2", 7, 0, R_EBX, 5},
    {"smep", 7, 0, R_EBX, 7},          {"bmi2", 7, 0, R_EBX, 8},
    {"erms", 7, 0, R_EBX, 9},          {"invpcid", 7, 0, R_EBX, 10},
    {"rtm", 7, 0, R_EBX, 11},          {"avx512f", 7, 0, R_EBX, 16},
    {"rdseed", 7, 0, R_EBX, 18},       {"adx", 7, 0, R_EBX, 19},
    {"smap", 7, 0, R_EBX, 20},         {"clflushopt", 7, 0, R_EBX, 23},
    {"clwb", 7, 0, R_EBX, 24},         {"sha-ni", 7, 0, R_EBX, 29},
    {"umip", 7, 0, R_ECX, 2},          {"pku", 7, 0, R_ECX, 3},
    {"la57", 7, 0, R_ECX, 16},         {"rdpid", 7, 0, R_ECX, 22},
    {"xsaveopt", 0xd, 1, R_EAX, 0},    {"xsavec", 0xd, 1, R_EAX, 1},
    {"xsaves", 0xd, 1, R_EAX, 3},
    {"lahf-lm", 0x80000001, 0, R_ECX, 0}, {"lahf_lm", 0x80000001, 0, R_ECX, 0},
    {"abm", 0x80000001, 0, R_ECX, 5},
    {"pdpe1gb", 0x80000001, 0, R_EDX, 26}, {"rdtscp", 0x80000001, 0, R_EDX, 27},
    {"kvmclock", 0x40000001, 0, R_EAX, 0}, {"kvmclock", 0x40000001, 0, R_EAX, 3},
    {"kvm-nopiodelay", 0x40000001, 0, R_EAX, 1},
    {"kvm-asyncpf", 0x40000001, 0, R_EAX, 4},
    {"kvm-steal-time", 0x40000001, 0, R_EAX, 5},
    {"kvm-pv-eoi", 0x40000001, 0, R_EAX, 6},
    {"kvm-pv-unhalt", 0x40000001, 0, R_EAX, 7},
    {"kvm-pv-tlb-flush", 0x40000001, 0, R_EAX, 9},
    {"kvm-pv-ipi", 0x40000001, 0, R_EAX, 11},
    {"kvm-poll-control", 0x40000001, 0, R_EAX, 12},
    {"kvm-pv-sched-yield", 0x40000001, 0, R_EAX, 13},
    {"kvm-asyncpf-int", 0x40000001, 0, R_EAX, 14},
    {"kvmclock-stable-bit", 0x40000001, 0, R_EAX, 24},
};

static int cpu_add_flag(struct vm_config *cfg, const char *name, bool set)
{
    bool found = false;
    for (size_t i = 0; i < ARRAY_SIZE(cpu_flag_names); i++) {
        const struct cpu_flag_name *f = &cpu_flag_names[i];
        if (strcmp(f->name, name))
            continue;
        if (cfg->nr_cpu_flags == CONFIG_MAX_CPU_FLAGS)
            return cli_error("-cpu: too many feature flags (at most %d)", CONFIG_MAX_CPU_FLAGS);
        cfg->cpu_flags[cfg->nr_cpu_flags++] = (struct cpuid_override){
            .leaf = f->leaf, .subleaf = f->subleaf, .reg = f->reg, .bit = f->bit, .set = set};
        found = true;
    }
    if (!found)
        return cli_error("-cpu: unknown CPU feature '%s' (e.g. cx16, popcnt, xsave, smap, avx2)",
                         name);
    return 0;
}

/* -cpu host|max[,-feat][,+feat][,feat=on|off] */
static int parse_cpu(struct vm_config *cfg, const char *arg)
{
    char *copy = xstrdup(arg), *save = NULL;
    int ret = 0;
    char *model = strtok_r(copy, ",", &save);
    if (!model || (strcmp(model, "host") && strcmp(model, "max"))) {
        ret = cli_error("-cpu: model '%s': expected host or max (the host CPU's features)",
                        model ? model : "");
        goto out;
    }
    replace_str(&cfg->cpu_model, "host");
    for (char *item = strtok_r(NULL, ",", &save); item && !ret; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        bool on;
        if (item[0] == '+' || item[0] == '-') {
            ret = cpu_add_flag(cfg, item + 1, item[0] == '+');
        } else if (eq) {
            *eq = '\0';
            if (parse_bool(eq + 1, &on) < 0)
                ret = cli_error("-cpu: %s=%s: expected on or off", item, eq + 1);
            else
                ret = cpu_add_flag(cfg, item, on);
        } else {
            ret = cli_error("-cpu: '%s': expected +FEATURE, -FEATURE or FEATURE=on|off", item);
        }
    }
out:
    free(copy);
    return ret;
}

/* Options accepted for compatibility with scripts written for QEMU whose
 * only meaningful value is "off"/"none". */
static int parse_none_only(const char *opt, const char *arg)
{
    if (!strcmp(arg, "none"))
        return 0;
    return cli_error("%s: '%s': Ember supports only %s none", opt, arg, opt);
}

/* --- the option table --------------------------------------------------- */

enum opt_id {
    OPT_HELP, OPT_VERSION, OPT_M, OPT_SMP, OPT_KERNEL, OPT_INITRD, OPT_APPEND, OPT_DRIVE,
    OPT_SERIAL, OPT_NOGRAPHIC, OPT_DISPLAY, OPT_NO_REBOOT, OPT_ACCEL, OPT_ENABLE_KVM,
    OPT_MACHINE, OPT_CPU, OPT_DEVICE, OPT_CHARDEV, OPT_NAME, OPT_NODEFAULTS, OPT_NONE_ONLY,
};

static const struct {
    const char *name;
    enum opt_id id;
    bool has_arg;
    const char *arg_hint; /* what a missing argument should have been */
} cli_options[] = {
    {"h", OPT_HELP, false, NULL},
    {"help", OPT_HELP, false, NULL},
    {"version", OPT_VERSION, false, NULL},
    {"m", OPT_M, true, "a size such as 512M or 2G"},
    {"smp", OPT_SMP, true, "a CPU count such as 4 or 4,sockets=1,cores=2,threads=2"},
    {"kernel", OPT_KERNEL, true, "a kernel file (bzImage or PVH ELF)"},
    {"initrd", OPT_INITRD, true, "an initrd file"},
    {"append", OPT_APPEND, true, "a kernel command line"},
    {"drive", OPT_DRIVE, true, "file=FILE[,if=virtio|none][,format=raw|qcow2]..."},
    {"serial", OPT_SERIAL, true, "stdio, file:PATH or none"},
    {"nographic", OPT_NOGRAPHIC, false, NULL},
    {"display", OPT_DISPLAY, true, "none"},
    {"no-reboot", OPT_NO_REBOOT, false, NULL},
    {"accel", OPT_ACCEL, true, "kvm, tcg or kvm:tcg"},
    {"enable-kvm", OPT_ENABLE_KVM, false, NULL},
    {"machine", OPT_MACHINE, true, "pc or q35[,accel=kvm|tcg]"},
    {"M", OPT_MACHINE, true, "pc or q35[,accel=kvm|tcg]"},
    {"cpu", OPT_CPU, true, "host or max[,-FEATURE][,+FEATURE]"},
    {"device", OPT_DEVICE, true, "a device such as virtio-rng-pci"},
    {"chardev", OPT_CHARDEV, true, "stdio|file|null,id=ID[,path=FILE]"},
    {"name", OPT_NAME, true, "a name for the VM"},
    {"nodefaults", OPT_NODEFAULTS, false, NULL},
    {"no-user-config", OPT_NODEFAULTS, false, NULL},
    {"vga", OPT_NONE_ONLY, true, "none"},
    {"monitor", OPT_NONE_ONLY, true, "none"},
    {"parallel", OPT_NONE_ONLY, true, "none"},
    {"net", OPT_NONE_ONLY, true, "none"},
    {"nic", OPT_NONE_ONLY, true, "none"},
};

static int apply_option(struct vm_config *cfg, struct parse_state *ps, enum opt_id id,
                        const char *opt, const char *arg)
{
    switch (id) {
    case OPT_M: return parse_mem(cfg, arg);
    case OPT_SMP: return parse_smp(cfg, arg);
    case OPT_KERNEL: replace_str(&cfg->kernel, arg); return 0;
    case OPT_INITRD: replace_str(&cfg->initrd, arg); return 0;
    case OPT_APPEND: replace_str(&cfg->append, arg); return 0;
    case OPT_DRIVE: return parse_drive(cfg, arg);
    case OPT_SERIAL: return parse_serial(cfg, ps, arg);
    case OPT_NOGRAPHIC: cfg->nographic = true; return 0;
    case OPT_DISPLAY: return parse_none_only("-display", arg);
    case OPT_NO_REBOOT: cfg->no_reboot = true; return 0;
    case OPT_ACCEL: return parse_accel(cfg, ps, arg);
    case OPT_ENABLE_KVM: return parse_accel(cfg, ps, "kvm");
    case OPT_MACHINE: return parse_machine(cfg, ps, arg);
    case OPT_CPU: return parse_cpu(cfg, arg);
    case OPT_DEVICE: return parse_device(cfg, ps, arg);
    case OPT_CHARDEV: return parse_chardev(ps, arg);
    case OPT_NAME: return parse_name(cfg, arg);
    case OPT_NODEFAULTS: return 0;
    case OPT_NONE_ONLY: return parse_none_only(opt, arg);
    case OPT_HELP:
    case OPT_VERSION: break;
    }
    return 0;
}

/* After all options: cross-references and defaults. */
static int config_finish(struct vm_config *cfg, const struct parse_state *ps)
{
    for (unsigned i = 0; i < cfg->nr_devices; i++) {
        const char *id = ps->console_chardev[i];
        if (!id)
            continue;
        const char *spec = find_chardev(ps, id);
        if (!spec)
            return cli_error("-device virtconsole: chardev '%s' is not defined: expected the id "
                             "of a -chardev", id);
        cfg->devices[i].chardev = xstrdup(spec);
    }
    for (unsigned i = 0; i < cfg->nr_devices; i++) {
        struct device_config *d = &cfg->devices[i];
        if (d->kind != DEVICE_VIRTIO_BLK)
            continue;
        struct drive_config *drv = find_drive(cfg, d->drive);
        if (!drv)
            return cli_error("-device virtio-blk-pci: drive '%s' is not defined: expected the "
                             "id of a -drive if=none", d->drive);
        if (drv->used && strcmp(drv->interface, "none"))
            continue; /* the device -drive if=virtio created for itself */
        if (drv->used)
            return cli_error("-device virtio-blk-pci: drive '%s' is attached twice", d->drive);
        drv->used = true;
    }
    for (unsigned i = 0; i < cfg->nr_drives; i++) {
        if (!cfg->drives[i].used)
            log_warn("-drive id=%s (if=none) is not attached to any -device", cfg->drives[i].id);
    }
    if (!cfg->kernel)
        return cli_error("no -kernel given: Ember boots a kernel directly (bzImage or PVH ELF); "
                         "see --help");
    if (!cfg->serial)
        cfg->serial = xstrdup("stdio");
    /* A virtconsole without chardev= gets the terminal unless COM1 has it. */
    for (unsigned i = 0; i < cfg->nr_devices; i++) {
        struct device_config *d = &cfg->devices[i];
        if (d->kind != DEVICE_VIRTIO_SERIAL || !d->console || d->chardev)
            continue;
        if (strcmp(cfg->serial, "stdio") != 0) {
            d->chardev = xstrdup("stdio");
        } else {
            log_warn("-device virtconsole: stdio is taken by the serial port, so the console "
                     "output is dropped (use -serial none or virtconsole,chardev=ID)");
            d->chardev = xstrdup("none");
        }
    }
    return 0;
}

static void config_init(struct vm_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->ram_size = CONFIG_DEFAULT_RAM;
    cfg->nr_cpus = cfg->max_cpus = 1;
    cfg->sockets = cfg->cores = cfg->threads = 1;
}

static int find_option(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(cli_options); i++) {
        if (!strcmp(cli_options[i].name, name))
            return (int)i;
    }
    return -1;
}

int config_parse(int argc, char **argv, struct vm_config *cfg)
{
    struct parse_state ps = {0};
    int ret = 0;
    config_init(cfg);
    for (int i = 1; i < argc && ret == 0; i++) {
        const char *arg = argv[i];
        if (arg[0] != '-' || !arg[1]) {
            ret = cli_error("'%s': unexpected argument: options start with '-' (see --help)", arg);
            break;
        }
        const char *name = arg + 1 + (arg[1] == '-'); /* QEMU accepts -opt and --opt */
        int o = find_option(name);
        if (o < 0) {
            ret = cli_error("%s: unknown option (see --help)", arg);
            break;
        }
        if (cli_options[o].id == OPT_HELP) {
            config_print_help(stdout);
            ret = 1;
            break;
        }
        if (cli_options[o].id == OPT_VERSION) {
            printf("ember %s (QEMU-compatible command line)\n", EMBER_VERSION);
            ret = 1;
            break;
        }
        const char *val = NULL;
        if (cli_options[o].has_arg) {
            if (i + 1 >= argc) {
                ret = cli_error("%s: missing argument: expected %s", arg, cli_options[o].arg_hint);
                break;
            }
            val = argv[++i];
        }
        char opt[32];
        snprintf(opt, sizeof(opt), "-%s", name);
        ret = apply_option(cfg, &ps, cli_options[o].id, opt, val);
    }
    if (ret == 0)
        ret = config_finish(cfg, &ps);
    for (unsigned i = 0; i < ps.nr_chardevs; i++) {
        free(ps.chardevs[i].id);
        free(ps.chardevs[i].spec);
    }
    for (unsigned i = 0; i < ARRAY_SIZE(ps.console_chardev); i++)
        free(ps.console_chardev[i]);
    return ret;
}

void config_free(struct vm_config *cfg)
{
    free(cfg->name);
    free(cfg->kernel);
    free(cfg->initrd);
    free(cfg->append);
    free(cfg->serial);
    free(cfg->accel);
    free(cfg->cpu_model);
    for (unsigned i = 0; i < cfg->nr_drives; i++) {
        struct drive_config *d = &cfg->drives[i];
        free(d->id);
        free(d->file);
        free(d->format);
        free(d->interface);
    }
    for (unsigned i = 0; i < cfg->nr_devices; i++) {
        struct device_config *d = &cfg->devices[i];
        free(d->id);
        free(d->drive);
        free(d->chardev);
        free(d->serial);
    }
    memset(cfg, 0, sizeof(*cfg));
}

void config_print_help(FILE *out)
{
    fputs(
        "Usage: ember -kernel FILE [options]\n"
        "\n"
        "Run a virtual machine: one x86-64 PC booting a Linux bzImage or a PVH ELF kernel\n"
        "directly (no BIOS). Options follow QEMU's; KEY=VALUE lists write a literal\n"
        "comma as ',,'.\n"
        "\n"
        "Boot:\n"
        "  -kernel FILE             kernel to boot: bzImage or ELF with a PVH entry note\n"
        "  -initrd FILE             initial ramdisk\n"
        "  -append CMDLINE          kernel command line\n"
        "\n"
        "Machine:\n"
        "  -m SIZE                  guest RAM, default 128M (unit M; K, M, G, T suffixes)\n"
        "  -smp N[,sockets=S][,cores=C][,threads=T][,maxcpus=M]\n"
        "                           virtual CPUs (default 1, at most 255)\n"
        "  -accel kvm|tcg|kvm:tcg   accelerator, tried in order (-enable-kvm = -accel kvm);\n"
        "                           default: kvm when /dev/kvm works, else tcg\n"
        "  -cpu host|max[,-FEAT][,+FEAT]\n"
        "                           CPU model: the host's features (the only model),\n"
        "                           minus/plus CPUID features, e.g. host,-cx16,-popcnt\n"
        "  -machine pc|q35[,accel=] accepted for compatibility: Ember has one PC board\n"
        "  -no-reboot               exit (status 0) when the guest resets instead of rebooting\n"
        "  -name NAME               name of the VM\n"
        "\n"
        "Disks and devices:\n"
        "  -drive file=F[,if=virtio|none][,format=raw|qcow2][,readonly=on][,id=ID]\n"
        "                           disk image; if=virtio (default) attaches a virtio-blk\n"
        "                           device, if=none waits for -device virtio-blk-pci,drive=ID;\n"
        "                           qcow2: l2-cache-size=SIZE sets its L2 table cache\n"
        "  -device virtio-blk-pci,drive=ID[,serial=S][,num-queues=N]\n"
        "  -device virtio-rng-pci   entropy source (host getrandom)\n"
        "  -device virtio-serial-pci -device virtconsole[,chardev=ID]\n"
        "                           virtio console (/dev/hvc0), default on stdio\n"
        "  -device isa-debug-exit[,iobase=0x501][,iosize=2]\n"
        "                           guest writes V to the port: ember exits with (V<<1)|1\n"
        "\n"
        "Console:\n"
        "  -serial stdio|mon:stdio|file:PATH|none\n"
        "                           COM1 backend (default stdio)\n"
        "  -chardev stdio|file|null,id=ID[,path=FILE]\n"
        "                           a backend for virtconsole\n"
        "  -nographic, -display none\n"
        "                           accepted: Ember has no graphical display\n"
        "  On stdio, Ctrl-A x quits, Ctrl-A h shows the escape keys.\n"
        "\n"
        "Information:\n"
        "  -h, --help               this help\n"
        "  --version                version\n"
        "\n"
        "Exit status:\n"
        "  0  the guest powered off, reset with -no-reboot, or the user quit (Ctrl-A x)\n"
        "  1  bad command line or a host-side error\n"
        "  2  the guest crashed the CPU (triple fault or an instruction the accelerator\n"
        "     cannot run); a register dump is printed\n"
        "  3  the guest kernel panicked (pvpanic); its panic message is on the console\n"
        "  N  isa-debug-exit: (V<<1)|1 for the value V the guest wrote\n"
        "\n"
        "Examples:\n"
        "  ember -kernel bzImage -append console=ttyS0 -nographic -m 1G -smp 2\n"
        "  ember -kernel bzImage -initrd initrd.cpio -append 'console=ttyS0 root=/dev/vda' \\\n"
        "        -drive file=disk.qcow2,if=virtio -device virtio-rng-pci -nographic\n"
        "  ember -kernel guest.elf -nographic -device isa-debug-exit,iobase=0xf4,iosize=4\n",
        out);
}
