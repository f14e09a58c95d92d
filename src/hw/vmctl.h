/* How devices ask the machine to stop, reset or exit: the i8042 reset line,
 * the ACPI PM power-off, isa-debug-exit, the serial Ctrl-A x escape. The
 * machine decides what happens (e.g. -no-reboot turns a reset into exit 0). */
#ifndef EMBER_HW_VMCTL_H
#define EMBER_HW_VMCTL_H

enum vm_event {
    VM_EVENT_POWEROFF, /* guest powered off: process exits 0 */
    VM_EVENT_RESET,    /* guest asked for a reset */
    VM_EVENT_EXIT,     /* exit with the given status (isa-debug-exit) */
    VM_EVENT_QUIT,     /* the user quit (Ctrl-A x, QMP quit): exit 0 */
    VM_EVENT_ERROR,    /* a fatal host-side error: exit 1 */
};

struct vm_control {
    void *opaque;
    void (*request)(void *opaque, enum vm_event event, int exit_code);
};

static inline void vm_request(const struct vm_control *c, enum vm_event event, int exit_code)
{
    c->request(c->opaque, event, exit_code);
}

#endif
