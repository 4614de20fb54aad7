// Package subnet holds what agentd knows about the cluster network: the network
// config, leases and their flannel-compatible wire format, the etcd registry and
// the manager that acquires, renews and watches leases, and the subnet.env file.
package subnet
