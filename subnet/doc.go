// Package subnet holds what agentd knows about the cluster network: the network
// config, leases and their flannel-compatible wire format, the etcd registry and
// the manager that acquires, renews and watches leases, and the host identity.
// The subnet.env file is package subnetenv's, apart so that the programs that
// only read it (the CNI plugin, agentd-docker-opts) do not link etcd.
package subnet
