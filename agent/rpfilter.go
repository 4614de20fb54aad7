package agent

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/agentd/agentd/backend/vxlan"
	"github.com/agentd/agentd/subnet"
)

// strictRPFilterNote is what the config watch adds to a change of vxlan's
// DirectRouting when this host filters by reverse path strictly on ext
// (the external interface) or on dev (the vxlan device, flannel.<VNI>):
// the kernel uses the larger of net.ipv4.conf.all.rp_filter and the
// interface's, and 1 drops a packet that arrives on another interface than
// the route back to its source. While DirectRouting is rolled host by host,
// a host on one setting sends straight through the underlay to a host on
// the other, whose route back is through dev, and gets the answer through
// dev where its own route back is direct: strict filtering on ext at the
// one and on dev at the other drops their traffic until every host runs
// the same setting (seen on the namespace cluster: 100 % loss at 1, none
// at 0, for either interface). "" when the filter is loose or off on both,
// or cannot be read.
func strictRPFilterNote(procSys, ext, dev string) string {
	all, err := readRPFilter(filepath.Join(procSys, "net/ipv4/conf/all/rp_filter"))
	if err != nil {
		return ""
	}
	var strict []string
	for _, iface := range []string{ext, dev} {
		if iface == "" {
			continue
		}
		own, err := readRPFilter(filepath.Join(procSys, "net/ipv4/conf", iface, "rp_filter"))
		if err == nil && max(all, own) == 1 {
			strict = append(strict, iface)
		}
	}
	if len(strict) == 0 {
		return ""
	}
	return fmt.Sprintf("this host filters by reverse path strictly (rp_filter 1 on %s): until every host runs the new DirectRouting, "+
		"traffic between hosts on the old and the new setting is dropped; set net.ipv4.conf.all.rp_filter to 2 (loose: the kernel takes "+
		"the larger of all's and an interface's) on every host first, or restart every host's agentd together", strings.Join(strict, " and "))
}

// vxlanDevice is the vxlan device of c, a vxlan config vxlan reads
// (flannel.<VNI>), or "".
func vxlanDevice(c *subnet.Config) string {
	o, err := vxlan.Options(c.Backend)
	if err != nil {
		return ""
	}
	vni := reflect.ValueOf(o).FieldByName("VNI")
	if !vni.CanInt() {
		return ""
	}
	return vxlan.DeviceName(int(vni.Int()))
}

// readRPFilter reads an rp_filter file of /proc/sys (readProcSysInt): 0, 1
// or 2.
func readRPFilter(path string) (int, error) { return rpFilter(readProcSysInt(path)) }

// parseRPFilter parses what an rp_filter file holds (parseProcSysInt):
// 0 (off), 1 (strict) or 2 (loose).
func parseRPFilter(b []byte) (int, error) { return rpFilter(parseProcSysInt(b)) }

// rpFilter is v, read from an rp_filter file with err, if it is one of the
// values rp_filter takes.
func rpFilter(v int, err error) (int, error) {
	if err == nil && (v < 0 || v > 2) {
		err = fmt.Errorf("%d is not 0, 1 or 2", v)
	}
	if err != nil {
		return 0, fmt.Errorf("rp_filter: %w", err)
	}
	return v, nil
}

// directRoutingChanged says whether vxlan's DirectRouting differs between
// a and b, both vxlan configs whose Backend objects vxlan reads.
func directRoutingChanged(a, b *subnet.Config) bool {
	if a.BackendType != vxlan.Type || b.BackendType != vxlan.Type {
		return false
	}
	oa, erra := vxlan.Options(a.Backend)
	ob, errb := vxlan.Options(b.Backend)
	if erra != nil || errb != nil {
		return false
	}
	da, db := reflect.ValueOf(oa).FieldByName("DirectRouting"), reflect.ValueOf(ob).FieldByName("DirectRouting")
	return da.IsValid() && db.IsValid() && !da.Equal(db)
}
