#!/usr/bin/env bash
# Checks (and on Debian/Ubuntu installs) the system tools the test suite uses.
# With CI=true a prerequisite that is still missing afterwards is a failure, never a skip.
set -euo pipefail

# command → Debian package
declare -A NEED=(
  [qemu-img]=qemu-utils [qemu-io]=qemu-utils [chromium]=chromium [xvfb-run]=xvfb
  [dbus-run-session]=dbus-x11 [gnome-keyring-daemon]=gnome-keyring [mkfs.xfs]=xfsprogs [mkfs.ext4]=e2fsprogs
  [restic]=restic [/usr/bin/time]=time [borg]=borgbackup [vhdiinfo]=libvhdi-utils [secret-tool]=libsecret-tools
  [script]=bsdutils [fusermount]=fuse
)
# libsecret-1-dev has no command: checked through pkg-config (keytar builds against it)
missing=()
for cmd in "${!NEED[@]}"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}"); done
pkg-config --exists libsecret-1 2>/dev/null || missing+=(libsecret-1-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
# Intel's ipsec-mb (x86-64): AES-GCM in VAES where the CPU has it (native/digest/src/aead.c); the
# addon is built against its header, so it is built again when the header arrives here.
ipsec_header=/usr/include/intel-ipsec-mb.h
[ "$(uname -m)" = x86_64 ] && [ ! -e "$ipsec_header" ] && missing+=(libipsec-mb-dev)

if ((${#missing[@]})); then
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "Installing test prerequisites: ${pkgs[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  else
    echo "Missing test prerequisites (install them): ${pkgs[*]}" >&2
    exit 1
  fi
fi

if [ "$(uname -m)" = x86_64 ] && [[ " ${missing[*]} " == *" libipsec-mb-dev "* ]]; then
  [ -e "$ipsec_header" ] || { echo "Test prerequisite still missing: libipsec-mb-dev ($ipsec_header)" >&2; exit 1; }
  echo "tresor-digest: built again against ipsec-mb"
  npm rebuild tresor-digest >/dev/null
fi

still=()
for cmd in "${!NEED[@]}"; do command -v "$cmd" >/dev/null 2>&1 || still+=("$cmd"); done
if ((${#still[@]})); then
  echo "Test prerequisites still missing: ${still[*]}" >&2
  exit 1
fi
# Transparent huge pages must honour a program's advice (nativeMemory.test, direct-I/O buffers):
# "always" or "madvise". Where they are off and we may change it (root), ask for "madvise".
thp=/sys/kernel/mm/transparent_hugepage/enabled
if [ -r "$thp" ] && grep -q '\[never\]' "$thp"; then
  if [ -w "$thp" ]; then
    echo madvise > "$thp"
    echo "transparent huge pages: set to madvise (they were off)"
  else
    echo "transparent huge pages are off on this host (${thp}: never); as root: echo madvise > ${thp}" >&2
    exit 1
  fi
fi
echo "prerequisites: ok ($(qemu-img --version | head -1); $(chromium --version 2>/dev/null | head -1))"
