/* babs.c -- BABS, the researcher persona: notes kept in the proto's state,
 * recalled by keywords, ranked.
 *
 * One source, two versions:
 *   1.0.0 (default)   state layout 1: note n is key "note:<n>" = its text;
 *                     recall replies "#n (k of m keywords): text".
 *   2.0.0 (BABS_V2)   state layout 2: note n is key "n:<n>" =
 *                     "<unix seconds, or 0 when unknown>\t<text>";
 *                     recall replies "#n [score 0.67]: text" (k/m).
 * Both keep the next note number in "next" (decimal).  Each version's migrate
 * hook converts the other layout into its own, so a swap 1 -> 2 and a
 * rollback 2 -> 1 both keep every note (a note's time is lost going back).
 *
 * Ranking: a note's score is how many distinct query keywords occur in it as
 * whole words (case-insensitive; words are runs of letters, digits and
 * non-ASCII bytes; a small stopword list is ignored); ties go to the newer
 * note; the top five with a score above zero are listed.
 *
 * Needs state_list (ABI minor 1): a host without it gets a clear error from
 * the methods that walk the notes.
 *
 * Global state: one mutex, making remember's read-modify-write of "next"
 * atomic for every proto of this generation.  Uses abi/a4ps.h and libc. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "a4ps.h"
#include "persona.h"

#ifdef BABS_V2
#define BABS_VERSION "2.0.0"
#define BABS_LAYOUT 2u
#define NOTE_PREFIX "n:"
#else
#define BABS_VERSION "1.0.0"
#define BABS_LAYOUT 1u
#define NOTE_PREFIX "note:"
#endif

#define V1_PREFIX "note:"
#define V2_PREFIX "n:"
#define NEXT_KEY "next"
#define NOTE_MAX 4096u           /* bytes of one note */
#define QUERY_MAX 4096u
#define QUERY_MAX_WORDS 32
#define WORD_MAX 64
#define TOP_HITS 5

static const a4ps_plugin babs_plugin;

/* remember reads "next", then writes the note and "next": two callers of one
 * proto must not take the same number. */
static pthread_mutex_t next_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const stopwords[] = {
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does",
    "for", "from", "how", "i", "in", "is", "it", "me", "my", "of", "on", "or",
    "that", "the", "this", "to", "was", "we", "were", "what", "when", "where",
    "which", "who", "why", "with", "you",
};

static bool has_state_list(a4ps_ctx *ctx)
{
    return A4PS_HOST_HAS(ctx->api, state_list);
}

static int no_state_list(a4ps_ctx *ctx)
{
    return reply_text(ctx, A4PS_ENOSYS, "babs needs a host with state_list (ABI 1.1 or later)");
}

/* A malloc'd, NUL-terminated copy of the value of key (its length in *len),
 * or NULL with *rc set (A4PS_ENOENT, A4PS_ENOMEM, ...). */
static char *get_dup(a4ps_ctx *ctx, const char *key, size_t *len, int *rc)
{
    for (;;) {
        int64_t n = a4ps_get(ctx, key, NULL, 0);
        if (n < 0) {
            *rc = (int)n;
            return NULL;
        }
        char *buf = malloc((size_t)n + 1);
        if (!buf) {
            *rc = A4PS_ENOMEM;
            return NULL;
        }
        int64_t m = a4ps_get(ctx, key, buf, (size_t)n);
        if (m == n) {
            buf[n] = '\0';
            if (len)
                *len = (size_t)n;
            *rc = A4PS_OK;
            return buf;
        }
        free(buf);
        if (m < 0) {
            *rc = (int)m;
            return NULL;
        }
        /* The value changed size between the calls: read it again. */
    }
}

/* Parse a note number: decimal digits only, 1 .. UINT32_MAX. */
static bool parse_number(const char *s, size_t n, unsigned long *out)
{
    if (n == 0 || n > 10)
        return false;
    unsigned long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v == 0 || v > UINT32_MAX)
        return false;
    *out = v;
    return true;
}

static unsigned long read_next(a4ps_ctx *ctx)
{
    char buf[16];
    int64_t n = a4ps_get(ctx, NEXT_KEY, buf, sizeof buf);
    unsigned long v;
    if (n <= 0 || n >= (int64_t)sizeof buf || !parse_number(buf, (size_t)n, &v))
        return 1;
    return v;
}

/* ---- walking the notes ---- */

typedef struct keylist {
    char **keys;
    size_t n, cap;
    const char *prefix;
    bool oom;
} keylist;

static int collect_key(void *arg, const char *key, size_t value_len)
{
    keylist *kl = arg;
    size_t pl = strlen(kl->prefix);
    unsigned long num;
    if (strncmp(key, kl->prefix, pl) != 0 || !parse_number(key + pl, strlen(key + pl), &num))
        return 0;
    if (kl->n == kl->cap) {
        size_t cap = kl->cap ? kl->cap * 2 : 32;
        char **k = realloc(kl->keys, cap * sizeof *k);
        if (!k) {
            kl->oom = true;
            return 1;
        }
        kl->keys = k;
        kl->cap = cap;
    }
    if (!(kl->keys[kl->n] = strdup(key))) {
        kl->oom = true;
        return 1;
    }
    kl->n++;
    return 0;
}

static void keylist_free(keylist *kl)
{
    for (size_t i = 0; i < kl->n; i++)
        free(kl->keys[i]);
    free(kl->keys);
}

/* Every key "<prefix><n>" of the calling proto. */
static int list_notes(a4ps_ctx *ctx, const char *prefix, keylist *kl)
{
    memset(kl, 0, sizeof *kl);
    kl->prefix = prefix;
    int rc = ctx->api->state_list(ctx, collect_key, kl);
    if (rc == A4PS_OK && kl->oom)
        rc = A4PS_ENOMEM;
    if (rc != A4PS_OK)
        keylist_free(kl);
    return rc;
}

static unsigned long key_number(const char *key, const char *prefix)
{
    return strtoul(key + strlen(prefix), NULL, 10);
}

/* The text of a stored note value in this version's layout (layout 2 values
 * carry "<time>\t" first). */
static const char *note_text(const char *value)
{
#ifdef BABS_V2
    const char *tab = strchr(value, '\t');
    return tab ? tab + 1 : value;
#else
    return value;
#endif
}

/* ---- words ---- */

static bool is_word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c >= 0x80;
}

static bool is_stopword(const char *w)
{
    for (size_t i = 0; i < sizeof stopwords / sizeof stopwords[0]; i++)
        if (strcmp(w, stopwords[i]) == 0)
            return true;
    return false;
}

/* Next word of s[*i..n) into out (lower case, cut at WORD_MAX bytes); false
 * at the end of the text. */
static bool next_word(const char *s, size_t n, size_t *i, char *out)
{
    size_t j = *i;
    while (j < n && !is_word_byte((unsigned char)s[j]))
        j++;
    if (j >= n) {
        *i = j;
        return false;
    }
    size_t len = 0;
    for (; j < n && is_word_byte((unsigned char)s[j]); j++) {
        unsigned char c = (unsigned char)s[j];
        if (len < WORD_MAX)
            out[len++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    out[len] = '\0';
    *i = j;
    return true;
}

/* Does text contain w as a whole word? */
static bool has_word(const char *text, const char *w)
{
    char word[WORD_MAX + 1];
    size_t i = 0, n = strlen(text);
    while (next_word(text, n, &i, word))
        if (strcmp(word, w) == 0)
            return true;
    return false;
}

/* ---- methods ---- */

static int babs_remember(a4ps_ctx *ctx, const void *msg, size_t len)
{
    const char *s = msg;
    while (len && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n' ||
                   s[len - 1] == '\r'))
        len--;
    if (len == 0)
        return reply_text(ctx, A4PS_EINVAL, "remember: the note is empty");
    if (len > NOTE_MAX) {
        char out[96];
        snprintf(out, sizeof out, "remember: the note is %zu bytes; the limit is %u", len,
                 NOTE_MAX);
        return reply_text(ctx, A4PS_EINVAL, out);
    }
    if (memchr(s, '\0', len))
        return reply_text(ctx, A4PS_EINVAL, "remember: the note contains a NUL byte");

#ifdef BABS_V2
    char stamp[24];
    int sl = snprintf(stamp, sizeof stamp, "%lld\t", (long long)time(NULL));
    size_t vlen = (size_t)sl + len;
    char *value = malloc(vlen);
    if (!value)
        return reply_text(ctx, A4PS_ENOMEM, "remember: out of memory");
    memcpy(value, stamp, (size_t)sl);
    memcpy(value + sl, s, len);
#else
    const char *value = s;
    size_t vlen = len;
#endif

    pthread_mutex_lock(&next_lock);
    unsigned long n = read_next(ctx);
    char key[32], next[16];
    snprintf(key, sizeof key, NOTE_PREFIX "%lu", n);
    int nl = snprintf(next, sizeof next, "%lu", n + 1);
    int rc = a4ps_set(ctx, key, value, vlen);
    if (rc == A4PS_OK)
        rc = a4ps_set(ctx, NEXT_KEY, next, (size_t)nl);
    pthread_mutex_unlock(&next_lock);
#ifdef BABS_V2
    free(value);
#endif
    if (rc != A4PS_OK)
        return reply_text(ctx, rc, "remember: cannot write the note to the proto's state");
    char out[32];
    snprintf(out, sizeof out, "noted #%lu", n);
    return reply_text(ctx, A4PS_OK, out);
}

typedef struct hit {
    unsigned long n;
    unsigned k;
    char *text;
} hit;

static int cmp_hit(const void *a, const void *b)
{
    const hit *x = a, *y = b;
    if (x->k != y->k)
        return x->k > y->k ? -1 : 1;
    return x->n > y->n ? -1 : x->n < y->n ? 1 : 0;
}

/* One line of recall's reply; newlines in a note are shown as spaces so each
 * hit stays on its line. */
static int reply_hit(a4ps_ctx *ctx, bool first, const hit *h, unsigned m)
{
    char head[64];
#ifdef BABS_V2
    snprintf(head, sizeof head, "%s#%lu [score %.2f]: ", first ? "" : "\n", h->n,
             (double)h->k / (double)m);
#else
    snprintf(head, sizeof head, "%s#%lu (%u of %u keyword%s): ", first ? "" : "\n", h->n, h->k,
             m, m == 1 ? "" : "s");
#endif
    int rc = first ? a4ps_reply(ctx, head, strlen(head))
                   : a4ps_reply_append(ctx, head, strlen(head));
    for (char *p = h->text; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    if (rc == A4PS_OK)
        rc = a4ps_reply_append(ctx, h->text, strlen(h->text));
    return rc;
}

static int babs_recall(a4ps_ctx *ctx, const void *msg, size_t len)
{
    if (!has_state_list(ctx))
        return no_state_list(ctx);
    if (len > QUERY_MAX)
        return reply_text(ctx, A4PS_EINVAL, "recall: the query is longer than 4096 bytes");

    /* The distinct keywords, in the order given. */
    char words[QUERY_MAX_WORDS][WORD_MAX + 1];
    unsigned m = 0;
    char w[WORD_MAX + 1];
    size_t i = 0;
    while (next_word(msg, len, &i, w)) {
        if (is_stopword(w))
            continue;
        bool seen = false;
        for (unsigned j = 0; j < m && !seen; j++)
            seen = strcmp(words[j], w) == 0;
        if (seen)
            continue;
        if (m == QUERY_MAX_WORDS)
            return reply_text(ctx, A4PS_EINVAL, "recall: more than 32 distinct keywords");
        memcpy(words[m++], w, sizeof w);
    }
    if (m == 0)
        return reply_text(ctx, A4PS_EINVAL,
                          "recall: no keywords (give words other than stopwords like 'the')");

    keylist kl;
    int rc = list_notes(ctx, NOTE_PREFIX, &kl);
    if (rc != A4PS_OK)
        return reply_text(ctx, rc, "recall: cannot list the proto's notes");
    hit *hits = calloc(kl.n ? kl.n : 1, sizeof *hits);
    if (!hits) {
        keylist_free(&kl);
        return reply_text(ctx, A4PS_ENOMEM, "recall: out of memory");
    }
    size_t nhits = 0;
    for (size_t j = 0; j < kl.n; j++) {
        int grc;
        char *value = get_dup(ctx, kl.keys[j], NULL, &grc);
        if (!value) {
            if (grc == A4PS_ENOENT)
                continue;        /* forgotten since the walk */
            rc = grc;
            break;
        }
        const char *text = note_text(value);
        unsigned k = 0;
        for (unsigned q = 0; q < m; q++)
            k += has_word(text, words[q]);
        if (k == 0) {
            free(value);
            continue;
        }
        hit *h = &hits[nhits++];
        h->n = key_number(kl.keys[j], NOTE_PREFIX);
        h->k = k;
        /* Keep the text only: move it to the start of its buffer. */
        memmove(value, text, strlen(text) + 1);
        h->text = value;
    }
    keylist_free(&kl);
    if (rc == A4PS_OK) {
        if (nhits == 0) {
            reply_text(ctx, A4PS_OK, "nothing matches");
        } else {
            qsort(hits, nhits, sizeof *hits, cmp_hit);
            for (size_t j = 0; j < nhits && j < TOP_HITS && rc == A4PS_OK; j++)
                rc = reply_hit(ctx, j == 0, &hits[j], m);
        }
    } else {
        reply_text(ctx, rc, "recall: cannot read the proto's notes");
    }
    for (size_t j = 0; j < nhits; j++)
        free(hits[j].text);
    free(hits);
    return rc;
}

static int babs_forget(a4ps_ctx *ctx, const void *msg, size_t len)
{
    const char *s = msg;
    while (len && (*s == ' ' || *s == '\t'))
        s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n'))
        len--;
    if (len && *s == '#')
        s++, len--;
    unsigned long n;
    if (!parse_number(s, len, &n))
        return reply_text(ctx, A4PS_EINVAL, "forget: give the number of a note, like 3 or #3");
    char key[32], out[48];
    snprintf(key, sizeof key, NOTE_PREFIX "%lu", n);
    int rc = a4ps_del(ctx, key);
    if (rc == A4PS_ENOENT) {
        snprintf(out, sizeof out, "forget: there is no note #%lu", n);
        return reply_text(ctx, A4PS_ENOENT, out);
    }
    if (rc != A4PS_OK)
        return reply_text(ctx, rc, "forget: cannot delete the note");
    snprintf(out, sizeof out, "forgot #%lu", n);
    return reply_text(ctx, A4PS_OK, out);
}

static int babs_count(a4ps_ctx *ctx, const void *msg, size_t len)
{
    if (!has_state_list(ctx))
        return no_state_list(ctx);
    keylist kl;
    int rc = list_notes(ctx, NOTE_PREFIX, &kl);
    if (rc != A4PS_OK)
        return reply_text(ctx, rc, "count: cannot list the proto's notes");
    char out[48];
    snprintf(out, sizeof out, "%zu note%s", kl.n, kl.n == 1 ? "" : "s");
    keylist_free(&kl);
    return reply_text(ctx, A4PS_OK, out);
}

static int babs_help(a4ps_ctx *ctx, const void *msg, size_t len)
{
    return persona_help(ctx, &babs_plugin);
}

/* ---- migration ---- */

/* Rewrite every note from the other layout into this one; "next" is shared
 * by both layouts and stays.  Runs on the kernel's copy of the state, so a
 * failure half way leaves the proto's real state untouched. */
static int babs_migrate(a4ps_ctx *ctx, uint32_t from)
{
    const char *from_prefix = from == 1 ? V1_PREFIX : V2_PREFIX;
    if ((from != 1 && from != 2) || from == BABS_LAYOUT) {
        ctx->api->log(ctx, A4PS_LOG_ERR, "babs %s cannot migrate from state layout %u "
                      "(it knows layouts 1 and 2, and keeps %u)", BABS_VERSION,
                      (unsigned)from, BABS_LAYOUT);
        return A4PS_EINVAL;
    }
    if (!has_state_list(ctx)) {
        ctx->api->log(ctx, A4PS_LOG_ERR, "babs migrate needs state_list (ABI 1.1)");
        return A4PS_ENOSYS;
    }
    keylist kl;
    int rc = list_notes(ctx, from_prefix, &kl);
    if (rc != A4PS_OK)
        return rc;
    for (size_t i = 0; i < kl.n && rc == A4PS_OK; i++) {
        size_t vlen;
        char *old = get_dup(ctx, kl.keys[i], &vlen, &rc);
        if (!old)
            break;
        unsigned long n = key_number(kl.keys[i], from_prefix);
        char key[32];
        snprintf(key, sizeof key, NOTE_PREFIX "%lu", n);
#ifdef BABS_V2
        /* Layout 1 kept no time: 0 says "unknown". */
        char *value = malloc(vlen + 2);
        if (!value) {
            rc = A4PS_ENOMEM;
        } else {
            value[0] = '0';
            value[1] = '\t';
            memcpy(value + 2, old, vlen);
            rc = a4ps_set(ctx, key, value, vlen + 2);
            free(value);
        }
#else
        const char *tab = memchr(old, '\t', vlen);
        const char *text = tab ? tab + 1 : old;
        rc = a4ps_set(ctx, key, text, vlen - (size_t)(text - old));
#endif
        free(old);
        if (rc == A4PS_OK)
            rc = a4ps_del(ctx, kl.keys[i]);
    }
    keylist_free(&kl);
    if (rc != A4PS_OK)
        ctx->api->log(ctx, A4PS_LOG_ERR, "babs %s: migrating notes from layout %u failed (%d)",
                      BABS_VERSION, (unsigned)from, rc);
    return rc;
}

/* ---- self-test and descriptor ---- */

static int babs_self_test(a4ps_ctx *ctx)
{
    static const char *const cases[][2] = {
        {"The Cat sat", "cat"}, {"cat-food", "food"}, {"café au lait", "café"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!has_word(cases[i][0], cases[i][1]))
            return A4PS_ERROR;
    if (has_word("concatenate", "cat") || !is_stopword("the"))
        return A4PS_ERROR;
    return A4PS_OK;
}

static const a4ps_method babs_methods[] = {
    {"remember", babs_remember, "store the text of the message as a new note; replies "
                                "'noted #n'"},
    {"recall", babs_recall, "the notes (top 5) holding most of the keywords in the message, "
                            "newest first among equals"},
    {"forget", babs_forget, "delete note n (the message is n or #n)"},
    {"count", babs_count, "how many notes are kept"},
    {"help", babs_help, "list BABS's selectors"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin babs_plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "babs",
    .version = BABS_VERSION,
    .state_version = BABS_LAYOUT,
    .kind = A4PS_KIND_PERSONA,
    .methods = babs_methods,
    .migrate = babs_migrate,
    .self_test = babs_self_test,
#ifdef BABS_V2
    .description = "BABS, the researcher: remembers notes (with their time) and recalls them "
                   "by keywords, scored",
#else
    .description = "BABS, the researcher: remembers notes and recalls them by keywords, ranked",
#endif
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &babs_plugin;
}
