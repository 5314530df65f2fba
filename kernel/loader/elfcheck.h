/* elfcheck.h -- refusing what cannot be a loadable plugin, before any of its
 * code runs: reads the ELF image from memory, never maps or executes it. */
#ifndef A4PS_ELFCHECK_H
#define A4PS_ELFCHECK_H

#include <stddef.h>

/* 0 when buf/len is an ELF shared object for this machine, class and byte
 * order whose dynamic symbol table defines `entry` as a global function;
 * otherwise -1 with "field: reason" in why. */
int elf_check(const unsigned char *buf, size_t len, const char *entry,
              char *why, size_t whylen);

/* Does the file import (leave undefined in .dynsym) something that starts
 * a thread or a process -- pthread_create, clone, fork, posix_spawn*, ... --
 * or looks symbols up (dlsym, dlopen), through which it could reach them?
 * 1 with the first such name in sym, 0 if none, -1 if the table is
 * malformed.  For a file elf_check accepted. */
int elf_thread_import(const unsigned char *buf, size_t len, char *sym, size_t symlen);

#endif
