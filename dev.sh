#!/bin/sh
# hostguard on a fresh Debian (or Ubuntu) host, as root:
#   ./dev.sh run     install what is missing, build the BPF objects, run the agent with policies/
#   ./dev.sh test    the same set-up, then dockerd and the whole test suite (extra args go to pytest)
#   ./dev.sh bench   the same set-up, then the benchmarks (bench/README.md; extra args go to python -m bench)
#   ./dev.sh test-kernels   the agent's verdicts on Debian's 6.1 and 6.12 kernels under QEMU (kernels/README.md)
set -eu
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"

say() { printf '==> %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "dev.sh: run as root (the agent loads BPF programs)" >&2; exit 1; }

install_packages() {
    # Debian's packages only: the BPF toolchain and libbpf, Python's venv, dockerd, and for tests and
    # benchmarks what they build from or compare with.
    pkgs="clang llvm libbpf1 libbpf-dev bpftool make python3 python3-venv docker.io"
    # tests and benchmarks: offline images, the static loop binary, the peer tracers
    [ "${1:-}" != run ] && pkgs="$pkgs busybox-static nodejs npm gcc libc6-dev bpftrace bpfcc-tools"
    # the kernel matrix: QEMU, and Debian's own Python for the guests
    [ "${1:-}" != run ] && pkgs="$pkgs qemu-system-x86 python3.11 libpython3.11-stdlib"
    missing=""
    for pkg in $pkgs; do
        case $pkg in  # a command already on PATH (e.g. a newer node) is good enough
            nodejs) command -v node >/dev/null && continue ;;
            npm) command -v npm >/dev/null && continue ;;
            docker.io) command -v dockerd >/dev/null && continue ;;
            bpftool) command -v bpftool >/dev/null && continue ;;  # Ubuntu: linux-tools
        esac
        dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        say "installing:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
}

setup_python() {
    if [ ! -x "$VENV/bin/python" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
        say "python virtualenv with pinned dependencies"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test]"
        touch "$VENV/.installed"
    fi
}

mount_filesystems() {
    # the agent needs tracefs (syscall tracepoints); bpffs is useful to inspect with bpftool
    mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
    mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
}

start_dockerd() {
    if docker info >/dev/null 2>&1; then return; fi
    say "starting dockerd (log: /var/log/hostguard-dockerd.log)"
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl start docker
    else
        nohup dockerd >/var/log/hostguard-dockerd.log 2>&1 &
    fi
    i=0
    until docker info >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 60 ] || { echo "dev.sh: dockerd did not start" >&2; exit 1; }
        sleep 0.5
    done
}

build() {
    say "building BPF objects"
    make -s -C bpf
}

case "${1:-}" in
run)
    shift
    install_packages run; setup_python; mount_filesystems; build; start_dockerd
    exec "$VENV/bin/hostguard" run --policies "$ROOT/policies" "$@"
    ;;
test)
    shift
    install_packages test; setup_python; mount_filesystems; build; start_dockerd
    if [ ! -d examples/stripe-function/node_modules ]; then
        say "installing the example's npm packages"
        (cd examples/stripe-function && npm ci --omit=dev --no-audit --no-fund --silent)
    fi
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
test-kernels)
    shift
    install_packages test; setup_python; mount_filesystems; build
    exec "$VENV/bin/python" kernels/run.py "$@"
    ;;
bench)
    shift
    install_packages bench; setup_python; mount_filesystems; build; start_dockerd
    exec "$VENV/bin/python" -m bench "$@"
    ;;
*)
    echo "usage: $0 run [agent options] | test [pytest options] | bench [--quick] | test-kernels" >&2
    exit 2
    ;;
esac
