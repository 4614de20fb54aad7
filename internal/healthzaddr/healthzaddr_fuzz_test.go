package healthzaddr

import (
	"testing"

	"github.com/agentd/agentd/agent"
)

// FuzzResolve: whatever the health server's flags and variables hold,
// Resolve neither panics nor returns an address agentd would refuse to
// listen on, nor one without its source, nor one with an error.
func FuzzResolve(f *testing.F) {
	f.Add("", "", "", "127.0.0.1:9471", "", "", "", "", "")
	f.Add("", "", "", "", "127.0.0.3", "", "", "", "0x2501")
	f.Add("", "", "9000", "[::]:1", "", "", "", "", "")
	f.Add("", "x", "", ":80", "", "-1", "", "]", "70000")
	f.Fuzz(func(t *testing.T, cAddr, cIP, cPort, aAddr, aIP, aPort, fAddr, fIP, fPort string) {
		given := map[string]string{}
		for flag, v := range map[string]string{AddrFlag: cAddr, IPFlag: cIP, PortFlag: cPort} {
			if v != "" {
				given[flag] = v
			}
		}
		env := map[string]string{"AGENTD_HEALTHZ_ADDR": aAddr, "AGENTD_HEALTHZ_IP": aIP, "AGENTD_HEALTHZ_PORT": aPort,
			"FLANNELD_HEALTHZ_ADDR": fAddr, "FLANNELD_HEALTHZ_IP": fIP, "FLANNELD_HEALTHZ_PORT": fPort}
		r, err := Resolve(given, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		switch {
		case err != nil:
			if r.Addr != "" || r.From != "" {
				t.Fatalf("error %v with %+v", err, r)
			}
		case r.Addr == "":
			if r.From != "" {
				t.Fatalf("no address, but from %s", r.From)
			}
		case r.From == "":
			t.Fatalf("address %q from nowhere", r.Addr)
		default:
			if err := agent.CheckListenAddr(r.Addr); err != nil {
				t.Fatalf("address %q from %s: %v", r.Addr, r.From, err)
			}
		}
	})
}
