/* test_loader.c -- the bad-plugin corpus against the loader and the fault
 * containment.
 *
 * Every item of the corpus (tests/plugins/bad, plus files this test makes in
 * its temp dir because no compiler would produce them) is either refused --
 * kernel_load fails, its error names the file and what is wrong, a
 * plugin_refused event and kernel_status() name the file -- or, for faults at
 * run time, contained: the call fails, the process lives on, the version is
 * fenced off or the proto rolled back.  Throughout, proto "g" on `good`,
 * loaded before anything bad, must keep answering ping -> pong. */
#define _GNU_SOURCE
#include "plugin_fixture.h"

#include <elf.h>

/* ---- refusals: plugins that compile but break the contract ---- */

static void refuse_major_mismatch(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_major.so"), FX_NEEDLES("abi_major"));
}

static void refuse_signature_mismatch(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_signature.so"),
                      FX_NEEDLES("signature"));
}

static void refuse_wrong_struct_size(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_struct_size.so"),
                      FX_NEEDLES("struct_size"));
}

static void refuse_duplicate_selector(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_dup_selector.so"),
                      FX_NEEDLES("selector"));
}

static void refuse_empty_name(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_empty_name.so"), FX_NEEDLES("name"));
}

static void refuse_bad_name_charset(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_name_charset.so"), FX_NEEDLES("name"));
}

static void refuse_bad_version(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_version.so"), FX_NEEDLES("version"));
}

static void refuse_no_methods(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_no_methods.so"), FX_NEEDLES("methods"));
}

static void refuse_null_method_fn(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_null_fn.so"), FX_NEEDLES("methods"));
}

static void refuse_init_fails(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_init_fails.so"), FX_NEEDLES("init"));
}

static void refuse_init_crashes(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_init_crash.so"),
                      FX_NEEDLES("init", "SIGSEGV"));
}

static void refuse_init_hangs(void **state)
{
    fx *f = fx_get(state);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fx_expect_refusal(f, FX_PLUGIN("bad_init_hang.so"), FX_NEEDLES("init"));
    double ms = fx_ms_since(&t0);
    if (ms > FX_HOOK_TIMEOUT_MS + 2700.0)
        fail_msg("refusing a hanging init took %.0f ms (hook timeout %u ms)", ms,
                 FX_HOOK_TIMEOUT_MS);
}

static void refuse_entry_returns_null(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_entry_null.so"),
                      FX_NEEDLES("entry returned NULL"));
}

static void refuse_missing_entry_symbol(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_no_entry.so"),
                      FX_NEEDLES(A4PS_ENTRY_SYMBOL));
}

static void refuse_self_test_fails(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_self_test_fails.so"),
                      FX_NEEDLES("self_test"));
}

/* A self_test that overruns is refused; it keeps running and keeps writing to
 * its scratch state, which must still be there when it does (ASan checks). */
static void refuse_self_test_late(void **state)
{
    fx *f = fx_get(state);
    fx_expect_refusal(f, FX_PLUGIN("bad_self_test_late.so"), FX_NEEDLES("self_test"));
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 800 * 1000000L};
    nanosleep(&ts, NULL);        /* let the late hook write */
    fx_assert_g_serves(f);
}

/* dlopen(RTLD_NOW) cannot bind the symbol; the error must say which. */
static void refuse_undefined_symbol(void **state)
{
    fx_expect_refusal(fx_get(state), FX_PLUGIN("bad_undefined_symbol.so"),
                      FX_NEEDLES("a4ps_test_no_such_function"));
}

/* ---- refusals: files made here ---- */

/* path of `name` in the test's temp dir (not the kernel's runtime dir). */
static void fx_file(fx *f, const char *name, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", f->dir, name);
    assert_true(n > 0 && (size_t)n < cap);
}

/* Copy at most limit bytes of src to dst (mode 0644). */
static void copy_file(const char *src, const char *dst, size_t limit)
{
    FILE *in = fopen(src, "rb");
    assert_non_null(in);
    FILE *out = fopen(dst, "wb");
    assert_non_null(out);
    char buf[4096];
    size_t n, total = 0;
    while (total < limit && (n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (n > limit - total)
            n = limit - total;
        assert_int_equal(fwrite(buf, 1, n, out), n);
        total += n;
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(chmod(dst, 0644), 0);
}

static void patch_file(const char *path, long off, const void *bytes, size_t n)
{
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, off, SEEK_SET), 0);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static void refuse_not_elf(void **state)
{
    fx *f = fx_get(state);
    char path[PATH_MAX];
    fx_file(f, "plain-text.so", path, sizeof path);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("this is a text file, not a shared object\n", fp);
    assert_int_equal(fclose(fp), 0);
    fx_expect_refusal(f, path, FX_NEEDLES("ELF"));
}

/* The ELF header survives; the program and section headers do not. */
static void refuse_truncated_elf(void **state)
{
    fx *f = fx_get(state);
    char path[PATH_MAX];
    fx_file(f, "cut-short.so", path, sizeof path);
    copy_file(FX_PLUGIN("good.so"), path, 200);
    fx_expect_refusal(f, path, FX_NEEDLES("truncated"));
}

static void refuse_wrong_machine(void **state)
{
    fx *f = fx_get(state);
    char path[PATH_MAX];
    fx_file(f, "other-arch.so", path, sizeof path);
    copy_file(FX_PLUGIN("good-2.so"), path, SIZE_MAX);
#if defined(__aarch64__)
    uint16_t machine = EM_X86_64;
#else
    uint16_t machine = EM_AARCH64;
#endif
    patch_file(path, offsetof(Elf64_Ehdr, e_machine), &machine, sizeof machine);
    fx_expect_refusal(f, path, FX_NEEDLES("e_machine"));
}

static void refuse_elf_class_32(void **state)
{
    fx *f = fx_get(state);
    char path[PATH_MAX];
    fx_file(f, "wordsize-32.so", path, sizeof path);
    copy_file(FX_PLUGIN("good-2.so"), path, SIZE_MAX);
    unsigned char cls = sizeof(void *) == 8 ? ELFCLASS32 : ELFCLASS64;
    patch_file(path, EI_CLASS, &cls, 1);
    fx_expect_refusal(f, path, FX_NEEDLES("EI_CLASS"));
}

static void refuse_not_shared_object(void **state)
{
    fx *f = fx_get(state);
    char path[PATH_MAX];
    fx_file(f, "program.so", path, sizeof path);
    copy_file(FX_PLUGIN("good-2.so"), path, SIZE_MAX);
    uint16_t type = ET_EXEC;
    patch_file(path, offsetof(Elf64_Ehdr, e_type), &type, sizeof type);
    fx_expect_refusal(f, path, FX_NEEDLES("e_type"));
}

/* A copy of a plugin not loaded yet, so a kernel that hashed before checking
 * the mode could not answer "already loaded" instead. */
static void refuse_group_writable(void **state)
{
    fx *f = fx_get(state);
    char path[PATH_MAX];
    fx_file(f, "group-w.so", path, sizeof path);
    copy_file(FX_PLUGIN("good-2.so"), path, SIZE_MAX);
    assert_int_equal(chmod(path, 0664), 0);
    fx_expect_refusal(f, path, FX_NEEDLES("writable"));
}

static void refuse_directory(void **state)
{
    fx *f = fx_get(state);
    char path[PATH_MAX];
    fx_file(f, "a-directory.so", path, sizeof path);
    assert_int_equal(mkdir(path, 0755), 0);
    fx_expect_refusal(f, path, FX_NEEDLES("regular file"));
}

/* Opens the FIFO for writing once the test has waited long enough, so a
 * kernel that blocks opening it for reading comes back and the test fails on
 * time instead of hanging until ctest kills it. */
typedef struct fifo_watch {
    const char *path;
    _Atomic int done;
} fifo_watch;

static void *fifo_unblock(void *arg)
{
    fifo_watch *w = arg;
    for (int i = 0; i < 200 && !w->done; i++) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (!w->done) {
        int fd = open(w->path, O_WRONLY | O_NONBLOCK);
        if (fd >= 0)
            close(fd);
    }
    return NULL;
}

static void refuse_fifo(void **state)
{
    fx *f = fx_get(state);
    char path[PATH_MAX];
    fx_file(f, "a-fifo.so", path, sizeof path);
    assert_int_equal(mkfifo(path, 0644), 0);
    fifo_watch w = {.path = path, .done = 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fifo_unblock, &w), 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char err[KERNEL_ERRLEN] = "";
    kernel_version_info info;
    int rc = kernel_load(f->k, path, &info, err, sizeof err);
    double ms = fx_ms_since(&t0);
    w.done = 1;
    pthread_join(th, NULL);
    if (ms >= 1900.0)
        fail_msg("kernel_load blocked %.0f ms on a FIFO (rc %d: %s)", ms, rc, err);
    /* Not blocking established, the refusal is checked the usual way. */
    fx_expect_refusal(f, path, FX_NEEDLES("regular file"));
}

static void small_max_plugin_bytes(kernel_config *cfg)
{
    cfg->max_plugin_bytes = 4096;
}

/* No `good` here: it is itself larger than 4096 bytes. */
static int fx_setup_small(void **state)
{
    *state = fx_open(small_max_plugin_bytes);
    return 0;
}

static void refuse_too_large(void **state)
{
    fx *f = fx_get(state);
    char path[PATH_MAX];
    fx_file(f, "oversized.so", path, sizeof path);
    copy_file(FX_PLUGIN("good.so"), path, SIZE_MAX);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true((size_t)st.st_size > f->cfg.max_plugin_bytes);
    fx_expect_refusal(f, path, FX_NEEDLES("max_plugin_bytes"));
}

/* KERNEL_LOAD_NO_DOWNGRADE (what a dropped file gets): a new binary of a
 * lower version than the newest loaded is refused before its init runs,
 * naming both versions; without the flag it is stored, as an older one. */
static void refuse_downgrade_when_asked(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("sw-2.so"), NULL);
    char err[KERNEL_ERRLEN];
    kernel_version_info info;
    int rc = kernel_load_ex(f->k, FX_PLUGIN("sw-1.so"), KERNEL_LOAD_NO_DOWNGRADE, &info, err,
                            sizeof err);
    assert_int_equal(rc, A4PS_EPERM);
    fx_assert_contains("the refusal", err, "sw 1.0.0 is lower than the live 2.0.0");
    fx_load_ok(f, FX_PLUGIN("sw-1.so"), NULL);
}

/* ---- containment of faults at run time ---- */

typedef struct fault_case {
    const char *file;             /* the faulting 2.0.0 */
    const char *file_v1;          /* the well-behaved 1.0.0 */
    const char *plugin;
    const char *signal;
} fault_case;

static const fault_case segv_case = {FX_PLUGIN("bad_method_crash.so"),
                                     FX_PLUGIN("bad_method_crash-1.so"),
                                     "method-crash", "SIGSEGV"};
static const fault_case fpe_case = {FX_PLUGIN("bad_method_fpe.so"),
                                    FX_PLUGIN("bad_method_fpe-1.so"),
                                    "method-fpe", "SIGFPE"};
static const fault_case abrt_case = {FX_PLUGIN("bad_method_abort.so"),
                                     FX_PLUGIN("bad_method_abort-1.so"),
                                     "method-abort", "SIGABRT"};

static void expect_fault(fx *f, const fault_case *fc)
{
    kernel_reply r = {0};
    int rc = kernel_send(f->k, "c", "crash", "", 0, &r);
    const char *text = r.len ? r.data : "";
    if (rc != A4PS_EFAULT)
        fail_msg("send c.crash (%s) returned %d, expected A4PS_EFAULT; reply: %s",
                 fc->plugin, rc, text);
    fx_assert_contains("the fault reply", text, fc->signal);
    kernel_reply_free(&r);
}

/* With no earlier version to go back to, the faulted version is fenced off:
 * even the selector that works is refused from then on. */
static void fault_quarantines(fx *f, const fault_case *fc)
{
    fx_load_ok(f, fc->file, NULL);
    fx_proto_ok(f, "c", fc->plugin, NULL);
    fx_expect(f, "c", "ok", "", A4PS_OK, "ok 2.0.0");
    expect_fault(f, fc);
    fx_expect(f, "c", "ok", "", A4PS_EQUARANTINED, NULL);
    fx_assert_g_serves(f);
}

/* The proto ran 1.0.0 before 2.0.0 faulted: it goes back to 1.0.0, whose
 * `crash` is harmless. */
static void fault_rolls_back(fx *f, const fault_case *fc)
{
    fx_load_ok(f, fc->file_v1, NULL);
    fx_proto_ok(f, "c", fc->plugin, "1.0.0");
    fx_expect(f, "c", "ok", "", A4PS_OK, "ok 1.0.0");
    fx_load_ok(f, fc->file, NULL);
    fx_swap_ok(f, "c", "2.0.0");
    fx_expect(f, "c", "ok", "", A4PS_OK, "ok 2.0.0");
    expect_fault(f, fc);
    fx_expect(f, "c", "crash", "", A4PS_OK, "safe");
    fx_expect(f, "c", "ok", "", A4PS_OK, "ok 1.0.0");
    fx_assert_g_serves(f);
}

static void segv_quarantines(void **state) { fault_quarantines(fx_get(state), &segv_case); }
static void fpe_quarantines(void **state) { fault_quarantines(fx_get(state), &fpe_case); }
static void abort_quarantines(void **state) { fault_quarantines(fx_get(state), &abrt_case); }
static void segv_rolls_back(void **state) { fault_rolls_back(fx_get(state), &segv_case); }
static void fpe_rolls_back(void **state) { fault_rolls_back(fx_get(state), &fpe_case); }
static void abort_rolls_back(void **state) { fault_rolls_back(fx_get(state), &abrt_case); }

/* A retired generation whose fini never returns: reclamation gives up on it
 * at the hook timeout instead of waiting, the kernel keeps serving, status
 * reports the hung fini, and shutdown does not wait on it again. */
static void fini_hang_is_contained(void **state)
{
    fx *f = fx_get(state);
    fx_load_ok(f, FX_PLUGIN("bad_stuck_exit.so"), NULL);
    fx_proto_ok(f, "s", "stuck-exit", "1.0.0");
    fx_expect(f, "s", "ping", "", A4PS_OK, "pong 1.0.0");
    fx_load_ok(f, FX_PLUGIN("bad_stuck_exit-2.so"), NULL);

    char *status = kernel_status(f->k);
    assert_non_null(status);
    unsigned fini_before = fx_occurrences(status, "fini");
    free(status);

    fx_swap_ok(f, "s", "2.0.0");
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int left = kernel_reclaim_wait(f->k, 5000);
    double ms = fx_ms_since(&t0);
    assert_true(left >= 0);
    if (ms > 6000.0)
        fail_msg("kernel_reclaim_wait(5000) took %.0f ms", ms);

    fx_expect(f, "s", "ping", "", A4PS_OK, "pong 2.0.0");
    fx_assert_g_serves(f);

    status = kernel_status(f->k);
    assert_non_null(status);
    if (fx_occurrences(status, "fini") <= fini_before)
        fail_msg("kernel_status() does not report the hung fini: %s", status);
    free(status);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    kernel_destroy(f->k);
    f->k = NULL;
    ms = fx_ms_since(&t0);
    if (ms > 3000.0)
        fail_msg("kernel_destroy took %.0f ms with a hung fini behind it", ms);
}

/* The methods of a loaded version, as the kernel read them: what the forge
 * checks a task's selector against. */
static void version_has_method(void **state)
{
    fx *f = fx_get(state);
    assert_int_equal(kernel_version_has_method(f->k, "good", "1.0.0", "ping"), 1);
    assert_int_equal(kernel_version_has_method(f->k, "good", "1.0.0", "echo"), 1);
    assert_int_equal(kernel_version_has_method(f->k, "good", "1.0.0", "pong"), 0);
    assert_int_equal(kernel_version_has_method(f->k, "good", "9.9.9", "ping"), A4PS_ENOENT);
    assert_int_equal(kernel_version_has_method(f->k, "nobody", "1.0.0", "ping"), A4PS_ENOENT);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

int main(void)
{
    fx_capture_handlers();
    const struct CMUnitTest tests[] = {
        T(version_has_method),
        T(refuse_major_mismatch),
        T(refuse_downgrade_when_asked),
        T(refuse_signature_mismatch),
        T(refuse_wrong_struct_size),
        T(refuse_duplicate_selector),
        T(refuse_empty_name),
        T(refuse_bad_name_charset),
        T(refuse_bad_version),
        T(refuse_no_methods),
        T(refuse_null_method_fn),
        T(refuse_init_fails),
        T(refuse_init_crashes),
        T(refuse_init_hangs),
        T(refuse_entry_returns_null),
        T(refuse_missing_entry_symbol),
        T(refuse_self_test_fails),
        T(refuse_self_test_late),
        T(refuse_undefined_symbol),
        T(refuse_not_elf),
        T(refuse_truncated_elf),
        T(refuse_wrong_machine),
        T(refuse_elf_class_32),
        T(refuse_not_shared_object),
        T(refuse_group_writable),
        T(refuse_directory),
        T(refuse_fifo),
        cmocka_unit_test_setup_teardown(refuse_too_large, fx_setup_small, fx_teardown),
        T(segv_quarantines),
        T(fpe_quarantines),
        T(abort_quarantines),
        T(segv_rolls_back),
        T(fpe_rolls_back),
        T(abort_rolls_back),
        T(fini_hang_is_contained),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
