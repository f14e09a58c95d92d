/* Triple fault: load an empty IDT and execute UD2. The #UD cannot be
 * delivered, nor the #GP that follows, nor the #DF: the CPU shuts down.
 * Ember must print the vCPU's registers and exit with status 2 (the
 * harness checks stderr); QEMU with -no-reboot treats it as a reset and
 * exits 0. Nothing after the UD2 may run. */
#include "guest.h"

void guest_main(void)
{
    static const struct __attribute__((packed)) {
        uint16_t limit;
        uint64_t base;
    } empty_idt = {0, 0};

    tap_plan(1);
    tap_check(true, "the guest runs; next: UD2 with an empty IDT");
    __asm__ volatile("cli; lidt %0; ud2" : : "m"(empty_idt) : "memory");
    printf("Bail out! execution continued after a triple fault\n");
    guest_exit(GUEST_EXIT_FAIL);
}
