/* A tiny machine for CPU unit tests: RAM at 0, identity page tables, a
 * GDT/IDT/TSS, port 0xe9 capture, and helpers to enter real, 32-bit or
 * 64-bit mode with some code and run it to HLT. */
#ifndef TEST_CPU_HARNESS_H
#define TEST_CPU_HARNESS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "accel/emu/cpu.h"

#define H_RAM_SIZE (4u << 20)
#define H_PML4 0x1000
#define H_PDPT 0x2000
#define H_PD 0x3000
#define H_PT 0x4000 /* 4K page table for the first 2 MiB */
#define H_GDT 0x8000
#define H_IDT 0x9000
#define H_TSS 0xa000
#define H_CODE 0x10000
#define H_HANDLER 0xf000 /* exception handler: records vector/error and halts */
#define H_STACK 0x80000
#define H_ISTACK 0x90000
#define H_DATA 0x100000

struct harness {
    uint8_t *ram;
    struct guest_mem mem;
    struct emu_platform_ops ops;
    struct emu_cpu *cpu;
    char out[4096]; /* bytes written to port 0xe9 */
    unsigned out_len;
    int irq_vector;  /* next irq_ack answer, -1 none */
    uint64_t mmio_last_addr, mmio_last_val;
};

void h_init(struct harness *h);
void h_free(struct harness *h);
/* Copy code to H_CODE and enter the mode with rip there. */
void h_enter_long(struct harness *h, const void *code, size_t len);
void h_enter_prot32(struct harness *h, const void *code, size_t len, bool paging);
void h_enter_real(struct harness *h, const void *code, size_t len);
enum emu_exit h_run(struct harness *h);
void h_state(struct harness *h, struct cpu_state *s);
/* Map one 4K page of the first 2 MiB with the given PTE flags (0 = not present). */
void h_map4k(struct harness *h, uint64_t va, uint64_t pa, uint64_t flags);

#endif
