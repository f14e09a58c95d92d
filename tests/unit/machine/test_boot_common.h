/* Helpers shared by the boot/firmware unit tests: a guest RAM of a given
 * size backed by calloc, and temporary files holding synthetic images. */
#ifndef EMBER_TEST_BOOT_COMMON_H
#define EMBER_TEST_BOOT_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/guest_mem.h"
#include "core/util.h"
#include "machine/layout.h"

struct test_vm {
    struct guest_mem mem;
    uint8_t *ram;
    uint64_t ram_size;
};

/* Only the low part is backed (tests never need > 3 GiB); RAM above 4 GiB
 * is described to the loaders but not mapped. */
static inline void test_vm_init(struct test_vm *vm, uint64_t ram_size)
{
    memset(vm, 0, sizeof(*vm));
    vm->ram_size = ram_size;
    uint64_t low = MIN(ram_size, LAYOUT_LOW_RAM_MAX);
    vm->ram = calloc(1, low);
    if (!vm->ram || guest_mem_add(&vm->mem, 0, low, vm->ram))
        abort();
}

static inline void test_vm_free(struct test_vm *vm)
{
    free(vm->ram);
    vm->ram = NULL;
}

/* Write data to a fresh temporary file; returns its malloc'd path. */
static inline char *test_write_file(const void *data, size_t len)
{
    char *path = strdup("/tmp/ember-test-boot-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || (len && write(fd, data, len) != (ssize_t)len))
        abort();
    close(fd);
    return path;
}

static inline void test_remove_file(char *path)
{
    unlink(path);
    free(path);
}

#endif
