# shellcheck shell=bash
# Shared helpers for the notifier infrastructure scripts (sourced, not executed).
#
# Provides: NOTIFIER_CACHE (default ~/.cache/notifier), NOTIFIER_BIN, msg/die logging to stderr,
# apt_install, and have (is a command on PATH); used by kafka.sh and install-tools.sh.

NOTIFIER_CACHE="${NOTIFIER_CACHE:-$HOME/.cache/notifier}"
NOTIFIER_BIN="$NOTIFIER_CACHE/bin"
export NOTIFIER_CACHE NOTIFIER_BIN

_script_name="$(basename "${BASH_SOURCE[1]:-$0}")"

# msg TEXT... : progress message on stderr (stdout is reserved for machine-readable output).
msg() { printf '[%s] %s\n' "$_script_name" "$*" >&2; }

# die TEXT... : error message on stderr, exit 1.
die() { printf '[%s] ERROR: %s\n' "$_script_name" "$*" >&2; exit 1; }

# have CMD : true if CMD is on PATH.
have() { command -v "$1" >/dev/null 2>&1; }

# Apt helpers: run `apt-get update` at most once per process, and only when something is missing.
_APT_UPDATED=0
apt_install() {
    # apt_install PKG... : install the given Debian packages (non-interactive).
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        have sudo || die "need root (or sudo) to apt-get install $*"
        sudo="sudo"
    fi
    if [ "$_APT_UPDATED" -eq 0 ]; then
        msg "apt-get update"
        $sudo apt-get update -qq >&2 || die "apt-get update failed"
        _APT_UPDATED=1
    fi
    msg "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >&2 \
        || die "apt-get install $* failed"
}
