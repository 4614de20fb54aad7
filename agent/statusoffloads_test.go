package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
)

// offloadBackend is the fake backend with a device that took offloads, as
// the udp backend's does.
type offloadBackend struct {
	fakeBackend
	offloads string
}

func (b *offloadBackend) Type() string     { return "udp-like" }
func (b *offloadBackend) Offloads() string { return b.offloads }

// TestStatusOffloads: /status has the offloads of the backend's device
// (udp's flannel0), as the backend says them at the time of the request,
// and no offloads key for a backend that says none (vxlan, host-gw), nor
// once the agent dropped the backend that said them for another config.
// Before, only the udp backend's log line said them.
func TestStatusOffloads(t *testing.T) {
	udp := &offloadBackend{offloads: "csum,tso4"}
	a, key, start := backendStatusRig(t, udp)
	offloads := func() (string, bool) {
		t.Helper()
		v, ok := key("offloads")
		var o string
		if ok {
			if err := json.Unmarshal([]byte(v), &o); err != nil {
				t.Fatalf("/status offloads %s: %v", v, err)
			}
		}
		return o, ok
	}

	if got, ok := offloads(); ok {
		t.Errorf("before any backend: offloads %q, want no key", got)
	}
	be := start("udp-like")
	if got, ok := offloads(); got != "csum,tso4" {
		t.Errorf("udp-like backend: offloads %q (key %v), want csum,tso4", got, ok)
	}
	udp.offloads = "csum,tso4,uso4,uso6"
	if got, _ := offloads(); got != "csum,tso4,uso4,uso6" {
		t.Errorf("once the backend says others: offloads %q, want csum,tso4,uso4,uso6", got)
	}
	a.dropBackend(be)
	if got, ok := offloads(); ok {
		t.Errorf("after the backend was dropped: offloads %q, want no key", got)
	}
	start("fake")
	if got, ok := offloads(); ok {
		t.Errorf("a backend without offloads: offloads %q, want no key", got)
	}
}

// backendStatusRig is an agent a whose backends are be (as "udp-like")
// and the fake one, with /status on a mux. key reads one key of /status, its
// value as compact JSON, and whether it is there; start starts the backend
// of a type as the agent does when its config names it.
func backendStatusRig(t *testing.T, be backend.Backend) (a *agent, key func(name string) (string, bool), start func(typ string) backend.Backend) {
	a = &agent{log: logr.Discard(), health: newHealth(logr.Discard()), obs: newObserver(),
		backends: backend.Registry{
			"udp-like": func(backend.Config) (backend.Backend, error) { return be, nil },
			"fake":     func(backend.Config) (backend.Backend, error) { return &fakeBackend{}, nil },
		}}
	mux := http.NewServeMux()
	a.obs.register(mux, a.health)
	key = func(name string) (string, bool) {
		t.Helper()
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
		var st map[string]json.RawMessage
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatalf("/status: %v\n%s", err, rec.Body)
		}
		v, ok := st[name]
		var b bytes.Buffer
		if ok {
			if err := json.Compact(&b, v); err != nil {
				t.Fatal(err)
			}
		}
		return b.String(), ok
	}
	start = func(typ string) backend.Backend {
		t.Helper()
		started, _, err := a.startBackend(context.Background(), &subnet.Config{BackendType: typ}, backend.ExternalInterface{})
		if err != nil {
			t.Fatal(err)
		}
		return started
	}
	return a, key, start
}
