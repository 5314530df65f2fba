/* sha256.c -- a binary's identity and its bytes, one way for the kernel and
 * what links it (a4psd, a4ps-probe): SHA-256 of a buffer or a file, reading
 * a whole file, and opening a file only if it is a regular one. */
#define _GNU_SOURCE              /* O_PATH */
#include "kernel.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void to_hex(const unsigned char md[32], char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = 0;
}

static const char *file_kind(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO (named pipe)" :
           S_ISSOCK(m) ? "a socket" : S_ISCHR(m) ? "a character device" :
           S_ISBLK(m) ? "a block device" : S_ISLNK(m) ? "a symbolic link" :
           "of an unknown kind";
}

/* Files dropped where a4psd reads them are not trusted to be files: a FIFO
 * would block the reader for ever and a device may act on being opened.  An
 * O_PATH descriptor opens neither, so the kind is known before the real
 * open; the second fstat catches a file swapped in between. */
int kernel_open_regular(const char *path, bool nofollow, struct stat *st, char *err,
                        size_t errlen)
{
    int nf = nofollow ? O_NOFOLLOW : 0;
    struct stat a;
    int pfd = open(path, O_PATH | O_CLOEXEC | nf);
    if (pfd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open: %s", strerror(e));
        errno = e;
        return -1;
    }
    int rc = fstat(pfd, &a);
    int e = errno;
    close(pfd);
    if (rc != 0) {
        snprintf(err, errlen, "cannot stat: %s", strerror(e));
        errno = e;
        return -1;
    }
    if (!S_ISREG(a.st_mode)) {
        snprintf(err, errlen, "%s, not a regular file", file_kind(a.st_mode));
        errno = EINVAL;
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | nf);
    if (fd < 0) {
        e = errno;
        snprintf(err, errlen, "cannot open: %s", strerror(e));
        errno = e;
        return -1;
    }
    if (fstat(fd, st) != 0) {
        e = errno;
        close(fd);
        snprintf(err, errlen, "cannot stat: %s", strerror(e));
        errno = e;
        return -1;
    }
    if (!S_ISREG(st->st_mode) || st->st_dev != a.st_dev || st->st_ino != a.st_ino) {
        close(fd);
        snprintf(err, errlen, "replaced while it was opened (now %s)",
                 S_ISREG(st->st_mode) ? "another file" : file_kind(st->st_mode));
        errno = EINVAL;
        return -1;
    }
    return fd;
}

void kernel_sha256(const void *buf, size_t len, unsigned char out[32], char hex[65])
{
    unsigned char md[32];
    unsigned int n = 32;
    EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL);
    if (out)
        memcpy(out, md, 32);
    if (hex)
        to_hex(md, hex);
}

int kernel_sha256_file(const char *path, size_t max, char hex[65], char *err, size_t errlen)
{
    struct stat st;
    char why[256];
    int fd = kernel_open_regular(path, false, &st, why, sizeof why);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        return -1;
    }
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(c);
        close(fd);
        snprintf(err, errlen, "%s: cannot hash: out of memory", path);
        return -1;
    }
    unsigned char buf[65536];
    size_t total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (total += (size_t)n) > max)
            break;
        EVP_DigestUpdate(c, buf, (size_t)n);
    }
    int e = errno;
    close(fd);
    unsigned char md[32];
    unsigned int mdlen = 32;
    EVP_DigestFinal_ex(c, md, &mdlen);
    EVP_MD_CTX_free(c);
    if (n != 0) {
        snprintf(err, errlen, "%s: %s", path,
                 n < 0 ? strerror(e) : "larger than the limit for a plugin");
        return -1;
    }
    to_hex(md, hex);
    return 0;
}

int kernel_read_file(const char *path, size_t max, void **out, size_t *len)
{
    struct stat st;
    char why[256];
    int fd = kernel_open_regular(path, false, &st, why, sizeof why);
    if (fd < 0)
        return errno == EINVAL ? -EFBIG : -errno;
    if ((size_t)st.st_size > max) {
        close(fd);
        return -EFBIG;
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    size_t got = 0;
    while (buf && got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (!buf || got != size) {
        free(buf);
        return buf ? -EIO : -ENOMEM;     /* it shrank while we read */
    }
    buf[got] = 0;
    *out = buf;
    *len = got;
    return 0;
}
