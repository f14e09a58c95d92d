/* ACPI fixed hardware (PM1a event and control blocks, PM timer) at the
 * layout.h ports, and the reset control register at port 0xcf9.
 * SCI_EN always reads 1 (there is no SMI_CMD: ACPI mode is on from boot).
 * Writing SLP_EN with SLP_TYP 5 (the DSDT's \_S5) powers off; writing 0xcf9
 * with bit 2 (RST_CPU) set, e.g. 0x06, asks for a reset. */
#ifndef EMBER_HW_ACPI_PM_H
#define EMBER_HW_ACPI_PM_H

#include "hw/bus.h"
#include "hw/irq.h"
#include "hw/vmctl.h"

#define ACPI_PM_SLP_TYP_S5 5

struct acpi_pm;

/* NULL with a message if the ports are taken. */
struct acpi_pm *acpi_pm_new(struct bus *pio, const struct irq_sink *irq, const struct vm_control *vmctl);
void acpi_pm_reset(struct acpi_pm *pm);
void acpi_pm_free(struct acpi_pm *pm);
/* The power button: sets PWRBTN_STS and raises the SCI if enabled. */
void acpi_pm_press_power_button(struct acpi_pm *pm);

#endif
