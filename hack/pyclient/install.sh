#!/usr/bin/env bash
# install.sh makes sure Debian's python3-grpcio (gRPC C-core with its Python
# binding) is installed for the C-core interop client (client.py), installing
# it with apt-get when /usr/bin/python3 cannot import grpc, and prints the
# grpcio version on its last line.
#
# It uses /usr/bin/python3 explicitly: a pyenv or virtualenv python3 earlier
# on PATH would not see Debian's packages. A first install takes 5-10 s
# (plus about 6 s of apt-get update where the package lists are missing, as
# in a fresh container); when grpc imports already it returns at once. It needs root (CI runs as root) and fails loudly when it
# cannot install: the interop test never skips.
set -euo pipefail

py=/usr/bin/python3
probe='import grpc, sys; sys.stdout.write(grpc.__version__)'

if [[ ! -x "${py}" ]]; then
	echo "pyclient: ${py} not found; the C-core interop test needs Debian's python3 and python3-grpcio" >&2
	exit 1
fi
if version="$("${py}" -c "${probe}" 2>/dev/null)"; then
	echo "${version}"
	exit 0
fi

if ! command -v apt-get >/dev/null; then
	echo "pyclient: ${py} cannot import grpc and apt-get is missing; install gRPC's Python package (python3-grpcio) for ${py}" >&2
	exit 1
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
	if ! command -v sudo >/dev/null; then
		echo "pyclient: ${py} cannot import grpc; run as root, or install it: apt-get install python3-grpcio" >&2
		exit 1
	fi
	sudo=(sudo -n)
fi

start=${SECONDS}
echo "pyclient: installing python3-grpcio with apt-get" >&2
# Wait up to a minute for another apt or dpkg to release its lock.
apt=(apt-get -o DPkg::Lock::Timeout=60)
install() {
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" "${apt[@]}" install -y --no-install-recommends python3-grpcio >&2
}
# The package lists may be missing (a fresh container) or stale (a 404 on an
# old version): refresh them and try once more.
if ! install; then
	"${sudo[@]}" "${apt[@]}" update >&2 && install || {
		echo "pyclient: apt-get install python3-grpcio failed; the C-core interop test needs it (as root: apt-get update && apt-get install python3-grpcio)" >&2
		exit 1
	}
fi
if ! version="$("${py}" -c "${probe}")"; then
	echo "pyclient: python3-grpcio is installed but ${py} cannot import grpc" >&2
	exit 1
fi
echo "pyclient: installed python3-grpcio ${version} in $((SECONDS - start)) s" >&2
echo "${version}"
