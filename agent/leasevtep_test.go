package agent

import (
	"encoding/json"
	"testing"
)

// TestLeaseVTEP: leaseVTEP reads the VNI and VTEP MAC of a vxlan lease's
// BackendData as agentd and flanneld write it, and nothing of data
// without both, or with a VNI or MAC that no vxlan device has.
func TestLeaseVTEP(t *testing.T) {
	for _, c := range []struct {
		raw string
		vni int
		mac string // "" for ok false
	}{
		{`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`, 1, "aa:bb:cc:dd:ee:ff"},
		{`{"VNI":0,"VtepMAC":"02:00:00:00:00:01","Port":4789}`, 0, "02:00:00:00:00:01"},
		{`{"vni":16777215,"vtepmac":"02:00:00:00:00:01"}`, 16777215, "02:00:00:00:00:01"},
		{`{"VtepMAC":"aa:bb:cc:dd:ee:ff"}`, 0, ""},
		{`{"VNI":1}`, 0, ""},
		{`{"VNI":16777216,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`, 0, ""},
		{`{"VNI":-1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`, 0, ""},
		{`{"VNI":1,"VtepMAC":"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"}`, 0, ""},
		{`{"VNI":1,"VtepMAC":"junk"}`, 0, ""},
		{`null`, 0, ""},
		{``, 0, ""},
	} {
		vni, mac, ok := leaseVTEP(json.RawMessage(c.raw))
		if ok != (c.mac != "") || ok && (vni != c.vni || mac.String() != c.mac) {
			t.Errorf("leaseVTEP(%s) = %d, %v, %v; want %d, %q", c.raw, vni, mac, ok, c.vni, c.mac)
		}
	}
}

// FuzzLeaseVTEP: leaseVTEP never panics, and what it accepts is a VNI a
// vxlan device can have and a 6-byte MAC.
func FuzzLeaseVTEP(f *testing.F) {
	f.Add([]byte(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`))
	f.Add([]byte(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff","Port":8472}`))
	f.Add([]byte(`{"VNI":"1","VtepMAC":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		vni, mac, ok := leaseVTEP(raw)
		if ok && (vni < 0 || vni > maxVNI || len(mac) != 6) {
			t.Errorf("leaseVTEP(%q) = %d, %v, true", raw, vni, mac)
		}
	})
}
