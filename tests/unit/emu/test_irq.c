/* Unit tests for the "tcg" accelerator's platform glue (accel/emu/emu.c)
 * with a scripted stand-in for the CPU core: device registration on the
 * buses, GSI routing to the PIC and IOAPIC (ISA IRQ0 -> pin 2), MSI
 * delivery to the right vCPU, the LAPIC page and MSRs as the CPU sees them,
 * and the vCPU thread loop: HLT sleeping until an interrupt (including one
 * from the LAPIC timer via the timer thread), INIT/SIPI start-up of an AP,
 * and stop/kick. No timed assertions: threads are joined, never timed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "accel/accel.h"
#include "accel/emu/cpu.h"
#include "core/guest_mem.h"
#include "hw/bus.h"

/* ---- the stand-in CPU ------------------------------------------------------ */

#define NR_VCPUS 2

enum script {
    SCRIPT_HALT_THEN_ACK, /* HLT once, then acknowledge one interrupt and shut down */
    SCRIPT_SPIN,          /* run until *stop */
    SCRIPT_SHUTDOWN,      /* shut down at once (an AP after its SIPI) */
};

struct emu_cpu;
/* The stand-in CPUs by APIC id, as emu_cpu_new() made them. */
static struct emu_cpu *created[NR_VCPUS];

struct emu_cpu {
    const struct emu_platform_ops *ops;
    unsigned apic_id;
    enum script script;
    unsigned runs, resets;
    int acked;
    int sipi_vector;
    atomic_bool irq_check;
};

struct emu_cpu *emu_cpu_new(struct guest_mem *mem, const struct emu_platform_ops *ops,
                            unsigned apic_id, unsigned nr_cpus)
{
    struct emu_cpu *c = calloc(1, sizeof(*c));
    c->ops = ops;
    c->apic_id = apic_id;
    c->acked = -2;
    c->sipi_vector = -1;
    if (apic_id < NR_VCPUS)
        created[apic_id] = c;
    return c;
}

void emu_cpu_free(struct emu_cpu *cpu) { free(cpu); }
void emu_cpu_reset(struct emu_cpu *cpu) { cpu->resets++; }
void emu_cpu_set_state(struct emu_cpu *cpu, const struct cpu_state *s) {}
void emu_cpu_get_state(struct emu_cpu *cpu, struct cpu_state *s) { memset(s, 0, sizeof(*s)); }
void emu_cpu_sipi(struct emu_cpu *cpu, uint8_t vector) { cpu->sipi_vector = vector; }
void emu_cpu_raise_irq_check(struct emu_cpu *cpu) { atomic_store(&cpu->irq_check, true); }
bool emu_cpu_interrupts_enabled(const struct emu_cpu *cpu) { return true; }
void emu_cpu_dump(struct emu_cpu *cpu, FILE *out) { fprintf(out, "stub cpu %u\n", cpu->apic_id); }
uint64_t emu_cpu_tsc(struct emu_cpu *cpu) { return 0; }
void emu_invalidate_code(struct guest_mem *mem, uint64_t gpa, uint64_t len) {}

enum emu_exit emu_cpu_run(struct emu_cpu *cpu, atomic_bool *stop)
{
    cpu->runs++;
    switch (cpu->script) {
    case SCRIPT_HALT_THEN_ACK:
        if (cpu->runs == 1)
            return EMU_EXIT_HLT;
        if (!atomic_exchange(&cpu->irq_check, false))
            return EMU_EXIT_HLT; /* woken without a reason: halt again */
        cpu->acked = cpu->ops->irq_ack(cpu->ops->opaque, cpu);
        return cpu->acked >= 0 ? EMU_EXIT_SHUTDOWN : EMU_EXIT_HLT;
    case SCRIPT_SPIN:
        while (!atomic_load(stop))
            sched_yield();
        return EMU_EXIT_STOP;
    default:
        return EMU_EXIT_SHUTDOWN;
    }
}

/* ---- fixture ----------------------------------------------------------------- */

static struct {
    uint8_t ram[4096];
    struct guest_mem mem;
    struct bus *pio, *mmio;
    atomic_bool stop;
    struct accel *accel;
    struct vcpu *vcpus[NR_VCPUS];
    const struct irq_sink *sink;
} fx;


static int setup(void **state)
{
    memset(&fx, 0, sizeof(fx));
    assert_int_equal(guest_mem_add(&fx.mem, 0, sizeof(fx.ram), fx.ram), 0);
    fx.pio = bus_new("pio");
    fx.mmio = bus_new("mmio");
    struct accel_config cfg = {.nr_vcpus = NR_VCPUS, .ram_size = sizeof(fx.ram), .mem = &fx.mem,
                               .pio = fx.pio, .mmio = fx.mmio, .stop = &fx.stop};
    const struct accel_ops *ops = &accel_emu_ops;
    const char *why = NULL;
    assert_true(ops->available(&why));
    assert_string_equal(ops->name, "tcg");
    assert_int_equal(ops->create(&cfg, &fx.accel), 0);
    assert_int_equal(ops->map_ram(fx.accel, 0, sizeof(fx.ram), fx.ram), 0);
    for (unsigned i = 0; i < NR_VCPUS; i++)
        assert_int_equal(ops->vcpu_create(fx.accel, i, &fx.vcpus[i]), 0);
    fx.sink = ops->irq_sink(fx.accel);
    return 0;
}

static int teardown(void **state)
{
    for (unsigned i = 0; i < NR_VCPUS; i++)
        accel_emu_ops.vcpu_destroy(fx.vcpus[i]);
    accel_emu_ops.destroy(fx.accel);
    bus_free(fx.pio);
    bus_free(fx.mmio);
    return 0;
}

/* The CPU-side callbacks of a vCPU, reached through its stand-in CPU. */
static struct emu_cpu *cpu_of(unsigned index);

static uint32_t lapic_read(unsigned index, unsigned reg)
{
    struct emu_cpu *c = cpu_of(index);
    return (uint32_t)c->ops->mmio_read(c->ops->opaque, c, 0xfee00000 + reg, 4);
}

static void lapic_write(unsigned index, unsigned reg, uint32_t val)
{
    struct emu_cpu *c = cpu_of(index);
    c->ops->mmio_write(c->ops->opaque, c, 0xfee00000 + reg, val, 4);
}

static int ack(unsigned index)
{
    struct emu_cpu *c = cpu_of(index);
    return c->ops->irq_ack(c->ops->opaque, c);
}

static void pio_write8(uint16_t port, uint8_t val) { bus_write(fx.pio, port, &val, 1); }
static uint8_t pio_read8(uint16_t port)
{
    uint8_t v = 0;
    bus_read(fx.pio, port, &v, 1);
    return v;
}

static void ioapic_program(unsigned pin, uint64_t entry)
{
    uint32_t sel = 0x10 + 2 * pin + 1, hi = (uint32_t)(entry >> 32), lo = (uint32_t)entry;
    bus_write(fx.mmio, 0xfec00000, &sel, 4);
    bus_write(fx.mmio, 0xfec00010, &hi, 4);
    sel--;
    bus_write(fx.mmio, 0xfec00000, &sel, 4);
    bus_write(fx.mmio, 0xfec00010, &lo, 4);
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_devices_on_buses(void **state)
{
    /* IOAPIC version through the MMIO bus. */
    uint32_t sel = 1, ver = 0;
    bus_write(fx.mmio, 0xfec00000, &sel, 4);
    assert_true(bus_read(fx.mmio, 0xfec00010, &ver, 4));
    assert_int_equal(ver, 0x00170011);
    /* PIC, ELCR, PIT and port 0x61 on the port bus. */
    pio_write8(0x21, 0x5a);
    assert_int_equal(pio_read8(0x21), 0x5a);
    pio_write8(0x4d0, 0x20);
    assert_int_equal(pio_read8(0x4d0), 0x20);
    pio_write8(0x61, 0x01);
    assert_int_equal(pio_read8(0x61) & 0x01, 0x01);
    pio_write8(0x43, 0xb0);
    pio_write8(0x42, 0x34);
    pio_write8(0x42, 0x12);
    /* The LAPIC page answers through the CPU's MMIO path only. */
    assert_int_equal(lapic_read(1, 0x20), 1u << 24);
    assert_int_equal(lapic_read(0, 0x30), 0x50014);
    uint32_t v = 0;
    assert_false(bus_read(fx.mmio, 0xfee00030, &v, 4));
    /* MSRs the platform owns. */
    struct emu_cpu *c = cpu_of(0);
    uint64_t base = 0;
    assert_true(c->ops->rdmsr(c->ops->opaque, c, 0x1b, &base));
    assert_int_equal(base, 0xfee00900);
    assert_false(c->ops->rdmsr(c->ops->opaque, c, 0x802, &base)); /* no x2APIC */
    assert_false(c->ops->wrmsr(c->ops->opaque, c, 0x1b, 0xfee00d00));
    assert_true(c->ops->wrmsr(c->ops->opaque, c, 0x6e0, 0));
    /* CR8 is the TPR. */
    c->ops->set_cr8(c->ops->opaque, c, 3);
    assert_int_equal(lapic_read(0, 0x80), 0x30);
    assert_int_equal(c->ops->get_cr8(c->ops->opaque, c), 3);
}

static void test_gsi_routing(void **state)
{
    lapic_write(0, 0xf0, 0x1ff);
    lapic_write(1, 0xf0, 0x1ff);
    lapic_write(0, 0x350, 0x10700); /* leave virtual-wire mode */
    /* ISA IRQ0 lands on IOAPIC pin 2 (override); pin 0 stays quiet. */
    ioapic_program(0, 0x30);
    ioapic_program(2, 0x32);
    irq_pulse(fx.sink, 0);
    assert_int_equal(ack(0), 0x32);
    assert_int_equal(ack(0), -1);
    lapic_write(0, 0xb0, 0);
    /* GSI 4 to APIC id 1. */
    ioapic_program(4, (1ull << 56) | 0x34);
    irq_pulse(fx.sink, 4);
    assert_int_equal(ack(0), -1);
    assert_int_equal(ack(1), 0x34);
    lapic_write(1, 0xb0, 0);
    /* A PCI INTx (GSI 19), level-triggered: the EOI re-delivers while asserted. */
    ioapic_program(19, (1ull << 15) | 0x53);
    irq_set_level(fx.sink, 19, true);
    assert_int_equal(ack(0), 0x53);
    lapic_write(0, 0xb0, 0);
    assert_int_equal(ack(0), 0x53);
    irq_set_level(fx.sink, 19, false);
    lapic_write(0, 0xb0, 0);
    assert_int_equal(ack(0), -1);
    /* Out-of-range GSIs are ignored. */
    irq_pulse(fx.sink, 24);
    irq_pulse(fx.sink, 1000);
}

static void test_pic_virtual_wire(void **state)
{
    /* Reset state: the BSP takes the 8259 through LINT0. */
    const uint8_t init[][2] = {{0x20, 0x11}, {0x21, 0x08}, {0x21, 0x04}, {0x21, 0x01},
                               {0xa0, 0x11}, {0xa1, 0x70}, {0xa1, 0x02}, {0xa1, 0x01},
                               {0x21, 0x00}, {0xa1, 0x00}};
    for (unsigned i = 0; i < sizeof(init) / sizeof(init[0]); i++)
        pio_write8(init[i][0], init[i][1]);
    irq_pulse(fx.sink, 1);
    assert_true(atomic_load(&cpu_of(0)->irq_check));
    assert_int_equal(ack(0), 0x09);
    assert_int_equal(ack(1), -1);
    pio_write8(0x20, 0x20);
    irq_pulse(fx.sink, 8); /* RTC through the cascade */
    assert_int_equal(ack(0), 0x70);
}

static void test_msi(void **state)
{
    lapic_write(0, 0xf0, 0x1ff);
    lapic_write(1, 0xf0, 0x1ff);
    lapic_write(0, 0x350, 0x10700);
    irq_send_msi(fx.sink, 0xfee01000, 0x4061);
    assert_int_equal(ack(0), -1);
    assert_int_equal(ack(1), 0x61);
    irq_send_msi(fx.sink, 0xfee00000, 0x4062);
    assert_int_equal(ack(0), 0x62);
    irq_send_msi(fx.sink, 0xdead0000, 0x4063); /* not the interrupt window */
    assert_int_equal(ack(0), -1);
    assert_int_equal(ack(1), -1);
}

struct run_result {
    struct vcpu *v;
    enum vcpu_exit exit;
};

static void *run_thread(void *arg)
{
    struct run_result *r = arg;
    r->exit = accel_emu_ops.vcpu_run(r->v);
    return NULL;
}

static void test_halt_wakes_on_msi(void **state)
{
    lapic_write(0, 0xf0, 0x1ff);
    lapic_write(0, 0x350, 0x10700);
    struct run_result r = {.v = fx.vcpus[0]};
    pthread_t t;
    pthread_create(&t, NULL, run_thread, &r);
    irq_send_msi(fx.sink, 0xfee00000, 0x4071);
    pthread_join(t, NULL);
    assert_int_equal(r.exit, VCPU_EXIT_SHUTDOWN);
    assert_int_equal(cpu_of(0)->acked, 0x71);
}

static void test_halt_wakes_on_lapic_timer(void **state)
{
    lapic_write(0, 0xf0, 0x1ff);
    lapic_write(0, 0x350, 0x10700);
    lapic_write(0, 0x3e0, 0xb);
    lapic_write(0, 0x320, 0x44);
    struct run_result r = {.v = fx.vcpus[0]};
    pthread_t t;
    pthread_create(&t, NULL, run_thread, &r);
    lapic_write(0, 0x380, 200000); /* 200 us one-shot: the timer thread fires it */
    pthread_join(t, NULL);
    assert_int_equal(r.exit, VCPU_EXIT_SHUTDOWN);
    assert_int_equal(cpu_of(0)->acked, 0x44);
}

static void test_ap_startup(void **state)
{
    cpu_of(1)->script = SCRIPT_SHUTDOWN;
    struct run_result r = {.v = fx.vcpus[1]};
    pthread_t t;
    pthread_create(&t, NULL, run_thread, &r);
    /* The BSP's INIT-SIPI-SIPI. */
    lapic_write(0, 0x310, 1u << 24);
    lapic_write(0, 0x300, 0xc500);
    lapic_write(0, 0x300, 0x8500);
    lapic_write(0, 0x300, 0x4610);
    lapic_write(0, 0x300, 0x4610);
    pthread_join(t, NULL);
    assert_int_equal(r.exit, VCPU_EXIT_SHUTDOWN);
    assert_int_equal(cpu_of(1)->sipi_vector, 0x10);
    assert_int_equal(cpu_of(1)->resets, 1);
}

static void test_stop_and_kick(void **state)
{
    cpu_of(0)->script = SCRIPT_SPIN;
    struct run_result r = {.v = fx.vcpus[0]};
    pthread_t t;
    pthread_create(&t, NULL, run_thread, &r);
    atomic_store(&fx.stop, true);
    accel_emu_ops.vcpu_kick(fx.vcpus[0]);
    pthread_join(t, NULL);
    assert_int_equal(r.exit, VCPU_EXIT_STOPPED);
    /* An AP waiting for SIPI stops too. */
    r.v = fx.vcpus[1];
    pthread_create(&t, NULL, run_thread, &r);
    accel_emu_ops.vcpu_kick(fx.vcpus[1]);
    pthread_join(t, NULL);
    assert_int_equal(r.exit, VCPU_EXIT_STOPPED);
}

static void test_bad_config(void **state)
{
    struct accel *a = NULL;
    struct accel_config cfg = {.nr_vcpus = 0, .mem = &fx.mem, .pio = fx.pio, .mmio = fx.mmio};
    assert_int_equal(accel_emu_ops.create(&cfg, &a), -EINVAL);
    cfg.nr_vcpus = 1000;
    assert_int_equal(accel_emu_ops.create(&cfg, &a), -EINVAL);
    /* The ports are taken by the accelerator made in setup. */
    cfg.nr_vcpus = 1;
    assert_true(accel_emu_ops.create(&cfg, &a) < 0);
    struct vcpu *v;
    assert_int_equal(accel_emu_ops.vcpu_create(fx.accel, 0, &v), -EINVAL);
    assert_int_equal(accel_emu_ops.vcpu_create(fx.accel, NR_VCPUS, &v), -EINVAL);
}

static struct emu_cpu *cpu_of(unsigned index) { return created[index]; }

static void test_dump(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    accel_emu_ops.vcpu_dump(fx.vcpus[1], f);
    fclose(f);
    assert_non_null(strstr(buf, "stub cpu 1\n"));
    assert_non_null(strstr(buf, "lapic 1: id=01"));
    assert_non_null(strstr(buf, "wait-sipi"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_devices_on_buses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gsi_routing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pic_virtual_wire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msi, setup, teardown),
        cmocka_unit_test_setup_teardown(test_halt_wakes_on_msi, setup, teardown),
        cmocka_unit_test_setup_teardown(test_halt_wakes_on_lapic_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ap_startup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_and_kick, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dump, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
