package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
)

// TestStatusShadowFindings: what the backend's pass found (Result.Found:
// another program's route in a peer's subnet, an address of this host
// routing another subnet of the cluster network) is in /status while it
// holds: kept by a pass that failed before judging the kernel's routes
// (Found nil), gone from the answer, fields and all, once a pass finds
// none; of many, the first 50 are listed and all counted. Before, they
// were only in the log.
func TestStatusShadowFindings(t *testing.T) {
	o := newObserver()
	h := newHealth(logr.Discard())
	mux := http.NewServeMux()
	o.register(mux, h)
	get := func(path string) string {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Body.String()
	}
	body := func() string { return get("/status") }
	gauges := func(routes, strays int) {
		t.Helper()
		m := get("/metrics")
		for _, want := range []string{fmt.Sprintf("agentd_shadowing_routes %d\n", routes), fmt.Sprintf("agentd_stray_addresses %d\n", strays)} {
			if !strings.Contains(m, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	}
	gauges(0, 0)
	own := lease("10.244.1.0/24", "198.18.0.1")
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2")}
	found := &backend.Findings{
		Shadowing: []backend.Shadowing{{Route: "blackhole 10.244.2.64/26 proto bird", PeerSubnet: "10.244.2.0/24"}},
		Strays:    []backend.Stray{{Iface: "docker0", Address: "10.244.42.1/24", Route: "10.244.42.0/24"}},
	}
	wantRoutes := []ShadowingRoute{{Route: "blackhole 10.244.2.64/26 proto bird", PeerSubnet: "10.244.2.0/24"}}
	wantStrays := []StrayAddress{{Iface: "docker0", Address: "10.244.42.1/24", Route: "10.244.42.0/24"}}
	for _, step := range []struct {
		name string
		res  backend.Result
		err  error
		want bool
	}{
		{"found", backend.Result{Found: found}, nil, true},
		{"failed before judging", backend.Result{}, errors.New("boom"), true},
		{"same found again", backend.Result{Found: found}, nil, true},
		{"none found", backend.Result{Found: &backend.Findings{}}, nil, false},
		{"failed before judging, none before", backend.Result{}, errors.New("boom"), false},
	} {
		o.reconciled(own, peers, step.res, step.err, time.Millisecond)
		b := body()
		var st Status
		if err := json.Unmarshal([]byte(b), &st); err != nil {
			t.Fatal(err)
		}
		got := slices.Equal(st.ShadowingRoutes, wantRoutes) && st.ShadowingRoutesTotal == 1 &&
			slices.Equal(st.StrayAddresses, wantStrays) && st.StrayAddressesTotal == 1
		if got != step.want {
			t.Errorf("%s: /status lists the findings: %t, want %t:\n%s", step.name, got, step.want, b)
		}
		if !step.want && (strings.Contains(b, "shadowingRoutes") || strings.Contains(b, "strayAddresses")) {
			t.Errorf("%s: /status names the fields with nothing found:\n%s", step.name, b)
		}
		if step.want {
			gauges(1, 1)
		} else {
			gauges(0, 0)
		}
	}

	many := &backend.Findings{}
	for i := range 120 {
		many.Shadowing = append(many.Shadowing, backend.Shadowing{Route: fmt.Sprintf("10.244.2.%d/32 via 198.18.0.9 dev#2 proto bird", i), PeerSubnet: "10.244.2.0/24"})
		many.Strays = append(many.Strays, backend.Stray{Iface: fmt.Sprintf("br%d", i), Address: fmt.Sprintf("10.244.%d.1/24", 100+i), Route: fmt.Sprintf("10.244.%d.0/24", 100+i)})
	}
	o.reconciled(own, peers, backend.Result{Found: many}, nil, time.Millisecond)
	st := o.status(h)
	if st.ShadowingRoutesTotal != 120 || len(st.ShadowingRoutes) != 50 || st.StrayAddressesTotal != 120 || len(st.StrayAddresses) != 50 {
		t.Fatalf("120 of each: %d of %d routes and %d of %d addresses listed; want the first 50 of 120 of each",
			len(st.ShadowingRoutes), st.ShadowingRoutesTotal, len(st.StrayAddresses), st.StrayAddressesTotal)
	}
	if st.ShadowingRoutes[49].Route != many.Shadowing[49].Route || st.StrayAddresses[49].Iface != "br49" {
		t.Errorf("120 of each: the 50th listed are %+v and %+v; want %q and br49", st.ShadowingRoutes[49], st.StrayAddresses[49], many.Shadowing[49].Route)
	}
	gauges(120, 120)
	if !slices.Equal(o.status(h).ShadowingRoutes, st.ShadowingRoutes) {
		t.Errorf("a second /status differs")
	}
}
