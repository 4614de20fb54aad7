package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// dockerMark is the mark both sides are given: dockerd's
// --bridge-accept-fwmark and agentd's --docker-accept-fwmark.
const dockerMark = "0x200000/0x200000"

// dockerNFT is what dockerd 29 run with --firewall-backend=nftables and
// --bridge-accept-fwmark=dockerMark keeps for a bridge network on bridge br
// (docker0 on a Docker host; the harness's containers hang off cni0), cut
// down to the part that matters here, as nft -f input: its own table, whose
// forward base chain, at priority filter, accepts packets carrying the mark,
// and for packets going out the bridge accepts replies and traffic from the
// bridge itself and drops the rest (traffic routed in from another
// interface: the overlay's). The counters show which rule took the pings.
func dockerNFT(br string) string {
	value, mask, _ := strings.Cut(dockerMark, "/")
	return strings.NewReplacer("{br}", br, "{value}", value, "{mask}", mask).Replace(`table ip docker-bridges {
	chain filter-FORWARD {
		type filter hook forward priority filter; policy accept;
		meta mark & {mask} == {value} counter accept
		oifname "{br}" jump filter-forward-in__{br}
	}
	chain filter-forward-in__{br} {
		ct state established,related counter accept
		iifname "{br}" counter accept
		counter drop
	}
}
`)
}

// nftCounter is the packet count of the rule ending in verdict in chain of
// Docker's table on h.
func nftCounter(f *fixture, h *cluster.Host, chain, verdict string) int {
	f.t.Helper()
	out, err := h.Exec(f.ctx, "nft", "list", "chain", "ip", "docker-bridges", chain)
	if err != nil {
		f.t.Fatalf("%s: nft list chain %s: %v: %s", h, chain, err, out)
	}
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ ` + verdict + `\n`)
	m := re.FindSubmatch(out)
	if m == nil {
		f.t.Fatalf("%s: no counter before %q in chain %s:\n%s", h, verdict, chain, out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestDockerNFTAcceptMark: with Docker 29's nftables firewall on the hosts,
// containers on different hosts cannot reach each other although agentd's
// FORWARD chain accepts their traffic (an nftables accept ends only its own
// base chain; Docker's drops it in another); with --docker-accept-fwmark,
// agentd marks cluster traffic in mangle FORWARD, before Docker's chain, and
// Docker accepts it. Then they do, Docker's own drop having stayed in place.
func TestDockerNFTAcceptMark(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"vxlan", "host-gw"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 2, fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, network, backend), "--resync-interval=1s")
			cs := f.startAll()
			hosts := f.c.Hosts()
			rules := filepath.Join(t.TempDir(), "docker-bridges.nft")
			if err := os.WriteFile(rules, []byte(dockerNFT("cni0")), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, h := range hosts {
				if out, err := h.Exec(f.ctx, "nft", "-f", rules); err != nil {
					t.Fatalf("%s: nft -f: %v: %s", h, err, out)
				}
			}

			// Without the mark: Docker's chain drops each request on
			// the receiving host.
			for i, from := range cs {
				to := cs[1-i]
				r, err := from.Ping(f.ctx, to.IP(), 2, 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("without the mark: %s -> %s: %d/%d replies", from, to, r.Received, r.Sent)
				if r.Received != 0 {
					t.Errorf("%s -> %s: %d/%d replies through Docker's drop without the mark", from, to, r.Received, r.Sent)
				}
			}
			for _, h := range hosts {
				if n := nftCounter(f, h, "filter-forward-in__cni0", "drop"); n < 2 {
					t.Errorf("%s: Docker's drop counted %d packets, want the 2 requests at least", h, n)
				}
			}

			for _, h := range hosts {
				if code, err := h.Agent().Stop(); err != nil || code != 0 {
					t.Fatalf("%s: stop agent: exit %d, %v", h, code, err)
				}
				f.start(h, "--docker-accept-fwmark="+dockerMark)
			}
			f.waitReady(hosts...)
			if err := cluster.PingEach(f.ctx, cs, 10*time.Second); err != nil {
				for _, h := range hosts {
					out, _ := h.Exec(f.ctx, "nft", "list", "ruleset")
					t.Logf("%s:\n%s", h, out)
				}
				t.Fatalf("with --docker-accept-fwmark=%s: %v", dockerMark, err)
			}
			for i, from := range cs {
				to := cs[1-i]
				r, err := from.Ping(f.ctx, to.IP(), 5, 0)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("with the mark: %s -> %s: %d/%d replies", from, to, r.Received, r.Sent)
				if r.Received != r.Sent {
					t.Errorf("%s -> %s: %d/%d replies with the mark", from, to, r.Received, r.Sent)
				}
			}
			for _, h := range hosts {
				if n := nftCounter(f, h, "filter-FORWARD", "accept"); n < 5 {
					t.Errorf("%s: Docker's mark accept counted %d packets, want the 5 requests at least", h, n)
				}
			}
		})
	}
}
