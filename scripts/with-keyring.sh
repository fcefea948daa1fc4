#!/usr/bin/env bash
# Runs a command against a real Secret Service: a private D-Bus session bus with gnome-keyring's
# secrets component, its login keyring created and unlocked with an empty password, in a temporary
# data folder (the user's real keyrings are never touched). Used by the keychain integration tests:
#   scripts/with-keyring.sh npx vitest run --project integration test/integration/keys
# Exits with the command's exit code. Needs dbus-run-session and gnome-keyring-daemon.
set -euo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: $0 <command> [args...]" >&2
  exit 2
fi

if [[ "${TRESOR_IN_KEYRING_SESSION:-}" != "1" ]]; then
  for tool in dbus-run-session gnome-keyring-daemon; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "$0: $tool is not installed (apt-get install dbus gnome-keyring)" >&2
      exit 1
    fi
  done
  export TRESOR_IN_KEYRING_SESSION=1
  exec dbus-run-session -- "$0" "$@"
fi

# Inside the private session bus from here on.
keyring_home="$(mktemp -d "${TMPDIR:-/tmp}/tresor-keyring.XXXXXX")"
daemon_pid=""
cleanup() {
  if [[ -n "$daemon_pid" ]]; then kill "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$keyring_home"
}
trap cleanup EXIT
mkdir -p "$keyring_home/data" "$keyring_home/runtime"
chmod 700 "$keyring_home/runtime"

# --unlock reads the login keyring password from stdin (empty here) and creates the keyring if needed;
# it prints the variables (GNOME_KEYRING_CONTROL...) clients use. The daemon forks into the background.
daemon_env="$(printf '\n' | XDG_DATA_HOME="$keyring_home/data" XDG_RUNTIME_DIR="$keyring_home/runtime" \
  gnome-keyring-daemon --unlock --components=secrets --daemonize)"
while IFS='=' read -r name value; do
  case "$name" in
    GNOME_KEYRING_CONTROL|SSH_AUTH_SOCK) export "$name=$value" ;;
  esac
done <<<"$daemon_env"
daemon_pid="$(pgrep -n -u "$(id -u)" -f "gnome-keyring-daemon --unlock --components=secrets" || true)"

# Wait until the Secret Service name is on the bus (the daemon may still be starting).
for _ in $(seq 1 50); do
  if dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
       org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q 'boolean true'; then
    break
  fi
  sleep 0.1
done

unset TRESOR_IN_KEYRING_SESSION
export TRESOR_KEYRING_SESSION=1
set +e
"$@"
status=$?
set -e
exit "$status"
