/* a4ps_version.h -- the version of the A4PS plugin ABI this header describes.
 *
 * Kept apart from a4ps.h so build systems can read the numbers without
 * parsing the whole interface.  See a4ps.h for what a major and a minor
 * change mean and what the kernel does with each. */
#ifndef A4PS_VERSION_H
#define A4PS_VERSION_H

#define A4PS_ABI_MAJOR 1
#define A4PS_ABI_MINOR 3

/* "1.3" as a string, for messages and pkg-config. */
#define A4PS_ABI_STR_(x) #x
#define A4PS_ABI_STR2_(a, b) A4PS_ABI_STR_(a) "." A4PS_ABI_STR_(b)
#define A4PS_ABI_VERSION_STRING A4PS_ABI_STR2_(A4PS_ABI_MAJOR, A4PS_ABI_MINOR)

#endif
