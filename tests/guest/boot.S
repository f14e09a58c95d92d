/* Entry of every test guest.
 *
 * The VMM (ember's loader, or QEMU's PVH option ROM) enters pvh_start in
 * 32-bit protected mode with paging off and EBX = hvm_start_info, as the
 * XEN_ELFNOTE_PHYS32_ENTRY note below asks. We clear .bss, identity-map the
 * first 4 GiB with 2 MiB pages, enter long mode and call
 * guest_start(start_info) in C.
 *
 * Also here: the real-mode trampoline application processors run after
 * INIT/SIPI (copied below 1 MiB by smp code) and the interrupt entry stubs.
 * Only plain instructions: this code runs emulated on some hosts. */

#include "guest_layout.h"

#define GDT_CODE64 0x08
#define GDT_DATA 0x10
#define GDT_CODE32 0x18

#define CR0_PE 0x00000001
#define CR0_PG 0x80000000
#define CR4_PAE 0x00000020
#define MSR_EFER 0xc0000080
#define EFER_LME 0x00000100

/* ---- PVH ELF note (own PT_NOTE segment via the linker script) ---- */
        .section .note.Xen, "a"
        .p2align 2
        .long 4                 /* namesz: "Xen\0" */
        .long 4                 /* descsz */
        .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .long pvh_start
        .p2align 2

/* ---- 32-bit entry ---- */
        .section .text.boot, "ax"
        .code32
        .globl pvh_start
pvh_start:
        /* Record the entry state for the boot-protocol test before we
         * change it (the stack is ours: .bss, not yet cleared). */
        mov $boot_stack_top, %esp
        pushfl
        popl entry_eflags
        cli
        cld
        mov %cr0, %eax
        mov %eax, entry_cr0
        mov %cr4, %eax
        mov %eax, entry_cr4
        mov %cs, %ax
        mov %ax, entry_cs
        mov %ebx, %esi                  /* keep start_info across the setup */

        /* Zero .bss (page tables and stacks live there). */
        mov $__bss_start, %edi
        mov $__bss_end, %ecx
        sub %edi, %ecx
        shr $2, %ecx
        xor %eax, %eax
        rep stosl

        mov $boot_stack_top, %esp

        /* PML4[0] -> PDPT; PDPT[0..3] -> four page directories. */
        mov $boot_pdpt, %eax
        or $3, %eax
        mov %eax, boot_pml4
        mov $boot_pd, %eax
        or $3, %eax
        mov $boot_pdpt, %edi
        mov $4, %ecx
1:      mov %eax, (%edi)
        add $0x1000, %eax
        add $8, %edi
        dec %ecx
        jnz 1b

        /* 2048 PDEs of 2 MiB each: present, writable, PS. The high dword of
         * entries >= 4 GiB... none here: all below 4 GiB, high dword stays 0. */
        mov $boot_pd, %edi
        mov $0x83, %eax
        mov $2048, %ecx
2:      mov %eax, (%edi)
        add $0x200000, %eax
        add $8, %edi
        dec %ecx
        jnz 2b

        mov %esi, boot_start_info
        jmp enter_long_mode

/* Shared by the BSP and the APs: protected mode, paging off, stack set. */
enter_long_mode:
        lgdt gdt_ptr
        mov %cr4, %eax
        or $CR4_PAE, %eax
        mov %eax, %cr4
        mov $boot_pml4, %eax
        mov %eax, %cr3
        mov $MSR_EFER, %ecx
        rdmsr
        or $EFER_LME, %eax
        wrmsr
        mov %cr0, %eax
        or $(CR0_PG | CR0_PE), %eax
        mov %eax, %cr0
        ljmp $GDT_CODE64, $long_entry

        .code64
long_entry:
        mov $GDT_DATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov %ax, %fs
        mov %ax, %gs
        /* The BSP arrives first; APs are told apart by ap_started. */
        cmpb $0, ap_mode
        jne ap_long_entry
        mov $boot_stack_top, %rsp
        mov boot_start_info(%rip), %edi
        call guest_start
3:      cli
        hlt
        jmp 3b

/* An AP takes the next slot number, then its own stack. */
ap_long_entry:
        mov $1, %eax
        lock xaddl %eax, ap_next_slot(%rip)
        mov %eax, %edi                  /* slot: 1, 2, ... (0 is the BSP) */
        cmp $GUEST_MAX_CPUS, %eax
        jae 3b
        mov %rax, %rsp
        shl $12, %rsp                   /* 4 KiB per AP */
        add $ap_stacks, %rsp
        call ap_main
        jmp 3b

/* AP 32-bit landing point, reached from the trampoline's far jump. */
        .code32
ap_entry32:
        mov $GDT_DATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        jmp enter_long_mode

/* ---- Real-mode AP trampoline: copied to GUEST_TRAMPOLINE (0x8000) ---- */
#define TRAMP(sym) ((sym) - ap_trampoline_start + 0x8000)
        .code16
        .globl ap_trampoline_start, ap_trampoline_end
ap_trampoline_start:
        cli
        cld
        xor %ax, %ax
        mov %ax, %ds
        lgdtl TRAMP(tramp_gdt_ptr)
        mov %cr0, %eax
        or $CR0_PE, %eax
        mov %eax, %cr0
        ljmpl $GDT_CODE32, $ap_entry32
        .p2align 2
tramp_gdt_ptr:
        .word gdt_end - gdt - 1
        .long gdt
ap_trampoline_end:

/* ---- Interrupt entry: one stub per vector, one common path ---- */
        .code64
        .macro isr_stub vec
        .p2align 4
isr_stub_\vec:
        .if (\vec == 8) || (\vec >= 10 && \vec <= 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
        .else
        pushq $0                        /* no CPU error code: keep the frame uniform */
        .endif
        pushq $\vec
        jmp isr_common
        .endm

        .altmacro
        .macro isr_stubs from, to
        isr_stub \from
        .if \to-\from
        isr_stubs %(\from+1), \to
        .endif
        .endm
        isr_stubs 0, 63
        isr_stubs 64, 127
        isr_stubs 128, 191
        isr_stubs 192, 255
        .noaltmacro

isr_common:
        push %rax
        push %rcx
        push %rdx
        push %rbx
        push %rbp
        push %rsi
        push %rdi
        push %r8
        push %r9
        push %r10
        push %r11
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rsp, %rdi                  /* struct isr_frame * */
        mov %rsp, %rbx
        and $-16, %rsp                  /* ABI stack alignment for C */
        call isr_dispatch
        mov %rbx, %rsp
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %r11
        pop %r10
        pop %r9
        pop %r8
        pop %rdi
        pop %rsi
        pop %rbp
        pop %rbx
        pop %rdx
        pop %rcx
        pop %rax
        add $16, %rsp                   /* vector and error code */
        iretq

/* Stub addresses, for idt setup in C. */
        .section .rodata
        .p2align 3
        .globl isr_stub_table
        .macro isr_addr vec
        .quad isr_stub_\vec
        .endm
        .altmacro
        .macro isr_addrs from, to
        isr_addr \from
        .if \to-\from
        isr_addrs %(\from+1), \to
        .endif
        .endm
isr_stub_table:
        isr_addrs 0, 63
        isr_addrs 64, 127
        isr_addrs 128, 191
        isr_addrs 192, 255
        .noaltmacro

/* ---- GDT: null, 64-bit code, flat data, 32-bit code ---- */
        .section .data
        .p2align 3
gdt:
        .quad 0
        .quad 0x00af9a000000ffff        /* 0x08: 64-bit code */
        .quad 0x00cf92000000ffff        /* 0x10: flat data */
        .quad 0x00cf9a000000ffff        /* 0x18: 32-bit code */
gdt_end:
        .p2align 2
        .word 0
gdt_ptr:
        .word gdt_end - gdt - 1
        .long gdt

        .globl entry_eflags, entry_cr0, entry_cr4, entry_cs
entry_eflags:   .long 0
entry_cr0:      .long 0
entry_cr4:      .long 0
entry_cs:       .word 0
        .p2align 2
        .globl ap_mode, ap_next_slot, boot_start_info
ap_mode:        .byte 0                 /* set by smp code before the first SIPI */
        .p2align 2
ap_next_slot:   .long 1
boot_start_info: .long 0

        .section .bss
        .p2align 12
        .globl boot_pml4, boot_pdpt, boot_pd
boot_pml4:      .space 4096
boot_pdpt:      .space 4096
boot_pd:        .space 4 * 4096
        .globl ap_stacks
ap_stacks:      .space GUEST_MAX_CPUS * 4096
boot_stack:     .space 16384
boot_stack_top:

        .section .note.GNU-stack, "", @progbits
