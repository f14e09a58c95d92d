/* Unit tests for the command-line parser (src/cli/config.c): accepted
 * QEMU-style spellings and the one-line rejection of malformed options. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "cli/config.h"
#include "core/util.h"

#define MAX_ARGS 32

/* Parse "ember" + the given arguments (NULL-terminated). */
static int parse_args(struct vm_config *cfg, ...)
{
    char *argv[MAX_ARGS];
    int argc = 0;
    argv[argc++] = "ember";
    va_list ap;
    va_start(ap, cfg);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < MAX_ARGS;)
        argv[argc++] = a;
    va_end(ap);
    return config_parse(argc, argv, cfg);
}

#define PARSE(cfg, ...) parse_args(cfg, __VA_ARGS__, (char *)NULL)

/* The option must be rejected, and the config freed cleanly. */
static void expect_reject(int ret, struct vm_config *cfg)
{
    assert_int_equal(ret, -1);
    config_free(cfg);
}

static void test_defaults(void **state)
{
    (void)state;
    struct vm_config cfg;
    assert_int_equal(PARSE(&cfg, "-kernel", "vmlinuz"), 0);
    assert_string_equal(cfg.kernel, "vmlinuz");
    assert_int_equal(cfg.ram_size, 128 * MiB);
    assert_int_equal(cfg.nr_cpus, 1);
    assert_int_equal(cfg.sockets * cfg.cores * cfg.threads, 1);
    assert_string_equal(cfg.serial, "stdio");
    assert_null(cfg.accel);
    assert_null(cfg.initrd);
    assert_null(cfg.append);
    assert_false(cfg.no_reboot);
    assert_int_equal(cfg.nr_devices, 0);
    config_free(&cfg);
}

static void test_boot_options(void **state)
{
    (void)state;
    struct vm_config cfg;
    assert_int_equal(PARSE(&cfg, "-kernel", "bz", "-initrd", "rd.cpio", "-append",
                           "console=ttyS0 quiet", "-no-reboot", "-nographic", "-name", "vm1",
                           "--cpu", "max"),
                     0);
    assert_string_equal(cfg.initrd, "rd.cpio");
    assert_string_equal(cfg.append, "console=ttyS0 quiet");
    assert_true(cfg.no_reboot);
    assert_true(cfg.nographic);
    assert_string_equal(cfg.name, "vm1");
    assert_string_equal(cfg.cpu_model, "host");
    config_free(&cfg);

    assert_int_equal(PARSE(&cfg, "-name", "guest=web,debug-threads=on", "-kernel", "k"), 0);
    assert_string_equal(cfg.name, "web");
    config_free(&cfg);
}

static void test_memory(void **state)
{
    (void)state;
    struct vm_config cfg;
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-m", "512"), 0);
    assert_int_equal(cfg.ram_size, 512 * MiB);
    config_free(&cfg);
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-m", "2G"), 0);
    assert_int_equal(cfg.ram_size, 2 * GiB);
    config_free(&cfg);
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-m", "size=1G,slots=2,maxmem=4G"), 0);
    assert_int_equal(cfg.ram_size, GiB);
    config_free(&cfg);
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-m", "4096k"), 0);
    assert_int_equal(cfg.ram_size, 4 * MiB);
    config_free(&cfg);

    expect_reject(PARSE(&cfg, "-kernel", "k", "-m", "abc"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-m", "1K"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-m", "-5"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-m", "99999999T"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-m", "size=1G,bogus=1"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-m", ""), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-m"), &cfg);
}

static void test_smp(void **state)
{
    (void)state;
    struct vm_config cfg;
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-smp", "4"), 0);
    assert_int_equal(cfg.nr_cpus, 4);
    assert_int_equal(cfg.sockets, 1);
    assert_int_equal(cfg.cores, 4);
    assert_int_equal(cfg.threads, 1);
    config_free(&cfg);

    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-smp", "sockets=2,cores=2,threads=2"), 0);
    assert_int_equal(cfg.nr_cpus, 8);
    config_free(&cfg);

    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-smp", "cpus=4,threads=2"), 0);
    assert_int_equal(cfg.nr_cpus, 4);
    assert_int_equal(cfg.cores, 2);
    assert_int_equal(cfg.threads, 2);
    config_free(&cfg);

    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-smp", "2,maxcpus=4"), 0);
    assert_int_equal(cfg.nr_cpus, 2);
    assert_int_equal(cfg.max_cpus, 4);
    assert_true(cfg.sockets * cfg.cores * cfg.threads >= 4);
    config_free(&cfg);

    expect_reject(PARSE(&cfg, "-kernel", "k", "-smp", "0"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-smp", "256"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-smp", "four"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-smp", "4,sockets=1,cores=1"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-smp", "4,maxcpus=2"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-smp", "4,dies=2"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-smp", "4,books=2"), &cfg);
}

static void test_drives(void **state)
{
    (void)state;
    struct vm_config cfg;
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-drive",
                           "file=my,,disk.img,format=qcow2,readonly=on,cache=none"),
                     0);
    assert_int_equal(cfg.nr_drives, 1);
    assert_string_equal(cfg.drives[0].file, "my,disk.img");
    assert_string_equal(cfg.drives[0].format, "qcow2");
    assert_string_equal(cfg.drives[0].interface, "virtio");
    assert_string_equal(cfg.drives[0].id, "drive0");
    assert_true(cfg.drives[0].readonly);
    /* if=virtio attaches a virtio-blk device by itself */
    assert_int_equal(cfg.nr_devices, 1);
    assert_int_equal(cfg.devices[0].kind, DEVICE_VIRTIO_BLK);
    assert_string_equal(cfg.devices[0].drive, "drive0");
    config_free(&cfg);

    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-device",
                           "virtio-blk-pci,drive=hd0,serial=SN1,num-queues=4,id=blk0", "-drive",
                           "if=none,id=hd0,file=a.raw,format=raw"),
                     0);
    assert_int_equal(cfg.nr_devices, 1);
    assert_string_equal(cfg.devices[0].drive, "hd0");
    assert_string_equal(cfg.devices[0].serial, "SN1");
    assert_string_equal(cfg.devices[0].id, "blk0");
    assert_int_equal(cfg.devices[0].num_queues, 4);
    assert_true(cfg.drives[0].used);
    assert_false(cfg.drives[0].readonly);
    config_free(&cfg);

    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-drive", "file=d.qcow2,l2-cache-size=4M"), 0);
    assert_int_equal(cfg.drives[0].l2_cache_size, 4 * 1024 * 1024);
    config_free(&cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-drive", "file=x,l2-cache-size=lots"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-drive", "file=x,if=ide"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-drive", "file=x,format=vmdk"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-drive", "file=x,bogus=1"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-drive", "if=virtio"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-drive", "file=x,readonly=maybe"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-drive", "file=x,cache=fast"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-drive", "file=x,id=a,if=none", "-drive",
                        "file=y,id=a,if=none"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-device", "virtio-blk-pci,drive=nope"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-device", "virtio-blk-pci"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-drive", "file=x,id=d,if=none", "-device",
                        "virtio-blk-pci,drive=d", "-device", "virtio-blk-pci,drive=d"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-drive", "file=x,id=d,if=none", "-device",
                        "virtio-blk-pci,drive=d,num-queues=0"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-drive", "file=x,noequals"), &cfg);
}

static void test_devices(void **state)
{
    (void)state;
    struct vm_config cfg;
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                           "-device", "virtio-rng-pci", "-device", "isa-debug-exit"),
                     0);
    assert_int_equal(cfg.nr_devices, 3);
    assert_int_equal(cfg.devices[0].kind, DEVICE_ISA_DEBUG_EXIT);
    assert_int_equal(cfg.devices[0].iobase, 0xf4);
    assert_int_equal(cfg.devices[0].iosize, 4);
    assert_int_equal(cfg.devices[1].kind, DEVICE_VIRTIO_RNG);
    assert_int_equal(cfg.devices[2].iobase, 0x501);
    assert_int_equal(cfg.devices[2].iosize, 2);
    config_free(&cfg);

    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-serial", "none", "-device", "virtio-serial-pci",
                           "-device", "virtconsole"),
                     0);
    assert_int_equal(cfg.devices[0].kind, DEVICE_VIRTIO_SERIAL);
    assert_true(cfg.devices[0].console);
    assert_string_equal(cfg.devices[0].chardev, "stdio");
    config_free(&cfg);

    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-chardev", "file,id=c0,path=/tmp/out,,1",
                           "-device", "virtio-serial-pci", "-device", "virtconsole,chardev=c0"),
                     0);
    assert_string_equal(cfg.devices[0].chardev, "file:/tmp/out,1");
    config_free(&cfg);

    /* like QEMU, a -chardev may come after the device using it */
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-device", "virtio-serial-pci", "-device",
                           "virtconsole,chardev=c1", "-chardev", "null,id=c1"),
                     0);
    assert_string_equal(cfg.devices[0].chardev, "none");
    config_free(&cfg);

    expect_reject(PARSE(&cfg, "-kernel", "k", "-device", "isa-debug-exit,iosize=3"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-device", "isa-debug-exit,iobase=0xffff,iosize=4"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-device", "isa-debug-exit,iobase=zz"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-device", "e1000"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-device", "virtio-rng-pci,foo=1"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-device", "virtconsole"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-device", "id=x"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-device", "virtio-serial-pci", "-device",
                        "virtconsole,chardev=missing"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-chardev", "socket,id=s,path=/x"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-chardev", "stdio"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-chardev", "file,id=f"), &cfg);
}

static void test_serial_and_display(void **state)
{
    (void)state;
    struct vm_config cfg;
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-serial", "mon:stdio", "-display", "none"), 0);
    assert_string_equal(cfg.serial, "stdio");
    config_free(&cfg);
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-serial", "file:/tmp/com1.log"), 0);
    assert_string_equal(cfg.serial, "file:/tmp/com1.log");
    config_free(&cfg);
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-serial", "null", "-vga", "none", "-nodefaults"),
                     0);
    assert_string_equal(cfg.serial, "none");
    config_free(&cfg);

    expect_reject(PARSE(&cfg, "-kernel", "k", "-serial", "tcp::4444"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-serial", "file:"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-serial", "stdio", "-serial", "none"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-display", "gtk"), &cfg);
}

static void test_accel(void **state)
{
    (void)state;
    struct vm_config cfg;
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-accel", "kvm"), 0);
    assert_string_equal(cfg.accel, "kvm");
    config_free(&cfg);
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-accel", "tcg", "-accel", "kvm,thread=single"), 0);
    assert_string_equal(cfg.accel, "tcg:kvm");
    config_free(&cfg);
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-enable-kvm"), 0);
    assert_string_equal(cfg.accel, "kvm");
    config_free(&cfg);
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-machine", "q35,accel=kvm:tcg,usb=off"), 0);
    assert_string_equal(cfg.accel, "kvm:tcg");
    config_free(&cfg);
    /* -accel wins over -machine accel= whatever the order */
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-accel", "tcg", "-M", "pc,accel=kvm"), 0);
    assert_string_equal(cfg.accel, "tcg");
    config_free(&cfg);

    expect_reject(PARSE(&cfg, "-kernel", "k", "-accel", "hvf"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-accel", "thread=single"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-accel", "kvm:"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-machine", "virt"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-cpu", "qemu64"), &cfg);
}

static void test_cpu_flags(void **state)
{
    (void)state;
    struct vm_config cfg;
    assert_int_equal(PARSE(&cfg, "-kernel", "k", "-cpu", "host,-cx16,+popcnt,smap=off"), 0);
    assert_string_equal(cfg.cpu_model, "host");
    assert_int_equal(cfg.nr_cpu_flags, 3);
    assert_int_equal(cfg.cpu_flags[0].leaf, 1);
    assert_int_equal(cfg.cpu_flags[0].reg, 2); /* ECX */
    assert_int_equal(cfg.cpu_flags[0].bit, 13);
    assert_false(cfg.cpu_flags[0].set);
    assert_true(cfg.cpu_flags[1].set);
    assert_int_equal(cfg.cpu_flags[1].bit, 23);
    assert_int_equal(cfg.cpu_flags[2].leaf, 7);
    assert_int_equal(cfg.cpu_flags[2].reg, 1); /* EBX */
    assert_int_equal(cfg.cpu_flags[2].bit, 20);
    assert_false(cfg.cpu_flags[2].set);
    config_free(&cfg);

    expect_reject(PARSE(&cfg, "-kernel", "k", "-cpu", "host,-warp-drive"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-cpu", "host,cx16"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-cpu", "host,cx16=maybe"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-cpu", ",-cx16"), &cfg);
}

static void test_general_errors(void **state)
{
    (void)state;
    struct vm_config cfg;
    expect_reject(PARSE(&cfg, "-kernel", "k", "-bogus"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "disk.img"), &cfg);
    expect_reject(PARSE(&cfg, "-kernel", "k", "-"), &cfg);
    expect_reject(PARSE(&cfg, "-m", "64"), &cfg); /* no -kernel */
    expect_reject(PARSE(&cfg, "-kernel"), &cfg);

    /* QEMU also accepts --option */
    assert_int_equal(PARSE(&cfg, "--kernel", "k", "--m", "64"), 0);
    assert_int_equal(cfg.ram_size, 64 * MiB);
    config_free(&cfg);
}

static void test_help_version(void **state)
{
    (void)state;
    struct vm_config cfg;
    /* --help / --version print to stdout and ask for exit 0 */
    assert_int_equal(PARSE(&cfg, "--version"), 1);
    config_free(&cfg);
    assert_int_equal(PARSE(&cfg, "-h"), 1);
    config_free(&cfg);
    char buf[8192];
    FILE *f = fmemopen(buf, sizeof(buf), "w");
    assert_non_null(f);
    config_print_help(f);
    fclose(f);
    buf[sizeof(buf) - 1] = '\0';
    assert_non_null(strstr(buf, "-kernel"));
    assert_non_null(strstr(buf, "Examples"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_boot_options),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_smp),
        cmocka_unit_test(test_drives),
        cmocka_unit_test(test_devices),
        cmocka_unit_test(test_serial_and_display),
        cmocka_unit_test(test_accel),
        cmocka_unit_test(test_cpu_flags),
        cmocka_unit_test(test_general_errors),
        cmocka_unit_test(test_help_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
