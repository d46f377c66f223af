#!/usr/bin/env bash
# build.sh builds kube-apiserver and etcd for the test environment from the
# wrapper modules in hack/kubebins/{apiserver,etcd} into a cache folder that
# later runs reuse:
#
#   ${FAIRWAY_KUBEBINS:-$HOME/.cache/fairway/kubebins/<kube-version>}
#
# The build is skipped when both binaries exist, are executable and the stamp
# file records the same versions. The first build takes about 5 minutes on
# 2 cores (about 1 GB module cache and 3 GB build cache); a rebuild with a warm
# Go build cache takes seconds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

modversion() { # modversion <go.mod> <module>
	awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}

kube_version="$(modversion "${here}/apiserver/go.mod" k8s.io/kubernetes)"
etcd_version="$(modversion "${here}/etcd/go.mod" go.etcd.io/etcd/server/v3)"
if [[ -z "${kube_version}" || -z "${etcd_version}" ]]; then
	echo "kubebins: cannot read versions from ${here}/{apiserver,etcd}/go.mod" >&2
	exit 1
fi

out="${FAIRWAY_KUBEBINS:-${HOME}/.cache/fairway/kubebins/${kube_version}}"
stamp="${out}/.stamp"
want_stamp="kube-apiserver ${kube_version}
etcd ${etcd_version}
go $(go env GOVERSION)"

if [[ -x "${out}/kube-apiserver" && -x "${out}/etcd" && -f "${stamp}" && "$(cat "${stamp}")" == "${want_stamp}" ]]; then
	echo "kubebins: kube-apiserver ${kube_version} and etcd ${etcd_version} are up to date in ${out}"
	exit 0
fi

mkdir -p "${out}"
rm -f "${stamp}"
export GOWORK=off CGO_ENABLED=0

kube_minor="${kube_version#v1.}"
kube_minor="${kube_minor%%.*}"

start=${SECONDS}
echo "kubebins: building etcd ${etcd_version} into ${out} (about 40 s on a cold cache)"
(cd "${here}/etcd" && go build -trimpath -ldflags "-s -w" -o "${out}/etcd.tmp" go.etcd.io/etcd/server/v3)
mv -f "${out}/etcd.tmp" "${out}/etcd"
echo "kubebins: etcd built in $((SECONDS - start)) s"

start=${SECONDS}
echo "kubebins: building kube-apiserver ${kube_version} into ${out} (about 4-5 min on a cold cache)"
(cd "${here}/apiserver" && go build -trimpath \
	-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=${kube_version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${kube_minor}" \
	-o "${out}/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
mv -f "${out}/kube-apiserver.tmp" "${out}/kube-apiserver"
echo "kubebins: kube-apiserver built in $((SECONDS - start)) s"

printf '%s\n' "${want_stamp}" >"${stamp}"
echo "kubebins: done; export FAIRWAY_KUBEBINS=${out}"
