#!/usr/bin/env bash
# out_of_tree.sh -- ctest abi_out_of_tree: install the ABI into a scratch prefix
# and build a plugin from it the two ways a third party would (pkg-config and
# find_package(A4PSPlugin)), checking each .so exports a4ps_plugin_entry only.
#
#   out_of_tree.sh BUILD_DIR PROJECT_DIR CC ABI_VERSION
#
# PROJECT_DIR holds plugin.c and the out-of-tree CMakeLists.txt (out_of_tree/).
set -euo pipefail

build_dir="$1"
src_dir="$2/out_of_tree"
cc="$3"
abi_version="$4"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/a4ps-abi-oot.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# Exactly one defined dynamic symbol, and it is the entry.
check_exports() {
    local so="$1" syms
    syms="$(nm -D --defined-only "$so" | awk '{print $NF}')"
    echo "exported by $(basename "$so"): $(echo "$syms" | tr '\n' ' ')"
    [ "$syms" = "a4ps_plugin_entry" ] ||
        fail "$so must export exactly a4ps_plugin_entry, exports: $syms"
}

echo "--- install into $prefix"
cmake --install "$build_dir" --prefix "$prefix"

for f in include/a4ps/a4ps.h include/a4ps/a4ps_version.h share/pkgconfig/a4ps.pc \
         share/cmake/A4PSPlugin/A4PSPlugin.cmake \
         share/cmake/A4PSPlugin/A4PSPluginConfig.cmake \
         share/cmake/A4PSPlugin/A4PSPluginConfigVersion.cmake; do
    [ -f "$prefix/$f" ] || fail "not installed: $f"
done
# The kernel is internal: no library, no kernel header may be installed.
unexpected="$(cd "$prefix" && find . -type f \( -name '*.a' -o -name '*.so*' -o -name 'kernel.h' \))"
[ -z "$unexpected" ] || fail "installed files that must stay internal: $unexpected"

echo "--- pkg-config"
export PKG_CONFIG_PATH="$prefix/share/pkgconfig"
version="$(pkg-config --modversion a4ps)"
[ "$version" = "$abi_version" ] || fail "a4ps.pc says version $version, the ABI is $abi_version"
flags="$(pkg-config --cflags --libs a4ps)"
echo "pkg-config --cflags --libs a4ps: $flags"
mkdir -p "$tmp/pc"
# Word splitting of $flags is the point: they are separate compiler arguments.
# shellcheck disable=SC2086
"$cc" -Wall -Wextra -Werror $flags "$src_dir/plugin.c" -o "$tmp/pc/p.so"
check_exports "$tmp/pc/p.so"

echo "--- find_package(A4PSPlugin)"
cmake -S "$src_dir" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_C_COMPILER="$cc" -DEXPECT_INCLUDE_DIR="$prefix/include/a4ps"
cmake --build "$tmp/cm"
check_exports "$tmp/cm/oot.so"

echo "PASS: the installed ABI builds plugins that export a4ps_plugin_entry only"
