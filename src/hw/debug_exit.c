/* isa-debug-exit. Stateless: the bus registration's opaque is the
 * vm_control itself, so there is nothing to allocate or free. */
#include "hw/debug_exit.h"

#include "core/log.h"

#include <errno.h>

static uint64_t debug_exit_read(void *opaque, uint64_t offset, unsigned size)
{
    (void)opaque;
    return 0;
}

static void debug_exit_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    const struct vm_control *vmctl = opaque;
    /* The value as written (bytes past the access size are not part of it);
     * the exit status keeps QEMU's formula, truncated by the OS to 8 bits. */
    uint32_t v = size >= 4 ? (uint32_t)value : (uint32_t)(value & ((1u << (8 * size)) - 1));
    vm_request(vmctl, VM_EVENT_EXIT, (int)((v << 1) | 1));
}

static const struct bus_ops debug_exit_ops = {
    .read = debug_exit_read,
    .write = debug_exit_write,
};

int debug_exit_new(struct bus *pio, uint16_t iobase, uint8_t iosize, const struct vm_control *vmctl)
{
    if (iosize != 1 && iosize != 2 && iosize != 4)
        return log_fail(-EINVAL, "isa-debug-exit: iosize=%u: expected 1, 2 or 4", iosize);
    if ((uint32_t)iobase + iosize > 0x10000)
        return log_fail(-EINVAL, "isa-debug-exit: iobase=0x%x: ports run past 0xffff", iobase);
    return bus_register(pio, iobase, iosize, &debug_exit_ops, (void *)vmctl, "isa-debug-exit");
}

void debug_exit_free(struct bus *pio, uint16_t iobase, const struct vm_control *vmctl)
{
    bus_unregister(pio, iobase, (void *)vmctl);
}
