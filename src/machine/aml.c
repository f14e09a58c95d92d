/* AML encoding (ACPI 6.x, 20.2 "AML Grammar Definition"). */
#include "machine/aml.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

#define AML_ZERO_OP 0x00
#define AML_ONE_OP 0x01
#define AML_NAME_OP 0x08
#define AML_BYTE_PREFIX 0x0a
#define AML_WORD_PREFIX 0x0b
#define AML_DWORD_PREFIX 0x0c
#define AML_STRING_PREFIX 0x0d
#define AML_QWORD_PREFIX 0x0e
#define AML_SCOPE_OP 0x10
#define AML_BUFFER_OP 0x11
#define AML_PACKAGE_OP 0x12
#define AML_METHOD_OP 0x14
#define AML_DUAL_NAME_PREFIX 0x2e
#define AML_MULTI_NAME_PREFIX 0x2f
#define AML_EXT_OP_PREFIX 0x5b
#define AML_DEVICE_OP 0x82 /* after ExtOpPrefix */
#define AML_RETURN_OP 0xa4
#define AML_ONES_OP 0xff

/* Resource descriptors (ACPI 6.x, 6.4). */
#define RES_IRQ_NOFLAGS 0x22
#define RES_IO 0x47
#define RES_END_TAG 0x79
#define RES_MEM32_FIXED 0x86
#define RES_DWORD_ADDR 0x87
#define RES_WORD_ADDR 0x88
#define RES_QWORD_ADDR 0x8a
#define RES_TYPE_MEM 0
#define RES_TYPE_IO 1
#define RES_TYPE_BUS 2
/* General flags of a bridge window: producer, MinFixed, MaxFixed, positive decode. */
#define RES_FLAGS_WINDOW 0x0c

void aml_init(struct aml *a)
{
    *a = (struct aml){0};
}

void aml_free(struct aml *a)
{
    free(a->data);
    *a = (struct aml){0};
}

static void aml_reserve(struct aml *a, size_t n)
{
    if (n <= a->cap - a->len)
        return;
    size_t cap = MAX(a->cap * 2, a->len + n);
    cap = MAX(cap, (size_t)256);
    a->data = xrealloc(a->data, cap);
    a->cap = cap;
}

void aml_bytes(struct aml *a, const void *p, size_t n)
{
    if (!n)
        return;
    aml_reserve(a, n);
    memcpy(a->data + a->len, p, n);
    a->len += n;
}

void aml_byte(struct aml *a, uint8_t b)
{
    aml_bytes(a, &b, 1);
}

static void aml_le(struct aml *a, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        aml_byte(a, (uint8_t)(v >> (8 * i)));
}

/* Insert n bytes at offset pos, moving what follows. */
static void aml_insert(struct aml *a, size_t pos, const uint8_t *p, size_t n)
{
    aml_reserve(a, n);
    memmove(a->data + pos + n, a->data + pos, a->len - pos);
    memcpy(a->data + pos, p, n);
    a->len += n;
}

unsigned aml_pkglength_size(size_t body_len)
{
    /* The encoded length counts the PkgLength bytes themselves. */
    if (body_len + 1 <= 0x3f)
        return 1;
    if (body_len + 2 <= 0xfff)
        return 2;
    if (body_len + 3 <= 0xfffff)
        return 3;
    if (body_len + 4 <= 0xfffffff)
        return 4;
    return 0;
}

unsigned aml_pkglength_encode(size_t body_len, uint8_t out[4])
{
    unsigned n = aml_pkglength_size(body_len);
    if (n == 0)
        return 0;
    size_t total = body_len + n;
    if (n == 1) {
        out[0] = (uint8_t)total;
        return 1;
    }
    /* Lead byte: bits 7-6 = following byte count, bits 3-0 = low nibble. */
    out[0] = (uint8_t)(((n - 1) << 6) | (total & 0xf));
    for (unsigned i = 1; i < n; i++)
        out[i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
    return n;
}

void aml_integer(struct aml *a, uint64_t v)
{
    if (v == 0)
        aml_byte(a, AML_ZERO_OP);
    else if (v == 1)
        aml_byte(a, AML_ONE_OP);
    else if (v == UINT64_MAX)
        aml_byte(a, AML_ONES_OP);
    else if (v <= 0xff) {
        aml_byte(a, AML_BYTE_PREFIX);
        aml_le(a, v, 1);
    } else if (v <= 0xffff) {
        aml_byte(a, AML_WORD_PREFIX);
        aml_le(a, v, 2);
    } else if (v <= 0xffffffff) {
        aml_byte(a, AML_DWORD_PREFIX);
        aml_le(a, v, 4);
    } else {
        aml_byte(a, AML_QWORD_PREFIX);
        aml_le(a, v, 8);
    }
}

void aml_string(struct aml *a, const char *s)
{
    for (const char *c = s; *c; c++) {
        if ((unsigned char)*c > 0x7f) { /* AsciiCharList is 0x01-0x7f */
            a->error = true;
            return;
        }
    }
    aml_byte(a, AML_STRING_PREFIX);
    aml_bytes(a, s, strlen(s) + 1);
}

static bool eisa_letter(char c)
{
    return c >= 'A' && c <= 'Z';
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void aml_eisaid(struct aml *a, const char *id)
{
    /* Three letters in 5 bits each ('A' = 1), then four hex digits; stored
     * big-endian in a DWord, so the byte sequence reads in id order. */
    if (strlen(id) != 7 || !eisa_letter(id[0]) || !eisa_letter(id[1]) || !eisa_letter(id[2])) {
        a->error = true;
        return;
    }
    uint32_t v = (uint32_t)(id[0] - '@') << 26 | (uint32_t)(id[1] - '@') << 21 |
                 (uint32_t)(id[2] - '@') << 16;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(id[3 + i]);
        if (d < 0) {
            a->error = true;
            return;
        }
        v |= (uint32_t)d << (12 - 4 * i);
    }
    aml_byte(a, AML_DWORD_PREFIX);
    aml_le(a, __builtin_bswap32(v), 4);
}

static bool name_lead_char(char c)
{
    return (c >= 'A' && c <= 'Z') || c == '_';
}

static bool name_char(char c)
{
    return name_lead_char(c) || (c >= '0' && c <= '9');
}

void aml_name_string(struct aml *a, const char *path)
{
    const char *p = path;
    if (*p == '\\')
        aml_byte(a, *p++);
    else
        while (*p == '^')
            aml_byte(a, *p++);

    /* Split into NameSegs of 1-4 chars, padded with '_'. */
    uint8_t segs[255][4];
    unsigned n = 0;
    while (*p) {
        size_t len = strcspn(p, ".");
        if (len == 0 || len > 4 || n == ARRAY_SIZE(segs) || !name_lead_char(p[0])) {
            a->error = true;
            return;
        }
        for (size_t i = 0; i < 4; i++) {
            char c = i < len ? p[i] : '_';
            if (!name_char(c)) {
                a->error = true;
                return;
            }
            segs[n][i] = (uint8_t)c;
        }
        n++;
        p += len;
        if (*p == '.' && *++p == '\0') { /* trailing dot */
            a->error = true;
            return;
        }
    }
    if (n == 0)
        aml_byte(a, 0x00); /* NullName */
    else if (n == 2)
        aml_byte(a, AML_DUAL_NAME_PREFIX);
    else if (n > 2) {
        aml_byte(a, AML_MULTI_NAME_PREFIX);
        aml_byte(a, (uint8_t)n);
    }
    aml_bytes(a, segs, n * 4);
}

void aml_name(struct aml *a, const char *name)
{
    aml_byte(a, AML_NAME_OP);
    aml_name_string(a, name);
}

void aml_name_integer(struct aml *a, const char *name, uint64_t v)
{
    aml_name(a, name);
    aml_integer(a, v);
}

void aml_name_string_value(struct aml *a, const char *name, const char *s)
{
    aml_name(a, name);
    aml_string(a, s);
}

void aml_name_eisaid(struct aml *a, const char *name, const char *id)
{
    aml_name(a, name);
    aml_eisaid(a, id);
}

size_t aml_scope_begin(struct aml *a, const char *name)
{
    aml_byte(a, AML_SCOPE_OP);
    size_t mark = a->len;
    aml_name_string(a, name);
    return mark;
}

size_t aml_device_begin(struct aml *a, const char *name)
{
    aml_byte(a, AML_EXT_OP_PREFIX);
    aml_byte(a, AML_DEVICE_OP);
    size_t mark = a->len;
    aml_name_string(a, name);
    return mark;
}

size_t aml_method_begin(struct aml *a, const char *name, unsigned nargs, bool serialized)
{
    aml_byte(a, AML_METHOD_OP);
    size_t mark = a->len;
    aml_name_string(a, name);
    if (nargs > 7)
        a->error = true;
    /* MethodFlags: bits 0-2 ArgCount, bit 3 SerializeFlag, bits 4-7 SyncLevel 0. */
    aml_byte(a, (uint8_t)((nargs & 7) | (serialized ? 0x08 : 0)));
    return mark;
}

size_t aml_package_begin(struct aml *a, unsigned nelems)
{
    aml_byte(a, AML_PACKAGE_OP);
    size_t mark = a->len;
    if (nelems > 255)
        a->error = true;
    aml_byte(a, (uint8_t)nelems);
    return mark;
}

void aml_end(struct aml *a, size_t mark)
{
    uint8_t pkg[4];
    if (mark > a->len) {
        a->error = true;
        return;
    }
    unsigned n = aml_pkglength_encode(a->len - mark, pkg);
    if (n == 0) {
        a->error = true;
        return;
    }
    aml_insert(a, mark, pkg, n);
}

size_t aml_buffer_begin(struct aml *a)
{
    aml_byte(a, AML_BUFFER_OP);
    return a->len;
}

void aml_buffer_end(struct aml *a, size_t mark)
{
    if (mark > a->len) {
        a->error = true;
        return;
    }
    /* BufferSize is a TermArg in front of the bytes: encode it separately
     * and slide it in, then the PkgLength around both. */
    struct aml size;
    aml_init(&size);
    aml_integer(&size, a->len - mark);
    aml_insert(a, mark, size.data, size.len);
    aml_free(&size);
    aml_end(a, mark);
}

void aml_return(struct aml *a)
{
    aml_byte(a, AML_RETURN_OP);
}

size_t aml_restemplate_begin(struct aml *a)
{
    return aml_buffer_begin(a);
}

void aml_restemplate_end(struct aml *a, size_t mark)
{
    if (mark > a->len) {
        a->error = true;
        return;
    }
    /* End tag; its checksum byte makes the descriptors sum to zero. */
    aml_byte(a, RES_END_TAG);
    uint8_t sum = 0;
    for (size_t i = mark; i < a->len; i++)
        sum += a->data[i];
    aml_byte(a, (uint8_t)-sum);
    aml_buffer_end(a, mark);
}

void aml_res_io(struct aml *a, uint16_t min, uint16_t max, uint8_t align, uint8_t len)
{
    aml_byte(a, RES_IO);
    aml_byte(a, 0x01); /* decodes 16 address bits */
    aml_le(a, min, 2);
    aml_le(a, max, 2);
    aml_byte(a, align);
    aml_byte(a, len);
}

void aml_res_irq(struct aml *a, uint16_t mask)
{
    aml_byte(a, RES_IRQ_NOFLAGS);
    aml_le(a, mask, 2);
}

void aml_res_mem32_fixed(struct aml *a, uint32_t base, uint32_t len, bool writable)
{
    aml_byte(a, RES_MEM32_FIXED);
    aml_le(a, 9, 2);
    aml_byte(a, writable ? 1 : 0);
    aml_le(a, base, 4);
    aml_le(a, len, 4);
}

/* Word/DWord/QWord Address Space descriptors share one shape: granularity,
 * min, max, translation, length, each `width` bytes. */
static void aml_res_addr(struct aml *a, uint8_t tag, unsigned width, uint8_t type,
                         uint8_t type_flags, uint64_t min, uint64_t max)
{
    aml_byte(a, tag);
    aml_le(a, 3 + 5 * width, 2);
    aml_byte(a, type);
    aml_byte(a, RES_FLAGS_WINDOW);
    aml_byte(a, type_flags);
    aml_le(a, 0, width);             /* granularity */
    aml_le(a, min, width);
    aml_le(a, max, width);
    aml_le(a, 0, width);             /* translation offset */
    aml_le(a, max - min + 1, width); /* length */
}

void aml_res_word_bus(struct aml *a, uint16_t min, uint16_t max)
{
    aml_res_addr(a, RES_WORD_ADDR, 2, RES_TYPE_BUS, 0, min, max);
}

void aml_res_word_io(struct aml *a, uint16_t min, uint16_t max)
{
    aml_res_addr(a, RES_WORD_ADDR, 2, RES_TYPE_IO, 0x03 /* EntireRange */, min, max);
}

/* Memory type flags: bit 0 read-write, bits 1-2 1 = cacheable, 0 = not. */
void aml_res_dword_mem(struct aml *a, uint32_t min, uint32_t max, bool cacheable)
{
    aml_res_addr(a, RES_DWORD_ADDR, 4, RES_TYPE_MEM, cacheable ? 0x03 : 0x01, min, max);
}

void aml_res_qword_mem(struct aml *a, uint64_t min, uint64_t max, bool cacheable)
{
    aml_res_addr(a, RES_QWORD_ADDR, 8, RES_TYPE_MEM, cacheable ? 0x03 : 0x01, min, max);
}
