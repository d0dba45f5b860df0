#!/bin/sh
# Installs the system packages minibuild needs, through apt-get, when they are missing.
#   graphviz        `dot`, to render build graphs
#   busybox-static  a static busybox, for the offline base image
#   curl            the article's first experiment (curl --unix-socket)
#   docker-registry the CNCF distribution registry, started by the tests on 127.0.0.1 for pull/push
#   openssl         certificates for the tests' token issuer and https registries
#   python3-venv    `python3 -m venv` on Debian/Ubuntu (python3.11 too, where python3 is older)
# Elsewhere it stops with one sentence naming what to install.
set -eu

packages="graphviz busybox-static curl docker-registry openssl"
python=$(sh "$(dirname "$0")/find-python.sh")
if [ -z "$python" ]; then
    packages="$packages python3.11 python3.11-venv"   # e.g. Ubuntu 22.04, whose python3 is 3.10
elif ! "$python" -c 'import ensurepip' 2>/dev/null; then
    [ "$python" = python3 ] && packages="$packages python3-venv" || packages="$packages $python-venv"
fi

if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    missing=""
    for p in $packages; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || missing="$missing $p"
    done
    [ -z "$missing" ] && exit 0
    if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
        echo "minibuild needs these packages; install them as root: apt-get install$missing" >&2
        exit 1
    fi
    echo "Installing system packages:$missing"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    exit 0
fi

missing=""
command -v dot >/dev/null 2>&1 || missing="$missing graphviz"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v docker-registry >/dev/null 2>&1 || command -v registry >/dev/null 2>&1 || missing="$missing docker-registry"
command -v busybox >/dev/null 2>&1 || missing="$missing busybox(static)"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if [ -z "$python" ]; then missing="$missing python3.11(or newer)"
elif ! "$python" -c 'import ensurepip' 2>/dev/null; then missing="$missing $python-venv"; fi
if [ -n "$missing" ]; then
    echo "minibuild needs these packages, which this system has no apt-get to install: $missing" >&2
    exit 1
fi
