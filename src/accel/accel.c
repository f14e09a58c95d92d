#include "accel/accel.h"

#include <string.h>

/* Weak so the tree links while an accelerator is still being written;
 * accel_find() reports a missing one as unknown. */
extern const struct accel_ops accel_kvm_ops __attribute__((weak));
extern const struct accel_ops accel_emu_ops __attribute__((weak));

const struct accel_ops *accel_find(const char *name)
{
    if (!strcmp(name, "kvm"))
        return &accel_kvm_ops ? &accel_kvm_ops : NULL;
    if (!strcmp(name, "tcg") || !strcmp(name, "emu"))
        return &accel_emu_ops ? &accel_emu_ops : NULL;
    return NULL;
}
