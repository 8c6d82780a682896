#!/bin/sh
# The layering check: c_src's dependency rule, read from the sources and,
# when an object folder is given, from the objects' symbols.
#
#   check_layers.sh SRC_DIR [OBJ_DIR]
#
# Layers, lowest first, each with what it may use (see ARCHITECTURE.md):
#   base (nothing), runtime (base), term (base), store (base),
#   dist (base term), node (base term dist),
#   dm (base runtime term store dist node).
# behaviours/ may include only the public header (include/dm.h).
# Fails (exit 1, one line per offence) when
#   - a file includes a header of a layer it may not use;
#   - a file of another layer includes a header of a folder other than the
#     folder's one header (LAYER/LAYER.h, dm/mgr.h for dm);
#   - a .c file has more than 600 lines, or does not open with a comment;
#   - with OBJ_DIR: an object calls a function defined in a layer it may
#     not use, or some objects call each other in a circle.
set -u
src=${1:?usage: check_layers.sh SRC_DIR [OBJ_DIR]}
obj=${2:-}
if [ -n "$obj" ]; then
  # Resolved before the cd below, and required: a check that cannot read
  # the objects must fail, not pass on the includes alone.
  obj=$(cd "$obj" 2>/dev/null && pwd) || { echo "check_layers.sh: no object folder $2"; exit 2; }
  [ -n "$(find "$obj" -name '*.o' | head -n 1)" ] || { echo "check_layers.sh: no objects in $2"; exit 2; }
fi
cd "$src" || exit 2

allowed() { # layer -> the layers it may use
  case $1 in
  base) echo "" ;;
  runtime) echo "base" ;;
  term) echo "base" ;;
  store) echo "base" ;;
  dist) echo "base term" ;;
  node) echo "base term dist" ;;
  dm) echo "base runtime term store dist node" ;;
  main) echo "base runtime term store dist node dm behaviours" ;;
  behaviours) echo "" ;;
  *) echo "" ;;
  esac
}
header_of() { # layer -> its one header
  case $1 in
  dm) echo "dm/mgr.h" ;;
  *) echo "$1/$1.h" ;;
  esac
}
layer_of() { # path -> layer
  case $1 in
  main.c) echo main ;;
  behaviours/*) echo behaviours ;;
  include/*) echo include ;;
  */*) echo "${1%%/*}" ;;
  *) echo "?" ;;
  esac
}

fail=0
files=$(find . -path ./_build -prune -o \( -name '*.c' -o -name '*.h' \) -print | sed 's|^\./||' | sort)
for f in $files; do
  l=$(layer_of "$f")
  ok=$(allowed "$l")
  grep -n '^#include "' "$f" | while IFS= read -r line; do
    inc=$(echo "$line" | sed 's/^[0-9]*:#include "\([^"]*\)".*/\1/')
    n=${line%%:*}
    case $inc in
    dm.h) continue ;; # the public API: anyone may
    */*) ;;
    *) echo "$f:$n: includes \"$inc\", which names no layer folder"; continue ;;
    esac
    il=${inc%%/*}
    [ "$il" = "$l" ] && continue
    case " $ok " in
    *" $il "*) ;;
    *) echo "$f:$n: layer $l includes $inc of layer $il, which it may not use"; continue ;;
    esac
    if [ "$inc" != "$(header_of "$il")" ]; then
      echo "$f:$n: includes $inc; other layers use $(header_of "$il") only"
    fi
  done
  case $f in
  *.c)
    lines=$(wc -l < "$f")
    [ "$lines" -gt 600 ] && echo "$f: $lines lines, over 600: split it by noun"
    head -c 2 "$f" | grep -q '^/\*' || echo "$f: does not open with a comment naming its noun"
    ;;
  esac
done > /tmp/check_layers.$$ 2>&1
[ -s /tmp/check_layers.$$ ] && { cat /tmp/check_layers.$$; fail=1; }
rm -f /tmp/check_layers.$$

if [ -n "$obj" ]; then
  # Calls between objects, from their symbols: U in one, T in another.
  (cd "$obj" && find . -name '*.o' | sed 's|^\./||' | sort | while read -r o; do
     nm "$o" 2>/dev/null | awk -v o="$o" '$1 == "U" { print "U", o, $2 } $2 ~ /^[TDBR]$/ { print "D", o, $3 }'
   done) | awk '
    function layer(p) { if (p == "main.o") return "main"; sub(/\/.*/, "", p); return p }
    BEGIN {
      split("base runtime term store dist node dm main behaviours", names, " ")
      ok["runtime"] = " base "; ok["term"] = " base "; ok["store"] = " base "
      ok["dist"] = " base term "; ok["node"] = " base term dist "
      ok["dm"] = " base runtime term store dist node "
      ok["main"] = " base runtime term store dist node dm behaviours "; ok["base"] = " "
      ok["behaviours"] = " base runtime term dist node dm "
    }
    $1 == "D" { def[$3] = $2; next }
    $1 == "U" { use[++nu] = $2 " " $3 }
    END {
      bad = 0
      for (i = 1; i <= nu; i++) {
        split(use[i], u, " ")
        if (!(u[2] in def)) continue
        a = u[1]; b = def[u[2]]
        if (a == b) continue
        la = layer(a); lb = layer(b)
        if (la != lb && index(ok[la], " " lb " ") == 0) {
          printf "%s calls %s of %s: layer %s may not use %s\n", a, u[2], b, la, lb; bad = 1
        }
        if (!((a, b) in edge)) { edge[a, b] = u[2]; out[a] = out[a] " " b }
      }
      # A circle: depth-first search, grey nodes on the current path.
      for (v in out) color[v] = 0
      for (v in out) if (!color[v]) if (dfs(v)) bad = 1
      exit bad
    }
    function dfs(v,   n, k, w, found, list) {
      color[v] = 1; path[++depth] = v
      n = split(out[v], list, " ")
      for (k = 1; k <= n; k++) {
        w = list[k]
        if (color[w] == 1) { report(w); found = 1 }
        else if (!color[w] && dfs(w)) found = 1
      }
      color[v] = 2; depth--
      return found
    }
    function report(w,   i, s) {
      s = w
      for (i = depth; i >= 1 && path[i] != w; i--) ;
      for (i = i + 1; i <= depth; i++) s = s " -> " path[i]
      printf "circle: %s -> %s (%s)\n", s, w, edge[path[depth], w]
    }' || fail=1
fi
exit $fail
