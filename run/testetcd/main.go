// Command testetcd is a real etcd server of the same release as the etcd
// client agentd links (go.etcd.io/etcd/server/v3), built by the project so
// the tests, benchmarks and the demo never depend on a system etcd package.
// It accepts exactly etcd's flags; tests/cluster runs it inside the test
// cluster's "etcd" network namespace.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
