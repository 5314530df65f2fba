/* test_personas.c -- the four personas of the seed, loaded from the build's
 * plugins directory into a real kernel: BRICK's evaluator and consistency
 * checker, ROBIN's sentiment, BABS's notes across a state-migrating swap to
 * 2.0.0 and the rollback, ALFRED's books of the kernel's events.  Replies are
 * checked exactly. */
#include "plugin_fixture.h"

/* The personas are shipped plugins, built next to the test plugins. */
#define PERSONA(file) A4PS_TEST_PLUGIN_DIR "/../plugins/" file

/* PERSONA() for a file name known only at run time. */
static const char *persona_path(char *buf, size_t cap, const char *file)
{
    snprintf(buf, cap, "%s", PERSONA(""));
    snprintf(buf + strlen(buf), cap - strlen(buf), "%s", file);
    return buf;
}

static int teardown(void **state)
{
    fx_close(*state);
    return 0;
}

/* A kernel with persona `file` loaded and proto `proto` on it. */
static fx *open_with(void **state, const char *file, const char *plugin, const char *proto)
{
    fx *f = fx_open(NULL);
    *state = f;
    char path[PATH_MAX];
    fx_load_ok(f, persona_path(path, sizeof path, file), NULL);
    fx_proto_ok(f, proto, plugin, NULL);
    return f;
}

static char *send_text(fx *f, const char *proto, const char *sel, const char *msg, int *rc)
{
    kernel_reply r = {0};
    int got = kernel_send(f->k, proto, sel, msg, strlen(msg), &r);
    if (rc)
        *rc = got;
    char *t = strdup(r.len ? r.data : "");
    kernel_reply_free(&r);
    return t;
}

typedef struct exchange {
    const char *msg;
    int rc;
    const char *reply;
} exchange;

static void expect_all(fx *f, const char *proto, const char *sel, const exchange *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fx_expect(f, proto, sel, x[i].msg, x[i].rc, x[i].reply);
}

#define EXPECT_ALL(f, proto, sel, table) \
    expect_all(f, proto, sel, table, sizeof table / sizeof table[0])

/* help names the plugin and lists every selector with its doc. */
static void help_lists(fx *f, const char *proto, const char *head, const char *const *sels)
{
    int rc;
    char *t = send_text(f, proto, "help", "", &rc);
    assert_int_equal(rc, A4PS_OK);
    if (strncmp(t, head, strlen(head)) != 0)
        fail_msg("help starts \"%.60s\", expected \"%s\"", t, head);
    fx_assert_contains("help", t, "\nselectors:");
    for (const char *const *s = sels; *s; s++) {
        char line[64];
        snprintf(line, sizeof line, "\n  %s: ", *s);
        fx_assert_contains("help", t, line);
    }
    free(t);
}

/* ======================================================================
 * BRICK
 * ====================================================================== */

static void brick_evaluates(void **state)
{
    fx *f = open_with(state, "brick.so", "brick", "brick");
    static const exchange cases[] = {
        {"1 + 2 * 3", A4PS_OK, "7"},
        {"(1 + 2) * 3", A4PS_OK, "9"},
        {"10 - 4 - 3", A4PS_OK, "3"},              /* left associative */
        {"2 ^ 3 ^ 2", A4PS_OK, "512"},             /* right associative */
        {"-2^2", A4PS_OK, "-4"},                   /* ^ binds tighter than unary minus */
        {"2^-1", A4PS_OK, "0.5"},
        {"--3", A4PS_OK, "3"},
        {"7 % 3", A4PS_OK, "1"},
        {"-7 % 3", A4PS_OK, "-1"},                 /* C's fmod: sign of the dividend */
        {"1.5 * 4", A4PS_OK, "6"},
        {".5 + 1", A4PS_OK, "1.5"},
        {"0.1 + 0.2", A4PS_OK, "0.3"},             /* %.15g */
        {"1 / 3", A4PS_OK, "0.333333333333333"},
        {"-0", A4PS_OK, "0"},
        {"99999999999999999999", A4PS_OK, "1e+20"},
        {"1 < 2", A4PS_OK, "true"},
        {"2 <= 1", A4PS_OK, "false"},
        {"3 >= 3 && 4 > 5", A4PS_OK, "false"},
        {"1 + 1 == 2", A4PS_OK, "true"},           /* arithmetic above comparison */
        {"3 != 3", A4PS_OK, "false"},
        {"true == false", A4PS_OK, "false"},
        {"1 < 2 == 2 < 3", A4PS_OK, "true"},       /* relations above equality */
        {"true or false and false", A4PS_OK, "true"},  /* and above or */
        {"(true or false) and false", A4PS_OK, "false"},
        {"not false and !false", A4PS_OK, "true"},
        {"TRUE Or False", A4PS_OK, "true"},        /* keywords ignore case */
        {"false and 1/0 == 1", A4PS_OK, "false"},  /* short-circuit: 1/0 never runs */
        {"true || 1/0 == 1", A4PS_OK, "true"},
        {"  ( ( 42 ) )  ", A4PS_OK, "42"},
    };
    EXPECT_ALL(f, "brick", "eval", cases);
}

static void brick_eval_errors_name_the_column(void **state)
{
    fx *f = open_with(state, "brick.so", "brick", "brick");
    static const exchange cases[] = {
        {"(1 + 2", A4PS_EINVAL, "error at column 7: expected ')' but found end of input"},
        {"1 / 0", A4PS_EINVAL, "division by zero at column 3"},
        {"10 % (5 - 5)", A4PS_EINVAL, "division by zero at column 4"},
        {"0 ^ -1", A4PS_EINVAL, "division by zero at column 3"},
        {"true and 1/0 == 1", A4PS_EINVAL, "division by zero at column 11"},
        {"true and 5", A4PS_EINVAL, "type error at column 6: 'and' needs booleans"},
        {"1 || true", A4PS_EINVAL, "type error at column 3: '||' needs booleans"},
        /* Types are static: an error in a short-circuited branch still counts. */
        {"false and 3", A4PS_EINVAL, "type error at column 7: 'and' needs booleans"},
        {"1 + true", A4PS_EINVAL, "type error at column 3: '+' needs numbers"},
        {"1 == true", A4PS_EINVAL,
         "type error at column 3: '==' needs two numbers or two booleans"},
        {"1 < 2 < 3", A4PS_EINVAL, "type error at column 7: '<' needs numbers"},
        {"not 1", A4PS_EINVAL, "type error at column 1: 'not' needs a boolean"},
        {"-true", A4PS_EINVAL, "type error at column 1: unary '-' needs a number"},
        {"2 ^ false", A4PS_EINVAL, "type error at column 3: '^' needs numbers"},
        {"x + 1", A4PS_EINVAL, "error at column 1: unknown identifier 'x'"},
        {"1 + foo", A4PS_EINVAL, "error at column 5: unknown identifier 'foo'"},
        {"1 2", A4PS_EINVAL,
         "error at column 3: expected an operator or end of input but found '2'"},
        {"(1))", A4PS_EINVAL,
         "error at column 4: expected an operator or end of input but found ')'"},
        {"1 +", A4PS_EINVAL, "error at column 4: expected a number, 'true', 'false' or '(' "
                             "but found end of input"},
        {"* 2", A4PS_EINVAL, "error at column 1: expected a number, 'true', 'false' or '(' "
                             "but found '*'"},
        {"", A4PS_EINVAL, "error at column 1: empty expression"},
        {"1 = 1", A4PS_EINVAL, "error at column 3: '=' is not an operator (compare with '==')"},
        {"1 & 1", A4PS_EINVAL, "error at column 3: '&' is not an operator (use '&&')"},
        {"2 $ 3", A4PS_EINVAL, "error at column 3: unexpected character '$'"},
        {"12abc", A4PS_EINVAL, "error at column 1: malformed number '12abc'"},
        {"1.2.3", A4PS_EINVAL, "error at column 1: malformed number '1.2.3'"},
        {"10 ^ 400", A4PS_EINVAL, "overflow at column 4: the result is too large"},
        {"(-8) ^ 0.5", A4PS_EINVAL,
         "math error at column 6: '^' of a negative number to a fractional power"},
    };
    EXPECT_ALL(f, "brick", "eval", cases);
}

/* Nesting deeper than 256 is refused before it can exhaust the stack, and so
 * is an input over 4096 bytes. */
static void brick_eval_limits(void **state)
{
    fx *f = open_with(state, "brick.so", "brick", "brick");
    char buf[5000];
    memset(buf, '(', 256);
    buf[256] = '7';
    memset(buf + 257, ')', 256);
    buf[513] = '\0';
    fx_expect(f, "brick", "eval", buf, A4PS_OK, "7");

    memset(buf, '(', 257);
    buf[257] = '7';
    memset(buf + 258, ')', 257);
    buf[515] = '\0';
    fx_expect(f, "brick", "eval", buf, A4PS_EINVAL,
              "error at column 257: nesting deeper than 256 levels");

    memset(buf, '-', 300);               /* unary chains nest too */
    buf[300] = '1';
    buf[301] = '\0';
    fx_expect(f, "brick", "eval", buf, A4PS_EINVAL,
              "error at column 257: nesting deeper than 256 levels");

    for (int i = 0; i < 300; i++)        /* and so do right-associative powers */
        memcpy(buf + 2 * i, "1^", 2);
    buf[600] = '1';
    buf[601] = '\0';
    fx_expect(f, "brick", "eval", buf, A4PS_EINVAL,
              "error at column 514: nesting deeper than 256 levels");

    for (int i = 0; i < 2000; i++)       /* long flat chains are fine */
        memcpy(buf + 2 * i, "1+", 2);
    buf[4000] = '1';
    buf[4001] = '\0';
    fx_expect(f, "brick", "eval", buf, A4PS_OK, "2001");

    memset(buf, ' ', 4097);
    buf[0] = '1';
    buf[4097] = '\0';
    fx_expect(f, "brick", "eval", buf, A4PS_EINVAL,
              "expression too long: 4097 bytes (the limit is 4096)");
}

static void brick_checks_consistency(void **state)
{
    fx *f = open_with(state, "brick.so", "brick", "brick");
    static const exchange cases[] = {
        {"A; A -> B", A4PS_OK, "consistent: A=true, B=true"},
        {"A or B", A4PS_OK, "consistent: A=true, B=false"},
        /* Variables are listed by name, whatever order they appear in. */
        {"zeta -> alpha\nnot alpha\nmid", A4PS_OK,
         "consistent: alpha=false, mid=true, zeta=false"},
        {"A <-> B; not A", A4PS_OK, "consistent: A=false, B=false"},
        {"x1 && ~x2 || x3 => x4; x4 <=> x1; x1", A4PS_OK,
         "consistent: x1=true, x2=false, x3=false, x4=true"},
        {"a implies b iff not a or b", A4PS_OK, "consistent: a=false, b=false"},
        {"true", A4PS_OK, "consistent: (no variables)"},
        {"Not p; q\n\n;  ", A4PS_OK, "consistent: p=false, q=true"},   /* blanks skipped */
    };
    EXPECT_ALL(f, "brick", "check", cases);
}

static void brick_finds_minimal_contradiction(void **state)
{
    fx *f = open_with(state, "brick.so", "brick", "brick");
    static const exchange cases[] = {
        {"A\nnot A\nB", A4PS_OK, "contradiction: no assignment satisfies all 3 statements; "
                                 "a minimal contradictory subset (no statement can be dropped) is: 1, 2"},
        {"A; B; A -> C; not C; B or D", A4PS_OK,
         "contradiction: no assignment satisfies all 5 statements; "
         "a minimal contradictory subset (no statement can be dropped) is: 1, 3, 4"},
        {"p -> q; r; q -> s; p; not s", A4PS_OK,
         "contradiction: no assignment satisfies all 5 statements; "
         "a minimal contradictory subset (no statement can be dropped) is: 1, 3, 4, 5"},
        {"A and not A", A4PS_OK, "contradiction: no assignment satisfies the statement; "
                                 "a minimal contradictory subset (no statement can be dropped) is: 1"},
        {"A; false; B", A4PS_OK, "contradiction: no assignment satisfies all 3 statements; "
                                 "a minimal contradictory subset (no statement can be dropped) is: 2"},
        {"A <-> not B; A; B; C", A4PS_OK,
         "contradiction: no assignment satisfies all 4 statements; "
         "a minimal contradictory subset (no statement can be dropped) is: 1, 2, 3"},
    };
    EXPECT_ALL(f, "brick", "check", cases);
}

static void brick_check_errors(void **state)
{
    fx *f = open_with(state, "brick.so", "brick", "brick");
    static const exchange cases[] = {
        {"", A4PS_EINVAL, "no statements: give one or more, separated by ';' or newlines"},
        {" ; \n ", A4PS_EINVAL, "no statements: give one or more, separated by ';' or newlines"},
        {"A and", A4PS_EINVAL, "error in statement 1 at column 6: expected a variable, 'true', "
                               "'false', 'not' or '(' but found end of statement"},
        {"A\n(B or C", A4PS_EINVAL,
         "error in statement 2 at column 8: expected ')' but found end of statement"},
        {"A B", A4PS_EINVAL, "error in statement 1 at column 3: expected an operator or the "
                             "end of the statement but found 'B'"},
        {"A = B", A4PS_EINVAL, "error in statement 1 at column 3: unexpected character '='"},
    };
    EXPECT_ALL(f, "brick", "check", cases);

    /* 20 variables are searched (2^20 rows): the statements make them all
     * equal, and the only model is the last row.  A 21st is refused. */
    char buf[512] = "";
    size_t n = 0;
    for (int i = 1; i <= 20; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "v%02d or not v%02d;", i, i % 20 + 1);
    snprintf(buf + n, sizeof buf - n, "v01 or v02");
    char want[512] = "consistent: ";
    for (int i = 1; i <= 20; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%sv%02d=true",
                 i > 1 ? ", " : "", i);
    fx_expect(f, "brick", "check", buf, A4PS_OK, want);
    snprintf(buf + n, sizeof buf - n, "v01 or v02 or v21");
    fx_expect(f, "brick", "check", buf, A4PS_EINVAL,
              "error in statement 21 at column 15: too many variables: 'v21' would be the 21st "
              "(the limit is 20)");

    static const char *const sels[] = {"eval", "check", "help", NULL};
    help_lists(f, "brick", "brick 1.0.0: BRICK, the logician", sels);
}

/* ======================================================================
 * ROBIN
 * ====================================================================== */

static void robin_feels(void **state)
{
    fx *f = open_with(state, "robin.so", "robin", "robin");
    static const exchange cases[] = {
        {"What a wonderful, happy day", A4PS_OK,
         "sentiment: strongly positive (score 6, 2 words matched): What a lovely thing to "
         "hear; 'wonderful' shines through every word."},
        {"I am very happy", A4PS_OK,
         "sentiment: positive (score 4.5, 1 word matched): I can hear the warmth in 'happy'. "
         "What made it feel that way?"},
        {"This is awful and I HATE it", A4PS_OK,
         "sentiment: strongly negative (score -6, 2 words matched): That is a lot to carry. "
         "'awful' says so much; please be gentle with yourself."},
        {"I feel a bit sad", A4PS_OK,
         "sentiment: negative (score -2, 1 word matched): That sounds hard. When you say "
         "'sad', what is weighing on you most?"},
        /* Negation flips the next words: not, never, n't. */
        {"I am not happy at all", A4PS_OK,
         "sentiment: negative (score -3, 1 word matched): I hear some hurt in that; "
         "'not happy' stands out to me. What would help right now?"},
        {"I never feel happy", A4PS_OK,
         "sentiment: negative (score -3, 1 word matched): I hear some hurt in that; "
         "'not happy' stands out to me. What would help right now?"},
        {"It isn't bad", A4PS_OK,
         "sentiment: positive (score 3, 1 word matched): I can hear the warmth in 'not bad'. "
         "What made it feel that way?"},
        /* Punctuation ends a negation. */
        {"not good. great", A4PS_OK,
         "sentiment: neutral (score 0, 2 words matched): Some of this lifts and some of it "
         "weighs, 'not good' among it. Which side is louder for you?"},
        {"The meeting is at noon", A4PS_OK,
         "sentiment: neutral (score 0, 0 words matched): I don't hear strong feelings either "
         "way. How do you feel about it?"},
        {"I can\xe2\x80\x99t stand it, it\xe2\x80\x99s awful", A4PS_OK,
         "sentiment: negative (score -3, 1 word matched): I hear some hurt in that; 'awful' "
         "stands out to me. What would help right now?"},
        {"", A4PS_EINVAL, "feel: the text is empty; tell me what is on your mind"},
        {" \n\t ", A4PS_EINVAL, "feel: the text is empty; tell me what is on your mind"},
    };
    EXPECT_ALL(f, "robin", "feel", cases);
}

static void robin_lexicon(void **state)
{
    fx *f = open_with(state, "robin.so", "robin", "robin");
    static const exchange cases[] = {
        {"good", A4PS_OK, "good: 3"},
        {" Awful ", A4PS_OK, "awful: -3"},
        {"xyzzy", A4PS_OK, "xyzzy: not in the lexicon"},
        {"", A4PS_EINVAL, "lexicon: name one word to look up"},
        {"two words", A4PS_EINVAL, "lexicon: one word at a time"},
    };
    EXPECT_ALL(f, "robin", "lexicon", cases);
    static const char *const sels[] = {"feel", "lexicon", "help", NULL};
    help_lists(f, "robin", "robin 1.0.0: ROBIN, the empath", sels);
}

/* ======================================================================
 * BABS
 * ====================================================================== */

static char *state_text(fx *f, const char *proto, const char *key)
{
    void *v = NULL;
    size_t len = 0;
    if (kernel_state_get(f->k, proto, key, &v, &len) != 0)
        return NULL;
    char *s = malloc(len + 1);
    assert_non_null(s);
    memcpy(s, v, len);
    s[len] = '\0';
    free(v);
    return s;
}

static void babs_notes(void **state)
{
    fx *f = open_with(state, "babs.so", "babs", "babs");
    fx_expect(f, "babs", "count", "", A4PS_OK, "0 notes");
    fx_expect(f, "babs", "recall", "cat", A4PS_OK, "nothing matches");
    fx_expect(f, "babs", "remember", "The cat sat on the mat", A4PS_OK, "noted #1");
    fx_expect(f, "babs", "remember", "Dogs and cats are pets", A4PS_OK, "noted #2");
    fx_expect(f, "babs", "remember", "  A cat and a dog met at the park\n", A4PS_OK, "noted #3");
    fx_expect(f, "babs", "remember", "Dog food: buy more", A4PS_OK, "noted #4");
    fx_expect(f, "babs", "remember", " \n ", A4PS_EINVAL, "remember: the note is empty");
    fx_expect(f, "babs", "count", "", A4PS_OK, "4 notes");

    /* Most keywords first, then newest; whole words only ("cats" is not
     * "cat"); case and stopwords ignored. */
    fx_expect(f, "babs", "recall", "cat dog", A4PS_OK,
              "#3 (2 of 2 keywords): A cat and a dog met at the park\n"
              "#4 (1 of 2 keywords): Dog food: buy more\n"
              "#1 (1 of 2 keywords): The cat sat on the mat");
    fx_expect(f, "babs", "recall", "What about THE CAT?", A4PS_OK,
              "#3 (1 of 1 keyword): A cat and a dog met at the park\n"
              "#1 (1 of 1 keyword): The cat sat on the mat");
    fx_expect(f, "babs", "recall", "dog dog park", A4PS_OK,
              "#3 (2 of 2 keywords): A cat and a dog met at the park\n"
              "#4 (1 of 2 keywords): Dog food: buy more");
    fx_expect(f, "babs", "recall", "zebra", A4PS_OK, "nothing matches");
    fx_expect(f, "babs", "recall", "the of and", A4PS_EINVAL,
              "recall: no keywords (give words other than stopwords like 'the')");

    fx_expect(f, "babs", "forget", "#3", A4PS_OK, "forgot #3");
    fx_expect(f, "babs", "forget", "3", A4PS_ENOENT, "forget: there is no note #3");
    fx_expect(f, "babs", "forget", "three", A4PS_EINVAL,
              "forget: give the number of a note, like 3 or #3");
    fx_expect(f, "babs", "count", "", A4PS_OK, "3 notes");
    fx_expect(f, "babs", "recall", "cat dog", A4PS_OK,
              "#4 (1 of 2 keywords): Dog food: buy more\n"
              "#1 (1 of 2 keywords): The cat sat on the mat");
    /* Numbers are never reused; a note's newlines stay on its line. */
    fx_expect(f, "babs", "remember", "one\ntwo cat", A4PS_OK, "noted #5");
    fx_expect(f, "babs", "recall", "cat", A4PS_OK,
              "#5 (1 of 1 keyword): one two cat\n"
              "#1 (1 of 1 keyword): The cat sat on the mat");

    /* Only the top five. */
    for (int i = 0; i < 6; i++)
        fx_expect(f, "babs", "remember", "tea time", A4PS_OK, NULL);
    fx_expect(f, "babs", "recall", "tea", A4PS_OK,
              "#11 (1 of 1 keyword): tea time\n#10 (1 of 1 keyword): tea time\n"
              "#9 (1 of 1 keyword): tea time\n#8 (1 of 1 keyword): tea time\n"
              "#7 (1 of 1 keyword): tea time");

    char *v = state_text(f, "babs", "note:1");
    assert_string_equal(v, "The cat sat on the mat");
    free(v);
    v = state_text(f, "babs", "next");
    assert_string_equal(v, "12");
    free(v);

    static const char *const sels[] = {"remember", "recall", "forget", "count", "help", NULL};
    help_lists(f, "babs", "babs 1.0.0: BABS, the researcher", sels);
}

typedef struct remember_run {
    fx *f;
    int failures;
} remember_run;

static void *remember_many(void *arg)
{
    remember_run *r = arg;
    kernel_reply rep = {0};
    for (int i = 0; i < 200; i++)
        if (kernel_send(r->f->k, "babs", "remember", "same", 4, &rep) != A4PS_OK)
            r->failures++;
    kernel_reply_free(&rep);
    return NULL;
}

/* Concurrent callers never get the same note number. */
static void babs_remember_is_atomic(void **state)
{
    fx *f = open_with(state, "babs.so", "babs", "babs");
    remember_run runs[2] = {{f, 0}, {f, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, remember_many, &runs[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(runs[0].failures + runs[1].failures, 0);
    fx_expect(f, "babs", "count", "", A4PS_OK, "400 notes");
    char *v = state_text(f, "babs", "next");
    assert_string_equal(v, "401");
    free(v);
}

/* 1.0.0 -> 2.0.0 is a state-migrating swap: the notes move to layout 2 and
 * recall's reply changes; back to 1.0.0, 1.0.0's migrate converts every note
 * (also those written under 2.0.0) back to layout 1. */
static void babs_migrates_and_rolls_back(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    kernel_version_info v1, v2;
    fx_load_ok(f, PERSONA("babs.so"), &v1);
    fx_load_ok(f, FX_PLUGIN("babs-2.so"), &v2);
    assert_string_equal(v1.version, "1.0.0");
    assert_int_equal(v1.state_version, 1);
    assert_string_equal(v2.version, "2.0.0");
    assert_int_equal(v2.state_version, 2);
    fx_proto_ok(f, "babs", "babs", "1.0.0");
    fx_expect(f, "babs", "remember", "cat on the mat", A4PS_OK, "noted #1");
    fx_expect(f, "babs", "remember", "cat and dog", A4PS_OK, "noted #2");
    fx_expect(f, "babs", "remember", "dog park", A4PS_OK, "noted #3");
    fx_expect(f, "babs", "forget", "3", A4PS_OK, "forgot #3");

    fx_swap_ok(f, "babs", "2.0.0");
    fx_expect(f, "babs", "count", "", A4PS_OK, "2 notes");
    fx_expect(f, "babs", "recall", "cat dog", A4PS_OK,
              "#2 [score 1.00]: cat and dog\n#1 [score 0.50]: cat on the mat");
    char *s = state_text(f, "babs", "n:1");
    assert_string_equal(s, "0\tcat on the mat");
    free(s);
    assert_null(state_text(f, "babs", "note:1"));
    s = state_text(f, "babs", "next");
    assert_string_equal(s, "4");
    free(s);

    /* A note written by 2.0.0 carries its time. */
    time_t before = time(NULL);
    fx_expect(f, "babs", "remember", "dog days of summer", A4PS_OK, "noted #4");
    s = state_text(f, "babs", "n:4");
    assert_non_null(s);
    long long stamp = strtoll(s, NULL, 10);
    assert_true(stamp >= (long long)before && stamp <= (long long)time(NULL));
    fx_assert_contains("n:4", s, "\tdog days of summer");
    free(s);
    fx_expect(f, "babs", "recall", "dog summer cat", A4PS_OK,
              "#4 [score 0.67]: dog days of summer\n#2 [score 0.67]: cat and dog\n"
              "#1 [score 0.33]: cat on the mat");

    char err[KERNEL_ERRLEN] = "";
    int rc = kernel_rollback(f->k, "babs", err, sizeof err);
    if (rc != 0)
        fail_msg("kernel_rollback: %d: %s", rc, err);
    fx_expect(f, "babs", "count", "", A4PS_OK, "3 notes");
    fx_expect(f, "babs", "recall", "dog summer cat", A4PS_OK,
              "#4 (2 of 3 keywords): dog days of summer\n"
              "#2 (2 of 3 keywords): cat and dog\n"
              "#1 (1 of 3 keywords): cat on the mat");
    s = state_text(f, "babs", "note:4");
    assert_string_equal(s, "dog days of summer");
    free(s);
    assert_null(state_text(f, "babs", "n:1"));
    fx_expect(f, "babs", "remember", "after the rollback", A4PS_OK, "noted #5");

    /* The notes were converted back, not restored from before the upgrade. */
    char *log = fx_snapshot(f, &f->log);
    fx_assert_lacks("the kernel's log", log, "restoring the state saved");
    free(log);
    assert_int_equal(fx_events(f, "swap_committed"), 1);
    assert_int_equal(fx_events(f, "swap_rolled_back"), 1);
}

/* ======================================================================
 * ALFRED
 * ====================================================================== */

/* Fed by hand, with fixed times, ALFRED's books are exact. */
static void alfred_keeps_books(void **state)
{
    fx *f = open_with(state, "alfred.so", "alfred", "alfred");
    fx_expect(f, "alfred", "report", "", A4PS_OK, "no events observed yet");
    static const exchange events[] = {
        {"{\"event\":\"plugin_loaded\",\"seq\":1,\"time\":100.5,\"data\":{\"plugin\":\"x\"}}",
         A4PS_OK, "observed plugin_loaded"},
        {"{\"event\":\"swap_committed\",\"seq\":2,\"time\":101.25,"
         "\"data\":{\"proto\":\"b\",\"plugin\":\"babs\",\"nested\":{\"proto\":\"zz\"}}}",
         A4PS_OK, "observed swap_committed"},
        {" {\"data\":{\"proto\":\"b\"},\"time\":102,\"seq\":3,"
         "\"event\":\"message_not_understood\"}\n", A4PS_OK, "observed message_not_understood"},
        {"{\"event\":\"swap_committed\",\"seq\":4,\"time\":103,\"data\":{\"proto\":\"c\"}}",
         A4PS_OK, "observed swap_committed"},
        {"{\"event\":\"custom\",\"seq\":5,\"time\":104,\"data\":null}", A4PS_OK,
         "observed custom"},
        {"{\"event\":\"custom\",\"seq\":6,\"time\":105,\"data\":{\"proto\":\"bad name!\"}}",
         A4PS_OK, "observed custom"},
    };
    EXPECT_ALL(f, "alfred", "observe", events);
    fx_expect(f, "alfred", "report", "", A4PS_OK,
              "events observed: 6\n"
              "by event:\n"
              "  custom: 2\n"
              "  swap_committed: 2\n"
              "  message_not_understood: 1\n"
              "  plugin_loaded: 1\n"
              "last 5 events:\n"
              "  #2 swap_committed at 101.25 (proto b)\n"
              "  #3 message_not_understood at 102 (proto b)\n"
              "  #4 swap_committed at 103 (proto c)\n"
              "  #5 custom at 104\n"
              "  #6 custom at 105");
    fx_expect(f, "alfred", "history", "b", A4PS_OK,
              "#2 swap_committed at 101.25\n#3 message_not_understood at 102");
    fx_expect(f, "alfred", "history", " c ", A4PS_OK, "#4 swap_committed at 103");
    fx_expect(f, "alfred", "history", "zz", A4PS_OK, "no events recorded for proto 'zz'");
    fx_expect(f, "alfred", "history", "", A4PS_EINVAL,
              "history: name a proto (or '*' for every event)");

    /* Malformed events are refused and change nothing. */
    static const exchange bad[] = {
        {"", A4PS_EINVAL, "observe: malformed JSON at byte 0: expected '{' (an event is a JSON "
                          "object)"},
        {"[1]", A4PS_EINVAL, "observe: malformed JSON at byte 0: expected '{' (an event is a "
                             "JSON object)"},
        {"{\"event\":\"x\"", A4PS_EINVAL, "observe: malformed JSON at byte 12: expected ',' "
                                          "or '}'"},
        {"{\"event\":\"x\",}", A4PS_EINVAL, "observe: malformed JSON at byte 13: expected a "
                                            "member name"},
        {"{\"event\":\"x\"} {}", A4PS_EINVAL, "observe: malformed JSON at byte 14: text after "
                                              "the JSON object"},
        {"{\"event\":\"x\",\"data\":{\"proto\":\"b\"", A4PS_EINVAL,
         "observe: malformed JSON at byte 32: expected ',' or '}'"},
        {"{\"event\":\"a\\qb\"}", A4PS_EINVAL, "observe: malformed JSON at byte 12: bad escape "
                                               "in a string"},
        {"{\"event\":\"x\",\"seq\":01}", A4PS_EINVAL, "observe: malformed JSON at byte 20: "
                                                  "expected ',' or '}'"},
        {"{\"event\":\"x\",\"data\":tru}", A4PS_EINVAL, "observe: malformed JSON at byte 20: "
                                                    "unexpected token"},
        {"{\"seq\":1}", A4PS_EINVAL, "observe: the event has no \"event\" string"},
        {"{\"event\":5}", A4PS_EINVAL, "observe: the event has no \"event\" string"},
        {"{\"event\":\"Bad Name\"}", A4PS_EINVAL,
         "observe: \"event\" is not a valid event name ([a-z0-9_.-], at most 63 bytes)"},
        {"{\"event\":\"ok\",\"seq\":\"1\"}", A4PS_EINVAL, "observe: \"seq\" is not a number"},
    };
    EXPECT_ALL(f, "alfred", "observe", bad);
    /* Nesting is bounded. */
    char deep[400];
    int n = snprintf(deep, sizeof deep, "{\"event\":\"x\",\"data\":");
    for (int i = 0; i < 100; i++)
        deep[n++] = '[';
    deep[n] = '\0';
    fx_expect(f, "alfred", "observe", deep, A4PS_EINVAL,
              "observe: malformed JSON at byte 83: nested deeper than 64 levels");
    char *t = send_text(f, "alfred", "report", "", NULL);
    fx_assert_contains("report", t, "events observed: 6\n");
    free(t);

    /* The lists keep the last ten. */
    for (int i = 1; i <= 12; i++) {
        char ev[128];
        snprintf(ev, sizeof ev, "{\"event\":\"tick\",\"seq\":%d,\"time\":%d,"
                 "\"data\":{\"proto\":\"x\"}}", 100 + i, i);
        fx_expect(f, "alfred", "observe", ev, A4PS_OK, "observed tick");
    }
    fx_expect(f, "alfred", "history", "x", A4PS_OK,
              "#103 tick at 3\n#104 tick at 4\n#105 tick at 5\n#106 tick at 6\n"
              "#107 tick at 7\n#108 tick at 8\n#109 tick at 9\n#110 tick at 10\n"
              "#111 tick at 11\n#112 tick at 12");
    t = send_text(f, "alfred", "history", "*", NULL);
    assert_int_equal(fx_occurrences(t, "\n"), 9);
    free(t);

    fx_expect(f, "alfred", "reset", "", A4PS_OK, "reset: forgot 18 events");
    fx_expect(f, "alfred", "report", "", A4PS_OK, "no events observed yet");
    fx_expect(f, "alfred", "history", "b", A4PS_OK, "no events recorded for proto 'b'");

    static const char *const sels[] = {"observe", "report", "history", "reset", "help", NULL};
    help_lists(f, "alfred", "alfred 1.0.0: ALFRED, the supervisor", sels);
}

/* The "at <time>" of each line replaced by "at T": the bus stamps real times. */
static char *untimed(const char *s)
{
    char *out = malloc(strlen(s) + 1);
    assert_non_null(out);
    char *o = out;
    while (*s) {
        if (strncmp(s, " at ", 4) == 0) {
            memcpy(o, " at T", 5);
            o += 5;
            s += 4;
            while ((*s >= '0' && *s <= '9') || *s == '.')
                s++;
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

/* Subscribed to every event of a live kernel. */
static void alfred_observes_the_kernel(void **state)
{
    fx *f = open_with(state, "alfred.so", "alfred", "alfred");
    kernel_events_flush(f->k);          /* alfred's own plugin_loaded is not his */
    char err[KERNEL_ERRLEN] = "";
    assert_int_equal(kernel_subscribe(f->k, "*", "alfred", "observe", err, sizeof err), 0);

    fx_load_ok(f, PERSONA("brick.so"), NULL);                  /* plugin_loaded */
    fx_load_ok(f, PERSONA("babs.so"), NULL);                   /* plugin_loaded */
    fx_load_ok(f, FX_PLUGIN("babs-2.so"), NULL);               /* plugin_loaded */
    fx_proto_ok(f, "b", "babs", "1.0.0");
    fx_proto_ok(f, "brick", "brick", NULL);
    fx_expect(f, "b", "remember", "watched", A4PS_OK, "noted #1");
    fx_swap_ok(f, "b", "2.0.0");                               /* swap_committed */
    fx_expect(f, "brick", "fly", "", A4PS_ENOSYS, NULL);       /* message_not_understood */
    assert_int_equal(kernel_rollback(f->k, "b", err, sizeof err), 0);  /* swap_rolled_back */
    assert_int_equal(kernel_emit(f->k, "custom", "{\"proto\":\"brick\",\"n\":[1,2]}"), 0);
    kernel_events_flush(f->k);

    char *t = send_text(f, "alfred", "report", "", NULL);
    char *u = untimed(t);
    assert_string_equal(u,
                        "events observed: 7\n"
                        "by event:\n"
                        "  plugin_loaded: 3\n"
                        "  custom: 1\n"
                        "  message_not_understood: 1\n"
                        "  swap_committed: 1\n"
                        "  swap_rolled_back: 1\n"
                        "last 5 events:\n"
                        "  #4 plugin_loaded at T\n"
                        "  #5 swap_committed at T (proto b)\n"
                        "  #6 message_not_understood at T (proto brick)\n"
                        "  #7 swap_rolled_back at T (proto b)\n"
                        "  #8 custom at T (proto brick)");
    free(u);
    free(t);
    t = send_text(f, "alfred", "history", "b", NULL);
    u = untimed(t);
    assert_string_equal(u, "#5 swap_committed at T\n#7 swap_rolled_back at T");
    free(u);
    free(t);
    t = send_text(f, "alfred", "history", "brick", NULL);
    u = untimed(t);
    assert_string_equal(u, "#6 message_not_understood at T\n#8 custom at T");
    free(u);
    free(t);

    /* Every delivery succeeded. */
    char *log = fx_snapshot(f, &f->log);
    fx_assert_lacks("the kernel's log", log, "observer alfred.observe failed");
    free(log);
}

/* Each persona says what it is. */
static void personas_describe_themselves(void **state)
{
    fx *f = fx_open(NULL);
    *state = f;
    static const struct {
        const char *file, *name, *kind;
    } p[] = {
        {"brick.so", "brick", "persona"},
        {"robin.so", "robin", "persona"},
        {"babs.so", "babs", "persona"},
        {"alfred.so", "alfred", "monitor"},
    };
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        kernel_version_info info;
        char path[PATH_MAX];
        fx_load_ok(f, persona_path(path, sizeof path, p[i].file), &info);
        assert_string_equal(info.name, p[i].name);
        assert_string_equal(info.version, "1.0.0");
        fx_proto_ok(f, p[i].name, p[i].name, NULL);
        char *e = kernel_explain(f->k, p[i].name);
        assert_non_null(e);
        fx_assert_contains("explain", e, "\"description\":\"");
        fx_assert_contains("explain", e, "\"selector\":\"help\"");
        free(e);
    }
}

int main(void)
{
    fx_capture_handlers();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(brick_evaluates, teardown),
        cmocka_unit_test_teardown(brick_eval_errors_name_the_column, teardown),
        cmocka_unit_test_teardown(brick_eval_limits, teardown),
        cmocka_unit_test_teardown(brick_checks_consistency, teardown),
        cmocka_unit_test_teardown(brick_finds_minimal_contradiction, teardown),
        cmocka_unit_test_teardown(brick_check_errors, teardown),
        cmocka_unit_test_teardown(robin_feels, teardown),
        cmocka_unit_test_teardown(robin_lexicon, teardown),
        cmocka_unit_test_teardown(babs_notes, teardown),
        cmocka_unit_test_teardown(babs_remember_is_atomic, teardown),
        cmocka_unit_test_teardown(babs_migrates_and_rolls_back, teardown),
        cmocka_unit_test_teardown(alfred_keeps_books, teardown),
        cmocka_unit_test_teardown(alfred_observes_the_kernel, teardown),
        cmocka_unit_test_teardown(personas_describe_themselves, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
