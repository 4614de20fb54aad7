// Command agentd-cni is agentd's CNI plugin: it gives a pod an interface on
// this host's bridge and an address from the subnet agentd leased, by
// delegating to the standard bridge and host-local plugins with the subnet and
// MTU from subnet.env (see internal/cniplugin). Install it in the CNI binary
// directory (/opt/cni/bin) as agentd-cni, or as flannel for conflists that
// say "type": "flannel".
package main

import (
	"github.com/agentd/agentd/internal/cniplugin"
	"github.com/containernetworking/cni/pkg/skel"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	p := &cniplugin.Plugin{}
	skel.PluginMainFuncs(p.Funcs(), cniplugin.Versions, "agentd-cni "+version+": CNI plugin for agentd's subnet.env")
}
