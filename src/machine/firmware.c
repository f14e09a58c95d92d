/* What a PC BIOS leaves behind for the OS: the MP table and the ACPI
 * tables, built from the machine's CPU count, RAM size and PCI slots. */
#include <errno.h>

#include "core/log.h"
#include "machine/acpi.h"
#include "machine/boot.h"
#include "machine/mptable.h"

int firmware_build_tables(const struct firmware_config *fc, const struct guest_mem *mem)
{
    int ret = mptable_write(mem, fc->nr_cpus, fc->pci_slot_mask);
    if (ret < 0)
        return ret;
    struct acpi_config ac = {
        .nr_cpus = fc->nr_cpus,
        .ram_size = fc->ram_size,
        .pci_slot_mask = fc->pci_slot_mask,
    };
    return acpi_write(&ac, mem);
}
