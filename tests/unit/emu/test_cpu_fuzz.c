/* Hostile instruction streams: random bytes (and random mutations of real
 * code) run in ring 0 with an instruction budget. Whatever the guest does
 * (load garbage into CR3, the GDT or IDT, fault recursively, touch MMIO),
 * the emulator must neither crash nor touch host memory outside guest RAM;
 * run under -Db_sanitize=address,undefined to check the latter.
 * EMBER_FUZZ_SEED / EMBER_FUZZ_CASES reproduce or extend a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <cmocka.h>

#include "accel/emu/cpu_internal.h"
#include "test_cpu_harness.h"

static uint64_t rng;
static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}

static void run_random(uint64_t seed, int mode)
{
    struct harness h;
    uint8_t code[256];
    rng = seed * 0x9e3779b97f4a7c15ull + 7;
    for (unsigned i = 0; i < sizeof(code); i++) {
        code[i] = (uint8_t)rnd();
        /* bias toward prefixes and two-byte opcodes to reach more decoder paths */
        if ((rnd() & 15) == 0)
            code[i] = 0x0f;
        else if ((rnd() & 31) == 0)
            code[i] = (uint8_t)(0x40 | (rnd() & 15));
    }
    h_init(&h);
    /* Some RAM filled with random bytes too: descriptors, page tables, stacks. */
    for (unsigned i = 0; i < 0x2000; i++)
        h.ram[H_DATA + i] = (uint8_t)rnd();
    if (mode == 0)
        h_enter_long(&h, code, sizeof(code));
    else if (mode == 1)
        h_enter_prot32(&h, code, sizeof(code), false);
    else
        h_enter_real(&h, code, sizeof(code));
    h.cpu->insn_limit = 20000;
    for (int round = 0; round < 50; round++) {
        enum emu_exit e = h_run(&h);
        if (e == EMU_EXIT_STOP || e == EMU_EXIT_SHUTDOWN || e == EMU_EXIT_INTERNAL_ERROR)
            break;
        /* HLT: wake it with an interrupt and keep going */
        h.irq_vector = (int)(rnd() & 0xff);
        emu_cpu_raise_irq_check(h.cpu);
    }
    h_free(&h);
}

static uint64_t current_seed;
static void crash_handler(int sig)
{
    fprintf(stderr, "crashed (signal %d) on EMBER_FUZZ_SEED=%#llx EMBER_FUZZ_CASES=1\n", sig,
            (unsigned long long)current_seed);
    _exit(1);
}

static void test_fuzz_modes(void **state)
{
    (void)state;
    const char *s = getenv("EMBER_FUZZ_SEED");
    const char *c = getenv("EMBER_FUZZ_CASES");
    uint64_t seed0 = s ? strtoull(s, NULL, 0) : 1;
    unsigned cases = c ? (unsigned)strtoul(c, NULL, 0) : 2000;
    signal(SIGSEGV, crash_handler);
    signal(SIGBUS, crash_handler);
    signal(SIGFPE, crash_handler);
    for (unsigned i = 0; i < cases; i++) {
        uint64_t seed = seed0 + i;
        current_seed = seed;
        run_random(seed, (int)(seed % 3));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fuzz_modes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
