#!/bin/sh
# The layering check fails when it should: on a copy of c_src with one
# upward include, one file calling into a higher layer, and two files of
# one layer calling each other; and passes on c_src as it is.
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../c_src" && pwd)
check=$src/check_layers.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

expect() { # expect fail|pass NAME OUTPUT-PATTERN -- command...
  want=$1 name=$2 pat=$3
  shift 4
  out=$("$@" 2>&1)
  rc=$?
  if { [ "$want" = fail ] && [ $rc -ne 0 ] && echo "$out" | grep -q "$pat"; } ||
     { [ "$want" = pass ] && [ $rc -eq 0 ]; }; then
    passed=$((passed + 1))
    echo "ok: $name"
  else
    failed=$((failed + 1))
    echo "FAILED: $name (exit $rc)"
    echo "$out" | sed 's/^/    /'
  fi
}

copy() {
  rm -rf "$tmp/c"
  mkdir -p "$tmp/c"
  (cd "$src" && tar cf - --exclude=./_build --exclude='*.o' .) | (cd "$tmp/c" && tar xf -)
}

copy
expect pass "the tree as it is passes" "" -- "$check" "$tmp/c"

copy
sed -i '1a #include "dm/mgr.h"' "$tmp/c/base/buf.c"
expect fail "an include of a higher layer fails" "base/buf.c:2: layer base includes dm/mgr.h" -- "$check" "$tmp/c"

copy
sed -i '1a #include "node/node.h"' "$tmp/c/dist/conn.c"
expect fail "dist including node fails" "layer dist includes node/node.h" -- "$check" "$tmp/c"

copy
sed -i '1a #include "runtime/runtime.h"' "$tmp/c/term/walk.c"
expect fail "a layer beside, not below, fails" "layer term includes runtime/runtime.h" -- "$check" "$tmp/c"

copy
mkdir -p "$tmp/c/store"
printf '/* x */\n#include "runtime/runtime.h"\n' > "$tmp/c/store/extra.c"
expect fail "the store using anything but base fails" "layer store includes runtime/runtime.h" -- "$check" "$tmp/c"

copy
printf '/* x */\n#include "dist/frame.h"\n' > "$tmp/c/node/extra.c"
expect fail "a header other than the folder's one fails" "other layers use dist/dist.h only" -- "$check" "$tmp/c"

copy
awk 'BEGIN { print "/* long */"; for (i = 0; i < 601; i++) print "" }' > "$tmp/c/dm/long.c"
expect fail "a .c file over 600 lines fails" "over 600" -- "$check" "$tmp/c"

# Calls, read from objects: an upward call, and a circle of two files.
mkdir -p "$tmp/o/base" "$tmp/o/dm" "$tmp/o/node"
printf 'int dm__up(void);\nint dm__low(void) { return dm__up(); }\n' > "$tmp/o/base/low.c"
printf 'int dm__up(void) { return 1; }\n' > "$tmp/o/dm/up.c"
for f in base/low dm/up; do cc -c "$tmp/o/$f.c" -o "$tmp/o/$f.o"; done
copy
expect fail "a call into a higher layer fails" "base/low.o calls dm__up of dm/up.o" -- "$check" "$tmp/c" "$tmp/o"
rm -f "$tmp/o/base/low.o" "$tmp/o/dm/up.o"
printf 'int dm__b(int);\nint dm__a(int n) { return n ? dm__b(n - 1) : 0; }\n' > "$tmp/o/node/a.c"
printf 'int dm__a(int);\nint dm__b(int n) { return n ? dm__a(n - 1) : 0; }\n' > "$tmp/o/node/b.c"
for f in node/a node/b; do cc -c "$tmp/o/$f.c" -o "$tmp/o/$f.o"; done
expect fail "two files calling each other fail" "circle: node/" -- "$check" "$tmp/c" "$tmp/o"
expect fail "objects named by a relative path are read too" "circle: node/" -- \
  sh -c "cd '$tmp' && '$check' c o"
expect fail "an object folder that is not there fails" "no object folder" -- "$check" "$tmp/c" "$tmp/none"
rm -f "$tmp/o/node/b.o"
expect pass "one of them alone passes" "" -- "$check" "$tmp/c" "$tmp/o"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
