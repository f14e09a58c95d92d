/* Unit tests for the AML builder (exact bytes for known constructs) and the
 * ACPI tables (checksums, lengths, revisions, MADT/MCFG/FADT contents), and,
 * when iasl is installed, a disassembly of the DSDT. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "machine/acpi.h"
#include "machine/aml.h"
#include "test_boot_common.h"

#define expect_aml(a, ...)                                                                         \
    do {                                                                                           \
        const uint8_t want_[] = {__VA_ARGS__};                                                     \
        assert_false((a)->error);                                                                  \
        assert_int_equal((a)->len, sizeof(want_));                                                 \
        assert_memory_equal((a)->data, want_, sizeof(want_));                                      \
    } while (0)

static void test_aml_integers(void **state)
{
    (void)state;
    struct aml a;
    const struct {
        uint64_t v;
        uint8_t bytes[9];
        size_t len;
    } cases[] = {
        {0, {0x00}, 1},
        {1, {0x01}, 1},
        {UINT64_MAX, {0xff}, 1},
        {2, {0x0a, 0x02}, 2},
        {0xff, {0x0a, 0xff}, 2},
        {0x100, {0x0b, 0x00, 0x01}, 3},
        {0x1234, {0x0b, 0x34, 0x12}, 3},
        {0x10000, {0x0c, 0x00, 0x00, 0x01, 0x00}, 5},
        {0xe0000000, {0x0c, 0x00, 0x00, 0x00, 0xe0}, 5},
        {0x100000000ULL, {0x0e, 0, 0, 0, 0, 1, 0, 0, 0}, 9},
    };
    for (unsigned i = 0; i < ARRAY_SIZE(cases); i++) {
        aml_init(&a);
        aml_integer(&a, cases[i].v);
        assert_int_equal(a.len, cases[i].len);
        assert_memory_equal(a.data, cases[i].bytes, cases[i].len);
        aml_free(&a);
    }
}

static void test_aml_pkglength(void **state)
{
    (void)state;
    uint8_t b[4];
    assert_int_equal(aml_pkglength_encode(0, b), 1);
    assert_int_equal(b[0], 1);
    assert_int_equal(aml_pkglength_encode(62, b), 1); /* 63 fits 6 bits */
    assert_int_equal(b[0], 63);
    assert_int_equal(aml_pkglength_encode(63, b), 2); /* 65 = 0x41 */
    assert_int_equal(b[0], 0x41);
    assert_int_equal(b[1], 0x04);
    assert_int_equal(aml_pkglength_encode(0x1000, b), 3); /* 0x1003 */
    assert_int_equal(b[0], 0x83);
    assert_int_equal(b[1], 0x00);
    assert_int_equal(b[2], 0x01);
    assert_int_equal(aml_pkglength_encode(0x100000, b), 4); /* 0x100004 */
    assert_int_equal(b[0], 0xc4);
    assert_int_equal(b[1], 0x00);
    assert_int_equal(b[2], 0x00);
    assert_int_equal(b[3], 0x01);
    assert_int_equal(aml_pkglength_size(0x10000000), 0);
}

static void test_aml_names(void **state)
{
    (void)state;
    struct aml a;
    aml_init(&a);
    aml_name_string(&a, "_SB");
    expect_aml(&a, '_', 'S', 'B', '_');
    aml_free(&a);

    aml_init(&a);
    aml_name_string(&a, "\\_SB.PCI0");
    expect_aml(&a, '\\', 0x2e, '_', 'S', 'B', '_', 'P', 'C', 'I', '0');
    aml_free(&a);

    aml_init(&a);
    aml_name_string(&a, "\\_SB.PCI0.S08");
    expect_aml(&a, '\\', 0x2f, 3, '_', 'S', 'B', '_', 'P', 'C', 'I', '0', 'S', '0', '8', '_');
    aml_free(&a);

    aml_init(&a);
    aml_name_string(&a, "^^FOO");
    expect_aml(&a, '^', '^', 'F', 'O', 'O', '_');
    aml_free(&a);

    aml_init(&a);
    aml_name_string(&a, "\\");
    expect_aml(&a, '\\', 0x00);
    aml_free(&a);

    const char *bad[] = {"TOOLONG", "a", "1ABC", "A..B", "A.", "", "A-B"};
    for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
        aml_init(&a);
        aml_name_string(&a, bad[i]);
        if (bad[i][0] == '\0') /* empty relative name is NullName, allowed */
            assert_false(a.error);
        else
            assert_true(a.error);
        aml_free(&a);
    }
}

static void test_aml_objects(void **state)
{
    (void)state;
    struct aml a;

    aml_init(&a); /* Name(_HID, EisaId("PNP0A03")) */
    aml_name_eisaid(&a, "_HID", "PNP0A03");
    expect_aml(&a, 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03);
    aml_free(&a);

    aml_init(&a); /* Name(_UID, Zero) */
    aml_name_integer(&a, "_UID", 0);
    expect_aml(&a, 0x08, '_', 'U', 'I', 'D', 0x00);
    aml_free(&a);

    aml_init(&a); /* Name(_HID, "ACPI0007") */
    aml_name_string_value(&a, "_HID", "ACPI0007");
    expect_aml(&a, 0x08, '_', 'H', 'I', 'D', 0x0d, 'A', 'C', 'P', 'I', '0', '0', '0', '7', 0x00);
    aml_free(&a);

    aml_init(&a); /* Name(_S5, Package() {5, 0}) */
    aml_name(&a, "_S5");
    size_t p = aml_package_begin(&a, 2);
    aml_integer(&a, 5);
    aml_integer(&a, 0);
    aml_end(&a, p);
    expect_aml(&a, 0x08, '_', 'S', '5', '_', 0x12, 0x05, 0x02, 0x0a, 0x05, 0x00);
    aml_free(&a);

    aml_init(&a); /* Device(COM1) { Name(_UID, One) } */
    size_t d = aml_device_begin(&a, "COM1");
    aml_name_integer(&a, "_UID", 1);
    aml_end(&a, d);
    expect_aml(&a, 0x5b, 0x82, 0x0b, 'C', 'O', 'M', '1', 0x08, '_', 'U', 'I', 'D', 0x01);
    aml_free(&a);

    aml_init(&a); /* Scope(\_SB) {} */
    aml_end(&a, aml_scope_begin(&a, "\\_SB"));
    expect_aml(&a, 0x10, 0x06, '\\', '_', 'S', 'B', '_');
    aml_free(&a);

    aml_init(&a); /* Method(_STA, 0, NotSerialized) { Return (0x0F) } */
    size_t m = aml_method_begin(&a, "_STA", 0, false);
    aml_return(&a);
    aml_integer(&a, 0x0f);
    aml_end(&a, m);
    expect_aml(&a, 0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xa4, 0x0a, 0x0f);
    aml_free(&a);

    aml_init(&a); /* Method(FOO, 2, Serialized) {} */
    aml_end(&a, aml_method_begin(&a, "FOO", 2, true));
    expect_aml(&a, 0x14, 0x06, 'F', 'O', 'O', '_', 0x0a);
    aml_free(&a);

    aml_init(&a); /* Buffer() {1, 2, 3} */
    size_t b = aml_buffer_begin(&a);
    aml_bytes(&a, (const uint8_t[]){1, 2, 3}, 3);
    aml_buffer_end(&a, b);
    expect_aml(&a, 0x11, 0x06, 0x0a, 0x03, 0x01, 0x02, 0x03);
    aml_free(&a);

    aml_init(&a);
    aml_eisaid(&a, "pnp0a03"); /* lower case is not an EISA ID */
    assert_true(a.error);
    aml_free(&a);
}

static void test_aml_resources(void **state)
{
    (void)state;
    struct aml a;
    aml_init(&a); /* ResourceTemplate() { IO(Decode16, 0x3F8, 0x3F8, 1, 8) IRQNoFlags() {4} } */
    size_t rt = aml_restemplate_begin(&a);
    aml_res_io(&a, 0x3f8, 0x3f8, 1, 8);
    aml_res_irq(&a, 1u << 4);
    aml_restemplate_end(&a, rt);
    expect_aml(&a, 0x11, 0x10, 0x0a, 0x0d, 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22,
               0x10, 0x00, 0x79, 0x0e);
    aml_free(&a);

    aml_init(&a); /* WordBusNumber 0-255 */
    aml_res_word_bus(&a, 0, 255);
    expect_aml(&a, 0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0, 0, 0x00, 0x00, 0xff, 0x00, 0, 0, 0x00, 0x01);
    aml_free(&a);

    aml_init(&a); /* DWordMemory non-cacheable 0xC0000000-0xDFFFFFFF */
    aml_res_dword_mem(&a, 0xc0000000, 0xdfffffff, false);
    expect_aml(&a, 0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0xc0, 0xff, 0xff,
               0xff, 0xdf, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x20);
    aml_free(&a);

    aml_init(&a); /* Memory32Fixed(ReadOnly, 0xE0000000, 0x10000000) */
    aml_res_mem32_fixed(&a, 0xe0000000, 0x10000000, false);
    expect_aml(&a, 0x86, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x00, 0x00, 0x10);
    aml_free(&a);

    aml_init(&a); /* QWordMemory */
    aml_res_qword_mem(&a, 0x100000000ULL, 0x1ffffffffULL, true);
    assert_int_equal(a.len, 46);
    assert_int_equal(a.data[0], 0x8a);
    assert_int_equal(ld16(a.data + 1), 0x2b);
    assert_int_equal(ld64(a.data + 38), 0x100000000ULL);
    aml_free(&a);
}

static void test_aml_large_package(void **state)
{
    (void)state;
    /* A body that needs a 2-byte PkgLength: it is inserted in front and the
     * length counts itself. */
    struct aml a;
    aml_init(&a);
    size_t p = aml_package_begin(&a, 100);
    for (unsigned i = 0; i < 100; i++)
        aml_integer(&a, 0x20 + i);
    aml_end(&a, p);
    assert_false(a.error);
    assert_int_equal(a.len, 1 + 2 + 1 + 200);
    assert_int_equal(a.data[0], 0x12);
    unsigned pkglen = (a.data[1] & 0x0f) | (unsigned)a.data[2] << 4;
    assert_int_equal(a.data[1] >> 6, 1);
    assert_int_equal(pkglen, a.len - 1);
    assert_int_equal(a.data[3], 100);
    aml_free(&a);
}

/* ---- tables ---- */

struct tables {
    uint8_t buf[ACPI_AREA_SIZE];
    int len;
};

static const uint8_t *table_at(const struct tables *t, uint64_t gpa)
{
    assert_true(gpa >= LAYOUT_ACPI_BASE && gpa < LAYOUT_ACPI_BASE + (uint64_t)t->len);
    const uint8_t *p = t->buf + (gpa - LAYOUT_ACPI_BASE);
    uint32_t len = ld32(p + 4);
    assert_true(gpa + len <= LAYOUT_ACPI_BASE + (uint64_t)t->len);
    return p;
}

static const uint8_t *find_table(const struct tables *t, const char *sig)
{
    const uint8_t *rsdp = t->buf;
    const uint8_t *xsdt = table_at(t, ld64(rsdp + 24));
    unsigned n = (ld32(xsdt + 4) - 36) / 8;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *p = table_at(t, ld64(xsdt + 36 + 8 * i));
        if (memcmp(p, sig, 4) == 0)
            return p;
    }
    if (strcmp(sig, "DSDT") == 0)
        return table_at(t, ld64(find_table(t, "FACP") + 140));
    return NULL;
}

static void build(struct tables *t, unsigned cpus)
{
    struct acpi_config ac = {.nr_cpus = cpus, .ram_size = 256 << 20, .pci_slot_mask = 0xe};
    t->len = acpi_build(&ac, LAYOUT_ACPI_BASE, t->buf, sizeof(t->buf));
    assert_true(t->len > 0 && t->len <= ACPI_AREA_SIZE);
}

static void check_tables(unsigned cpus)
{
    static struct tables t;
    build(&t, cpus);
    const uint8_t *rsdp = t.buf;
    assert_memory_equal(rsdp, "RSD PTR ", 8);
    assert_int_equal(rsdp[15], 2);
    assert_int_equal(acpi_checksum(rsdp, 20), 0);
    assert_int_equal(ld32(rsdp + 20), 36);
    assert_int_equal(acpi_checksum(rsdp, 36), 0);

    const uint8_t *rsdt = table_at(&t, ld32(rsdp + 16)), *xsdt = table_at(&t, ld64(rsdp + 24));
    assert_memory_equal(rsdt, "RSDT", 4);
    assert_memory_equal(xsdt, "XSDT", 4);
    assert_int_equal((ld32(rsdt + 4) - 36) / 4, (ld32(xsdt + 4) - 36) / 8);

    const char *sigs[] = {"RSDT", "XSDT", "FACP", "DSDT", "APIC", "MCFG"};
    for (unsigned i = 0; i < ARRAY_SIZE(sigs); i++) {
        const uint8_t *p = strcmp(sigs[i], "RSDT") == 0 ? rsdt
                           : strcmp(sigs[i], "XSDT") == 0 ? xsdt : find_table(&t, sigs[i]);
        assert_non_null(p);
        assert_int_equal(acpi_checksum(p, ld32(p + 4)), 0);
        assert_memory_equal(p + 10, "EMBER ", 6);
    }

    const uint8_t *fadt = find_table(&t, "FACP");
    assert_int_equal(ld32(fadt + 4), 276);
    assert_int_equal(fadt[8], 6);
    assert_int_equal(ld16(fadt + 46), LAYOUT_ACPI_SCI_GSI);
    assert_int_equal(ld32(fadt + 48), 0); /* no SMI_CMD: ACPI always enabled */
    assert_int_equal(ld32(fadt + 56), LAYOUT_ACPI_PM1_EVT);
    assert_int_equal(ld32(fadt + 64), LAYOUT_ACPI_PM1_CNT);
    assert_int_equal(ld32(fadt + 76), LAYOUT_ACPI_PM_TMR);
    assert_int_equal(fadt[88], 4);
    assert_int_equal(fadt[89], 2);
    assert_int_equal(fadt[91], 4);
    assert_int_equal(fadt[108], 0x32);  /* RTC century register */
    assert_true(ld16(fadt + 109) & 2); /* 8042 */
    uint32_t flags = ld32(fadt + 112);
    assert_true(flags & (1u << 10));    /* RESET_REG_SUP */
    assert_false(flags & (1u << 20));   /* not HW_REDUCED */
    assert_int_equal(fadt[116], 1);     /* reset reg in I/O space */
    assert_int_equal(ld64(fadt + 120), LAYOUT_RESET_PORT);
    assert_int_equal(fadt[128], 0x06);
    assert_int_equal(ld64(fadt + 140), ld32(fadt + 40)); /* X_DSDT = DSDT */
    assert_int_equal(ld64(fadt + 148 + 4), LAYOUT_ACPI_PM1_EVT);
    assert_int_equal(ld64(fadt + 172 + 4), LAYOUT_ACPI_PM1_CNT);
    assert_int_equal(ld64(fadt + 208 + 4), LAYOUT_ACPI_PM_TMR);
    uint64_t facs = ld32(fadt + 36);
    assert_int_equal(ld64(fadt + 132), 0); /* only one FACS pointer */
    assert_true(IS_ALIGNED(facs, 64));
    assert_memory_equal(t.buf + (facs - LAYOUT_ACPI_BASE), "FACS", 4);
    assert_int_equal(ld32(t.buf + (facs - LAYOUT_ACPI_BASE) + 4), 64);

    const uint8_t *dsdt = find_table(&t, "DSDT");
    assert_int_equal(dsdt[8], 2);
    assert_true(ld32(dsdt + 4) > 36 + 100);

    const uint8_t *madt = find_table(&t, "APIC");
    assert_int_equal(ld32(madt + 36), LAYOUT_LAPIC_BASE);
    assert_int_equal(ld32(madt + 40) & 1, 1);
    unsigned lapics = 0, ioapics = 0, isos = 0, nmis = 0;
    bool irq0_to_gsi2 = false, sci_level = false;
    for (uint32_t off = 44; off < ld32(madt + 4);) {
        const uint8_t *e = madt + off;
        assert_true(e[1] >= 2 && off + e[1] <= ld32(madt + 4));
        switch (e[0]) {
        case 0:
            assert_int_equal(e[1], 8);
            assert_int_equal(e[3], lapics);
            assert_int_equal(ld32(e + 4) & 1, 1);
            lapics++;
            break;
        case 1:
            assert_int_equal(e[2], cpus);
            assert_int_equal(ld32(e + 4), LAYOUT_IOAPIC_BASE);
            assert_int_equal(ld32(e + 8), 0);
            ioapics++;
            break;
        case 2:
            isos++;
            if (e[3] == 0 && ld32(e + 4) == 2)
                irq0_to_gsi2 = true;
            if (e[3] == 9 && ld32(e + 4) == 9 && ld16(e + 8) == 0xd)
                sci_level = true;
            break;
        case 4:
            assert_int_equal(e[5], 1); /* LINT1 */
            nmis++;
            break;
        }
        off += e[1];
    }
    assert_int_equal(lapics, cpus);
    assert_int_equal(ioapics, 1);
    assert_int_equal(isos, 2);
    assert_int_equal(nmis, 1);
    assert_true(irq0_to_gsi2);
    assert_true(sci_level);

    const uint8_t *mcfg = find_table(&t, "MCFG");
    assert_int_equal(ld32(mcfg + 4), 60);
    assert_int_equal(ld64(mcfg + 44), LAYOUT_PCI_ECAM_BASE);
    assert_int_equal(ld16(mcfg + 52), 0);
    assert_int_equal(mcfg[54], 0);
    assert_int_equal(mcfg[55], 255);
}

static void test_acpi_tables_1cpu(void **state)
{
    (void)state;
    check_tables(1);
}

static void test_acpi_tables_4cpu(void **state)
{
    (void)state;
    check_tables(4);
}

static void test_acpi_tables_254cpu(void **state)
{
    (void)state;
    check_tables(254);
}

static void test_acpi_errors(void **state)
{
    (void)state;
    static uint8_t buf[ACPI_AREA_SIZE];
    struct acpi_config ac = {.nr_cpus = 0};
    assert_int_equal(acpi_build(&ac, LAYOUT_ACPI_BASE, buf, sizeof(buf)), -EINVAL);
    ac.nr_cpus = 255;
    assert_int_equal(acpi_build(&ac, LAYOUT_ACPI_BASE, buf, sizeof(buf)), -EINVAL);
    ac.nr_cpus = 2;
    assert_int_equal(acpi_build(&ac, LAYOUT_ACPI_BASE, buf, 200), -ENOSPC);
}

/* Run a shell command; returns its exit status or -1. */
static int run(const char *cmd)
{
    int st = system(cmd);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

static void test_dsdt_iasl(void **state)
{
    (void)state;
    if (run("command -v iasl >/dev/null 2>&1") != 0) {
        print_message("iasl (acpica-tools) not installed: skipping the DSDT disassembly check\n");
        skip();
    }
    static struct tables t;
    build(&t, 2);
    const uint8_t *dsdt = find_table(&t, "DSDT");
    char dir[] = "/tmp/ember-test-acpi-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], cmd[512];
    snprintf(path, sizeof(path), "%s/dsdt.dat", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(dsdt, 1, ld32(dsdt + 4), f), ld32(dsdt + 4));
    fclose(f);
    snprintf(cmd, sizeof(cmd), "cd %s && iasl -d dsdt.dat >iasl.log 2>&1", dir);
    assert_int_equal(run(cmd), 0);

    /* The disassembly names every device and object we emitted. */
    const char *want[] = {"PNP0A08", "PNP0A03", "_PRT", "_S5_", "PNP0501", "PNP0303", "PNP0F13",
                          "PNP0B00", "PNP0C02", "ACPI0007", "QEMU0001", "WordBusNumber", "DWordMemory",
                          "0xDFFFFFFF", "IRQNoFlags", "Memory32Fixed", "0xE0000000"};
    for (unsigned i = 0; i < ARRAY_SIZE(want); i++) {
        snprintf(cmd, sizeof(cmd), "grep -q '%s' %s/dsdt.dsl", want[i], dir);
        if (run(cmd) != 0)
            fail_msg("iasl disassembly of the DSDT lacks %s (see %s/dsdt.dsl)", want[i], dir);
    }
    /* Recompiling the disassembly must succeed without errors. */
    snprintf(cmd, sizeof(cmd), "cd %s && iasl -p re dsdt.dsl >iasl2.log 2>&1", dir);
    if (run(cmd) != 0)
        fail_msg("iasl could not recompile the DSDT (see %s/iasl2.log)", dir);
    /* ACPICA's interpreter (what Linux runs) loads the table and evaluates
     * the objects the OS will ask for. */
    if (run("command -v acpiexec >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof(cmd),
                 "cd %s && acpiexec -b 'evaluate \\_S5; evaluate \\_SB.PCI0._CRS; "
                 "evaluate \\_SB.PCI0._PRT; evaluate \\_SB.RTC._CRS' dsdt.dat >exec.log 2>&1 </dev/null", dir);
        assert_int_equal(run(cmd), 0);
        const char *exec_want[] = {"Evaluation of \\_S5 returned", "[Integer] = 0000000000000005",
                                   "Evaluation of \\_SB.PCI0._CRS returned",
                                   "Contains 128 Elements", "Evaluation of \\_SB.RTC._CRS returned"};
        for (unsigned i = 0; i < ARRAY_SIZE(exec_want); i++) {
            snprintf(cmd, sizeof(cmd), "grep -qF '%s' %s/exec.log", exec_want[i], dir);
            if (run(cmd) != 0)
                fail_msg("acpiexec output lacks '%s' (see %s/exec.log)", exec_want[i], dir);
        }
        snprintf(cmd, sizeof(cmd), "grep -q 'AE_[A-Z]' %s/exec.log", dir);
        if (run(cmd) == 0)
            fail_msg("acpiexec reported an ACPICA exception (see %s/exec.log)", dir);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    run(cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aml_integers),
        cmocka_unit_test(test_aml_pkglength),
        cmocka_unit_test(test_aml_names),
        cmocka_unit_test(test_aml_objects),
        cmocka_unit_test(test_aml_resources),
        cmocka_unit_test(test_aml_large_package),
        cmocka_unit_test(test_acpi_tables_1cpu),
        cmocka_unit_test(test_acpi_tables_4cpu),
        cmocka_unit_test(test_acpi_tables_254cpu),
        cmocka_unit_test(test_acpi_errors),
        cmocka_unit_test(test_dsdt_iasl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
