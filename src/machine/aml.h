/* A small ACPI Machine Language (AML) byte-code builder, enough for a
 * static DSDT: names, integers, strings, EISA IDs, packages, buffers and
 * resource templates, scopes, devices and methods (ACPI 6.x, chapter 20).
 *
 * Objects that carry a PkgLength are built open/close: *_begin() returns a
 * mark, the body is appended, aml_end() (or aml_buffer_end()) inserts the
 * PkgLength in front of it. Misuse (a bad name, an unbalanced mark) sets
 * aml.error instead of writing bad bytes; check it once at the end. */
#ifndef EMBER_MACHINE_AML_H
#define EMBER_MACHINE_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aml {
    uint8_t *data;
    size_t len, cap;
    bool error;
};

void aml_init(struct aml *a);
void aml_free(struct aml *a);
void aml_bytes(struct aml *a, const void *p, size_t n);
void aml_byte(struct aml *a, uint8_t b);

/* Bytes PkgLength takes to encode a body of body_len bytes (1..4, 0 if too big),
 * and the encoding itself (returns the bytes written to out[4]). */
unsigned aml_pkglength_size(size_t body_len);
unsigned aml_pkglength_encode(size_t body_len, uint8_t out[4]);

/* Data objects. */
void aml_integer(struct aml *a, uint64_t v);     /* shortest: Zero/One/Ones/Byte/Word/DWord/QWord */
void aml_string(struct aml *a, const char *s);   /* StringPrefix ... NUL */
void aml_eisaid(struct aml *a, const char *id);  /* "PNP0A03" -> compressed DWord */
void aml_name_string(struct aml *a, const char *path); /* "\\_SB.PCI0", "^FOO", "_HID" */

/* Name(name, <value>): emits NameOp + name; the caller appends the value. */
void aml_name(struct aml *a, const char *name);
void aml_name_integer(struct aml *a, const char *name, uint64_t v);
void aml_name_string_value(struct aml *a, const char *name, const char *s);
void aml_name_eisaid(struct aml *a, const char *name, const char *id);

/* PkgLength-carrying objects. */
size_t aml_scope_begin(struct aml *a, const char *name);
size_t aml_device_begin(struct aml *a, const char *name);
size_t aml_method_begin(struct aml *a, const char *name, unsigned nargs, bool serialized);
size_t aml_package_begin(struct aml *a, unsigned nelems);
void aml_end(struct aml *a, size_t mark);
size_t aml_buffer_begin(struct aml *a);
void aml_buffer_end(struct aml *a, size_t mark); /* also inserts BufferSize */
void aml_return(struct aml *a);                  /* ReturnOp; append the value after */

/* ResourceTemplate(): a Buffer of resource descriptors closed by an end tag. */
size_t aml_restemplate_begin(struct aml *a);
void aml_restemplate_end(struct aml *a, size_t mark);
void aml_res_io(struct aml *a, uint16_t min, uint16_t max, uint8_t align, uint8_t len);
void aml_res_irq(struct aml *a, uint16_t mask); /* IRQNoFlags: edge, active-high */
void aml_res_mem32_fixed(struct aml *a, uint32_t base, uint32_t len, bool writable);
void aml_res_word_bus(struct aml *a, uint16_t min, uint16_t max);
void aml_res_word_io(struct aml *a, uint16_t min, uint16_t max);
void aml_res_dword_mem(struct aml *a, uint32_t min, uint32_t max, bool cacheable);
void aml_res_qword_mem(struct aml *a, uint64_t min, uint64_t max, bool cacheable);

#endif
