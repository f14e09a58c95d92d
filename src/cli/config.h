/* The VM configuration: the command line parsed once into plain structs.
 * Nothing here points at runtime objects; machine/ builds the VM from it. */
#ifndef EMBER_CLI_CONFIG_H
#define EMBER_CLI_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#define CONFIG_MAX_DRIVES 16
#define CONFIG_MAX_DEVICES 32

struct drive_config {
    char *id;          /* -drive id= (generated "drive0".. if absent) */
    char *file;
    char *format;      /* NULL = probe */
    char *interface;   /* "virtio" or "none" (attached by -device virtio-blk-pci,drive=) */
    bool readonly;
    bool used;         /* claimed by a device */
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
    char *chardev;      /* virtio-console backend spec, default "stdio"-mux peer */
    uint16_t iobase;    /* isa-debug-exit */
    uint8_t iosize;
    unsigned num_queues;/* virtio-blk num-queues */
    char *serial;       /* virtio-blk serial= (GET_ID) */
};

struct vm_config {
    char *name;
    uint64_t ram_size;            /* bytes; default 128 MiB like QEMU */
    unsigned nr_cpus;             /* -smp N */
    unsigned sockets, cores, threads;
    char *kernel, *initrd, *append;
    char *serial;                 /* "stdio", "file:PATH", "none"; default stdio with -nographic */
    bool nographic;
    bool no_reboot;
    char *accel;                  /* "kvm", "tcg", "kvm:tcg"; NULL = kvm, fall back to tcg */
    char *cpu_model;              /* "host" or NULL */
    struct drive_config drives[CONFIG_MAX_DRIVES];
    unsigned nr_drives;
    struct device_config devices[CONFIG_MAX_DEVICES];
    unsigned nr_devices;
};

/* Parse argv into cfg. Returns 0, 1 if the program should exit 0 after
 * --help/--version output, or -1 after printing one line naming the bad
 * option and what was expected. */
int config_parse(int argc, char **argv, struct vm_config *cfg);
void config_free(struct vm_config *cfg);

#endif
