/* pvpanic. Stateless, like isa-debug-exit: the registration's opaque is the
 * vm_control. Reads report the events this device understands (Linux's
 * driver only sends those); a PANICKED write ends the VM with
 * PVPANIC_EXIT_STATUS. CRASH_LOADED means a kdump kernel takes over, so the
 * VM keeps running. */
#include "hw/pvpanic.h"

#include "core/log.h"

static uint64_t pvpanic_read(void *opaque, uint64_t offset, unsigned size)
{
    (void)opaque;
    return offset == 0 ? (PVPANIC_PANICKED | PVPANIC_CRASH_LOADED) : 0;
}

static void pvpanic_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
    const struct vm_control *vmctl = opaque;
    if (offset != 0)
        return;
    if (value & PVPANIC_PANICKED) {
        log_error("the guest kernel panicked (pvpanic): exiting with status %d", PVPANIC_EXIT_STATUS);
        vm_request(vmctl, VM_EVENT_EXIT, PVPANIC_EXIT_STATUS);
    } else if (value & PVPANIC_CRASH_LOADED) {
        log_info("the guest kernel panicked and runs its crash kernel (pvpanic)");
    }
}

static const struct bus_ops pvpanic_ops = {
    .read = pvpanic_read,
    .write = pvpanic_write,
};

int pvpanic_new(struct bus *pio, uint16_t port, const struct vm_control *vmctl)
{
    return bus_register(pio, port, 1, &pvpanic_ops, (void *)vmctl, "pvpanic");
}

void pvpanic_free(struct bus *pio, uint16_t port, const struct vm_control *vmctl)
{
    bus_unregister(pio, port, (void *)vmctl);
}
