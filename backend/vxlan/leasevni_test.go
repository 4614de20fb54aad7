package vxlan

import (
	"encoding/json"
	"testing"
)

// TestLeaseVNI: LeaseVNI reads a lease as the backend does: the VNI it
// names, whether that is the given one (modulo 65536 from a lease without a
// Port, as flanneld before late 2023 wrote it), and its port, 0 when it
// says none.
func TestLeaseVNI(t *testing.T) {
	for _, tc := range []struct {
		data      string
		vni       int
		same      bool
		leaseVNI  int
		port      int
		wantError bool
	}{
		{data: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01","Port":8472}`, vni: 1, same: true, leaseVNI: 1, port: 8472},
		{data: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01","Port":8472}`, vni: 2, leaseVNI: 1, port: 8472},
		{data: `{"VNI":0,"VtepMAC":"aa:bb:cc:dd:ee:01"}`, vni: 1, leaseVNI: 0},
		{data: `{"VNI":4464,"VtepMAC":"aa:bb:cc:dd:ee:01"}`, vni: 70000, same: true, leaseVNI: 4464},
		{data: `{"VNI":4464,"VtepMAC":"aa:bb:cc:dd:ee:01","Port":8472}`, vni: 70000, leaseVNI: 4464, port: 8472},
		{data: `{"VNI":1}`, vni: 1, wantError: true},
		{data: ``, vni: 1, wantError: true},
	} {
		same, vni, port, err := LeaseVNI(json.RawMessage(tc.data), tc.vni)
		if (err != nil) != tc.wantError || same != tc.same || vni != tc.leaseVNI || port != tc.port {
			t.Errorf("LeaseVNI(%s, %d) = %v, %d, %d, %v; want %v, %d, %d, error %v",
				tc.data, tc.vni, same, vni, port, err, tc.same, tc.leaseVNI, tc.port, tc.wantError)
		}
	}
}
