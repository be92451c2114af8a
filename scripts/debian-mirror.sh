#!/usr/bin/env bash
# Prints the mirror this machine already uses for its Debian release, as two tab-separated fields:
# the archive URI and the keyring that signs it (empty where apt's default keyrings apply). Other
# scripts build their extra apt sources (backports, source packages) from it, so they work behind
# whatever mirror or proxy the machine is set up for. Reads deb822 (*.sources) and one-line
# (sources.list, *.list) entries; skips disabled ones. Exits 1, saying so, when none is found.
set -euo pipefail
. /etc/os-release
codename=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
files=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [[ -f $f ]] && files+=("$f")
done
found=$(awk -v want="$codename" '
  function flush() {
    if (done) return
    if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no" && (" " suites " ") ~ (" " want " ") && uris != "") {
      split(uris, u, /[ \t]+/); print u[1] "\t" signed; done = 1; exit
    }
    types = ""; uris = ""; suites = ""; signed = ""; enabled = ""
  }
  FNR == 1 { flush() }
  FILENAME ~ /\.sources$/ {
    if ($0 ~ /^[ \t]*$/) { flush(); next }
    if ($0 ~ /^#/) next
    key = tolower($1); sub(/:$/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
    if (key == "types") types = val
    else if (key == "uris") uris = val
    else if (key == "suites") suites = val
    else if (key == "signed-by") signed = val
    else if (key == "enabled") enabled = tolower(val)
    next
  }
  $1 == "deb" {
    line = $0; sub(/^deb[ \t]+/, "", line); opts = ""
    if (line ~ /^\[/) { opts = substr(line, 2, index(line, "]") - 2); line = substr(line, index(line, "]") + 1) }
    n = split(line, w, /[ \t]+/); i = (w[1] == "" ? 2 : 1)
    if (w[i + 1] == want) {
      key = ""
      if (match(opts, /signed-by=[^ \t]+/)) key = substr(opts, RSTART + 10, RLENGTH - 10)
      print w[i] "\t" key; done = 1; exit
    }
  }
  END { flush() }
' "${files[@]}")
if [[ -z $found ]]; then
  echo "no enabled apt source for Debian $codename in /etc/apt/sources.list{,.d}: add one, then rerun" >&2
  exit 1
fi
printf '%s\n' "$found"
