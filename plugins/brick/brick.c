/* brick.c -- BRICK, the logician persona.
 *
 * Two deterministic skills, no model:
 *   eval   evaluates an arithmetic and boolean expression and names the column
 *          of whatever is wrong with it;
 *   check  decides whether a set of propositional statements can all hold at
 *          once, giving one satisfying assignment or a minimal contradictory
 *          subset of the statements.
 *
 * eval's grammar, loosest binding first (C's order, plus '^'):
 *     or        or  ||                       left
 *     and       and &&                       left
 *     equality  == !=                        left  (two numbers or two booleans)
 *     relation  < <= > >=                    left  (numbers)
 *     additive  + -                          left
 *     product   * / %                        left  (% is C's fmod)
 *     unary     - + ! not                    prefix
 *     power     ^                            right (binds tighter than unary
 *                                            minus: -2^2 is -4, as in maths;
 *                                            its right operand may be unary:
 *                                            2^-1 is 0.5)
 *     primary   number, true, false, ( expr )
 * Because the language has no variables, every subexpression's type is known
 * while parsing: type errors are found even in the branch that 'and'/'or'
 * short-circuits, while runtime errors (division by zero, overflow) are
 * raised only on the branch actually evaluated, as in C.
 *
 * check's grammar, loosest first: iff (<->, <=>), implies (->, =>; right
 * associative), or (||, |), and (&&, &), not (!, ~), then a variable, true,
 * false or ( ... ).  The truth table is evaluated 64 rows at a time, one bit
 * per row, and each statement's whole column is kept so that the deletion
 * search for a minimal contradictory subset only ANDs bit vectors.
 *
 * Keywords are case-insensitive; variable names are case-sensitive.  Columns
 * are 1-based byte offsets: into the expression for eval, into the statement
 * (counting from just after its ';' or newline) for check, whose statements
 * are numbered from 1 skipping blank ones.  Uses abi/a4ps.h, libc and libm only; no mutable
 * global state. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "a4ps.h"
#include "persona.h"

#define EVAL_MAX_INPUT 4096u     /* bytes of one expression */
#define MAX_DEPTH 256            /* nesting; deeper recursion risks the stack */
#define NUM_MAX_DIGITS 64u       /* a longer literal is refused, not rounded */
#define CHECK_MAX_INPUT 4096u    /* bytes of all statements together */
#define CHECK_MAX_STMTS 64
#define CHECK_MAX_VARS 20        /* 2^20 rows: 128 KiB of bits per statement */
#define IDENT_MAX 64
#define ERRLEN 256

static const a4ps_plugin brick_plugin;

/* ---- small helpers ---- */

static bool is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* Case-insensitive comparison of s[0..n) with the lower-case word w. */
static bool word_is(const char *s, size_t n, const char *w)
{
    size_t i = 0;
    for (; i < n && w[i]; i++)
        if (lower((unsigned char)s[i]) != w[i])
            return false;
    return i == n && w[i] == '\0';
}

/* Describe the bytes s[0..n) of a token for an error message: quoted, cut at
 * 32 bytes, or "end of input". */
static void describe(char *out, size_t cap, const char *s, size_t n)
{
    if (n == 0)
        snprintf(out, cap, "end of input");
    else if (n > 32)
        snprintf(out, cap, "'%.32s...'", s);
    else
        snprintf(out, cap, "'%.*s'", (int)n, s);
}

/* An error about a byte that starts no token. */
static void bad_byte(char *err, size_t errlen, const char *prefix, size_t col,
                     unsigned char c, bool eval_hints)
{
    if (eval_hints && c == '=')
        snprintf(err, errlen, "%sat column %zu: '=' is not an operator (compare with '==')",
                 prefix, col);
    else if (eval_hints && (c == '&' || c == '|'))
        snprintf(err, errlen, "%sat column %zu: '%c' is not an operator (use '%c%c')",
                 prefix, col, c, c, c);
    else if (c > 32 && c < 127)
        snprintf(err, errlen, "%sat column %zu: unexpected character '%c'", prefix, col, c);
    else
        snprintf(err, errlen, "%sat column %zu: unexpected byte 0x%02x", prefix, col, c);
}

/* ======================================================================
 * eval
 * ====================================================================== */

typedef enum etok {
    E_END, E_NUM, E_TRUE, E_FALSE, E_LP, E_RP,
    E_PLUS, E_MINUS, E_STAR, E_SLASH, E_PCT, E_CARET,
    E_LT, E_LE, E_GT, E_GE, E_EQ, E_NE,
    E_AND, E_OR, E_NOT,
} etok;

typedef struct evaluator {
    const char *s;
    size_t n;
    size_t pos;                  /* just past the current token */
    etok t;                      /* the current token */
    size_t tstart, tlen;         /* its bytes */
    double tnum;                 /* its value when E_NUM */
    int depth;
    bool failed;
    char err[ERRLEN];
} evaluator;

typedef struct value {
    bool is_bool;
    bool b;
    double num;
} value;

static bool ev_fail(evaluator *e, const char *fmt, size_t col, const char *what)
{
    if (!e->failed) {
        e->failed = true;
        snprintf(e->err, sizeof e->err, fmt, col, what);
    }
    return false;
}

/* Read the next token into e->t; false (with e->err set) on a lexical error. */
static bool ev_next(evaluator *e)
{
    const char *s = e->s;
    size_t i = e->pos;
    while (i < e->n && is_space((unsigned char)s[i]))
        i++;
    e->tstart = i;
    if (i >= e->n) {
        e->t = E_END;
        e->tlen = 0;
        e->pos = i;
        return true;
    }
    unsigned char c = (unsigned char)s[i];
    size_t len = 1;
    if (is_digit(c) || (c == '.' && i + 1 < e->n && is_digit((unsigned char)s[i + 1]))) {
        size_t j = i;
        while (j < e->n && is_digit((unsigned char)s[j]))
            j++;
        if (j < e->n && s[j] == '.') {
            j++;
            while (j < e->n && is_digit((unsigned char)s[j]))
                j++;
        }
        len = j - i;
        if (j < e->n && (is_alpha((unsigned char)s[j]) || s[j] == '.')) {
            /* "12abc" or "1.2.3": one malformed number, not two tokens. */
            size_t k = j;
            while (k < e->n && (is_alpha((unsigned char)s[k]) || is_digit((unsigned char)s[k]) ||
                                s[k] == '.'))
                k++;
            char what[48];
            describe(what, sizeof what, s + i, k - i);
            return ev_fail(e, "error at column %zu: malformed number %s", i + 1, what);
        }
        if (len > NUM_MAX_DIGITS)
            return ev_fail(e, "error at column %zu: number too long%s", i + 1, "");
        char buf[NUM_MAX_DIGITS + 1];
        memcpy(buf, s + i, len);
        buf[len] = '\0';
        /* Only digits and one '.' reach strtod, so hex, exponents and
         * "inf" never do; the kernel runs in the C locale. */
        e->tnum = strtod(buf, NULL);
        if (!isfinite(e->tnum))
            return ev_fail(e, "error at column %zu: number too large%s", i + 1, "");
        e->t = E_NUM;
    } else if (is_alpha(c)) {
        size_t j = i;
        while (j < e->n && (is_alpha((unsigned char)s[j]) || is_digit((unsigned char)s[j])))
            j++;
        len = j - i;
        if (word_is(s + i, len, "true"))
            e->t = E_TRUE;
        else if (word_is(s + i, len, "false"))
            e->t = E_FALSE;
        else if (word_is(s + i, len, "and"))
            e->t = E_AND;
        else if (word_is(s + i, len, "or"))
            e->t = E_OR;
        else if (word_is(s + i, len, "not"))
            e->t = E_NOT;
        else {
            char what[48];
            describe(what, sizeof what, s + i, len);
            return ev_fail(e, "error at column %zu: unknown identifier %s", i + 1, what);
        }
    } else {
        unsigned char d = i + 1 < e->n ? (unsigned char)s[i + 1] : 0;
        switch (c) {
        case '(': e->t = E_LP; break;
        case ')': e->t = E_RP; break;
        case '+': e->t = E_PLUS; break;
        case '-': e->t = E_MINUS; break;
        case '*': e->t = E_STAR; break;
        case '/': e->t = E_SLASH; break;
        case '%': e->t = E_PCT; break;
        case '^': e->t = E_CARET; break;
        case '<': e->t = d == '=' ? E_LE : E_LT; len = d == '=' ? 2 : 1; break;
        case '>': e->t = d == '=' ? E_GE : E_GT; len = d == '=' ? 2 : 1; break;
        case '!': e->t = d == '=' ? E_NE : E_NOT; len = d == '=' ? 2 : 1; break;
        case '=':
            if (d != '=')
                goto bad;
            e->t = E_EQ;
            len = 2;
            break;
        case '&':
            if (d != '&')
                goto bad;
            e->t = E_AND;
            len = 2;
            break;
        case '|':
            if (d != '|')
                goto bad;
            e->t = E_OR;
            len = 2;
            break;
        default:
            goto bad;
        }
    }
    e->tlen = len;
    e->pos = i + len;
    return true;
bad:
    if (!e->failed) {
        e->failed = true;
        bad_byte(e->err, sizeof e->err, "error ", i + 1, c, true);
    }
    return false;
}

/* The current token as written, for messages about operators. */
static void ev_tok_text(const evaluator *e, char *out, size_t cap)
{
    snprintf(out, cap, "%.*s", (int)e->tlen, e->s + e->tstart);
}

static bool ev_type_error(evaluator *e, size_t col, const char *op, const char *needs)
{
    if (!e->failed) {
        e->failed = true;
        snprintf(e->err, sizeof e->err, "type error at column %zu: '%s' needs %s", col, op, needs);
    }
    return false;
}

/* Keep -0 out of replies and refuse non-finite results of an operator. */
static bool ev_finish_num(evaluator *e, bool live, size_t col, double r, value *out)
{
    if (live && !isfinite(r)) {
        if (!e->failed) {
            e->failed = true;
            snprintf(e->err, sizeof e->err, "overflow at column %zu: the result is too large", col);
        }
        return false;
    }
    out->is_bool = false;
    out->num = r == 0 ? 0.0 : r;
    return true;
}

static bool ev_or(evaluator *e, bool live, value *out);
static bool ev_unary(evaluator *e, bool live, value *out);

static bool ev_primary(evaluator *e, bool live, value *out)
{
    char what[48];
    switch (e->t) {
    case E_NUM:
        out->is_bool = false;
        out->num = e->tnum;
        return ev_next(e);
    case E_TRUE:
    case E_FALSE:
        out->is_bool = true;
        out->b = e->t == E_TRUE;
        return ev_next(e);
    case E_LP: {
        size_t col = e->tstart + 1;
        if (++e->depth > MAX_DEPTH)
            return ev_fail(e, "error at column %zu: nesting deeper than %s levels", col, "256");
        if (!ev_next(e) || !ev_or(e, live, out))
            return false;
        if (e->t != E_RP) {
            describe(what, sizeof what, e->s + e->tstart, e->tlen);
            return ev_fail(e, "error at column %zu: expected ')' but found %s", e->tstart + 1, what);
        }
        e->depth--;
        return ev_next(e);
    }
    default:
        describe(what, sizeof what, e->s + e->tstart, e->tlen);
        return ev_fail(e, "error at column %zu: expected a number, 'true', 'false' or '(' "
                       "but found %s", e->tstart + 1, what);
    }
}

/* power := primary [ '^' unary ]  -- right associative through unary. */
static bool ev_power(evaluator *e, bool live, value *out)
{
    if (!ev_primary(e, live, out))
        return false;
    if (e->t != E_CARET)
        return true;
    size_t col = e->tstart + 1;
    /* 2^2^2^... nests through the right operand: it counts as depth. */
    if (++e->depth > MAX_DEPTH)
        return ev_fail(e, "error at column %zu: nesting deeper than %s levels", col, "256");
    if (!ev_next(e))
        return false;
    value rhs;
    if (!ev_unary(e, live, &rhs))
        return false;
    e->depth--;
    if (out->is_bool || rhs.is_bool)
        return ev_type_error(e, col, "^", "numbers");
    if (!live)
        return true;
    double a = out->num, b = rhs.num;
    if (a == 0 && b < 0)
        return ev_fail(e, "division by zero at column %zu%s", col, "");
    double r = pow(a, b);
    if (isnan(r))
        return ev_fail(e, "math error at column %zu: %s", col,
                       "'^' of a negative number to a fractional power");
    return ev_finish_num(e, live, col, r, out);
}

static bool ev_unary(evaluator *e, bool live, value *out)
{
    if (e->t != E_MINUS && e->t != E_PLUS && e->t != E_NOT)
        return ev_power(e, live, out);
    size_t col = e->tstart + 1;
    etok op = e->t;
    char text[8];
    ev_tok_text(e, text, sizeof text);
    if (++e->depth > MAX_DEPTH)
        return ev_fail(e, "error at column %zu: nesting deeper than %s levels", col, "256");
    if (!ev_next(e) || !ev_unary(e, live, out))
        return false;
    e->depth--;
    if (op == E_NOT) {
        if (!out->is_bool)
            return ev_type_error(e, col, text, "a boolean");
        out->b = !out->b;
        return true;
    }
    if (out->is_bool) {
        if (!e->failed) {
            e->failed = true;
            snprintf(e->err, sizeof e->err, "type error at column %zu: unary '%s' needs a number",
                     col, text);
        }
        return false;
    }
    if (op == E_MINUS)
        out->num = out->num == 0 ? 0.0 : -out->num;
    return true;
}

static bool ev_product(evaluator *e, bool live, value *out)
{
    if (!ev_unary(e, live, out))
        return false;
    while (e->t == E_STAR || e->t == E_SLASH || e->t == E_PCT) {
        etok op = e->t;
        size_t col = e->tstart + 1;
        char text[4];
        ev_tok_text(e, text, sizeof text);
        value rhs;
        if (!ev_next(e) || !ev_unary(e, live, &rhs))
            return false;
        if (out->is_bool || rhs.is_bool)
            return ev_type_error(e, col, text, "numbers");
        double r = 0;
        if (live) {
            if (op != E_STAR && rhs.num == 0)
                return ev_fail(e, "division by zero at column %zu%s", col, "");
            r = op == E_STAR ? out->num * rhs.num
              : op == E_SLASH ? out->num / rhs.num : fmod(out->num, rhs.num);
        }
        if (!ev_finish_num(e, live, col, r, out))
            return false;
    }
    return true;
}

static bool ev_additive(evaluator *e, bool live, value *out)
{
    if (!ev_product(e, live, out))
        return false;
    while (e->t == E_PLUS || e->t == E_MINUS) {
        etok op = e->t;
        size_t col = e->tstart + 1;
        char text[4];
        ev_tok_text(e, text, sizeof text);
        value rhs;
        if (!ev_next(e) || !ev_product(e, live, &rhs))
            return false;
        if (out->is_bool || rhs.is_bool)
            return ev_type_error(e, col, text, "numbers");
        double r = live ? (op == E_PLUS ? out->num + rhs.num : out->num - rhs.num) : 0;
        if (!ev_finish_num(e, live, col, r, out))
            return false;
    }
    return true;
}

static bool ev_relation(evaluator *e, bool live, value *out)
{
    if (!ev_additive(e, live, out))
        return false;
    while (e->t == E_LT || e->t == E_LE || e->t == E_GT || e->t == E_GE) {
        etok op = e->t;
        size_t col = e->tstart + 1;
        char text[4];
        ev_tok_text(e, text, sizeof text);
        value rhs;
        if (!ev_next(e) || !ev_additive(e, live, &rhs))
            return false;
        if (out->is_bool || rhs.is_bool)
            return ev_type_error(e, col, text, "numbers");
        double a = out->num, b = rhs.num;
        out->is_bool = true;
        out->b = op == E_LT ? a < b : op == E_LE ? a <= b : op == E_GT ? a > b : a >= b;
    }
    return true;
}

static bool ev_equality(evaluator *e, bool live, value *out)
{
    if (!ev_relation(e, live, out))
        return false;
    while (e->t == E_EQ || e->t == E_NE) {
        bool eq = e->t == E_EQ;
        size_t col = e->tstart + 1;
        char text[4];
        ev_tok_text(e, text, sizeof text);
        value rhs;
        if (!ev_next(e) || !ev_relation(e, live, &rhs))
            return false;
        if (out->is_bool != rhs.is_bool)
            return ev_type_error(e, col, text, "two numbers or two booleans");
        bool same = out->is_bool ? out->b == rhs.b : out->num == rhs.num;
        out->is_bool = true;
        out->b = eq ? same : !same;
    }
    return true;
}

/* and/or short-circuit: the right operand is parsed and type-checked but not
 * evaluated ("live") when the left one decides, as in C. */
static bool ev_and(evaluator *e, bool live, value *out)
{
    if (!ev_equality(e, live, out))
        return false;
    while (e->t == E_AND) {
        size_t col = e->tstart + 1;
        char text[4];
        ev_tok_text(e, text, sizeof text);
        bool decided = out->is_bool && !out->b;
        value rhs;
        if (!ev_next(e) || !ev_equality(e, live && !decided, &rhs))
            return false;
        if (!out->is_bool || !rhs.is_bool)
            return ev_type_error(e, col, text, "booleans");
        out->b = out->b && rhs.b;
    }
    return true;
}

static bool ev_or(evaluator *e, bool live, value *out)
{
    if (!ev_and(e, live, out))
        return false;
    while (e->t == E_OR) {
        size_t col = e->tstart + 1;
        char text[4];
        ev_tok_text(e, text, sizeof text);
        bool decided = out->is_bool && out->b;
        value rhs;
        if (!ev_next(e) || !ev_and(e, live && !decided, &rhs))
            return false;
        if (!out->is_bool || !rhs.is_bool)
            return ev_type_error(e, col, text, "booleans");
        out->b = out->b || rhs.b;
    }
    return true;
}

/* Evaluate text[0..n) into out (the reply text) or err.  Returns A4PS_OK or
 * A4PS_EINVAL.  Pure: shared by the method and the self-test. */
static int brick_evaluate(const char *text, size_t n, char *out, size_t cap)
{
    if (n > EVAL_MAX_INPUT) {
        snprintf(out, cap, "expression too long: %zu bytes (the limit is %u)", n, EVAL_MAX_INPUT);
        return A4PS_EINVAL;
    }
    evaluator e = {.s = text, .n = n};
    value v = {0};
    bool ok = ev_next(&e);
    if (ok && e.t == E_END) {
        snprintf(out, cap, "error at column %zu: empty expression", e.tstart + 1);
        return A4PS_EINVAL;
    }
    ok = ok && ev_or(&e, true, &v);
    if (ok && e.t != E_END) {
        char what[48];
        describe(what, sizeof what, e.s + e.tstart, e.tlen);
        ok = ev_fail(&e, "error at column %zu: expected an operator or end of input but found %s",
                     e.tstart + 1, what);
    }
    if (!ok) {
        snprintf(out, cap, "%s", e.err);
        return A4PS_EINVAL;
    }
    if (v.is_bool)
        snprintf(out, cap, "%s", v.b ? "true" : "false");
    else
        snprintf(out, cap, "%.15g", v.num);
    return A4PS_OK;
}

static int brick_eval(a4ps_ctx *ctx, const void *msg, size_t len)
{
    char out[ERRLEN + 64];
    int rc = brick_evaluate(msg, len, out, sizeof out);
    return reply_text(ctx, rc, out);
}

/* ======================================================================
 * check
 * ====================================================================== */

typedef enum pop {
    P_VAR, P_TRUE, P_FALSE, P_NOT, P_AND, P_OR, P_IMP, P_IFF,
} pop;

typedef struct pinstr {
    uint8_t op;
    uint8_t var;                 /* P_VAR: index into the variable table */
} pinstr;

typedef enum ptok {
    Q_END, Q_VAR, Q_TRUE, Q_FALSE, Q_LP, Q_RP, Q_NOT, Q_AND, Q_OR, Q_IMP, Q_IFF,
} ptok;

typedef struct checker {
    /* The whole input and the current statement's bounds within it. */
    const char *s;
    size_t start, end;
    size_t pos;
    ptok t;
    size_t tstart, tlen;
    int depth;
    unsigned stmt;               /* 1-based number of the statement */
    bool failed;
    char err[ERRLEN];

    /* Variables in order of first appearance until sorted. */
    char vars[CHECK_MAX_VARS][IDENT_MAX + 1];
    int nvars;

    /* Postfix code of every statement, one after another. */
    pinstr *code;
    size_t ncode, capcode;
    size_t stmt_at[CHECK_MAX_STMTS + 1];
    unsigned nstmts;
} checker;

/* The current token for a message; a statement ends before the input does. */
static void ck_describe(const checker *c, char *out, size_t cap)
{
    if (c->t == Q_END)
        snprintf(out, cap, "end of statement");
    else
        describe(out, cap, c->s + c->tstart, c->tlen);
}

static bool ck_fail(checker *c, size_t at, const char *fmt, const char *what)
{
    if (!c->failed) {
        c->failed = true;
        char msg[ERRLEN];
        snprintf(msg, sizeof msg, fmt, what);
        snprintf(c->err, sizeof c->err, "error in statement %u at column %zu: %s", c->stmt,
                 at - c->start + 1, msg);
    }
    return false;
}

static bool ck_emit(checker *c, pop op, int var)
{
    if (c->ncode == c->capcode) {
        size_t cap = c->capcode ? c->capcode * 2 : 64;
        pinstr *p = realloc(c->code, cap * sizeof *p);
        if (!p)
            return ck_fail(c, c->tstart, "%s", "out of memory");
        c->code = p;
        c->capcode = cap;
    }
    c->code[c->ncode++] = (pinstr){.op = (uint8_t)op, .var = (uint8_t)var};
    return true;
}

static bool ck_next(checker *c)
{
    const char *s = c->s;
    size_t i = c->pos;
    while (i < c->end && is_space((unsigned char)s[i]))
        i++;
    c->tstart = i;
    c->tlen = 0;
    if (i >= c->end) {
        c->t = Q_END;
        c->pos = i;
        return true;
    }
    unsigned char ch = (unsigned char)s[i];
    unsigned char d = i + 1 < c->end ? (unsigned char)s[i + 1] : 0;
    unsigned char d2 = i + 2 < c->end ? (unsigned char)s[i + 2] : 0;
    size_t len = 1;
    if (is_alpha(ch)) {
        size_t j = i;
        while (j < c->end && (is_alpha((unsigned char)s[j]) || is_digit((unsigned char)s[j])))
            j++;
        len = j - i;
        const char *w = s + i;
        if (word_is(w, len, "true"))
            c->t = Q_TRUE;
        else if (word_is(w, len, "false"))
            c->t = Q_FALSE;
        else if (word_is(w, len, "not"))
            c->t = Q_NOT;
        else if (word_is(w, len, "and"))
            c->t = Q_AND;
        else if (word_is(w, len, "or"))
            c->t = Q_OR;
        else if (word_is(w, len, "implies"))
            c->t = Q_IMP;
        else if (word_is(w, len, "iff"))
            c->t = Q_IFF;
        else if (len > IDENT_MAX) {
            c->tstart = i;
            return ck_fail(c, i, "variable names are limited to %s bytes", "64");
        } else
            c->t = Q_VAR;
    } else if (ch == '(') {
        c->t = Q_LP;
    } else if (ch == ')') {
        c->t = Q_RP;
    } else if (ch == '!' || ch == '~') {
        c->t = Q_NOT;
    } else if (ch == '&') {
        c->t = Q_AND;
        len = d == '&' ? 2 : 1;
    } else if (ch == '|') {
        c->t = Q_OR;
        len = d == '|' ? 2 : 1;
    } else if ((ch == '-' || ch == '=') && d == '>') {
        c->t = Q_IMP;
        len = 2;
    } else if (ch == '<' && (d == '-' || d == '=') && d2 == '>') {
        c->t = Q_IFF;
        len = 3;
    } else {
        if (!c->failed) {
            char prefix[48];
            c->failed = true;
            snprintf(prefix, sizeof prefix, "error in statement %u ", c->stmt);
            bad_byte(c->err, sizeof c->err, prefix, i - c->start + 1, ch, false);
        }
        return false;
    }
    c->tlen = len;
    c->pos = i + len;
    return true;
}

static int ck_var_index(checker *c, const char *name, size_t len)
{
    for (int v = 0; v < c->nvars; v++)
        if (strlen(c->vars[v]) == len && memcmp(c->vars[v], name, len) == 0)
            return v;
    if (c->nvars == CHECK_MAX_VARS) {
        char what[IDENT_MAX + 8];
        snprintf(what, sizeof what, "'%.*s'", (int)len, name);
        ck_fail(c, c->tstart, "too many variables: %s would be the 21st (the limit is 20)", what);
        return -1;
    }
    memcpy(c->vars[c->nvars], name, len);
    c->vars[c->nvars][len] = '\0';
    return c->nvars++;
}

static bool ck_iff(checker *c);

static bool ck_not(checker *c)
{
    char what[48];
    switch (c->t) {
    case Q_NOT: {
        size_t at = c->tstart;
        if (++c->depth > MAX_DEPTH)
            return ck_fail(c, at, "nesting deeper than %s levels", "256");
        if (!ck_next(c) || !ck_not(c))
            return false;
        c->depth--;
        return ck_emit(c, P_NOT, 0);
    }
    case Q_VAR: {
        int v = ck_var_index(c, c->s + c->tstart, c->tlen);
        return v >= 0 && ck_emit(c, P_VAR, v) && ck_next(c);
    }
    case Q_TRUE:
    case Q_FALSE:
        return ck_emit(c, c->t == Q_TRUE ? P_TRUE : P_FALSE, 0) && ck_next(c);
    case Q_LP: {
        size_t at = c->tstart;
        if (++c->depth > MAX_DEPTH)
            return ck_fail(c, at, "nesting deeper than %s levels", "256");
        if (!ck_next(c) || !ck_iff(c))
            return false;
        if (c->t != Q_RP) {
            ck_describe(c, what, sizeof what);
            return ck_fail(c, c->tstart, "expected ')' but found %s", what);
        }
        c->depth--;
        return ck_next(c);
    }
    default:
        ck_describe(c, what, sizeof what);
        return ck_fail(c, c->tstart, "expected a variable, 'true', 'false', 'not' or '(' "
                       "but found %s", what);
    }
}

static bool ck_and(checker *c)
{
    if (!ck_not(c))
        return false;
    while (c->t == Q_AND)
        if (!ck_next(c) || !ck_not(c) || !ck_emit(c, P_AND, 0))
            return false;
    return true;
}

static bool ck_or(checker *c)
{
    if (!ck_and(c))
        return false;
    while (c->t == Q_OR)
        if (!ck_next(c) || !ck_and(c) || !ck_emit(c, P_OR, 0))
            return false;
    return true;
}

/* Right associative without recursion: a -> b -> c is "a b c IMP IMP" in
 * postfix, so a long chain costs no stack. */
static bool ck_implies(checker *c)
{
    if (!ck_or(c))
        return false;
    size_t pending = 0;
    while (c->t == Q_IMP) {
        if (!ck_next(c) || !ck_or(c))
            return false;
        pending++;
    }
    while (pending--)
        if (!ck_emit(c, P_IMP, 0))
            return false;
    return true;
}

static bool ck_iff(checker *c)
{
    if (!ck_implies(c))
        return false;
    while (c->t == Q_IFF)
        if (!ck_next(c) || !ck_implies(c) || !ck_emit(c, P_IFF, 0))
            return false;
    return true;
}

/* Parse s[start..end) as statement number c->stmt. */
static bool ck_statement(checker *c, size_t start, size_t end)
{
    c->start = c->pos = start;
    c->end = end;
    c->depth = 0;
    if (!ck_next(c) || !ck_iff(c))
        return false;
    if (c->t != Q_END) {
        char what[48];
        ck_describe(c, what, sizeof what);
        return ck_fail(c, c->tstart, "expected an operator or the end of the statement "
                       "but found %s", what);
    }
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Rename variables so index order is name order: the assignment reported is
 * then the first satisfying row counting in that order. */
static void ck_sort_vars(checker *c)
{
    const char *order[CHECK_MAX_VARS];
    for (int v = 0; v < c->nvars; v++)
        order[v] = c->vars[v];
    qsort(order, (size_t)c->nvars, sizeof order[0], cmp_str);
    uint8_t rank[CHECK_MAX_VARS];
    for (int v = 0; v < c->nvars; v++)
        for (int r = 0; r < c->nvars; r++)
            if (order[r] == c->vars[v])
                rank[v] = (uint8_t)r;
    char sorted[CHECK_MAX_VARS][IDENT_MAX + 1];
    for (int r = 0; r < c->nvars; r++)
        memcpy(sorted[r], order[r], IDENT_MAX + 1);
    memcpy(c->vars, sorted, sizeof sorted[0] * (size_t)c->nvars);
    for (size_t i = 0; i < c->ncode; i++)
        if (c->code[i].op == P_VAR)
            c->code[i].var = rank[c->code[i].var];
}

/* 64 consecutive rows of variable v, starting at row 64 * word: row r gives
 * variable v the value of bit v of r. */
static uint64_t var_bits(int v, size_t word)
{
    static const uint64_t low[6] = {
        0xAAAAAAAAAAAAAAAAull, 0xCCCCCCCCCCCCCCCCull, 0xF0F0F0F0F0F0F0F0ull,
        0xFF00FF00FF00FF00ull, 0xFFFF0000FFFF0000ull, 0xFFFFFFFF00000000ull,
    };
    if (v < 6)
        return low[v];
    return (word >> (v - 6)) & 1 ? ~0ull : 0;
}

/* Fill table[0..words) with statement s's truth column. stack has room for
 * the statement's code length. */
static void ck_column(const checker *c, unsigned s, size_t words, uint64_t valid,
                      uint64_t *stack, uint64_t *table)
{
    const pinstr *code = c->code + c->stmt_at[s];
    size_t n = c->stmt_at[s + 1] - c->stmt_at[s];
    for (size_t w = 0; w < words; w++) {
        size_t sp = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t a, b;
            switch ((pop)code[i].op) {
            case P_VAR: stack[sp++] = var_bits(code[i].var, w); break;
            case P_TRUE: stack[sp++] = ~0ull; break;
            case P_FALSE: stack[sp++] = 0; break;
            case P_NOT: stack[sp - 1] = ~stack[sp - 1]; break;
            default:
                b = stack[--sp];
                a = stack[sp - 1];
                stack[sp - 1] = code[i].op == P_AND ? (a & b)
                              : code[i].op == P_OR ? (a | b)
                              : code[i].op == P_IMP ? (~a | b) : ~(a ^ b);
            }
        }
        table[w] = stack[0] & valid;
    }
}

/* The first row satisfying every statement in `in` (skipping `skip`), or -1. */
static long long ck_first_model(uint64_t *const *tables, unsigned nstmts, const bool *in,
                                unsigned skip, size_t words)
{
    for (size_t w = 0; w < words; w++) {
        uint64_t all = ~0ull;
        for (unsigned s = 0; s < nstmts && all; s++)
            if (in[s] && s != skip)
                all &= tables[s][w];
        if (all)
            return (long long)(w * 64 + (size_t)__builtin_ctzll(all));
    }
    return -1;
}

static void buf_add(char *out, size_t cap, size_t *len, const char *s)
{
    int n = snprintf(out + *len, cap > *len ? cap - *len : 0, "%s", s);
    if (n > 0)
        *len = *len + (size_t)n < cap ? *len + (size_t)n : cap - 1;
}

/* Decide statements text[0..n) into out.  Returns A4PS_OK, A4PS_EINVAL or
 * A4PS_ENOMEM.  Pure: shared by the method and the self-test. */
static int brick_decide(const char *text, size_t n, char *out, size_t cap)
{
    if (n > CHECK_MAX_INPUT) {
        snprintf(out, cap, "input too long: %zu bytes (the limit is %u)", n, CHECK_MAX_INPUT);
        return A4PS_EINVAL;
    }
    checker *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(out, cap, "out of memory");
        return A4PS_ENOMEM;
    }
    c->s = text;
    int rc = A4PS_EINVAL;
    uint64_t **tables = NULL;
    uint64_t *stack = NULL;

    /* Statements end at ';' or a newline; blank ones are skipped and not
     * numbered. */
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && text[j] != ';' && text[j] != '\n')
            j++;
        size_t k = i;
        while (k < j && is_space((unsigned char)text[k]))
            k++;
        if (k < j) {
            if (c->nstmts == CHECK_MAX_STMTS) {
                snprintf(out, cap, "too many statements: more than %d", CHECK_MAX_STMTS);
                goto done;
            }
            c->stmt = c->nstmts + 1;
            c->stmt_at[c->nstmts] = c->ncode;
            if (!ck_statement(c, i, j)) {
                snprintf(out, cap, "%s", c->err);
                if (strstr(c->err, "out of memory"))
                    rc = A4PS_ENOMEM;
                goto done;
            }
            c->nstmts++;
        }
        i = j + 1;
    }
    if (c->nstmts == 0) {
        snprintf(out, cap, "no statements: give one or more, separated by ';' or newlines");
        goto done;
    }
    c->stmt_at[c->nstmts] = c->ncode;
    ck_sort_vars(c);

    size_t rows = (size_t)1 << c->nvars;
    size_t words = rows < 64 ? 1 : rows / 64;
    uint64_t valid = rows < 64 ? (((uint64_t)1 << rows) - 1) : ~0ull;
    size_t longest = 1;
    for (unsigned s = 0; s < c->nstmts; s++)
        if (c->stmt_at[s + 1] - c->stmt_at[s] > longest)
            longest = c->stmt_at[s + 1] - c->stmt_at[s];
    tables = calloc(c->nstmts, sizeof *tables);
    stack = malloc(longest * sizeof *stack);
    if (!tables || !stack)
        goto oom;
    for (unsigned s = 0; s < c->nstmts; s++) {
        if (!(tables[s] = malloc(words * sizeof **tables)))
            goto oom;
        ck_column(c, s, words, valid, stack, tables[s]);
    }

    bool in[CHECK_MAX_STMTS] = {false};
    for (unsigned s = 0; s < c->nstmts; s++)
        in[s] = true;
    long long row = ck_first_model(tables, c->nstmts, in, CHECK_MAX_STMTS, words);
    size_t len = 0;
    if (row >= 0) {
        buf_add(out, cap, &len, "consistent: ");
        if (c->nvars == 0)
            buf_add(out, cap, &len, "(no variables)");
        for (int v = 0; v < c->nvars; v++) {
            char item[IDENT_MAX + 16];
            snprintf(item, sizeof item, "%s%s=%s", v ? ", " : "", c->vars[v],
                     ((unsigned long long)row >> v) & 1 ? "true" : "false");
            buf_add(out, cap, &len, item);
        }
        rc = A4PS_OK;
        goto done;
    }

    /* Deletion: a statement whose removal keeps the rest contradictory is
     * not needed.  What remains is minimal: dropping any one member of it
     * makes it satisfiable. */
    for (unsigned s = 0; s < c->nstmts; s++)
        if (ck_first_model(tables, c->nstmts, in, s, words) < 0)
            in[s] = false;
    char head[160];
    if (c->nstmts == 1)
        snprintf(head, sizeof head, "contradiction: no assignment satisfies the statement; "
                 "a minimal contradictory subset (no statement can be dropped) is: ");
    else
        snprintf(head, sizeof head, "contradiction: no assignment satisfies all %u statements; "
                 "a minimal contradictory subset (no statement can be dropped) is: ", c->nstmts);
    buf_add(out, cap, &len, head);
    bool first = true;
    for (unsigned s = 0; s < c->nstmts; s++) {
        if (!in[s])
            continue;
        char item[16];
        snprintf(item, sizeof item, "%s%u", first ? "" : ", ", s + 1);
        buf_add(out, cap, &len, item);
        first = false;
    }
    rc = A4PS_OK;
    goto done;

oom:
    snprintf(out, cap, "out of memory for a truth table of %d variables", c->nvars);
    rc = A4PS_ENOMEM;
done:
    if (tables)
        for (unsigned s = 0; s < c->nstmts; s++)
            free(tables[s]);
    free(tables);
    free(stack);
    free(c->code);
    free(c);
    return rc;
}

static int brick_check(a4ps_ctx *ctx, const void *msg, size_t len)
{
    /* Room for 20 "name=false" items at the longest names. */
    char out[CHECK_MAX_VARS * (IDENT_MAX + 10) + 256];
    int rc = brick_decide(msg, len, out, sizeof out);
    return reply_text(ctx, rc, out);
}

/* ======================================================================
 * help, self-test, descriptor
 * ====================================================================== */

static int brick_help(a4ps_ctx *ctx, const void *msg, size_t len)
{
    return persona_help(ctx, &brick_plugin);
}

/* A few answers that must never change; a build that gets them wrong is not
 * loaded. */
static int brick_self_test(a4ps_ctx *ctx)
{
    static const struct {
        const char *in;
        int rc;
        const char *out;
        bool check;
    } cases[] = {
        {"1 + 2 * 3", A4PS_OK, "7", false},
        {"-2^2", A4PS_OK, "-4", false},
        {"2^3^2", A4PS_OK, "512", false},
        {"1 < 2 and not false", A4PS_OK, "true", false},
        {"(1 + 2", A4PS_EINVAL, "error at column 7: expected ')' but found end of input", false},
        {"1 / 0", A4PS_EINVAL, "division by zero at column 3", false},
        {"A; A -> B", A4PS_OK, "consistent: A=true, B=true", true},
        {"A; not A; B", A4PS_OK, "contradiction: no assignment satisfies all 3 statements; "
                                 "a minimal contradictory subset (no statement can be dropped) is: 1, 2", true},
    };
    char out[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = strlen(cases[i].in);
        int rc = cases[i].check ? brick_decide(cases[i].in, n, out, sizeof out)
                                : brick_evaluate(cases[i].in, n, out, sizeof out);
        if (rc != cases[i].rc || strcmp(out, cases[i].out) != 0)
            return A4PS_ERROR;
    }
    return A4PS_OK;
}

static const a4ps_method brick_methods[] = {
    {"eval", brick_eval, "evaluate the arithmetic or boolean expression in the message "
                         "(+ - * / % ^, < <= > >= == !=, and or not, true false)"},
    {"check", brick_check, "check propositional statements (one per line or ';'; not and or "
                           "-> <->) for consistency: a model or a minimal contradictory subset"},
    {"help", brick_help, "list BRICK's selectors"},
    {NULL, NULL, NULL},
};

static const a4ps_plugin brick_plugin = {
    A4PS_PLUGIN_HEADER,
    .name = "brick",
    .version = "1.0.0",
    .state_version = 1,
    .kind = A4PS_KIND_PERSONA,
    .methods = brick_methods,
    .self_test = brick_self_test,
    .description = "BRICK, the logician: evaluates expressions and checks statements for "
                   "contradictions",
};

A4PS_EXPORT const a4ps_plugin *a4ps_plugin_entry(const a4ps_host_api *host)
{
    return &brick_plugin;
}
