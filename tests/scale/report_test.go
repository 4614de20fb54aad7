package scale

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeReport writes results.md (tables, machine, versions) and scale.svg
// (cold resync time and RSS against N) into dir.
func writeReport(b *testing.B, dir string, colds []coldResult, churns []churnResult, idle []idleSource) {
	b.Helper()
	var w strings.Builder
	rev, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	fmt.Fprintf(&w, "# agentd at scale\n\nMeasured %s on %s; agentd %s, etcd 3.7.3 (in the test cluster).\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), machine(), strings.TrimSpace(string(rev)))
	fmt.Fprintf(&w, "One real agent on a namespace host; every other host is a virtual lease in etcd (tests/scale/gen.go).\n\n")
	fmt.Fprintf(&w, "## Cold start: agent start → all N peers programmed\n\n")
	fmt.Fprintf(&w, "| backend | N | seconds | kernel objects | objects/s | agent CPU s | RSS MB at programmed | RSS MB %v later | goroutines |\n|---|---|---|---|---|---|---|---|---|\n", settleTime)
	for _, r := range colds {
		fmt.Fprintf(&w, "| %s | %d | %.2f | %d | %.0f | %.2f | %.1f | %.1f | %d |\n", r.Backend, r.N, r.Seconds, r.Objects, r.ObjPerSec, r.CPUSeconds, r.RSSMB, r.SettledMB, r.Goroutines)
	}
	fmt.Fprintf(&w, "\n## Churn at N = 1000: lease written → route in (or out of) the kernel\n\n")
	fmt.Fprintf(&w, "| backend | events/s | events | join p50 ms | join p99 ms | leave p99 ms | agent CPU %% |\n|---|---|---|---|---|---|---|\n")
	for _, r := range churns {
		fmt.Fprintf(&w, "| %s | %d | %d | %.1f | %.1f | %.1f | %.1f |\n", r.Backend, r.Rate, r.Events, r.JoinP50MS, r.JoinP99MS, r.LeaveP99, r.CPUPct)
	}
	fmt.Fprintf(&w, "\n## Idle: etcd activity of one agent per hour at the defaults (N = 1000, vxlan)\n\n")
	fmt.Fprintf(&w, "Measured over %v on a shortened schedule (--subnet-lease-ttl=%v, etcd --watch-progress-notify-interval=%v, a compaction halfway), "+
		"scaled per source to its default interval (tests/scale/idle_bench_test.go).\n\n", idleWindow, idleTTL, idleProgress)
	fmt.Fprintf(&w, "| source | counted | in the window | interval there | interval by default | per hour at the defaults |\n|---|---|---|---|---|---|\n")
	for _, r := range idle {
		period, def := "—", "—"
		if r.Period != 0 {
			period, def = r.Period.String(), r.Default.String()
		}
		fmt.Fprintf(&w, "| %s | %s | %.0f | %s | %s | %s |\n", r.Name, r.Measured, r.Count, period, def, r.perHour())
	}
	fmt.Fprintf(&w, "\n![cold resync and RSS against N](scale.svg)\n")
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(w.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "scale.svg"), []byte(plot(colds)), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("report written to %s:\n%s", dir, w.String())
}

// plot draws two panels, cold start seconds and RSS against N (log scale),
// one line per backend.
func plot(colds []coldResult) string {
	const W, H, pad = 360, 260, 50
	colors := map[string]string{"vxlan": "#1f77b4", "host-gw": "#d62728"}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", 2*W, H)
	panel := func(x0 int, title, unit string, val func(coldResult) float64) {
		ymax := 0.0
		for _, r := range colds {
			ymax = math.Max(ymax, val(r))
		}
		ymax *= 1.15
		xs := func(n int) float64 {
			return float64(x0+pad) + (math.Log10(float64(n))-2)/(math.Log10(5000)-2)*float64(W-2*pad)
		}
		ys := func(v float64) float64 { return float64(H-pad) - v/ymax*float64(H-2*pad) }
		fmt.Fprintf(&sb, `<text x="%d" y="20" font-size="13">%s</text>`+"\n", x0+pad, title)
		fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x0+pad, H-pad, x0+W-pad, H-pad)
		fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x0+pad, pad, x0+pad, H-pad)
		for _, n := range sizes {
			fmt.Fprintf(&sb, `<text x="%.0f" y="%d" text-anchor="middle">%d</text>`+"\n", xs(n), H-pad+15, n)
		}
		fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="middle">peers (N)</text>`+"\n", x0+W/2, H-12)
		for i := 0; i <= 4; i++ {
			v := ymax * float64(i) / 4
			fmt.Fprintf(&sb, `<text x="%d" y="%.0f" text-anchor="end">%.2g</text>`+"\n", x0+pad-4, ys(v)+4, v)
		}
		fmt.Fprintf(&sb, `<text x="%d" y="%d">%s</text>`+"\n", x0+4, pad-8, unit)
		for bi, be := range backends {
			var pts []string
			for _, r := range colds {
				if r.Backend == be {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", xs(r.N), ys(val(r))))
				}
			}
			fmt.Fprintf(&sb, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colors[be], strings.Join(pts, " "))
			fmt.Fprintf(&sb, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", x0+W-pad-60, pad+14*bi, colors[be], be)
		}
	}
	panel(0, "cold start → all peers programmed", "seconds", func(r coldResult) float64 { return r.Seconds })
	panel(W, "agent RSS at N peers (settled)", "MB", func(r coldResult) float64 { return r.SettledMB })
	sb.WriteString("</svg>\n")
	return sb.String()
}

func netipToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNetToPrefix(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}
