package vxlan

import "encoding/json"

// LeaseVNI reads a vxlan lease's BackendData as a host running VNI vni reads
// a peer's: same says whether the lease's host runs vni (sameVNI: a lease
// without a Port may say it modulo 65536, as older flanneld wrote it),
// leaseVNI is the VNI the lease names and port the UDP port it says (0 when
// it says none: flanneld's, an older agentd's). agentctl config init reads
// it to tell which running hosts a change of Backend.VNI or Backend.Port
// would leave on other settings.
func LeaseVNI(raw json.RawMessage, vni int) (same bool, leaseVNI, port int, err error) {
	pd, err := parseLeaseData(raw)
	if err != nil {
		return false, 0, 0, err
	}
	b := Backend{opts: options{VNI: vni}}
	return b.sameVNI(pd), pd.VNI, pd.Port, nil
}
