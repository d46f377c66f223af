#!/usr/bin/env bash
# install.sh installs the Node.js packages of the interop client
# (@grpc/grpc-js, @grpc/grpc-js-xds, @grpc/proto-loader, pinned by
# package-lock.json) from the npm registry with `npm ci` into a cache folder
# that later runs reuse, and prints that folder on its last line:
#
#   ${FAIRWAY_NODECLIENT:-$HOME/.cache/fairway/node/<first 16 hex of sha256(package-lock.json)>}
#
# The folder holds node_modules/; the client script (client.js) stays in this
# directory and finds the packages through NODE_PATH. The install is skipped
# when the folder's stamp records the same lock file. A first install takes
# about 10-20 s; a reused one, milliseconds. It fails loudly when node or npm
# is missing or the install fails: the interop tests never skip.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

for tool in node npm sha256sum; do
	if ! command -v "${tool}" >/dev/null; then
		echo "nodeclient: ${tool} not found on PATH; the Node interop tests need Node.js 18 or later with npm" >&2
		exit 1
	fi
done

lock_hash="$(sha256sum "${here}/package-lock.json" | cut -c1-16)"
out="${FAIRWAY_NODECLIENT:-${HOME}/.cache/fairway/node/${lock_hash}}"
stamp="${out}/.stamp"

if [[ -d "${out}/node_modules/@grpc/grpc-js-xds" && -f "${stamp}" && "$(cat "${stamp}")" == "${lock_hash}" ]]; then
	echo "${out}"
	exit 0
fi

# Install into a fresh folder next to the target, then rename it into place,
# so a concurrent or interrupted install never leaves a half-filled folder.
mkdir -p "$(dirname "${out}")"
tmp="$(mktemp -d "${out}.tmp.XXXXXX")"
trap 'rm -rf "${tmp}"' EXIT
cp "${here}/package.json" "${here}/package-lock.json" "${tmp}/"
start=${SECONDS}
echo "nodeclient: npm ci (grpc-js-xds and its dependencies) into ${out}" >&2
(cd "${tmp}" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
printf '%s\n' "${lock_hash}" >"${tmp}/.stamp"
rm -rf "${out}"
mv -T "${tmp}" "${out}" 2>/dev/null || [[ -f "${stamp}" ]] # lost a race: the winner's copy is as good
echo "nodeclient: installed in $((SECONDS - start)) s" >&2
echo "${out}"
