package cniplugin

import (
	"strings"
	"testing"
)

// TestDelegateConfRouteKeysAnyCase: a route of the conflist's ipam whose
// keys are written in another case ("Dst", "GW") is the route flannel's
// plugin and host-local read (encoding/json matches keys whatever their
// case). Before, DelegateConf refused it ("ipam.routes[0].dst" <nil> is
// not a CIDR), failing every ADD of a conflist that worked with
// flannel's plugin; and one to the cluster network was not seen as
// that route. Now it is given as "dst" and "gw", and the cluster
// network's route is not added twice.
func TestDelegateConfRouteKeysAnyCase(t *testing.T) {
	n, err := LoadConf([]byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"agentd-cni","ipam":{"routes":[{"Dst":"192.0.2.0/24","GW":"10.244.5.1"},{"DST":"10.244.0.0/16"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	d, err := DelegateConf(n, testEnv)
	if err != nil {
		t.Fatalf("DelegateConf: %v", err)
	}
	got := jsonOf(t, d["ipam"].(map[string]any)["routes"])
	if want := `[{"dst":"192.0.2.0/24","gw":"10.244.5.1"},{"dst":"10.244.0.0/16"}]`; got != want {
		t.Errorf("delegate's routes %s, want %s", got, want)
	}
	if got := jsonOf(t, n.IPAM["routes"]); got != `[{"Dst":"192.0.2.0/24","GW":"10.244.5.1"},{"DST":"10.244.0.0/16"}]` {
		t.Errorf("DelegateConf changed the configuration's routes to %s", got)
	}
}

// TestDelegateConfIPMasqBackendAnyCase: a delegate's "IPMasqBackend" is
// bridge's ipMasqBackend (encoding/json matches keys whatever their case),
// and the delegate configuration spells it as waitXtables reads it. Before,
// it stayed "IPMasqBackend": bridge masqueraded with nftables, which takes
// no xtables lock, while ADD and DEL waited for that lock as for legacy
// iptables, and failed with "try again later" while another program held
// it.
func TestDelegateConfIPMasqBackendAnyCase(t *testing.T) {
	n, err := LoadConf([]byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"agentd-cni","delegate":{"IPMasqBackend":"nftables"}}`))
	if err != nil {
		t.Fatal(err)
	}
	d, err := DelegateConf(n, testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if d["ipMasqBackend"] != "nftables" || d["IPMasqBackend"] != nil {
		t.Errorf("delegate %s, want \"ipMasqBackend\":\"nftables\" alone", jsonOf(t, d))
	}
	if _, err := LoadConf([]byte(`{"name":"cbr0","delegate":{"IPMasqBackend":"nftables","ipMasqBackend":"iptables"}}`)); err == nil || !strings.Contains(err.Error(), `"delegate.ipMasqBackend" is given 2 times`) {
		t.Errorf("LoadConf of two spellings of ipMasqBackend: %v, want the refusal every delegate key given twice gets", err)
	}
}
