package cniplugin

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/utils"
)

// hostLocalDataDir is where host-local keeps its stores, one directory per
// network name, when its configuration's ipam gives no "dataDir".
const hostLocalDataDir = "/var/lib/cni/networks"

// hostLocalIfNames are the interfaces for which host-local holds an address
// of container containerID in network's store (see hostLocalStore), as the
// delegate configuration conf (a saved file's bytes) names it. host-local
// writes each reservation as a file named after the address, holding
// "<container ID>\r\n<interface>" (see reservationOf), and releases on
// DEL those of the container ID and CNI_IFNAME it is given. None when the
// IPAM plugin is not host-local, the store is not there, or it holds only
// reservations of host-local before it recorded the interface (0.7), which
// any interface would release. An error is a store that cannot be read.
func hostLocalIfNames(conf []byte, network, containerID string) ([]string, error) {
	store, ok := hostLocalStore(conf, network)
	if !ok {
		return nil, nil
	}
	ents, err := os.ReadDir(store)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ifNames []string
	for _, e := range ents {
		// host-local's lock and its last_reserved_ip.<range> files share
		// the directory.
		if !e.Type().IsRegular() || e.Name() == "lock" || strings.HasPrefix(e.Name(), "last_reserved_ip") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(store, e.Name()))
		if err != nil {
			continue // released since the listing, or not host-local's
		}
		id, ifName := reservationOf(b)
		if id == containerID && ifName != "" && !slices.Contains(ifNames, ifName) {
			ifNames = append(ifNames, ifName)
		}
	}
	return ifNames, nil
}

// hostLocalStore is the directory of host-local's store of network for
// the delegate configuration conf: its ipam's "dataDir", or host-local's
// default where there is none, and the network's name. Not ok when the
// IPAM plugin is not host-local, or the dataDir is not an absolute path
// (host-local would take it from its working directory, which is the
// runtime's).
func hostLocalStore(conf []byte, network string) (string, bool) {
	// Decoded as host-local decodes it: keys match whatever their case.
	var c struct {
		IPAM struct {
			Type    string `json:"type"`
			DataDir string `json:"dataDir"`
		} `json:"ipam"`
	}
	if json.Unmarshal(conf, &c) != nil || c.IPAM.Type != "host-local" || utils.ValidateNetworkName(network) != nil {
		return "", false
	}
	dir := c.IPAM.DataDir
	if dir == "" {
		dir = hostLocalDataDir
	}
	if !filepath.IsAbs(dir) {
		return "", false
	}
	return filepath.Join(dir, network), true
}

// reservationOf is the attachment that the content b of a reservation file
// in host-local's store names: "<container ID>\r\n<interface>", as
// host-local writes it, surrounding white space left out as host-local
// leaves it out when it matches; the interface is "" in one that names a
// container ID alone (host-local before 0.7).
func reservationOf(b []byte) (containerID, ifName string) {
	containerID, ifName, _ = strings.Cut(strings.TrimSpace(string(b)), "\r\n")
	return containerID, ifName
}
