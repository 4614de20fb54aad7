package interop

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/vishvananda/netlink"
)

// TestRefusedOptions: the Backend options agentd refuses, because with them
// flanneld either runs something no host can talk to or does not start.
// For each, flanneld on h1 shows why, and agentd on h2 exits at start with
// an error naming the option (and so runs nothing a flanneld peer would
// lose traffic to).
func TestRefusedOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		backend string
		// flanneld says what flanneld on h1 did with the option, "" when as
		// expected; err is its start's.
		flanneld func(m *mixed, h *cluster.Host, err error) string
		want     string // in agentd's log, which quotes the error
	}{
		{
			// flanneld binds a random port and sends to port 0, which the
			// kernel refuses: no host reaches it, nor it any host.
			name: "udp-port0", backend: `{"Type":"udp","Port":0}`,
			flanneld: func(m *mixed, h *cluster.Host, err error) string {
				if err != nil {
					return "did not start: " + err.Error()
				}
				port := netip.AddrPortFrom(h.IP, 8285).String()
				if err := h.Do(func() error {
					c, err := net.ListenPacket("udp4", port)
					if err == nil {
						c.Close()
					}
					return err
				}); err != nil {
					return "holds " + port + ": " + err.Error()
				}
				return ""
			},
			want: `config: \"Backend.Port\": 0 is no port a peer can send to`,
		},
		{
			// flannel.10000000 is longer than Linux allows a link's name.
			name: "vxlan-vni-name", backend: `{"Type":"vxlan","VNI":10000000}`,
			flanneld: func(m *mixed, h *cluster.Host, err error) string {
				if err == nil || !strings.Contains(err.Error(), "numerical result out of range") {
					return "started, or failed otherwise: " + errString(err)
				}
				return ""
			},
			want: `config: \"Backend.VNI\": 10000000 makes the device name flannel.10000000, longer than the 15 characters Linux allows`,
		},
		{
			// flanneld makes a GBP device, whose group policy agentd's
			// device would neither send nor take.
			name: "vxlan-gbp", backend: `{"Type":"vxlan","GBP":true}`,
			flanneld: func(m *mixed, h *cluster.Host, err error) string {
				if err != nil {
					return "did not start: " + err.Error()
				}
				l, err := h.LinkByName("flannel.1")
				if err != nil {
					return err.Error()
				}
				if vx, ok := l.(*netlink.Vxlan); !ok || !vx.GBP {
					return "flannel.1 is no GBP vxlan device"
				}
				return ""
			},
			want: `config: \"Backend.GBP\": true is not supported`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newMixed(t, 2, `{"Network":"`+network+`","Backend":`+tc.backend+`}`)
			h1, h2 := m.c.Host(1), m.c.Host(2)
			_, err := h1.StartFlanneld(m.ctx, m.flanneld, ready)
			if why := tc.flanneld(m, h1, err); why != "" {
				t.Fatalf("flanneld on %s with %s: %s", h1, tc.backend, why)
			}
			a, err := h2.StartAgent(m.ctx)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(m.ctx, ready)
			defer cancel()
			code, err := a.Wait(ctx)
			if err != nil {
				t.Fatalf("agentd with %s did not exit: %v", tc.backend, err)
			}
			log, err := h2.AgentLog()
			if err != nil {
				t.Fatal(err)
			}
			if code == 0 || !strings.Contains(log, tc.want) {
				t.Fatalf("agentd with %s exited %d; want an error with %q in its log:\n%s", tc.backend, code, tc.want, log)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}
