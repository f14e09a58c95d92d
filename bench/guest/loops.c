/* Benchmark guest for the software CPU: runs one loop with a known number
 * of instructions per iteration, then exits through isa-debug-exit (status
 * 33). bench/tcg.sh times it at two iteration counts and divides the extra
 * instructions by the extra time, so boot and exit costs cancel out.
 *
 *   loop=compute  iters=N : 8 register-only ALU instructions per iteration
 *   loop=memory   iters=N : 8 instructions per iteration, 2 of them loads and
 *                           1 a store, striding 64 bytes through a 32 MiB
 *                           buffer (a new 4 KiB page every 64 iterations)
 *
 * The loops are inline assembly so the instruction count per iteration does
 * not depend on the compiler. */
#include "guest.h"

#define MEM_BUF_ADDR (64ull << 20) /* above the image; identity-mapped by boot.S */
#define MEM_BUF_SIZE (32ull << 20)

/* 8 instructions per iteration. */
static uint64_t compute_loop(uint64_t iters)
{
    uint64_t a = 1, b = 3, c = 7;
    __asm__ volatile("1:\n\t"
                     "add %1, %0\n\t"
                     "xor %0, %2\n\t"
                     "imul %2, %1\n\t"
                     "shl $1, %2\n\t"
                     "sub %1, %2\n\t"
                     "or $5, %1\n\t"
                     "dec %3\n\t"
                     "jnz 1b"
                     : "+r"(a), "+r"(b), "+r"(c), "+r"(iters)
                     :
                     : "cc");
    return a ^ b ^ c;
}

/* 8 instructions per iteration: load, load, add, store, add, cmp, cmov, dec/jnz
 * (cmov wraps the pointer back to the start of the buffer). */
static uint64_t memory_loop(uint64_t iters)
{
    uint64_t p = MEM_BUF_ADDR, start = MEM_BUF_ADDR, end = MEM_BUF_ADDR + MEM_BUF_SIZE, sum = 0, t;
    __asm__ volatile("1:\n\t"
                     "mov (%1), %4\n\t"
                     "add 8(%1), %4\n\t"
                     "add %4, %0\n\t"
                     "mov %0, 16(%1)\n\t"
                     "add $64, %1\n\t"
                     "cmp %3, %1\n\t"
                     "cmovae %2, %1\n\t"
                     "dec %5\n\t"
                     "jnz 1b"
                     : "+r"(sum), "+r"(p), "+r"(start), "+r"(end), "=&r"(t), "+r"(iters)
                     :
                     : "cc", "memory");
    return sum;
}

void guest_main(void)
{
    char loop[16];
    uint64_t iters = cmdline_u64("iters", 1000000);
    if (!cmdline_get("loop", loop, sizeof(loop)))
        tap_bail("loop=compute|memory is required");
    if (!strncmp(loop, "compute", 8)) {
        printf("# compute %llu iterations -> %llx\n", (unsigned long long)iters,
               (unsigned long long)compute_loop(iters));
    } else if (!strncmp(loop, "memory", 7)) {
        printf("# memory %llu iterations -> %llx\n", (unsigned long long)iters,
               (unsigned long long)memory_loop(iters));
    } else {
        tap_bail("unknown loop=%s", loop);
    }
    guest_exit(GUEST_EXIT_PASS);
}
