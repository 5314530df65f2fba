/* sha256.c -- a binary's identity and its bytes, one way for the kernel and
 * what links it (a4psd, a4ps-probe): SHA-256 of a buffer or a file, and
 * reading a whole file. */
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
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
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
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
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
