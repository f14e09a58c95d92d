/* diff_run(struct diff_regs *r, void *code): loads r's general registers
 * (all but rsp), rflags, xmm0-15 and mxcsr, calls code (which ends with
 * ret), and stores the resulting state back into r. See test_diff.c. */
        .text
        .globl diff_run
        .type diff_run, @function
diff_run:
        push %rbx
        push %rbp
        push %r12
        push %r13
        push %r14
        push %r15
        push %rdi                       /* 16(%rsp): regs */
        push %rsi                       /*  8(%rsp): code */
        sub $8, %rsp
        ldmxcsr 392(%rdi)
        movdqu 136(%rdi), %xmm0
        movdqu 152(%rdi), %xmm1
        movdqu 168(%rdi), %xmm2
        movdqu 184(%rdi), %xmm3
        movdqu 200(%rdi), %xmm4
        movdqu 216(%rdi), %xmm5
        movdqu 232(%rdi), %xmm6
        movdqu 248(%rdi), %xmm7
        movdqu 264(%rdi), %xmm8
        movdqu 280(%rdi), %xmm9
        movdqu 296(%rdi), %xmm10
        movdqu 312(%rdi), %xmm11
        movdqu 328(%rdi), %xmm12
        movdqu 344(%rdi), %xmm13
        movdqu 360(%rdi), %xmm14
        movdqu 376(%rdi), %xmm15
        pushq 128(%rdi)
        popfq
        mov 0(%rdi), %rax
        mov 8(%rdi), %rcx
        mov 16(%rdi), %rdx
        mov 24(%rdi), %rbx
        mov 40(%rdi), %rbp
        mov 48(%rdi), %rsi
        mov 64(%rdi), %r8
        mov 72(%rdi), %r9
        mov 80(%rdi), %r10
        mov 88(%rdi), %r11
        mov 96(%rdi), %r12
        mov 104(%rdi), %r13
        mov 112(%rdi), %r14
        mov 120(%rdi), %r15
        mov 56(%rdi), %rdi
        call *8(%rsp)
        pushfq
        push %rdi
        mov 32(%rsp), %rdi
        mov %rax, 0(%rdi)
        mov %rcx, 8(%rdi)
        mov %rdx, 16(%rdi)
        mov %rbx, 24(%rdi)
        mov %rbp, 40(%rdi)
        mov %rsi, 48(%rdi)
        mov %r8, 64(%rdi)
        mov %r9, 72(%rdi)
        mov %r10, 80(%rdi)
        mov %r11, 88(%rdi)
        mov %r12, 96(%rdi)
        mov %r13, 104(%rdi)
        mov %r14, 112(%rdi)
        mov %r15, 120(%rdi)
        popq 56(%rdi)
        popq 128(%rdi)
        cld
        movdqu %xmm0, 136(%rdi)
        movdqu %xmm1, 152(%rdi)
        movdqu %xmm2, 168(%rdi)
        movdqu %xmm3, 184(%rdi)
        movdqu %xmm4, 200(%rdi)
        movdqu %xmm5, 216(%rdi)
        movdqu %xmm6, 232(%rdi)
        movdqu %xmm7, 248(%rdi)
        movdqu %xmm8, 264(%rdi)
        movdqu %xmm9, 280(%rdi)
        movdqu %xmm10, 296(%rdi)
        movdqu %xmm11, 312(%rdi)
        movdqu %xmm12, 328(%rdi)
        movdqu %xmm13, 344(%rdi)
        movdqu %xmm14, 360(%rdi)
        movdqu %xmm15, 376(%rdi)
        stmxcsr 392(%rdi)
        ldmxcsr default_mxcsr(%rip)
        add $24, %rsp
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbp
        pop %rbx
        ret
        .size diff_run, . - diff_run

        .section .rodata
default_mxcsr:
        .long 0x1f80
        .section .note.GNU-stack, "", @progbits
