/* ACPI table builder. Each table is laid out byte by byte at fixed offsets
 * from the spec (ACPI 6.x chapter 5) into a host buffer that mirrors the
 * guest's 64 KiB ACPI area, then copied in one go. */
#include "machine/acpi.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"
#include "hw/acpi_pm.h"
#include "hw/pvpanic.h"
#include "machine/aml.h"
#include "machine/layout.h"

#define ACPI_HDR_SIZE 36
#define ACPI_OEM_ID "EMBER "
#define ACPI_OEM_TABLE_ID "EMBERPC "
#define ACPI_CREATOR_ID "EMBR"

#define RSDP_SIZE 36
#define FADT_SIZE 276
#define FACS_SIZE 64
#define MCFG_SIZE (ACPI_HDR_SIZE + 8 + 16)

/* FADT flags (5.2.9, table 5.10) */
#define FADT_WBINVD (1u << 0)
#define FADT_PROC_C1 (1u << 2)
#define FADT_PWR_BUTTON (1u << 4) /* no fixed-feature power button */
#define FADT_SLP_BUTTON (1u << 5) /* no fixed-feature sleep button */
#define FADT_RESET_REG_SUP (1u << 10)
/* IA-PC boot architecture flags */
#define IAPC_LEGACY_DEVICES (1u << 0)
#define IAPC_8042 (1u << 1)
#define IAPC_NO_VGA (1u << 2)

#define GAS_SYSTEM_IO 1
#define GAS_ACCESS_BYTE 1
#define GAS_ACCESS_WORD 2
#define GAS_ACCESS_DWORD 3

/* MADT */
#define MADT_PCAT_COMPAT 1u
#define MADT_LAPIC 0
#define MADT_IOAPIC 1
#define MADT_ISO 2
#define MADT_LAPIC_NMI 4
#define MADT_MPS_HIGH_LEVEL 0x000d /* polarity 01 active high, trigger 11 level */

/* The DSDT's \_S5 and the PM1a_CNT device must agree on "power off". */
_Static_assert(ACPI_SLP_TYP_S5 == ACPI_PM_SLP_TYP_S5, "\\_S5 SLP_TYP matches hw/acpi_pm");

#define RTC_CMOS_CENTURY 0x32 /* hw/rtc keeps the century there */

uint8_t acpi_checksum(const uint8_t *p, size_t len)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += p[i];
    return sum;
}

/* Bump allocator over the host image of the ACPI area. */
struct acpi_area {
    uint8_t *buf;
    size_t size, used;
    uint64_t base;
};

static uint8_t *acpi_alloc(struct acpi_area *area, size_t len, size_t align, uint64_t *gpa)
{
    size_t off = ALIGN_UP(area->used, align);
    if (off > area->size || len > area->size - off)
        return NULL;
    area->used = off + len;
    *gpa = area->base + off;
    memset(area->buf + off, 0, len);
    return area->buf + off;
}

static void acpi_header(uint8_t *t, const char sig[4], uint32_t len, uint8_t rev)
{
    memcpy(t, sig, 4);
    st32(t + 4, len);
    t[8] = rev;
    memcpy(t + 10, ACPI_OEM_ID, 6);
    memcpy(t + 16, ACPI_OEM_TABLE_ID, 8);
    st32(t + 24, 1); /* OEM revision */
    memcpy(t + 28, ACPI_CREATOR_ID, 4);
    st32(t + 32, 1); /* creator revision */
}

static void acpi_finish(uint8_t *t)
{
    t[9] = 0;
    t[9] = (uint8_t)-acpi_checksum(t, ld32(t + 4));
}

/* Generic Address Structure for an I/O port register. */
static void acpi_gas_io(uint8_t *g, uint16_t port, uint8_t bits, uint8_t access)
{
    g[0] = GAS_SYSTEM_IO;
    g[1] = bits;
    g[2] = 0;
    g[3] = access;
    st64(g + 4, port);
}

static void dsdt_pci_host(struct aml *a)
{
    size_t dev = aml_device_begin(a, "PCI0");
    aml_name_eisaid(a, "_HID", "PNP0A08"); /* PCI Express root */
    aml_name_eisaid(a, "_CID", "PNP0A03"); /* PCI root */
    aml_name_integer(a, "_SEG", 0);
    aml_name_integer(a, "_UID", 0);
    aml_name_integer(a, "_BBN", 0);

    aml_name(a, "_CRS");
    size_t rt = aml_restemplate_begin(a);
    aml_res_word_bus(a, 0, 255);
    aml_res_io(a, LAYOUT_PCI_CONFIG_ADDR, LAYOUT_PCI_CONFIG_ADDR, 1, 8);
    aml_res_word_io(a, 0x0000, LAYOUT_PCI_CONFIG_ADDR - 1);
    aml_res_word_io(a, 0x0d00, 0xffff);
    aml_res_dword_mem(a, (uint32_t)LAYOUT_PCI_MMIO32_BASE,
                      (uint32_t)(LAYOUT_PCI_MMIO32_BASE + LAYOUT_PCI_MMIO32_SIZE - 1), false);
    aml_restemplate_end(a, rt);

    /* _PRT: every slot's INTA-D, so hot-added or unlisted slots route too;
     * Source 0 means SourceIndex is a GSI (no link devices). */
    aml_name(a, "_PRT");
    size_t prt = aml_package_begin(a, 32 * 4);
    for (unsigned slot = 0; slot < 32; slot++) {
        for (unsigned pin = 0; pin < 4; pin++) {
            size_t e = aml_package_begin(a, 4);
            aml_integer(a, (uint64_t)slot << 16 | 0xffff);
            aml_integer(a, pin);
            aml_integer(a, 0);
            aml_integer(a, layout_pci_intx_gsi(slot, pin));
            aml_end(a, e);
        }
    }
    aml_end(a, prt);
    aml_end(a, dev);
}

/* A legacy device: _HID, optional _UID, _CRS with up to two I/O ranges and an IRQ. */
static void dsdt_isa_device(struct aml *a, const char *name, const char *hid, int uid,
                            uint16_t io0, uint8_t io0_len, uint16_t io1, uint8_t io1_len, int irq)
{
    size_t dev = aml_device_begin(a, name);
    aml_name_eisaid(a, "_HID", hid);
    if (uid >= 0)
        aml_name_integer(a, "_UID", (uint64_t)uid);
    aml_name(a, "_CRS");
    size_t rt = aml_restemplate_begin(a);
    if (io0_len)
        aml_res_io(a, io0, io0, 1, io0_len);
    if (io1_len)
        aml_res_io(a, io1, io1, 1, io1_len);
    if (irq >= 0)
        aml_res_irq(a, (uint16_t)(1u << irq));
    aml_restemplate_end(a, rt);
    aml_end(a, dev);
}

/* QEMU's pvpanic ISA device: Linux's pvpanic-mmio driver binds to the
 * ACPI id QEMU0001 and takes its I/O port from _CRS. */
static void dsdt_pvpanic(struct aml *a)
{
    size_t dev = aml_device_begin(a, "PEVT");
    aml_name_string_value(a, "_HID", "QEMU0001");
    aml_name(a, "_CRS");
    size_t rt = aml_restemplate_begin(a);
    aml_res_io(a, PVPANIC_PORT, PVPANIC_PORT, 1, 1);
    aml_restemplate_end(a, rt);
    aml_end(a, dev);
}

static void dsdt_motherboard(struct aml *a)
{
    /* Linux trusts the MCFG window only if firmware reserves it, here or in e820. */
    size_t dev = aml_device_begin(a, "MRES");
    aml_name_eisaid(a, "_HID", "PNP0C02");
    aml_name_integer(a, "_UID", 0);
    aml_name(a, "_CRS");
    size_t rt = aml_restemplate_begin(a);
    aml_res_mem32_fixed(a, (uint32_t)LAYOUT_PCI_ECAM_BASE, (uint32_t)LAYOUT_PCI_ECAM_SIZE, false);
    aml_restemplate_end(a, rt);
    aml_end(a, dev);
}

static void dsdt_processors(struct aml *a, unsigned nr_cpus)
{
    for (unsigned cpu = 0; cpu < nr_cpus; cpu++) {
        char name[16];
        snprintf(name, sizeof(name), "C%03X", cpu & 0xfff);
        size_t dev = aml_device_begin(a, name);
        aml_name_string_value(a, "_HID", "ACPI0007");
        aml_name_integer(a, "_UID", cpu); /* = MADT ACPI processor UID */
        aml_end(a, dev);
    }
}

int acpi_build_dsdt_aml(const struct acpi_config *ac, uint8_t **out, size_t *len)
{
    struct aml a;
    aml_init(&a);

    /* \_S5: SLP_TYPa, SLP_TYPb, reserved, reserved */
    aml_name(&a, "\\_S5");
    size_t s5 = aml_package_begin(&a, 4);
    aml_integer(&a, ACPI_SLP_TYP_S5);
    aml_integer(&a, ACPI_SLP_TYP_S5);
    aml_integer(&a, 0);
    aml_integer(&a, 0);
    aml_end(&a, s5);

    size_t sb = aml_scope_begin(&a, "\\_SB");
    dsdt_pci_host(&a);
    dsdt_isa_device(&a, "COM1", "PNP0501", 1, LAYOUT_COM1_PORT, 8, 0, 0, LAYOUT_COM1_GSI);
    dsdt_isa_device(&a, "KBD", "PNP0303", -1, LAYOUT_I8042_DATA_PORT, 1, LAYOUT_I8042_CMD_PORT, 1,
                    LAYOUT_I8042_KBD_GSI);
    dsdt_isa_device(&a, "MOU", "PNP0F13", -1, 0, 0, 0, 0, LAYOUT_I8042_AUX_GSI);
    dsdt_isa_device(&a, "RTC", "PNP0B00", -1, LAYOUT_RTC_PORT, 2, 0, 0, LAYOUT_RTC_GSI);
    dsdt_pvpanic(&a);
    dsdt_motherboard(&a);
    dsdt_processors(&a, ac->nr_cpus);
    aml_end(&a, sb);

    if (a.error) {
        aml_free(&a);
        return log_fail(-EINVAL, "acpi: internal error encoding the DSDT");
    }
    *out = a.data;
    *len = a.len;
    return 0;
}

static int acpi_add_dsdt(struct acpi_area *area, const struct acpi_config *ac, uint64_t *gpa)
{
    uint8_t *aml;
    size_t aml_len;
    int ret = acpi_build_dsdt_aml(ac, &aml, &aml_len);
    if (ret < 0)
        return ret;
    uint8_t *t = acpi_alloc(area, ACPI_HDR_SIZE + aml_len, 16, gpa);
    if (t) {
        /* Revision 2: AML integers are 64-bit. */
        acpi_header(t, "DSDT", (uint32_t)(ACPI_HDR_SIZE + aml_len), 2);
        memcpy(t + ACPI_HDR_SIZE, aml, aml_len);
        acpi_finish(t);
    }
    free(aml);
    return t ? 0 : -ENOSPC;
}

static int acpi_add_facs(struct acpi_area *area, uint64_t *gpa)
{
    uint8_t *t = acpi_alloc(area, FACS_SIZE, 64, gpa); /* 64-byte aligned, no checksum */
    if (!t)
        return -ENOSPC;
    memcpy(t, "FACS", 4);
    st32(t + 4, FACS_SIZE);
    t[32] = 2; /* version */
    return 0;
}

static int acpi_add_fadt(struct acpi_area *area, uint64_t facs, uint64_t dsdt, uint64_t *gpa)
{
    uint8_t *t = acpi_alloc(area, FADT_SIZE, 16, gpa);
    if (!t)
        return -ENOSPC;
    acpi_header(t, "FACP", FADT_SIZE, 6);
    st32(t + 36, (uint32_t)facs);
    st32(t + 40, (uint32_t)dsdt);
    st16(t + 46, LAYOUT_ACPI_SCI_GSI);
    /* SMI_CMD (48), ACPI_ENABLE/DISABLE stay 0: the platform boots with
     * ACPI already enabled (SCI_EN reads 1). */
    st32(t + 56, LAYOUT_ACPI_PM1_EVT);
    st32(t + 64, LAYOUT_ACPI_PM1_CNT);
    st32(t + 76, LAYOUT_ACPI_PM_TMR);
    t[88] = 4; /* PM1_EVT_LEN */
    t[89] = 2; /* PM1_CNT_LEN */
    t[91] = 4; /* PM_TMR_LEN */
    st16(t + 96, 101);  /* P_LVL2_LAT > 100: no C2 */
    st16(t + 98, 1001); /* P_LVL3_LAT > 1000: no C3 */
    t[108] = RTC_CMOS_CENTURY;
    st16(t + 109, IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_NO_VGA);
    st32(t + 112, FADT_WBINVD | FADT_PROC_C1 | FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_RESET_REG_SUP);
    acpi_gas_io(t + 116, LAYOUT_RESET_PORT, 8, GAS_ACCESS_BYTE);
    t[128] = 0x06; /* RESET_VALUE: full reset through port 0xcf9 */
    t[131] = 0;    /* FADT minor version: 6.0 */
    /* X_FIRMWARE_CTRL (132) stays 0: the spec allows only one FACS pointer
     * (Linux lists the FACS twice otherwise). X_DSDT overrides DSDT. */
    st64(t + 140, dsdt);
    acpi_gas_io(t + 148, LAYOUT_ACPI_PM1_EVT, 32, GAS_ACCESS_WORD);
    acpi_gas_io(t + 172, LAYOUT_ACPI_PM1_CNT, 16, GAS_ACCESS_WORD);
    acpi_gas_io(t + 208, LAYOUT_ACPI_PM_TMR, 32, GAS_ACCESS_DWORD);
    memcpy(t + 268, "EMBERVMM", 8); /* hypervisor vendor identity */
    acpi_finish(t);
    return 0;
}

static int acpi_add_madt(struct acpi_area *area, unsigned nr_cpus, uint64_t *gpa)
{
    size_t len = ACPI_HDR_SIZE + 8 + nr_cpus * 8 + 12 + 2 * 10 + 6;
    uint8_t *t = acpi_alloc(area, len, 16, gpa);
    if (!t)
        return -ENOSPC;
    acpi_header(t, "APIC", (uint32_t)len, 5);
    st32(t + 36, (uint32_t)LAYOUT_LAPIC_BASE);
    st32(t + 40, MADT_PCAT_COMPAT); /* dual 8259s are present too */
    uint8_t *e = t + ACPI_HDR_SIZE + 8;
    for (unsigned cpu = 0; cpu < nr_cpus; cpu++, e += 8) {
        e[0] = MADT_LAPIC;
        e[1] = 8;
        e[2] = (uint8_t)cpu; /* ACPI processor UID */
        e[3] = (uint8_t)cpu; /* APIC ID */
        st32(e + 4, 1);      /* enabled */
    }
    e[0] = MADT_IOAPIC;
    e[1] = 12;
    e[2] = (uint8_t)nr_cpus; /* IOAPIC ID: after the CPUs' */
    st32(e + 4, (uint32_t)LAYOUT_IOAPIC_BASE);
    st32(e + 8, 0); /* GSI base */
    e += 12;
    /* ISA IRQ0 (PIT) arrives on GSI 2, like on every PC. */
    e[0] = MADT_ISO;
    e[1] = 10;
    e[2] = 0; /* ISA bus */
    e[3] = 0;
    st32(e + 4, 2);
    st16(e + 8, 0); /* conforms to bus */
    e += 10;
    /* The SCI is level-triggered active-high, unlike other ISA IRQs. */
    e[0] = MADT_ISO;
    e[1] = 10;
    e[2] = 0;
    e[3] = LAYOUT_ACPI_SCI_GSI;
    st32(e + 4, LAYOUT_ACPI_SCI_GSI);
    st16(e + 8, MADT_MPS_HIGH_LEVEL);
    e += 10;
    e[0] = MADT_LAPIC_NMI;
    e[1] = 6;
    e[2] = 0xff; /* all processors */
    st16(e + 3, 0);
    e[5] = 1; /* LINT1 */
    acpi_finish(t);
    return 0;
}

static int acpi_add_mcfg(struct acpi_area *area, uint64_t *gpa)
{
    uint8_t *t = acpi_alloc(area, MCFG_SIZE, 16, gpa);
    if (!t)
        return -ENOSPC;
    acpi_header(t, "MCFG", MCFG_SIZE, 1);
    uint8_t *e = t + ACPI_HDR_SIZE + 8;
    st64(e, LAYOUT_PCI_ECAM_BASE);
    st16(e + 8, 0); /* segment */
    e[10] = 0;      /* start bus */
    e[11] = (uint8_t)(LAYOUT_PCI_ECAM_SIZE / MiB - 1);
    acpi_finish(t);
    return 0;
}

/* RSDT (32-bit pointers) and XSDT (64-bit) listing the same tables. */
static int acpi_add_sdts(struct acpi_area *area, const uint64_t *tables, unsigned n,
                         uint64_t *rsdt, uint64_t *xsdt)
{
    uint8_t *r = acpi_alloc(area, ACPI_HDR_SIZE + 4 * n, 16, rsdt);
    if (!r)
        return -ENOSPC;
    acpi_header(r, "RSDT", ACPI_HDR_SIZE + 4 * n, 1);
    for (unsigned i = 0; i < n; i++)
        st32(r + ACPI_HDR_SIZE + 4 * i, (uint32_t)tables[i]);
    acpi_finish(r);

    uint8_t *x = acpi_alloc(area, ACPI_HDR_SIZE + 8 * n, 16, xsdt);
    if (!x)
        return -ENOSPC;
    acpi_header(x, "XSDT", ACPI_HDR_SIZE + 8 * n, 1);
    for (unsigned i = 0; i < n; i++)
        st64(x + ACPI_HDR_SIZE + 8 * i, tables[i]);
    acpi_finish(x);
    return 0;
}

static void acpi_fill_rsdp(uint8_t *p, uint64_t rsdt, uint64_t xsdt)
{
    memcpy(p, "RSD PTR ", 8);
    memcpy(p + 9, ACPI_OEM_ID, 6);
    p[15] = 2; /* revision: ACPI 2.0+ with XSDT */
    st32(p + 16, (uint32_t)rsdt);
    st32(p + 20, RSDP_SIZE);
    st64(p + 24, xsdt);
    p[8] = (uint8_t)-acpi_checksum(p, 20);
    p[32] = (uint8_t)-acpi_checksum(p, RSDP_SIZE);
}

int acpi_build(const struct acpi_config *ac, uint64_t base, uint8_t *buf, size_t size)
{
    if (ac->nr_cpus == 0 || ac->nr_cpus > ACPI_MAX_CPUS)
        return log_fail(-EINVAL, "acpi: %u CPUs is outside 1..%u", ac->nr_cpus, ACPI_MAX_CPUS);
    struct acpi_area area = {.buf = buf, .size = size, .base = base};
    uint64_t rsdp, facs, dsdt, fadt, madt, mcfg, rsdt, xsdt;
    /* The RSDP comes first: the OS scans for it on 16-byte boundaries. */
    uint8_t *rsdp_p = acpi_alloc(&area, RSDP_SIZE, 16, &rsdp);
    if (!rsdp_p)
        return -ENOSPC;
    int ret = acpi_add_facs(&area, &facs);
    if (!ret)
        ret = acpi_add_dsdt(&area, ac, &dsdt);
    if (!ret)
        ret = acpi_add_fadt(&area, facs, dsdt, &fadt);
    if (!ret)
        ret = acpi_add_madt(&area, ac->nr_cpus, &madt);
    if (!ret)
        ret = acpi_add_mcfg(&area, &mcfg);
    if (!ret) {
        const uint64_t tables[] = {fadt, madt, mcfg};
        ret = acpi_add_sdts(&area, tables, ARRAY_SIZE(tables), &rsdt, &xsdt);
    }
    if (ret == -ENOSPC)
        return log_fail(ret, "acpi: tables for %u CPUs do not fit in %zu bytes", ac->nr_cpus, size);
    if (ret < 0)
        return ret;
    acpi_fill_rsdp(rsdp_p, rsdt, xsdt);
    return (int)area.used;
}

int acpi_write(const struct acpi_config *ac, const struct guest_mem *mem)
{
    uint8_t *buf = xmalloc(ACPI_AREA_SIZE);
    int len = acpi_build(ac, LAYOUT_ACPI_BASE, buf, ACPI_AREA_SIZE);
    if (len >= 0 && guest_mem_write(mem, LAYOUT_ACPI_BASE, buf, (size_t)len))
        len = log_fail(-EFAULT, "acpi: guest RAM does not cover 0x%llx", (unsigned long long)LAYOUT_ACPI_BASE);
    free(buf);
    return len < 0 ? len : 0;
}
