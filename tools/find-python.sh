#!/bin/sh
# Prints the first Python 3.11 or newer on PATH (python3 first), or nothing.
for p in python3 python3.13 python3.12 python3.11; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "$p"
        exit 0
    fi
done
