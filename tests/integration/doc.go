// Package integration proves the files in dist/ with the real programs they
// configure: systemd's own checker for the units, a real dockerd per host
// started the way the docker drop-in starts it, and agentd's CNI plugin
// driving Debian's bridge and host-local plugins through libcni with the
// conflist from dist/cni, and a real kube-apiserver (envtest) judging the
// DaemonSet manifest in dist/kubernetes.
//
// Every multi-host test runs on the namespace cluster of tests/cluster:
//
//	ns sw: bridge ─┬─ h1 198.18.0.1 ── docker0 or cni0 10.244.A.1 ── container or pod 10.244.A.x
//	               ├─ h2 198.18.0.2 ── docker0 or cni0 10.244.B.1 ── container or pod 10.244.B.x
//	               └─ etcd 198.18.0.254
//
// Programs that are not part of this module (dockerd, systemd-analyze, the
// CNI plugins) are looked for where Debian installs them; `make
// deps-integration` installs the packages, and `make kube-bin` builds the
// Kubernetes programs into a cache outside the repository. A missing one is a
// failure when CI is set and a skip otherwise, and the message says what to
// install.
//
// TestK8sNode (with AGENTD_E2E_K8S=1, which `make test` sets, or CI set) goes
// further: a real control plane and a kubelet + containerd node run the
// DaemonSet, and the node's pods reach a container on another agentd host.
package integration
