/* Unit tests for the software CPU: instruction semantics in 64-, 32- and
 * 16-bit code, paging and #PF error codes, exception and interrupt
 * delivery, privilege transitions (IRETQ to ring 3, SYSCALL, #GP through
 * the TSS stack), locked operations and the PVH 32-bit -> long mode path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_cpu_harness.h"

#define SNIPPET(name)                                                                              \
    extern const uint8_t name##_start[], name##_end[];
SNIPPET(t_alu)
SNIPPET(t_flow)
SNIPPET(t_string)
SNIPPET(t_muldiv)
SNIPPET(t_pf)
SNIPPET(t_pfw)
SNIPPET(t_atomic)
SNIPPET(t_user)
SNIPPET(t_usergp)
SNIPPET(t_irq)
SNIPPET(t_pvh)
SNIPPET(t_real)
SNIPPET(t_smc)
SNIPPET(t_x87)
SNIPPET(t_fxsave)
SNIPPET(t_df)
SNIPPET(t_paging32)
SNIPPET(t_tf)
SNIPPET(t_invlpg)
#define CODE(name) name##_start, (size_t)(name##_end - name##_start)

static int setup(void **state)
{
    struct harness *h = malloc(sizeof(*h));
    h_init(h);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    h_free(*state);
    free(*state);
    return 0;
}

static void test_alu(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_long(h, CODE(t_alu));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.rax, 12);
    assert_int_equal(s.rbx, 1);
    assert_int_equal(s.rdx, 0x80000000u);
    assert_int_equal(s.rsi, 0x0101);
    assert_int_equal(s.r8, 0x14023);
    assert_int_equal(s.r10, 4);
    assert_int_equal(s.r11, 7);
    assert_int_equal(s.r12, (uint64_t)-3);
    assert_int_equal(s.r13, 99);
    assert_int_equal(s.r14, 300);
    assert_int_equal(s.r15, 0);
}

static void test_flow(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_long(h, CODE(t_flow));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.rax, 55);
    assert_int_equal(s.rbx, 56);
    assert_int_equal(s.rdi, 7);
    assert_int_equal(s.rsp, H_STACK);
    assert_int_equal(s.rdx & 0x2, 2);
}

static void test_string(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_long(h, CODE(t_string));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_string_equal((char *)h->ram + H_DATA, "hello");
    assert_int_equal(s.rbx, 5);
    assert_int_equal(s.rdx, 0x4142434445464748ull);
    assert_int_equal(s.r8 & 0xff, 1);
}

static void test_muldiv(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_long(h, CODE(t_muldiv));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.rsi, 1);
    assert_int_equal(s.rdi, 14);
    assert_int_equal(s.r8, 2);
    assert_int_equal(s.r9, (uint64_t)-14);
    assert_int_equal(s.r10, (uint64_t)-2);
    assert_int_equal(s.r11, (uint64_t)-15);
    assert_int_equal(s.r15, 0); /* #DE */
    assert_int_equal(s.r14, H_CODE + (t_muldiv_end - t_muldiv_start) - 3); /* faulting div */
}

static void test_page_fault(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_map4k(h, 0x150000, 0, 0);
    h_enter_long(h, CODE(t_pf));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_memory_equal(h->out, "ok", 2);
    assert_int_equal(s.r15, 14);
    assert_int_equal(s.r14, 0); /* not present, read, supervisor */
    assert_int_equal(s.cr2, 0x150000);
}

static void test_page_fault_write(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_map4k(h, 0x151000, 0x151000, 1 | 4); /* present, user, read-only */
    h_enter_long(h, CODE(t_pfw));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.r15, 14);
    assert_int_equal(s.r14, 3); /* present | write */
    assert_int_equal(s.cr2, 0x151000);
    /* the walk set the accessed bit on the leaf */
    uint64_t pte;
    memcpy(&pte, h->ram + H_PT + 8 * 0x151, 8);
    assert_true(pte & 0x20);
}

static void test_atomic(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_long(h, CODE(t_atomic));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.rsi & 0xff, 1);
    assert_int_equal(s.r11, 9);
    assert_int_equal(s.rdi, 12);
    assert_int_equal(s.r8, 18);
    assert_int_equal(s.r10, 0x0000002200000011ull);
}

static void test_user_syscall(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_long(h, CODE(t_user));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.r12, 0x2b);
    assert_int_equal(s.rbx & 0xffff, 0x08);
    assert_int_equal(s.r15, 1);
    assert_int_equal(s.r13 & 0x200, 0x200); /* user IF saved in r11 */
    assert_int_equal(s.rflags & 0x200, 0);  /* masked by SFMASK */
    assert_int_equal(s.rdi, 42);
    assert_int_equal(s.ss.selector, 0x10);
}

static void test_user_gp(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_long(h, CODE(t_usergp));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.r15, 13);
    assert_int_equal(s.r14, 0);
    assert_int_equal(s.cs.selector, 0x08);
    /* frame on the TSS rsp0 stack: err, rip, cs, rflags, rsp, ss */
    assert_int_equal(s.rsp, H_STACK - 0x1000 - 48);
    uint64_t cs;
    memcpy(&cs, h->ram + s.rsp + 16, 8);
    assert_int_equal(cs, 0x2b);
}

static void test_irq(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_long(h, CODE(t_irq));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    assert_true(emu_cpu_halted(h->cpu));
    h_state(h, &s);
    assert_int_equal(s.rbx, 0x55);
    /* still halted with nothing pending */
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h->irq_vector = 0x20;
    emu_cpu_raise_irq_check(h->cpu);
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.r15, 31); /* vectors >= 31 share the last stub */
    assert_int_equal(s.r14, H_CODE + 7);   /* return rip: after the first hlt */
    assert_int_equal(s.rflags & 0x200, 0); /* interrupt gate cleared IF */
}

static void test_pvh_to_long(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_prot32(h, CODE(t_pvh), false);
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.rax, 0x123456789ull);
    assert_int_equal(s.rbx & 0x500, 0x500);
    assert_true(s.cs.l);
}

static void test_real_mode(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_real(h, CODE(t_real));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.rbx & 0xffff, 0x2345);
    assert_int_equal(s.rcx & 0xffff, 0x77);
    assert_int_equal(s.rdx & 0xffff, 0x9999);
    assert_int_equal(s.rsp, 0xfff0);
}

static void test_triple_fault(void **state)
{
    struct harness *h = *state;
    static const uint8_t code[] = {0x0f, 0x0b}; /* ud2 with an empty IDT */
    h_enter_long(h, code, sizeof(code));
    struct cpu_state s;
    h_state(h, &s);
    s.idt.limit = 0;
    emu_cpu_set_state(h->cpu, &s);
    assert_int_equal(h_run(h), EMU_EXIT_SHUTDOWN);
}

static void test_mmio(void **state)
{
    struct harness *h = *state;
    /* mov $0xfee000b0, %ebx ; movl $0x42, (%rbx) ; mov (%rbx), %ecx ; hlt  (PD[0x3f7] not
     * mapped in the test tables: use paging-off 32-bit mode instead) */
    static const uint8_t code[] = {0xbb, 0xb0, 0x00, 0xe0, 0xfe, 0xc7, 0x03, 0x42, 0x00, 0x00,
                                   0x00, 0x8b, 0x0b, 0xf4};
    struct cpu_state s;
    h_enter_prot32(h, code, sizeof(code), false);
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(h->mmio_last_addr, 0xfee000b0);
    assert_int_equal(h->mmio_last_val, 0x42);
    assert_int_equal(s.rcx, 0x55667788);
}

static void test_self_modifying(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_long(h, CODE(t_smc));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.rax, 5 + 0x11 + 0x22);
}

/* A device (DMA) rewrites code the CPU has already run: guest_mem's write
 * hook -> emu_invalidate_code() must make the next pass decode it afresh. */
static void (*dma_pio_write_orig)(void *, struct emu_cpu *, uint16_t, uint32_t, unsigned);

static void dma_hook(void *opaque, uint64_t gpa, uint64_t len)
{
    emu_invalidate_code(opaque, gpa, len);
}

static void dma_pio_write(void *o, struct emu_cpu *c, uint16_t port, uint32_t val, unsigned size)
{
    struct harness *h = o;
    uint8_t next = (uint8_t)(val + 1);
    dma_pio_write_orig(o, c, port, val, size);
    assert_int_equal(guest_mem_write(&h->mem, H_CODE + 6, &next, 1), 0); /* mov eax, val+1 */
}

static void test_dma_invalidates_code(void **state)
{
    struct harness *h = *state;
    static const uint8_t code[] = {
        0xb9, 0x03, 0x00, 0x00, 0x00, /* mov ecx, 3 */
        0xb8, 0x01, 0x00, 0x00, 0x00, /* top: mov eax, 1 (imm patched by "DMA") */
        0xe6, 0xe9,                   /* out 0xe9, al */
        0xff, 0xc9,                   /* dec ecx */
        0x75, 0xf5,                   /* jnz top */
        0xf4,                         /* hlt */
    };
    h_enter_long(h, code, sizeof(code));
    h->mem.write_hook = dma_hook;
    h->mem.write_hook_opaque = &h->mem;
    dma_pio_write_orig = h->ops.pio_write;
    h->ops.pio_write = dma_pio_write;
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    assert_int_equal(h->out_len, 3);
    assert_memory_equal(h->out, "\x01\x02\x03", 3);
}

static void test_x87(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_long(h, CODE(t_x87));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.rcx, 31);
    assert_int_equal(s.rdx, 2);
    assert_int_equal(s.rsi & 0xff, 1);
    assert_int_equal(s.rax & 0x3800, 0);
    double d;
    memcpy(&d, &s.rdi, 8);
    assert_true(d > 1.7724538 && d < 1.7724539);
}

static void test_fxsave(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_long(h, CODE(t_fxsave));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.rdx, 0x1234);
    assert_int_equal(s.rcx, 0x1f80);
}

static void test_double_fault_ist(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_map4k(h, 0x14f000, 0, 0);
    /* IDT[8]: IST 1 */
    h->ram[H_IDT + 16 * 8 + 4] = 1;
    h_enter_long(h, CODE(t_df));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.r15, 8);
    assert_int_equal(s.r14, 0);               /* #DF error code */
    assert_int_equal(s.rsp, H_ISTACK - 48);   /* err rip cs rflags rsp ss on IST1 */
    assert_int_equal(s.cr2, 0x14fff8);
}

static void test_paging_pse32(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    uint32_t pde = 0x83; /* 4M page at 0: present, writable, PS */
    memcpy(h->ram + 0x5000, &pde, 4);
    h_enter_prot32(h, CODE(t_paging32), false);
    h_state(h, &s);
    s.rdi = 0x10; /* CR4.PSE */
    s.rsi = 0x5000;
    emu_cpu_set_state(h->cpu, &s);
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.rbx, 0xabcd);
    memcpy(&pde, h->ram + 0x5000, 4);
    assert_int_equal(pde & 0x60, 0x60); /* accessed + dirty */
}

static void test_paging_pae32(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    uint64_t pdpte = H_PD | 1; /* legacy PAE PDPT -> the harness's PD (4K PT, 2M page) */
    memcpy(h->ram + 0x6000, &pdpte, 8);
    h_enter_prot32(h, CODE(t_paging32), false);
    h_state(h, &s);
    s.rdi = 0x20; /* CR4.PAE */
    s.rsi = 0x6000;
    emu_cpu_set_state(h->cpu, &s);
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.rbx, 0xabcd);
    uint64_t pte;
    memcpy(&pte, h->ram + H_PT + 8 * 0x100, 8);
    assert_int_equal(pte & 0x60, 0x60);
    assert_int_equal(s.efer & 0x400, 0); /* no LMA without LME */
}

static void test_single_step(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    h_enter_long(h, CODE(t_tf));
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.r15, 1);
    assert_int_equal(s.r14, H_CODE + (t_tf_end - t_tf_start) - 1); /* after the nop */
    assert_int_equal(s.rflags & 0x100, 0);
}

static void test_invlpg_large_page(void **state)
{
    struct harness *h = *state;
    struct cpu_state s;
    uint64_t a = 0x1111, b = 0x2222;
    memcpy(h->ram + 0x200010, &a, 8);
    memcpy(h->ram + 0x000010, &b, 8);
    h_enter_long(h, CODE(t_invlpg));
    h_state(h, &s);
    s.rdi = H_PD + 8;
    s.rsi = 0x000000 | 0x87; /* the 2M page at 0x200000 now maps physical 0 */
    emu_cpu_set_state(h->cpu, &s);
    assert_int_equal(h_run(h), EMU_EXIT_HLT);
    h_state(h, &s);
    assert_int_equal(s.rax, 0x1111);
    assert_int_equal(s.rdx, 0x2222);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_alu, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_string, setup, teardown),
        cmocka_unit_test_setup_teardown(test_muldiv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_page_fault, setup, teardown),
        cmocka_unit_test_setup_teardown(test_page_fault_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_syscall, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_gp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_irq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pvh_to_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_real_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_triple_fault, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mmio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_self_modifying, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dma_invalidates_code, setup, teardown),
        cmocka_unit_test_setup_teardown(test_x87, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fxsave, setup, teardown),
        cmocka_unit_test_setup_teardown(test_double_fault_ist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paging_pse32, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paging_pae32, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invlpg_large_page, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
