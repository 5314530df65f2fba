/* robin.c -- ROBIN, the empath persona.
 *
 * feel scores the sentiment of a text with a word lexicon shipped here (225
 * English words scored -3..+3, AFINN style, written for A4PS) and answers with
 * a reflection that fits the score; lexicon looks one word up.
 *
 * Scoring.  Words are runs of letters, digits, apostrophes (' or U+2019) and
 * non-ASCII bytes, compared case-insensitively ("dog's" also tries "dog").
 * A negator (not, no, never, nothing, ..., any word ending in n't) flips the
 * sign of lexicon words among the next three words; an intensifier (very,
 * really, so, extremely, ...) multiplies the next word by 1.5; punctuation
 * (. , ; : ! ?) ends both.  Scores are kept in half points, so the sum is
 * exact: a score is printed as an integer or with ".5".
 *
 * Bands: score <= -5 strongly negative, < 0 negative, 0 neutral, < 5
 * positive, >= 5 strongly positive.  Each band has three reflections; the one
 * used is picked by (|half-points| + words matched) mod 3, so the same text
 * always gets the same answer.  The reflection quotes the word that weighed
 * most ("not happy" when it was negated; the first of equals).
 *
 * Uses abi/a4ps.h and libc only; no mutable global state. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "a4ps.h"
#include "persona.h"

#define FEEL_MAX_INPUT 65536u
#define WORD_MAX 32              /* longer words are in no lexicon */
#define NEGATION_WINDOW 3

static const a4ps_plugin robin_plugin;

typedef struct lex_entry {
    const char *word;
    int score;
} lex_entry;

/* Sorted by strcmp (the self-test checks), for bsearch. */
static const lex_entry lexicon[] = {
    {"abandoned", -2}, {"abuse", -3}, {"accomplished", 2}, {"ache", -2}, {"admire", 3},
    {"adore", 3}, {"afraid", -2}, {"agony", -3}, {"alarmed", -2}, {"alone", -2},
    {"amazing", 3}, {"amused", 2}, {"angry", -3}, {"anguish", -3}, {"annoyed", -2},
    {"anxious", -2}, {"appalled", -3}, {"appreciate", 2}, {"ashamed", -2}, {"awesome", 3},
    {"awful", -3}, {"awkward", -1}, {"bad", -3}, {"beautiful", 3}, {"best", 3},
    {"betrayed", -3}, {"better", 2}, {"bitter", -2}, {"bless", 2}, {"blessed", 3},
    {"bliss", 3}, {"bored", -2}, {"brave", 2}, {"brilliant", 3}, {"broken", -2},
    {"calm", 2}, {"care", 2}, {"catastrophe", -3}, {"celebrate", 3}, {"charming", 3},
    {"cheerful", 2}, {"cherish", 2}, {"comfort", 2}, {"confident", 2}, {"confused", -2},
    {"content", 2}, {"courage", 2}, {"cruel", -3}, {"cry", -2}, {"crying", -2},
    {"dead", -3}, {"defeated", -2}, {"delight", 3}, {"delighted", 3}, {"depressed", -3},
    {"despair", -3}, {"desperate", -3}, {"devastated", -3}, {"disappointed", -2},
    {"disappointing", -2}, {"disaster", -3}, {"disgusted", -3}, {"disgusting", -3},
    {"dread", -2}, {"dull", -2}, {"eager", 2}, {"ecstatic", 3}, {"embarrassed", -2},
    {"encouraged", 2}, {"energetic", 2}, {"enjoy", 2}, {"enjoyed", 2}, {"evil", -3},
    {"excellent", 3}, {"excited", 3}, {"exciting", 3}, {"exhausted", -2}, {"fail", -2},
    {"failed", -2}, {"failure", -2}, {"fantastic", 3}, {"fascinating", 3}, {"fear", -2},
    {"fond", 2}, {"free", 1}, {"friendly", 2}, {"frightened", -2}, {"frustrated", -2},
    {"frustrating", -2}, {"fun", 3}, {"funny", 2}, {"furious", -3}, {"generous", 2},
    {"gentle", 2}, {"glad", 3}, {"gloomy", -2}, {"glorious", 3}, {"good", 3},
    {"gorgeous", 3}, {"grateful", 3}, {"great", 3}, {"grief", -3}, {"grim", -2},
    {"guilty", -3}, {"happy", 3}, {"harmony", 2}, {"hate", -3}, {"hated", -3},
    {"healthy", 2}, {"heartbroken", -3}, {"heartwarming", 3}, {"hell", -3}, {"helpful", 2},
    {"helpless", -2}, {"honest", 2}, {"hope", 2}, {"hopeful", 2}, {"hopeless", -3},
    {"horrible", -3}, {"horrified", -3}, {"hostile", -2}, {"hurt", -2}, {"ill", -2},
    {"impressed", 3}, {"inspired", 2}, {"insulted", -2}, {"interesting", 2},
    {"irritated", -2}, {"jealous", -2}, {"joy", 3}, {"joyful", 3}, {"kind", 2},
    {"laugh", 2}, {"lonely", -2}, {"lose", -2}, {"loss", -3}, {"lost", -2}, {"love", 3},
    {"loved", 3}, {"lovely", 3}, {"lucky", 3}, {"mad", -2}, {"marvelous", 3},
    {"miserable", -3}, {"mourn", -2}, {"nervous", -2}, {"nice", 3}, {"nightmare", -3},
    {"optimistic", 2}, {"outraged", -3}, {"overwhelmed", -2}, {"pain", -2}, {"painful", -2},
    {"panic", -3}, {"pathetic", -2}, {"peace", 2}, {"peaceful", 2}, {"perfect", 3},
    {"playful", 2}, {"pleasant", 3}, {"pleased", 3}, {"poor", -2}, {"positive", 2},
    {"pretty", 1}, {"proud", 2}, {"regret", -2}, {"rejected", -2}, {"rejoice", 3},
    {"relaxed", 2}, {"relieved", 2}, {"resent", -2}, {"ruined", -3}, {"sad", -2},
    {"safe", 1}, {"satisfied", 2}, {"scared", -2}, {"secure", 2}, {"shame", -2},
    {"shocked", -2}, {"sick", -2}, {"smile", 2}, {"sorrow", -3}, {"sorry", -1},
    {"splendid", 3}, {"stress", -1}, {"stressed", -2}, {"strong", 2}, {"stupid", -2},
    {"success", 2}, {"successful", 3}, {"suffer", -2}, {"suffering", -2}, {"superb", 3},
    {"support", 2}, {"sweet", 2}, {"terrible", -3}, {"terrific", 3}, {"terrified", -3},
    {"thank", 2}, {"thankful", 2}, {"thanks", 2}, {"thrilled", 3}, {"tired", -2},
    {"tragic", -3}, {"triumph", 3}, {"trouble", -2}, {"trust", 2}, {"ugly", -3},
    {"unfair", -2}, {"unhappy", -2}, {"upset", -2}, {"useless", -2}, {"victory", 3},
    {"warm", 2}, {"weak", -2}, {"welcome", 2}, {"win", 3}, {"wonderful", 3},
    {"worried", -2}, {"worry", -2}, {"worse", -3}, {"worst", -3}, {"worthless", -3},
    {"wrong", -2}, {"yay", 3},
};

#define LEXICON_SIZE (sizeof lexicon / sizeof lexicon[0])

static const char *const negators[] = {
    "not", "no", "never", "nor", "none", "nothing", "nobody", "neither", "cannot",
    "without", "hardly", "dont", "cant", "wont", "isnt", "arent", "wasnt", "werent",
    "didnt", "doesnt", "couldnt", "wouldnt", "shouldnt", "hasnt", "havent", "aint",
};

static const char *const intensifiers[] = {
    "very", "really", "so", "extremely", "incredibly", "truly", "absolutely",
    "totally", "deeply", "utterly", "completely", "awfully",
};

enum band { STRONG_NEG, NEG, NEUTRAL, POS, STRONG_POS };

static const char *const band_names[] = {
    "strongly negative", "negative", "neutral", "positive", "strongly positive",
};

/* %s is the quoted word. */
static const char *const reflections[][3] = {
    [STRONG_NEG] = {
        "That sounds really painful. It sounds like '%s' sums it up, and I'm here to listen.",
        "I'm so sorry. When you say '%s', I can hear how heavy this is for you.",
        "That is a lot to carry. '%s' says so much; please be gentle with yourself.",
    },
    [NEG] = {
        "It sounds like '%s' sums it up. Do you want to talk about what happened?",
        "I hear some hurt in that; '%s' stands out to me. What would help right now?",
        "That sounds hard. When you say '%s', what is weighing on you most?",
    },
    [NEUTRAL] = {
        "I hear mixed feelings: '%s' stands out, but the rest pulls the other way.",
        "Your words balance out, though '%s' caught my ear. How do you really feel?",
        "Some of this lifts and some of it weighs, '%s' among it. Which side is louder for you?",
    },
    [POS] = {
        "That sounds good! It sounds like '%s' sums it up.",
        "I can hear the warmth in '%s'. What made it feel that way?",
        "There is something bright in that; '%s' says it well.",
    },
    [STRONG_POS] = {
        "That's wonderful! It sounds like '%s' sums it up, and I'm glad for you.",
        "Your joy comes through: '%s' says it all. Enjoy every bit of it!",
        "What a lovely thing to hear; '%s' shines through every word.",
    },
};

/* Neutral with no word of the lexicon at all: nothing to quote. */
static const char *const flat_reflections[3] = {
    "I don't hear strong feelings either way. How do you feel about it?",
    "That sounds calm and matter-of-fact. Is there more beneath it?",
    "I'm listening. Nothing in that tells me how you feel yet; will you say more?",
};

static int cmp_entry(const void *key, const void *elem)
{
    return strcmp(key, ((const lex_entry *)elem)->word);
}

/* The lexicon's entry for a lower-case word, trying it without a trailing
 * "'s" too; NULL when absent. */
static const lex_entry *lookup(const char *word)
{
    const lex_entry *e = bsearch(word, lexicon, LEXICON_SIZE, sizeof lexicon[0], cmp_entry);
    size_t n = strlen(word);
    if (!e && n > 2 && word[n - 2] == '\'' && word[n - 1] == 's') {
        char base[WORD_MAX + 1];
        memcpy(base, word, n - 2);
        base[n - 2] = '\0';
        e = bsearch(base, lexicon, LEXICON_SIZE, sizeof lexicon[0], cmp_entry);
    }
    return e;
}

static bool in_list(const char *word, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(word, list[i]) == 0)
            return true;
    return false;
}

static bool is_negator(const char *word)
{
    size_t n = strlen(word);
    if (n >= 3 && strcmp(word + n - 3, "n't") == 0)
        return true;
    return in_list(word, negators, sizeof negators / sizeof negators[0]);
}

static bool is_word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '\'' || c >= 0x80;
}

static bool is_stop_punct(unsigned char c)
{
    return c == '.' || c == ',' || c == ';' || c == ':' || c == '!' || c == '?';
}

/* Read the word starting at s[*i] into out (lower case, U+2019 as '\'', cut
 * at WORD_MAX bytes: such a word matches nothing); advance *i past it. */
static void read_word(const char *s, size_t n, size_t *i, char *out)
{
    size_t j = *i, len = 0;
    bool too_long = false;
    while (j < n && is_word_byte((unsigned char)s[j])) {
        unsigned char c = (unsigned char)s[j];
        size_t step = 1;
        if (c == 0xE2 && j + 2 < n && (unsigned char)s[j + 1] == 0x80 &&
            (unsigned char)s[j + 2] == 0x99) {
            c = '\'';
            step = 3;
        } else if (c >= 'A' && c <= 'Z') {
            c = (unsigned char)(c - 'A' + 'a');
        }
        if (len < WORD_MAX)
            out[len++] = (char)c;
        else
            too_long = true;
        j += step;
    }
    /* Quotes around a word are not part of it: 'happy' is happy. */
    size_t start = 0;
    while (start < len && out[start] == '\'')
        start++;
    while (len > start && out[len - 1] == '\'')
        len--;
    if (too_long)
        start = len = 0;
    memmove(out, out + start, len - start);
    out[len - start] = '\0';
    *i = j;
}

typedef struct feeling {
    int half_points;             /* the score times two */
    unsigned matched;            /* lexicon words counted */
    int top_weight;              /* |half points| of the word that weighed most */
    char top[WORD_MAX + 8];      /* that word, "not " prefixed when negated */
} feeling;

static void score_text(const char *s, size_t n, feeling *f)
{
    memset(f, 0, sizeof *f);
    int neg_left = 0;
    bool intense = false;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (is_stop_punct(c)) {
            neg_left = 0;
            intense = false;
            i++;
            continue;
        }
        if (!is_word_byte(c)) {
            i++;
            continue;
        }
        char word[WORD_MAX + 1];
        read_word(s, n, &i, word);
        if (word[0] == '\0') {
            neg_left = neg_left > 0 ? neg_left - 1 : 0;
            intense = false;
            continue;
        }
        if (is_negator(word)) {
            neg_left = NEGATION_WINDOW;
            intense = false;
            continue;
        }
        bool negated = neg_left > 0;
        if (neg_left > 0)
            neg_left--;
        if (in_list(word, intensifiers, sizeof intensifiers / sizeof intensifiers[0])) {
            intense = true;
            continue;
        }
        const lex_entry *e = lookup(word);
        if (e) {
            int w = intense ? 3 * e->score : 2 * e->score;
            if (negated)
                w = -w;
            f->half_points += w;
            f->matched++;
            int weight = w < 0 ? -w : w;
            if (weight > f->top_weight) {
                f->top_weight = weight;
                snprintf(f->top, sizeof f->top, "%s%s", negated ? "not " : "", e->word);
            }
        }
        intense = false;
    }
}

/* "4", "-1.5": the score from half points. */
static void format_score(int half, char *out, size_t cap)
{
    int mag = half < 0 ? -half : half;
    if (mag % 2 == 0)
        snprintf(out, cap, "%d", half / 2);
    else
        snprintf(out, cap, "%s%d.5", half < 0 ? "-" : "", mag / 2);
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return false;
    return true;
}

/* The whole reply of feel for s[0..n) into out; A4PS_OK or A4PS_EINVAL.
 * Pure: shared by the method and the self-test. */
static int robin_feeling(const char *s, size_t n, char *out, size_t cap)
{
    if (n == 0 || blank(s, n)) {
        snprintf(out, cap, "feel: the text is empty; tell me what is on your mind");
        return A4PS_EINVAL;
    }
    if (n > FEEL_MAX_INPUT) {
        snprintf(out, cap, "feel: the text is %zu bytes; the limit is %u", n, FEEL_MAX_INPUT);
        return A4PS_EINVAL;
    }
    feeling f;
    score_text(s, n, &f);
    enum band b = f.half_points <= -10 ? STRONG_NEG
                : f.half_points < 0    ? NEG
                : f.half_points == 0   ? NEUTRAL
                : f.half_points < 10   ? POS : STRONG_POS;
    unsigned mag = (unsigned)(f.half_points < 0 ? -f.half_points : f.half_points);
    unsigned pick = (mag + f.matched) % 3;
    char reflection[256];
    if (f.matched == 0)
        snprintf(reflection, sizeof reflection, "%s", flat_reflections[pick]);
    else
        snprintf(reflection, sizeof reflection, reflections[b][pick], f.top);
    char score[16];
    format_score(f.half_points, score, sizeof score);
    snprintf(out, cap, "sentiment: %s (score %s, %u word%s matched): %s", band_names[b], score,
             f.matched, f.matched == 1 ? "" : "s", reflection);
    return A4PS_OK;
}

static int robin_feel(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char out[512];
    return reply_text(ctx, robin_feeling(msg, len, out, sizeof out), out);
}

static int robin_lexicon(a4ps_ctx *ctx, const void *msg, size_t len)
{
    const char *s = msg;
    while (len && blank(s, 1))
        s++, len--;
    while (len && blank(s + len - 1, 1))
        len--;
    if (len == 0)
        return reply_text(ctx, A4PS_EINVAL, "lexicon: name one word to look up");
    for (size_t i = 0; i < len; i++)
        if (blank(s + i, 1))
            return reply_text(ctx, A4PS_EINVAL, "lexicon: one word at a time");
    if (len > WORD_MAX)
        return reply_text(ctx, A4PS_EINVAL, "lexicon: words are at most 32 bytes");
    char word[WORD_MAX + 1];
    size_t i = 0;
    read_word(s, len, &i, word);
    if (i != len || word[0] == '\0')
        return reply_text(ctx, A4PS_EINVAL,
                          "lexicon: a word is letters, digits and apostrophes only");
    const lex_entry *e = lookup(word);
    char out[WORD_MAX + 48];
    if (e)
        snprintf(out, sizeof out, "%s: %d", word, e->score);
    else
        snprintf(out, sizeof out, "%s: not in the lexicon", word);
    return reply_text(ctx, A4PS_OK, out);
}

static int robin_help(a4ps_ctx *ctx, const void *msg, size_t len)
{
    return persona_help(ctx, &robin_plugin);
}

/* The lexicon must stay sorted, unique and in range (bsearch depends on it),
 * and a plain sentence must score as it always has. */
static int robin_self_test(a4ps_ctx *ctx)
{
    for (size_t i = 0; i < LEXICON_SIZE; i++) {
        if (lexicon[i].score < -3 || lexicon[i].score > 3 || lexicon[i].score == 0 ||
            (i && strcmp(lexicon[i - 1].word, lexicon[i].word) >= 0))
            return A4PS_ERROR;
    }
    static const char text[] = "I am not happy at all";
    static const char want[] = "sentiment: negative (score -3, 1 word matched): I hear some "
                               "hurt in that; 'not happy' stands out to me. What would help "
                               "right now?";
    char out[512];
    int rc = robin_feeling(text, sizeof text - 1, out, sizeof out);
    return rc == A4PS_OK && strcmp(out, want) == 0 ? A4PS_OK : A4PS_ERROR;
}

static const a4ps_method robin_methods[] = {
    {"feel", robin_feel, "score the sentiment of the text in the message and reflect it back"},
    {"lexicon", robin_lexicon, "the score (-3..3) of the one word in the message, or "
                               "'not in the lexicon'"},
    {"help", robin_help, "list ROBIN's selectors"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin robin_plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "robin",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_PERSONA,
    .methods = robin_methods,
    .self_test = robin_self_test,
    .description = "ROBIN, the empath: scores the sentiment of a text and reflects it back",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &robin_plugin;
}
