/* elfcheck.c -- bounds-checked reading of an ELF header and its .dynsym.
 *
 * Every offset and size read from the file is checked against the buffer
 * before use: the file is untrusted and may be truncated or crafted. */
#include "elfcheck.h"

#include <elf.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if defined(__x86_64__)
#define HOST_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define HOST_MACHINE EM_AARCH64
#elif defined(__i386__)
#define HOST_MACHINE EM_386
#elif defined(__arm__)
#define HOST_MACHINE EM_ARM
#elif defined(__riscv)
#define HOST_MACHINE EM_RISCV
#elif defined(__powerpc64__)
#define HOST_MACHINE EM_PPC64
#elif defined(__s390x__)
#define HOST_MACHINE EM_S390
#else
#error "elfcheck: unknown host machine"
#endif

#if UINTPTR_MAX == 0xffffffffffffffffu
#define HOST_CLASS ELFCLASS64
typedef Elf64_Ehdr Ehdr;
typedef Elf64_Shdr Shdr;
typedef Elf64_Sym Sym;
#define ST_BIND ELF64_ST_BIND
#define ST_TYPE ELF64_ST_TYPE
#define ST_VIS ELF64_ST_VISIBILITY
#else
#define HOST_CLASS ELFCLASS32
typedef Elf32_Ehdr Ehdr;
typedef Elf32_Shdr Shdr;
typedef Elf32_Sym Sym;
#define ST_BIND ELF32_ST_BIND
#define ST_TYPE ELF32_ST_TYPE
#define ST_VIS ELF32_ST_VISIBILITY
#endif

#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_DATA ELFDATA2MSB
#else
#define HOST_DATA ELFDATA2LSB
#endif

static const char *machine_name(unsigned m)
{
    switch (m) {
    case EM_X86_64: return "x86-64";
    case EM_386: return "i386";
    case EM_AARCH64: return "aarch64";
    case EM_ARM: return "arm";
    case EM_RISCV: return "riscv";
    case EM_PPC64: return "ppc64";
    case EM_S390: return "s390";
    default: return "unknown";
    }
}

static int in_bounds(size_t len, uint64_t off, uint64_t size)
{
    return off <= len && size <= len - off;
}

/* What starts a thread or a process, or finds a symbol that does (a
 * lookup reaches pthread_create as well as a direct import does).  A name
 * ending in '*' is a prefix. */
static const char *const thread_imports[] = {
    "pthread_create", "pthread_exit", "thrd_create", "thrd_exit",
    "clone", "clone3", "__clone", "fork", "vfork", "_Fork", "__fork",
    "posix_spawn*", "system", "popen",
    "timer_create",              /* SIGEV_THREAD runs a thread */
    "mq_notify", "aio_*", "lio_listio", "lio_listio64", "getaddrinfo_a",
    "dlopen", "dlmopen", "dlsym", "dlvsym",
    NULL,
};

static const char *thread_import_match(const char *nm)
{
    for (const char *const *p = thread_imports; *p; p++) {
        size_t n = strlen(*p);
        if ((*p)[n - 1] == '*' ? strncmp(nm, *p, n - 1) == 0 : strcmp(nm, *p) == 0)
            return *p;
    }
    return NULL;
}

/* The section headers of a file elf_check accepted (or NULL). */
static const unsigned char *section_headers(const unsigned char *buf, size_t len, Ehdr *eh)
{
    if (len < sizeof(Ehdr))
        return NULL;
    memcpy(eh, buf, sizeof *eh);
    if (eh->e_shentsize != sizeof(Shdr) || eh->e_shnum == 0 ||
        !in_bounds(len, eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(Shdr)))
        return NULL;
    return buf + eh->e_shoff;
}

int elf_thread_import(const unsigned char *buf, size_t len, char *sym, size_t symlen)
{
    Ehdr eh;
    const unsigned char *sh = section_headers(buf, len, &eh);
    if (!sh)
        return -1;
    for (unsigned i = 0; i < eh.e_shnum; i++) {
        Shdr s, str;
        memcpy(&s, sh + (size_t)i * sizeof s, sizeof s);
        if (s.sh_type != SHT_DYNSYM)
            continue;
        if (s.sh_entsize != sizeof(Sym) || !in_bounds(len, s.sh_offset, s.sh_size) ||
            s.sh_link >= eh.e_shnum)
            return -1;
        memcpy(&str, sh + (size_t)s.sh_link * sizeof str, sizeof str);
        if (!in_bounds(len, str.sh_offset, str.sh_size) || str.sh_size == 0)
            return -1;
        const char *strtab = (const char *)buf + str.sh_offset;
        size_t n = s.sh_size / sizeof(Sym);
        for (size_t j = 0; j < n; j++) {
            Sym sym_;
            memcpy(&sym_, buf + s.sh_offset + j * sizeof sym_, sizeof sym_);
            if (sym_.st_shndx != SHN_UNDEF || sym_.st_name >= str.sh_size)
                continue;
            const char *nm = strtab + sym_.st_name;
            size_t max = str.sh_size - sym_.st_name;
            if (strnlen(nm, max) == max || !thread_import_match(nm))
                continue;
            snprintf(sym, symlen, "%s", nm);
            return 1;
        }
    }
    return 0;
}

int elf_check(const unsigned char *buf, size_t len, const char *entry,
              char *why, size_t whylen)
{
    if (len < EI_NIDENT || memcmp(buf, ELFMAG, SELFMAG) != 0) {
        snprintf(why, whylen, "header: not an ELF file (no \\x7fELF magic)");
        return -1;
    }
    if (buf[EI_CLASS] != HOST_CLASS) {
        snprintf(why, whylen, "e_ident[EI_CLASS]: %d-bit ELF, this kernel loads %d-bit",
                 buf[EI_CLASS] == ELFCLASS32 ? 32 : buf[EI_CLASS] == ELFCLASS64 ? 64 : 0,
                 HOST_CLASS == ELFCLASS64 ? 64 : 32);
        return -1;
    }
    if (buf[EI_DATA] != HOST_DATA) {
        snprintf(why, whylen, "e_ident[EI_DATA]: byte order differs from this machine's");
        return -1;
    }
    if (len < sizeof(Ehdr)) {
        snprintf(why, whylen, "header: truncated (%zu bytes, ELF header needs %zu)",
                 len, sizeof(Ehdr));
        return -1;
    }
    Ehdr eh;
    memcpy(&eh, buf, sizeof eh);
    if (eh.e_machine != HOST_MACHINE) {
        snprintf(why, whylen, "e_machine: built for %s (%u), this machine is %s",
                 machine_name(eh.e_machine), eh.e_machine, machine_name(HOST_MACHINE));
        return -1;
    }
    if (eh.e_type != ET_DYN) {
        snprintf(why, whylen, "e_type: not a shared object (type %u%s)", eh.e_type,
                 eh.e_type == ET_EXEC ? ", an executable" : eh.e_type == ET_REL ? ", an object file" : "");
        return -1;
    }
    if (eh.e_shentsize != sizeof(Shdr) || eh.e_shnum == 0 ||
        !in_bounds(len, eh.e_shoff, (uint64_t)eh.e_shnum * sizeof(Shdr))) {
        snprintf(why, whylen, "section headers: missing or beyond the end of the file "
                 "(truncated?)");
        return -1;
    }
    const unsigned char *sh = buf + eh.e_shoff;
    int found_dynsym = 0;
    for (unsigned i = 0; i < eh.e_shnum; i++) {
        Shdr s;
        memcpy(&s, sh + (size_t)i * sizeof s, sizeof s);
        if (s.sh_type != SHT_DYNSYM)
            continue;
        found_dynsym = 1;
        if (s.sh_entsize != sizeof(Sym) || !in_bounds(len, s.sh_offset, s.sh_size) ||
            s.sh_link >= eh.e_shnum) {
            snprintf(why, whylen, ".dynsym: malformed or truncated");
            return -1;
        }
        Shdr str;
        memcpy(&str, sh + (size_t)s.sh_link * sizeof str, sizeof str);
        if (!in_bounds(len, str.sh_offset, str.sh_size) || str.sh_size == 0) {
            snprintf(why, whylen, ".dynstr: malformed or truncated");
            return -1;
        }
        const char *strtab = (const char *)buf + str.sh_offset;
        size_t n = s.sh_size / sizeof(Sym);
        for (size_t j = 0; j < n; j++) {
            Sym sym;
            memcpy(&sym, buf + s.sh_offset + j * sizeof sym, sizeof sym);
            if (sym.st_name >= str.sh_size)
                continue;
            const char *nm = strtab + sym.st_name;
            size_t max = str.sh_size - sym.st_name;
            if (strnlen(nm, max) == max || strcmp(nm, entry) != 0)
                continue;
            if (sym.st_shndx == SHN_UNDEF) {
                snprintf(why, whylen, "%s: referenced but not defined", entry);
                return -1;
            }
            if (ST_TYPE(sym.st_info) != STT_FUNC ||
                (ST_BIND(sym.st_info) != STB_GLOBAL && ST_BIND(sym.st_info) != STB_WEAK) ||
                ST_VIS(sym.st_other) != STV_DEFAULT) {
                snprintf(why, whylen, "%s: not an exported function", entry);
                return -1;
            }
            return 0;
        }
    }
    if (!found_dynsym)
        snprintf(why, whylen, ".dynsym: no dynamic symbol table");
    else
        snprintf(why, whylen, "%s: entry symbol missing from the dynamic symbol table "
                 "(built with -fvisibility=hidden and no A4PS_EXPORT?)", entry);
    return -1;
}
