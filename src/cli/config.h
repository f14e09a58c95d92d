/* The VM configuration: the command line parsed once into plain structs.
 * Nothing here points at runtime objects; machine/ builds the VM from it. */
#ifndef EMBER_CLI_CONFIG_H
#define EMBER_CLI_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "accel/accel.h" /* struct cpuid_override */

#define CONFIG_MAX_DRIVES 16
#define CONFIG_MAX_DEVICES 32
#define CONFIG_MAX_CPU_FLAGS 32

struct drive_config {
    char *id;          /* -drive id= (generated "drive0".. if absent) */
    char *file;
    char *format;      /* NULL = probe */
    char *interface;   /* "virtio" or "none" (attached by -device virtio-blk-pci,drive=) */
    bool readonly;
    bool used;         /* claimed by a device */
    uint64_t l2_cache_size; /* qcow2 l2-cache-size= in bytes, 0 = the block layer's default */
};

enum device_kind {
    DEVICE_VIRTIO_BLK,
    DEVICE_VIRTIO_RNG,
    DEVICE_VIRTIO_SERIAL,   /* virtio-serial-pci / virtio-console: console port 0 */
    DEVICE_ISA_DEBUG_EXIT,
};

struct device_config {
    enum device_kind kind;
    char *id;
    char *drive;        /* virtio-blk */
    bool console;       /* virtio-serial-pci: a virtconsole port was given */
    char *chardev;      /* its backend as a chardev_open() spec ("stdio", "file:PATH",
                           "none"); NULL when there is no console port */
    uint16_t iobase;    /* isa-debug-exit */
    uint8_t iosize;
    unsigned num_queues;/* virtio-blk num-queues */
    char *serial;       /* virtio-blk serial= (GET_ID) */
};

struct vm_config {
    char *name;
    uint64_t ram_size;            /* bytes; default 128 MiB like QEMU */
    unsigned nr_cpus;             /* -smp N */
    unsigned sockets, cores, threads; /* always filled in; product >= nr_cpus */
    unsigned max_cpus;            /* -smp maxcpus= (no hotplug: informational) */
    char *kernel, *initrd, *append;
    char *serial;                 /* COM1 as a chardev_open() spec: "stdio", "file:PATH", "none";
                                     default "stdio" (Ember has no graphical console) */
    bool nographic;
    bool no_reboot;
    char *accel;                  /* "kvm", "tcg", "kvm:tcg"; NULL = kvm, fall back to tcg */
    char *cpu_model;              /* "host" (also for -cpu max) or NULL */
    struct cpuid_override cpu_flags[CONFIG_MAX_CPU_FLAGS]; /* -cpu host,+feat,-feat */
    unsigned nr_cpu_flags;
    struct drive_config drives[CONFIG_MAX_DRIVES];
    unsigned nr_drives;
    struct device_config devices[CONFIG_MAX_DEVICES];
    unsigned nr_devices;
};

/* Parse argv into cfg (which is overwritten; config_free() it afterwards
 * whatever the result). -drive if=virtio adds a DEVICE_VIRTIO_BLK entry to
 * devices[] at its place on the command line, so devices[] is the complete,
 * ordered list of PCI devices. Returns 0, 1 if the program should exit 0
 * after --help/--version output, or -1 after printing one line naming the bad
 * option and what was expected. */
int config_parse(int argc, char **argv, struct vm_config *cfg);
void config_free(struct vm_config *cfg);
/* The --help text. */
void config_print_help(FILE *out);

#endif
