package cniplugin

import (
	"os"
	"strings"
	"testing"
)

// TestDelWithKeySpelledTwice: a network configuration giving a key of
// delegate or ipam in two spellings ("routes" and "Routes") is refused by
// ADD since 6b319aa, but its pods, added before by an agentd-cni that took
// it, must still be deleted: DEL failed with code 7 for every one of them,
// and a pod whose DEL fails stays in the runtime (StopPodSandbox retried
// for ever), as README says of the CNI 1.1.0 networks before 2026-12-05.
// DEL takes the configuration as written, with a saved configuration (its
// own) and without (rebuilt, the address released from subnet.env's range).
func TestDelWithKeySpelledTwice(t *testing.T) {
	const twice = `,"ipam":{"routes":[{"dst":"192.0.2.0/24"}],"Routes":[{"dst":"192.0.2.0/24"}]}`
	f := newFixture(t)
	f.writeEnv(t, envA)
	// The pod's ADD, by agentd-cni before 6b319aa: what it saved does not
	// depend on the second spelling.
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	if err := f.p.Del(f.args("c1", twice)); err != nil {
		t.Fatalf("DEL of a pod added before, with the configuration giving ipam.routes twice: %v", err)
	}
	if len(f.exec.calls) != 2 || f.exec.calls[1].command != "DEL" || f.exec.calls[1].plugin != "bridge" {
		t.Fatalf("calls %+v, want ADD then DEL of bridge", f.exec.calls)
	}
	if _, err := os.Stat(f.saved("c1")); !os.IsNotExist(err) {
		t.Errorf("saved configuration after DEL: %v, want it removed", err)
	}
	// Nothing saved: the configuration is rebuilt as it is written.
	if err := f.p.Del(f.args("c2", twice)); err != nil {
		t.Fatalf("DEL with nothing saved, with the configuration giving ipam.routes twice: %v", err)
	}
	if len(f.exec.calls) != 3 || f.exec.calls[2].command != "DEL" {
		t.Fatalf("calls %+v, want a third, DEL", f.exec.calls)
	}
	if ranges := jsonOf(t, f.exec.calls[2].conf["ipam"].(map[string]any)["ranges"]); ranges != `[[{"subnet":"10.244.5.0/24"}]]` {
		t.Errorf("rebuilt DEL's ranges %s, want subnet.env's", ranges)
	}
	// ADD still refuses it, naming both spellings.
	err := f.p.Add(f.args("c3", twice))
	if err == nil || !strings.Contains(err.Error(), `"ipam.routes" is given 2 times, as ["Routes" "routes"]`) {
		t.Errorf("ADD with ipam.routes given twice: %v, want it refused naming both", err)
	}
	if len(f.exec.calls) != 3 {
		t.Errorf("calls %+v after the refused ADD, want no more", f.exec.calls[3:])
	}
}
