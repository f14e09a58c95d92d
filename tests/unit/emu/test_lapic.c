/* Unit tests for the software CPU's local APIC: reset state, TPR/PPR
 * priority, ISR stacking and EOI, the timer in its three modes (driven by a
 * fake clock), INIT/SIPI through the ICR, logical destinations, virtual wire
 * and the base MSR. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "accel/emu/lapic.h"

enum {
    ID = 0x20, VER = 0x30, TPR = 0x80, PPR = 0xa0, EOI = 0xb0, LDR = 0xd0, DFR = 0xe0,
    SVR = 0xf0, ISR0 = 0x100, TMR0 = 0x180, IRR0 = 0x200, ESR = 0x280, ICR_LO = 0x300,
    ICR_HI = 0x310, LVTT = 0x320, LINT0 = 0x350, LINT1 = 0x360, TMICT = 0x380, TMCCT = 0x390,
    TDCR = 0x3e0,
};

static uint64_t fake_now;
static uint64_t fake_clock(void) { return fake_now; }

struct fixture {
    struct apic_bus bus;
    struct lapic *cpus[4];
    unsigned kicks[4], forced[4];
    int eoi_vector;
    unsigned eois;
    bool pic_out;
    int pic_vector;
    unsigned timer_changes;
};

static struct fixture fx;

static void fx_kick(void *opaque, unsigned index, bool force_exit)
{
    fx.kicks[index]++;
    fx.forced[index] += force_exit;
}
static void fx_eoi(void *opaque, uint8_t vector) { fx.eoi_vector = vector; fx.eois++; }
static bool fx_pic_output(void *opaque) { return fx.pic_out; }
static int fx_pic_intack(void *opaque) { fx.pic_out = false; return fx.pic_vector; }
static uint64_t fx_tsc(void *opaque, unsigned index) { return fake_now + 7; }
static void fx_timer_changed(void *opaque) { fx.timer_changes++; }

static int setup(void **state)
{
    memset(&fx, 0, sizeof(fx));
    fake_now = 1000000;
    fx.bus = (struct apic_bus){.cpus = fx.cpus, .nr_cpus = 4, .now_ns = fake_clock,
                               .kick = fx_kick, .eoi_level = fx_eoi,
                               .pic_output = fx_pic_output, .pic_intack = fx_pic_intack,
                               .read_tsc = fx_tsc, .timer_changed = fx_timer_changed};
    for (unsigned i = 0; i < 4; i++)
        fx.cpus[i] = lapic_new(&fx.bus, i);
    *state = &fx;
    return 0;
}

static int teardown(void **state)
{
    for (unsigned i = 0; i < 4; i++)
        lapic_free(fx.cpus[i]);
    return 0;
}

static struct apic_irq fixed(uint8_t vector, bool level)
{
    return (struct apic_irq){.vector = vector, .delivery = APIC_DM_FIXED, .level = level,
                             .assert = true};
}

static void enable(struct lapic *l) { lapic_write_reg(l, SVR, 0x1ff); }

static void test_reset_state(void **state)
{
    struct lapic *bsp = fx.cpus[0], *ap = fx.cpus[2];
    assert_int_equal(lapic_read_reg(ap, ID), 2u << 24);
    assert_int_equal(lapic_read_reg(bsp, VER), 0x50014);
    assert_int_equal(lapic_read_reg(bsp, SVR), 0xff);
    assert_int_equal(lapic_read_reg(bsp, DFR), 0xffffffff);
    assert_int_equal(lapic_read_reg(bsp, LVTT), 0x10000);
    /* Virtual wire on the BSP only. */
    assert_int_equal(lapic_read_reg(bsp, LINT0), 0x700);
    assert_int_equal(lapic_read_reg(ap, LINT0), 0x10000);
    assert_int_equal(lapic_get_base_msr(bsp), 0xfee00900);
    assert_int_equal(lapic_get_base_msr(ap), 0xfee00800);
    assert_int_equal(lapic_mp_state(bsp), LAPIC_MP_RUNNING);
    assert_int_equal(lapic_mp_state(ap), LAPIC_MP_WAIT_SIPI);
    assert_false(lapic_irq_pending(bsp));
    assert_int_equal(lapic_irq_ack(bsp), -1);
}

static void test_disabled_drops_fixed(void **state)
{
    struct lapic *l = fx.cpus[1];
    struct apic_irq irq = fixed(0x40, false);
    lapic_accept(l, &irq); /* SVR software-disabled after reset */
    assert_int_equal(lapic_read_reg(l, IRR0 + 0x20), 0);
    assert_int_equal(lapic_irq_ack(l), -1);
    enable(l);
    irq.vector = 5; /* vectors below 16 are illegal */
    lapic_accept(l, &irq);
    assert_int_equal(lapic_irq_ack(l), -1);
    lapic_write_reg(l, ESR, 0);
    assert_int_equal(lapic_read_reg(l, ESR), 1u << 6);
}

static void test_priority_and_isr_stacking(void **state)
{
    struct lapic *l = fx.cpus[1];
    enable(l);
    struct apic_irq irq = fixed(0x45, false);
    lapic_accept(l, &irq);
    assert_true(lapic_irq_pending(l));
    assert_int_equal(fx.kicks[1], 1);
    assert_int_equal(lapic_read_reg(l, IRR0 + 0x20), 1u << 5);
    assert_int_equal(lapic_irq_ack(l), 0x45);
    assert_int_equal(lapic_read_reg(l, ISR0 + 0x20), 1u << 5);
    assert_int_equal(lapic_read_reg(l, PPR), 0x40);

    /* Same priority class as the one in service: waits. */
    irq.vector = 0x43;
    lapic_accept(l, &irq);
    assert_false(lapic_has_deliverable(l));
    assert_int_equal(lapic_irq_ack(l), -1);
    /* Higher class nests. */
    irq.vector = 0x55;
    lapic_accept(l, &irq);
    assert_int_equal(lapic_irq_ack(l), 0x55);
    assert_int_equal(lapic_read_reg(l, PPR), 0x50);
    /* EOI retires the highest in-service vector first. */
    lapic_write_reg(l, EOI, 0);
    assert_int_equal(lapic_read_reg(l, ISR0 + 0x20), 1u << 5);
    assert_int_equal(lapic_read_reg(l, PPR), 0x40);
    assert_int_equal(lapic_irq_ack(l), -1);
    lapic_write_reg(l, EOI, 0);
    assert_int_equal(lapic_read_reg(l, PPR), 0);
    assert_int_equal(lapic_irq_ack(l), 0x43);
    lapic_write_reg(l, EOI, 0);
    assert_int_equal(fx.eois, 0); /* edge-triggered: no IOAPIC EOI */

    /* TPR masks a class and below. */
    lapic_write_reg(l, TPR, 0x50);
    assert_int_equal(lapic_read_reg(l, PPR), 0x50);
    irq.vector = 0x52;
    lapic_accept(l, &irq);
    assert_int_equal(lapic_irq_ack(l), -1);
    unsigned kicks = fx.kicks[1];
    lapic_set_cr8(l, 4); /* lowering TPR makes 0x52 deliverable: kick */
    assert_int_equal(lapic_read_reg(l, TPR), 0x40);
    assert_int_equal(lapic_get_cr8(l), 4);
    assert_true(fx.kicks[1] > kicks);
    assert_int_equal(lapic_irq_ack(l), 0x52);
}

static void test_level_eoi_broadcast(void **state)
{
    struct lapic *l = fx.cpus[0];
    enable(l);
    struct apic_irq irq = fixed(0x61, true);
    lapic_accept(l, &irq);
    assert_int_equal(lapic_read_reg(l, TMR0 + 0x30), 1u << 1);
    assert_int_equal(lapic_irq_ack(l), 0x61);
    lapic_write_reg(l, EOI, 0);
    assert_int_equal(fx.eois, 1);
    assert_int_equal(fx.eoi_vector, 0x61);
    /* EOI with nothing in service does nothing. */
    lapic_write_reg(l, EOI, 0);
    assert_int_equal(fx.eois, 1);
}

static void test_timer_oneshot(void **state)
{
    struct lapic *l = fx.cpus[0];
    enable(l);
    lapic_write_reg(l, TDCR, 0xb); /* divide by 1 */
    lapic_write_reg(l, LVTT, 0x30);
    lapic_write_reg(l, TMICT, 1000);
    assert_int_equal(fx.timer_changes, 1);
    assert_int_equal(lapic_timer_deadline(l), fake_now + 1000);
    fake_now += 400;
    assert_int_equal(lapic_read_reg(l, TMCCT), 600);
    fake_now += 599;
    assert_int_equal(lapic_timer_poll(l, fake_now), fake_now + 1);
    assert_int_equal(lapic_irq_ack(l), -1);
    fake_now += 1;
    assert_int_equal(lapic_timer_poll(l, fake_now), UINT64_MAX);
    assert_int_equal(lapic_read_reg(l, TMCCT), 0);
    assert_int_equal(lapic_irq_ack(l), 0x30);

    /* Divide by 16 scales the count. */
    lapic_write_reg(l, TDCR, 0x3);
    lapic_write_reg(l, TMICT, 100);
    assert_int_equal(lapic_timer_deadline(l), fake_now + 1600);
    fake_now += 160;
    assert_int_equal(lapic_read_reg(l, TMCCT), 90);
    /* Writing 0 stops it. */
    lapic_write_reg(l, TMICT, 0);
    assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
}

static void test_timer_periodic_and_masked(void **state)
{
    struct lapic *l = fx.cpus[0];
    enable(l);
    uint64_t start = fake_now;
    lapic_write_reg(l, TDCR, 0x3); /* divide by 16 */
    lapic_write_reg(l, LVTT, (1u << 17) | 0x31);
    lapic_write_reg(l, TMICT, 10000); /* 160 us */
    assert_int_equal(lapic_timer_deadline(l), start + 160000);
    fake_now = start + 40000;
    assert_int_equal(lapic_read_reg(l, TMCCT), 7500);
    fake_now = start + 160000;
    assert_int_equal(lapic_timer_poll(l, fake_now), start + 320000);
    assert_int_equal(lapic_irq_ack(l), 0x31);
    lapic_write_reg(l, EOI, 0);
    /* Late by several periods: one interrupt, next deadline on the grid. */
    fake_now = start + 1000000;
    assert_int_equal(lapic_timer_poll(l, fake_now), start + 1120000);
    assert_int_equal(lapic_irq_ack(l), 0x31);
    assert_int_equal(lapic_irq_ack(l), -1);
    lapic_write_reg(l, EOI, 0);
    assert_int_equal(lapic_read_reg(l, TMCCT), 7500);

    /* Masked: the timer keeps running but raises nothing. */
    lapic_write_reg(l, LVTT, (1u << 17) | (1u << 16) | 0x31);
    fake_now = start + 1120000;
    assert_int_equal(lapic_timer_poll(l, fake_now), start + 1280000);
    assert_int_equal(lapic_irq_ack(l), -1);

    /* Periodic -> one-shot keeps counting and then stops. */
    lapic_write_reg(l, LVTT, 0x31);
    assert_int_equal(lapic_timer_poll(l, start + 1280000), UINT64_MAX);
    assert_int_equal(lapic_irq_ack(l), 0x31);
    lapic_write_reg(l, EOI, 0);

    /* Too-fast periodic timers are stretched, also when a short one-shot
     * turns periodic. */
    lapic_write_reg(l, LVTT, 0x31);
    lapic_write_reg(l, TDCR, 0xb);
    lapic_write_reg(l, TMICT, 10);
    assert_int_equal(lapic_timer_deadline(l), fake_now + 10);
    lapic_write_reg(l, LVTT, (1u << 17) | 0x31);
    fake_now += 10;
    assert_int_equal(lapic_timer_poll(l, fake_now), fake_now - 10 + 100000);
    lapic_write_reg(l, LVTT, (1u << 17) | 0x31);
    lapic_write_reg(l, TDCR, 0xb);
    lapic_write_reg(l, TMICT, 10);
    assert_int_equal(lapic_timer_deadline(l), fake_now + 100000);
}

static void test_timer_tsc_deadline(void **state)
{
    struct lapic *l = fx.cpus[0];
    enable(l);
    lapic_set_tsc_deadline(l, 12345); /* one-shot mode: ignored */
    assert_int_equal(lapic_get_tsc_deadline(l), 0);
    lapic_write_reg(l, LVTT, (2u << 17) | 0x32);
    lapic_write_reg(l, TMICT, 500); /* ignored in TSC-deadline mode */
    assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
    uint64_t tsc = fake_now + 7; /* fx_tsc */
    lapic_set_tsc_deadline(l, tsc + 5000);
    assert_int_equal(lapic_get_tsc_deadline(l), tsc + 5000);
    assert_int_equal(lapic_timer_deadline(l), fake_now + 5000);
    fake_now += 5000;
    assert_int_equal(lapic_timer_poll(l, fake_now), UINT64_MAX);
    assert_int_equal(lapic_get_tsc_deadline(l), 0);
    assert_int_equal(lapic_irq_ack(l), 0x32);
    /* A deadline in the past fires at once. */
    lapic_set_tsc_deadline(l, 1);
    lapic_timer_poll(l, fake_now);
    lapic_write_reg(l, EOI, 0);
    assert_int_equal(lapic_irq_ack(l), 0x32);
    /* A deadline at the end of time does not wrap into the past. */
    lapic_write_reg(l, EOI, 0);
    lapic_set_tsc_deadline(l, UINT64_MAX);
    assert_true(lapic_timer_deadline(l) > fake_now + 1000000000);
    lapic_timer_poll(l, fake_now + 1000000000);
    assert_int_equal(lapic_irq_ack(l), -1);
    /* Switching mode disarms. */
    lapic_set_tsc_deadline(l, fake_now + 1000000);
    lapic_write_reg(l, LVTT, 0x32);
    assert_int_equal(lapic_timer_deadline(l), UINT64_MAX);
}

static void send_icr(struct lapic *from, uint8_t dest, uint32_t lo)
{
    lapic_write_reg(from, ICR_HI, (uint32_t)dest << 24);
    lapic_write_reg(from, ICR_LO, lo);
}

static void test_init_sipi(void **state)
{
    struct lapic *bsp = fx.cpus[0], *ap = fx.cpus[1];
    enable(bsp);
    uint8_t vec = 0;
    /* SIPI before INIT is honoured only in wait-for-SIPI state (APs start there). */
    assert_false(lapic_take_sipi(ap, &vec));
    send_icr(bsp, 1, 0x4500); /* INIT, assert, level=0 (edge) */
    assert_int_equal(fx.forced[1], 1);
    assert_true(lapic_mp_event_pending(ap));
    send_icr(bsp, 1, 0x8500); /* INIT level de-assert: no effect */
    assert_int_equal(fx.forced[1], 1);
    send_icr(bsp, 1, 0x4608); /* SIPI vector 8 races ahead of the AP */
    assert_true(lapic_take_init(ap));
    assert_false(lapic_take_init(ap));
    assert_int_equal(lapic_mp_state(ap), LAPIC_MP_WAIT_SIPI);
    assert_true(lapic_take_sipi(ap, &vec));
    assert_int_equal(vec, 8);
    assert_int_equal(lapic_mp_state(ap), LAPIC_MP_RUNNING);
    /* The second SIPI of the usual sequence is ignored by a running AP. */
    send_icr(bsp, 1, 0x4609);
    assert_false(lapic_take_sipi(ap, &vec));
    assert_false(lapic_mp_event_pending(ap));
    /* Delivery status is never left "pending". */
    assert_int_equal(lapic_read_reg(bsp, ICR_LO) & (1u << 12), 0);

    /* INIT to all but self resets the other APs. */
    send_icr(bsp, 0, 0xc4500);
    assert_false(lapic_take_init(bsp));
    assert_true(lapic_take_init(ap));
    assert_true(lapic_take_init(fx.cpus[2]));
    assert_true(lapic_take_init(fx.cpus[3]));
}

static void test_ipi_shorthands_and_nmi(void **state)
{
    for (unsigned i = 0; i < 4; i++)
        enable(fx.cpus[i]);
    send_icr(fx.cpus[2], 0, 0x40000 | 0x70); /* self */
    assert_int_equal(lapic_irq_ack(fx.cpus[2]), 0x70);
    assert_int_equal(lapic_irq_ack(fx.cpus[0]), -1);
    lapic_write_reg(fx.cpus[2], EOI, 0);
    send_icr(fx.cpus[2], 0, 0x80000 | 0x71); /* all including self */
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(lapic_irq_ack(fx.cpus[i]), 0x71);
        lapic_write_reg(fx.cpus[i], EOI, 0);
    }
    send_icr(fx.cpus[2], 0, 0xc0000 | 0x73); /* all excluding self */
    assert_int_equal(lapic_irq_ack(fx.cpus[2]), -1);
    for (unsigned i = 0; i < 4; i++)
        if (i != 2) {
            assert_int_equal(lapic_irq_ack(fx.cpus[i]), 0x73);
            lapic_write_reg(fx.cpus[i], EOI, 0);
        }
    send_icr(fx.cpus[0], 3, 0x400); /* NMI to APIC id 3 */
    assert_true(lapic_nmi_pending(fx.cpus[3]));
    assert_true(lapic_nmi_ack(fx.cpus[3]));
    assert_false(lapic_nmi_ack(fx.cpus[3]));
    assert_false(lapic_nmi_pending(fx.cpus[1]));
    send_icr(fx.cpus[0], 0xff, 0x72); /* physical broadcast */
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(lapic_irq_ack(fx.cpus[i]), 0x72);
}

static void test_logical_destinations(void **state)
{
    for (unsigned i = 0; i < 4; i++) {
        enable(fx.cpus[i]);
        lapic_write_reg(fx.cpus[i], LDR, (1u << i) << 24); /* flat: one bit each */
    }
    struct apic_irq irq = fixed(0x80, false);
    irq.logical = true;
    irq.dest = 0x0a; /* cpus 1 and 3 */
    assert_int_equal(apic_bus_deliver(&fx.bus, NULL, &irq), 2);
    assert_int_equal(lapic_irq_ack(fx.cpus[0]), -1);
    assert_int_equal(lapic_irq_ack(fx.cpus[1]), 0x80);
    assert_int_equal(lapic_irq_ack(fx.cpus[3]), 0x80);

    /* Lowest priority: one CPU, the lowest TPR. */
    lapic_write_reg(fx.cpus[1], TPR, 0x20);
    irq.vector = 0x90;
    irq.delivery = APIC_DM_LOWEST;
    assert_int_equal(apic_bus_deliver(&fx.bus, NULL, &irq), 1);
    assert_int_equal(lapic_irq_ack(fx.cpus[3]), 0x90);
    assert_int_equal(lapic_irq_ack(fx.cpus[1]), -1);

    /* Cluster model: cluster 1, members 0b0011 -> cpus with LDR 0x11/0x12. */
    for (unsigned i = 0; i < 4; i++)
        lapic_write_reg(fx.cpus[i], DFR, 0x0fffffff);
    assert_int_equal(lapic_read_reg(fx.cpus[0], DFR), 0x0fffffff);
    lapic_write_reg(fx.cpus[0], LDR, 0x11u << 24);
    lapic_write_reg(fx.cpus[1], LDR, 0x12u << 24);
    lapic_write_reg(fx.cpus[2], LDR, 0x21u << 24);
    lapic_write_reg(fx.cpus[3], LDR, 0x14u << 24);
    irq.delivery = APIC_DM_FIXED;
    irq.vector = 0xa0;
    irq.dest = 0x13;
    assert_int_equal(apic_bus_deliver(&fx.bus, NULL, &irq), 2);
    assert_int_equal(lapic_irq_ack(fx.cpus[0]), 0xa0);
    assert_int_equal(lapic_irq_ack(fx.cpus[2]), -1);
    assert_int_equal(lapic_irq_ack(fx.cpus[3]), -1);
}

static void test_virtual_wire(void **state)
{
    struct lapic *bsp = fx.cpus[0];
    fx.pic_out = true;
    fx.pic_vector = 0x20;
    lapic_pic_changed(bsp);
    assert_true(lapic_irq_pending(bsp));
    assert_int_equal(fx.kicks[0], 1);
    assert_int_equal(lapic_irq_ack(bsp), 0x20); /* through pic_intack */
    /* APs never take the PIC. */
    lapic_pic_changed(fx.cpus[1]);
    fx.pic_out = true;
    assert_int_equal(lapic_irq_ack(fx.cpus[1]), -1);
    /* Masking LINT0 stops the virtual wire. */
    enable(bsp);
    lapic_write_reg(bsp, LINT0, 0x10700);
    assert_int_equal(lapic_irq_ack(bsp), -1);
    /* An IOAPIC ExtINT message fetches the vector from the PIC too. */
    fx.pic_vector = 0x23;
    struct apic_irq irq = {.delivery = APIC_DM_EXTINT, .assert = true};
    lapic_accept(bsp, &irq);
    assert_int_equal(lapic_irq_ack(bsp), 0x23);
}

static void test_mmio_and_base_msr(void **state)
{
    struct lapic *l = fx.cpus[0];
    assert_true(lapic_mmio_hit(l, 0xfee00000));
    assert_true(lapic_mmio_hit(l, 0xfee00fff));
    assert_false(lapic_mmio_hit(l, 0xfee01000));
    assert_int_equal(lapic_mmio_read(l, 0x30, 4), 0x50014);
    assert_int_equal(lapic_mmio_read(l, 0x30, 2), 0x0014);
    assert_int_equal(lapic_mmio_read(l, 0x32, 1), 0x05);
    assert_int_equal(lapic_mmio_read(l, 0x34, 4), 0); /* beyond the dword */
    lapic_mmio_write(l, 0x80, 0x30, 4);
    assert_int_equal(lapic_read_reg(l, TPR), 0x30);
    lapic_mmio_write(l, 0x80, 0x40, 2); /* not a dword: ignored */
    lapic_mmio_write(l, 0x84, 0x40, 4);
    assert_int_equal(lapic_read_reg(l, TPR), 0x30);

    assert_false(lapic_set_base_msr(l, 0xfee00c00)); /* x2APIC not offered */
    assert_false(lapic_set_base_msr(l, 0xfee00801)); /* reserved bit */
    assert_true(lapic_set_base_msr(l, 0xfed00800)); /* relocate (BSP bit kept) */
    assert_int_equal(lapic_get_base_msr(l), 0xfed00900);
    assert_true(lapic_mmio_hit(l, 0xfed00020));
    assert_false(lapic_mmio_hit(l, 0xfee00020));
    assert_true(lapic_set_base_msr(l, 0xfee00000)); /* globally disabled */
    assert_false(lapic_mmio_hit(l, 0xfee00020));
    /* A disabled LAPIC receives nothing from the bus. */
    struct apic_irq irq = fixed(0x40, false);
    irq.dest = 0;
    assert_int_equal(apic_bus_deliver(&fx.bus, NULL, &irq), 0);
}

static void test_msi_decode(void **state)
{
    struct apic_irq irq;
    assert_true(apic_msi_decode(0xfee02000, 0x4041, &irq));
    assert_int_equal(irq.dest, 2);
    assert_false(irq.logical);
    assert_int_equal(irq.vector, 0x41);
    assert_int_equal(irq.delivery, APIC_DM_FIXED);
    assert_false(irq.level);
    assert_true(apic_msi_decode(0xfee0f00c, 0x0151, &irq)); /* logical, lowest prio */
    assert_int_equal(irq.dest, 0x0f);
    assert_true(irq.logical);
    assert_int_equal(irq.delivery, APIC_DM_LOWEST);
    assert_true(apic_msi_decode(0xfee01000, 0x0400, &irq));
    assert_int_equal(irq.delivery, APIC_DM_NMI);
    assert_false(apic_msi_decode(0xfed00000, 0x41, &irq));
    assert_false(apic_msi_decode(0x1fee00000ull, 0x41, &irq));
}

static uint32_t rng_state = 12345;
static uint32_t rng(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

/* Hostile guest: random MMIO, MSR and timer traffic on every LAPIC,
 * interleaved with acknowledges, never crashes; vectors stay in range. */
static void test_random_programming(void **state)
{
    for (unsigned i = 0; i < 200000; i++) {
        struct lapic *l = fx.cpus[rng() % 4];
        uint32_t r = rng();
        switch (r % 8) {
        case 0:
        case 1: lapic_mmio_write(l, rng() % 0x1100, rng(), 1u << (rng() % 4)); break;
        case 2: (void)lapic_mmio_read(l, rng() % 0x1100, 1u << (rng() % 4)); break;
        case 3: lapic_set_tsc_deadline(l, fake_now + rng() % 100000); break;
        case 4: (void)lapic_set_base_msr(l, ((uint64_t)rng() << 32 | rng()) & 0xfffff0d00ull); break;
        case 5: {
            int v = lapic_irq_ack(l);
            assert_true(v >= -1 && v <= 0xff);
            break;
        }
        case 6: {
            struct apic_irq irq = {.vector = (uint8_t)rng(), .delivery = rng() % 8,
                                   .shorthand = rng() % 4, .logical = rng() & 1,
                                   .level = rng() & 1, .assert = rng() & 1,
                                   .dest = (uint8_t)rng()};
            apic_bus_deliver(&fx.bus, l, &irq);
            break;
        }
        default:
            fake_now += rng() % 20000;
            lapic_timer_poll(l, fake_now);
            break;
        }
        uint8_t vec;
        (void)lapic_take_init(l);
        (void)lapic_take_sipi(l, &vec);
        (void)lapic_nmi_ack(l);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reset_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disabled_drops_fixed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priority_and_isr_stacking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_eoi_broadcast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_oneshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_periodic_and_masked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timer_tsc_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_sipi, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ipi_shorthands_and_nmi, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logical_destinations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_virtual_wire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mmio_and_base_msr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msi_decode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_programming, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
