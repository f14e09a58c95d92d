/* Guest code snippets for test_cpu.c, copied to H_CODE (0x10000) and run
 * there. Only position-independent code, or absolute addresses computed
 * as H_CODE + (label - start). */
#define H_CODE 0x10000
#define ABS(start, l) (H_CODE + ((l) - (start)))

        .section .rodata.guest, "a"

        .macro snippet name
        .globl \name\()_start, \name\()_end
        .endm

/* ---- integer ALU and flags ---- */
        snippet t_alu
        .code64
t_alu_start:
        mov $5, %eax
        add $7, %eax                    /* rax = 12 */
        mov $-1, %rbx
        add $1, %rbx                    /* rbx = 0, CF = 1 */
        setc %cl
        adc $0, %rbx                    /* rbx = 1 */
        mov $0x7fffffff, %edx
        inc %edx                        /* OF */
        seto %ch                        /* rcx = 0x0101 */
        movzx %cx, %esi
        mov $0x1234, %r8
        shl $4, %r8                     /* 0x12340 */
        ror $8, %r8w                    /* 0x14023 */
        mov $0xf0, %r9d
        bsf %r9d, %r10d                 /* 4 */
        bsr %r9d, %r11d                 /* 7 */
        mov $-5, %r12
        sar $1, %r12                    /* -3 */
        mov $100, %r13
        neg %r13
        not %r13                        /* 99 */
        movsbq %r13b, %r14
        lea 3(%r14,%r14,2), %r14        /* 300 */
        xor %r15d, %r15d
        bswap %r15d
        hlt
t_alu_end:

/* ---- stack, call/ret, loops ---- */
        snippet t_flow
t_flow_start:
        xor %eax, %eax
        mov $10, %ecx
1:      add %ecx, %eax
        loop 1b                         /* 55 */
        call 2f
        jmp 3f
2:      push %rax
        pop %rbx
        inc %rbx                        /* 56 */
        ret
3:      pushf
        pop %rdx
        mov $7, %esi
        cmp $7, %esi
        cmove %esi, %edi                /* 7 */
        enter $16, $0
        leave
        hlt
t_flow_end:

/* ---- string operations ---- */
        snippet t_string
t_string_start:
        lea msg(%rip), %rsi
        mov $0x100000, %edi
        mov $6, %ecx
        cld
        rep movsb
        mov $0x100000, %edi
        xor %eax, %eax
        mov $-1, %rcx
        repne scasb
        not %rcx
        dec %rcx                        /* strlen = 5 */
        mov %rcx, %rbx
        mov $0x100100, %edi
        mov $0x4142434445464748, %rax
        mov $4, %ecx
        rep stosq
        mov 0x100108, %rdx
        lea msg(%rip), %rsi
        mov $0x100000, %edi
        mov $6, %ecx
        repe cmpsb
        sete %r8b                        /* equal */
        hlt
msg:    .asciz "hello"
t_string_end:

/* ---- mul/div and #DE ---- */
        snippet t_muldiv
t_muldiv_start:
        mov $0x100000000, %rax
        mov $0x100000000, %rbx
        mul %rbx                        /* rdx:rax = 2^64 -> rdx 1, rax 0 */
        mov %rdx, %rsi
        mov $100, %eax
        xor %edx, %edx
        mov $7, %ecx
        div %ecx                        /* 14 r 2 */
        mov %eax, %edi
        mov %edx, %r8d
        mov $-100, %rax
        cqo
        mov $7, %rcx
        idiv %rcx                       /* -14 r -2 */
        mov %rax, %r9
        mov %rdx, %r10
        mov $-3, %r11
        imul $5, %r11, %r11             /* -15 */
        xor %ecx, %ecx
        div %ecx                        /* #DE */
        hlt
t_muldiv_end:

/* ---- port output and page faults ---- */
        snippet t_pf
t_pf_start:
        mov $0xe9, %dx
        mov $'o', %al
        out %al, %dx
        mov $'k', %al
        out %al, $0xe9
        mov $0x150000, %rbx
        mov (%rbx), %rax                /* not present -> #PF */
        hlt
t_pf_end:

        snippet t_pfw
t_pfw_start:
        mov $0x151000, %rbx
        mov (%rbx), %rax                /* read-only page: reads work */
        movl $1, (%rbx)                 /* write -> #PF (P|W) */
        hlt
t_pfw_end:

/* ---- atomics ---- */
        snippet t_atomic
t_atomic_start:
        mov $0x100000, %ebx
        movq $5, (%rbx)
        mov $5, %eax
        mov $9, %ecx
        lock cmpxchg %rcx, (%rbx)       /* equal: (rbx) = 9, ZF */
        setz %sil
        mov $3, %edx
        lock xadd %rdx, (%rbx)          /* rdx = 9, (rbx) = 12 */
        mov %rdx, %r11
        mov $1, %edi
        xchg %rdi, (%rbx)               /* rdi = 12, (rbx) = 1 */
        lock incq (%rbx)                /* 2 */
        lock btsq $4, (%rbx)            /* 18 */
        mov (%rbx), %r8
        xor %eax, %eax
        xor %edx, %edx
        mov $0x11, %ebx
        mov $0x22, %ecx
        mov $0x100010, %r9d
        movq $0, (%r9)
        lock cmpxchg8b (%r9)            /* equal (0) -> store 0x22:0x11 */
        mov (%r9), %r10
        hlt
t_atomic_end:

/* ---- user mode, syscall/sysret, iretq ---- */
        snippet t_user
t_user_start:
        /* STAR: kernel CS 0x08 (SS 0x10), user base 0x18 -> CS 0x2b, SS 0x23 */
        mov $0xc0000081, %ecx
        xor %eax, %eax
        mov $0x00180008, %edx
        wrmsr
        mov $0xc0000082, %ecx
        mov $ABS(t_user_start, 2f), %eax
        xor %edx, %edx
        wrmsr
        mov $0xc0000084, %ecx
        mov $0x200, %eax                 /* SFMASK: IF */
        wrmsr
        /* iretq to ring 3 at 1f */
        pushq $0x23
        pushq $0x70000
        pushq $0x202
        pushq $0x2b
        pushq $ABS(t_user_start, 1f)
        iretq
1:      mov %cs, %ax                    /* ring 3 */
        mov %eax, %r12d
        mov $42, %edi
        syscall
        hlt                             /* not reached */
2:      mov %cs, %bx
        mov %r11, %r13                  /* user rflags */
        mov %rcx, %r14                  /* return rip */
        mov $1, %r15d
        hlt
t_user_end:

/* ---- user mode privileged instruction -> #GP via TSS rsp0 ---- */
        snippet t_usergp
t_usergp_start:
        pushq $0x23
        pushq $0x70000
        pushq $0x202
        pushq $0x2b
        pushq $ABS(t_usergp_start, 1f)
        iretq
1:      cli                             /* IOPL 0 -> #GP(0) */
        hlt
t_usergp_end:

/* ---- interrupts: sti; hlt; handler via vector 0x20 ---- */
        snippet t_irq
t_irq_start:
        mov $0x55, %ebx
        sti
        hlt
        mov $0x66, %ebx
        hlt
t_irq_end:

/* ---- 32-bit PVH-style entry to long mode ---- */
        snippet t_pvh
        .code32
t_pvh_start:
        mov %cr4, %eax
        or $0x20, %eax                  /* PAE */
        mov %eax, %cr4
        mov $0x1000, %eax
        mov %eax, %cr3
        mov $0xc0000080, %ecx
        rdmsr
        or $0x100, %eax                 /* LME */
        wrmsr
        mov %cr0, %eax
        or $0x80000001, %eax
        mov %eax, %cr0
        ljmp $0x08, $ABS(t_pvh_start, 1f)
        .code64
1:      mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %ss
        mov $0xc0000080, %ecx
        rdmsr
        mov %eax, %ebx                  /* EFER with LMA */
        mov $0x123456789, %rax
        hlt
t_pvh_end:

/* ---- real mode: arithmetic, int through the IVT, to protected mode ---- */
        snippet t_real
        .code16
t_real_start:
        xor %ax, %ax
        mov %ax, %ds
        movw $ABS(t_real_start, 2f) - 0x10000, 0x80  /* IVT[0x20] = 1000:off */
        movw $0x1000, 0x82
        mov $0x1234, %bx
        add $0x1111, %bx                /* 0x2345 */
        int $0x20
        mov $0x9999, %dx
        hlt
2:      mov $0x77, %cx
        iret
t_real_end:
        .code64

/* ---- self-modifying code: the decoded-instruction cache must notice ---- */
        snippet t_smc
t_smc_start:
        mov $5, %eax
        lea 1f(%rip), %rbx
        mov $2, %ecx
1:      mov $0x11, %edx
        add %edx, %eax
        movb $0x22, 1(%rbx)
        dec %ecx
        jnz 1b
        hlt
t_smc_end:

/* ---- x87 basics ---- */
        snippet t_x87
t_x87_start:
        lea 2f(%rip), %rbx
        fninit
        fildl (%rbx)                    /* 10 */
        fildl 4(%rbx)                   /* 3 */
        fmulp                           /* 30 */
        fld1
        faddp                           /* 31 */
        fistpl 8(%rbx)
        fldl 16(%rbx)                   /* 2.5 */
        fistpl 12(%rbx)                 /* round to nearest even: 2 */
        fld1
        fldz
        fcomip %st(1), %st              /* 0 < 1: CF */
        setc %sil
        fstp %st(0)
        fnstsw %ax                      /* TOP back to 0 */
        mov 8(%rbx), %ecx
        mov 12(%rbx), %edx
        fldpi
        fsqrt
        fstpl 24(%rbx)
        mov 24(%rbx), %rdi
        hlt
        .p2align 3
2:      .long 10, 3, 0, 0
        .double 2.5
        .quad 0
t_x87_end:

/* ---- FXSAVE / FXRSTOR round trip ---- */
        snippet t_fxsave
t_fxsave_start:
        mov $0x1234, %eax
        movq %rax, %xmm3
        mov $0x100000, %ebx
        fxsave (%rbx)
        pxor %xmm3, %xmm3
        fxrstor (%rbx)
        movq %xmm3, %rdx
        mov 24(%rbx), %ecx              /* MXCSR */
        hlt
t_fxsave_end:

/* ---- #PF while delivering #UD on an unmapped stack -> #DF on IST1 ---- */
        snippet t_df
t_df_start:
        mov $0x150000, %rsp
        ud2
t_df_end:

/* ---- 32-bit paging (PSE 4M page) and PAE paging from protected mode ---- */
        snippet t_paging32
        .code32
t_paging32_start:
        mov %cr4, %eax
        or %edi, %eax                   /* PSE or PAE, from the test */
        mov %eax, %cr4
        mov %esi, %cr3
        mov %cr0, %eax
        or $0x80000000, %eax
        mov %eax, %cr0
        movl $0xabcd, 0x100000
        mov 0x100000, %ebx
        hlt
t_paging32_end:
        .code64
/* ---- TF single step: #DB after the instruction following POPF ---- */
        snippet t_tf
t_tf_start:
        mov $0x8b, %ecx
        rdmsr                           /* microcode revision: reads as 0, no #GP */
        pushf
        orl $0x100, (%rsp)
        popf
        nop
        hlt
t_tf_end:

/* ---- INVLPG of any address inside a 2M page drops the whole page ---- */
        snippet t_invlpg
t_invlpg_start:
        mov $0x200010, %rbx
        mov (%rbx), %rax                /* TLB now maps 0x200000 -> 0x200000 */
        mov %rsi, (%rdi)                /* PD[1] -> physical 0 */
        invlpg 0x3ff000
        mov (%rbx), %rdx
        hlt
t_invlpg_end:

        .section .note.GNU-stack, "", @progbits
