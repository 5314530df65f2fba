# common.sh -- shared by scripts/setup, test, run and bench (sourced, not run).
#
# Parses the build flags every script accepts and derives the build directory
# from them, so `scripts/test --sanitize` always looks in the tree that
# `scripts/setup --sanitize` built.
#
#   --sanitize     AddressSanitizer + UBSan build (-DA4PS_SANITIZE=ON)
#   --cc NAME      C compiler (gcc, clang, or a path); default gcc, whatever CC says,
#                  so build/ always means the same compiler
#
# After a4ps_parse_build_flags "$@": A4PS_SANITIZE (0/1), A4PS_CC, A4PS_BUILD_DIR
# (absolute), A4PS_BUILD_FLAGS (the flags to hand on) and A4PS_REST (the other
# arguments, in order).

# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this

A4PS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
A4PS_JOBS="$(nproc 2>/dev/null || echo 2)"

a4ps_die() {
    echo "${0##*/}: $*" >&2
    exit 2
}

a4ps_parse_build_flags() {
    A4PS_SANITIZE=0
    A4PS_CC=""
    A4PS_BUILD_FLAGS=()
    A4PS_REST=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --sanitize)
                A4PS_SANITIZE=1
                A4PS_BUILD_FLAGS+=(--sanitize)
                ;;
            --cc)
                [ $# -ge 2 ] || a4ps_die "--cc needs a compiler name (gcc or clang)"
                A4PS_CC="$2"
                A4PS_BUILD_FLAGS+=(--cc "$2")
                shift
                ;;
            --cc=*)
                A4PS_CC="${1#--cc=}"
                A4PS_BUILD_FLAGS+=(--cc "$A4PS_CC")
                ;;
            *)
                A4PS_REST+=("$1")
                ;;
        esac
        shift
    done

    # One tree per configuration: build, build-sanitize, build-clang,
    # build-clang-sanitize.  The compiler of a cmake tree cannot change after
    # its first configure, so it has to be part of the name.
    [ -n "$A4PS_CC" ] || A4PS_CC=gcc
    local dir="build"
    [ "$(basename "$A4PS_CC")" = gcc ] || dir="$dir-$(basename "$A4PS_CC")"
    [ "$A4PS_SANITIZE" = 1 ] && dir="$dir-sanitize"
    A4PS_BUILD_DIR="$A4PS_ROOT/$dir"
}
