#!/usr/bin/env bash
# Installs the system tools a make target needs, from Debian packages, skipping any tool that is
# already on PATH. Used by `make dev` and `make test`; safe to run again.
#
#   scripts/install-deps.sh dev    ffmpeg (AutoDJ renditions, the dev tone),
#                                  protoc (etcd-client builds its protocol with it),
#                                  tzdata (AutoDJ schedules in the station's time zone),
#                                  node and npm (the web app's build, scripts/build-web.sh),
#                                  coturn (turnserver: the dev node's TURN relay for calls)
#   scripts/install-deps.sh test   ffmpeg (test clients), etcd (coordinator tests),
#                                  protoc (etcd-client builds its protocol with it),
#                                  shout (libshout's client, a real libshout source),
#                                  liquidsoap, ices2 and ezstream (real Ogg/MP3 source clients
#                                  and live DJ clients),
#                                  promtool (checks grafana/prometheus config and alert rules),
#                                  tzdata (AutoDJ schedule tests in named time zones),
#                                  ansible, ansible-lint and python3-apt (the provisioning test),
#                                  chromium, node and npm (web players on another origin, driven by
#                                  playwright-core and hls.js from tests/browser, installed there
#                                  with `npm ci`; the web app's browser test), an emoji font (so
#                                  the chat screenshots show emoji),
#                                  coturn (turnserver, run by the agent, and turnutils_uclient,
#                                  the TURN client of the TURN tests)
#   scripts/install-deps.sh bench  ffmpeg (sources, renditions), icecast2 (the peer server),
#                                  liquidsoap (the peer AutoDJ), nginx with libnginx-mod-rtmp
#                                  (the peer live-video server), protoc, tzdata, node and npm
#                                  (the socket.io peer), perf (scripts/profile-live-chat.sh),
#                                  heaptrack (bench-edge's and bench-live's `--wrap`)
#
# As root it runs apt-get; otherwise it uses `sudo -n` when that works, and else prints the
# command to run and fails.
set -euo pipefail

target=${1:-test}
case "$target" in
  dev)  wanted=("ffmpeg:ffmpeg" "ffprobe:ffmpeg" "protoc:protobuf-compiler"
              "/usr/include/google/protobuf/descriptor.proto:libprotobuf-dev"
              "/usr/share/zoneinfo/America/New_York:tzdata" "node:nodejs" "npm:npm" "turnserver:coturn") ;;
  test) wanted=("ffmpeg:ffmpeg" "ffprobe:ffmpeg" "etcd:etcd-server" "promtool:prometheus" "protoc:protobuf-compiler"
              "/usr/include/google/protobuf/descriptor.proto:libprotobuf-dev" "shout:libshout-tools"
              "liquidsoap:liquidsoap" "ices2:ices2"
              "/usr/share/zoneinfo/America/New_York:tzdata" "ansible-playbook:ansible"
              "ansible-lint:ansible-lint" "/usr/lib/python3/dist-packages/apt/__init__.py:python3-apt"
              "setpriv:util-linux" "start-stop-daemon:dpkg" "chromium:chromium" "node:nodejs"
              "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf:fonts-noto-color-emoji"
              "npm:npm" "ezstream:ezstream" "turnserver:coturn" "turnutils_uclient:coturn") ;;
  bench) wanted=("ffmpeg:ffmpeg" "ffprobe:ffmpeg" "icecast2:icecast2" "liquidsoap:liquidsoap"
              "nginx:nginx" "/usr/lib/nginx/modules/ngx_rtmp_module.so:libnginx-mod-rtmp"
              "protoc:protobuf-compiler" "/usr/include/google/protobuf/descriptor.proto:libprotobuf-dev"
              "/usr/share/zoneinfo/America/New_York:tzdata" "node:nodejs" "npm:npm" "perf:linux-perf"
              "heaptrack:heaptrack") ;;
  *) echo "usage: $0 dev|test|bench" >&2; exit 2 ;;
esac

missing=()
for pair in "${wanted[@]}"; do
  tool=${pair%%:*}
  pkg=${pair#*:}
  # A path stands for a file a package ships (protoc's well-known .proto includes, tz data).
  if [[ $tool == /* ]]; then present=$([ -e "$tool" ] && echo y || true)
  else present=$(command -v "$tool" >/dev/null 2>&1 && echo y || true); fi
  if [ -z "$present" ]; then
    case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
  fi
done
# The tests' Node packages (playwright-core never downloads a browser: it drives the system
# chromium; jsonwebtoken signs user tokens as tenants' backends do), from
# tests/browser/package-lock.json.
node_packages() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
  # Installed again when package-lock.json is newer than what npm last installed (a package
  # was added), not only on a fresh machine.
  if [ "$target" = test ] && { [ ! -f "$dir/node_modules/.package-lock.json" ] \
      || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; }; then
    echo "Installing the browser tests' Node packages (npm ci in tests/browser) ..." >&2
    (cd "$dir" && npm ci --no-audit --no-fund >/tmp/onda-npm.log 2>&1) \
      || { tail -20 /tmp/onda-npm.log >&2; echo "npm ci failed; see /tmp/onda-npm.log" >&2; exit 1; }
  fi
}

if [ ${#missing[@]} -eq 0 ]; then node_packages; exit 0; fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install the Rust toolchain (rustup) first." >&2
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  apt=(apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  apt=(sudo -n apt-get)
else
  echo "Missing system packages: ${missing[*]}" >&2
  echo "Install them with:  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "Installing ${missing[*]} (Debian packages) ..." >&2
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when a first attempt cannot find the packages.
if ! "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/tmp/onda-apt.log 2>&1; then
  "${apt[@]}" update >>/tmp/onda-apt.log 2>&1
  if ! "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >>/tmp/onda-apt.log 2>&1; then
    tail -20 /tmp/onda-apt.log >&2
    echo "apt-get could not install ${missing[*]}; see /tmp/onda-apt.log" >&2
    exit 1
  fi
fi
echo "Installed ${missing[*]}." >&2
node_packages
