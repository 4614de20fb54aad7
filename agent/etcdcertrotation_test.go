package agent

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The etcd of TestEtcdClientCertRotation serves its client port on two
// addresses, so that the agent has two endpoints and runs its endpoint
// checker (etcdprobe.go, --etcd-endpoint-check-interval).
const (
	rotEtcd1 = "https://198.18.0.254:2379"
	rotEtcd2 = "https://198.18.0.254:2389"
)

// TestEtcdClientCertRotation: the files named by --etcd-certfile and
// --etcd-keyfile are read again at each TLS handshake, so a certificate
// replaced in place (as cert-manager does) is used from the next connection
// on, without a restart of agentd.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1     agentd --etcd-certfile=agent.crt: A, expiring ~20 s after the start
//	               └─ etcd 198.18.0.254  etcd --client-cert-auth on :2379 and :2389, the CA of A and B
//
// The agent connects with A. In "rotated", agent.crt and agent.key are then
// replaced (written beside, renamed over) with B, long-lived and of the same
// CA. Once A has expired, etcd is restarted (killed and started on the same
// address and data dir), so the client's connection breaks and the next one
// needs a new handshake: the agent reconnects, etcd receives its lease's
// keepalives, it sees a peer written after the restart, and the endpoint
// checker reports both endpoints up again.
//
// "not rotated" is the control: the same without replacing the files. The
// agent cannot reconnect (etcd rejects the expired A), says why (an expired
// certificate), receives no peer, and etcd no keepalive. So the reconnection
// in "rotated" is the reload's doing, not a connection that never broke or a
// certificate that etcd would have taken anyway.
func TestEtcdClientCertRotation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rotate bool
	}{
		{"rotated", true},
		{"not rotated", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			certRotationCase(t, tc.rotate)
		})
	}
}

func certRotationCase(t *testing.T, rotate bool) {
	c := cluster.Start(t, cluster.Options{
		Hosts:   1,
		EtcdTLS: &cluster.EtcdTLS{ClientCertAuth: true},
		EtcdArgs: []string{
			"--listen-client-urls=" + rotEtcd1 + "," + rotEtcd2,
			"--advertise-client-urls=" + rotEtcd1 + "," + rotEtcd2,
		},
	})
	if c.EtcdEndpoint() != rotEtcd1 {
		t.Fatalf("the cluster's etcd is at %s, the test expects %s", c.EtcdEndpoint(), rotEtcd1)
	}
	ctx := t.Context()
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "/coreos.com/network"
	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`); err != nil {
		t.Fatal(err)
	}
	h1 := c.Host(1)

	// Build agentd now, so that A's short life is not spent building it.
	if a, err := h1.StartAgent(ctx, "--version"); err != nil {
		t.Fatal(err)
	} else if code, err := a.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("agentd --version: exit code %d, %v", code, err)
	}

	dir := t.TempDir()
	crt, key := filepath.Join(dir, "agent.crt"), filepath.Join(dir, "agent.key")
	if err := c.IssueEtcdClientCert(crt, key, time.Now().Add(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	expiry := certNotAfter(t, crt) // whole seconds, as the certificate holds it
	// The lease's keepalives come every third of its TTL, so a short TTL
	// shows them within seconds of the reconnection. No iptables rules:
	// they are not what this test is about.
	a, err := h1.StartAgent(ctx, "--etcd-certfile="+crt, "--etcd-keyfile="+key,
		"--etcd-endpoints="+rotEtcd1+","+rotEtcd2, "--etcd-endpoint-check-interval=1s",
		"--subnet-lease-ttl=6s", "--iptables-forward-rules=false")
	if err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx, time.Until(expiry)-5*time.Second); err != nil {
		t.Fatalf("agent not ready 5 s before its certificate expires: %v", err)
	}
	// The endpoint checker's first round may come after readiness.
	if err := cluster.Eventually(ctx, time.Until(expiry)-5*time.Second, func() error { return agentConnected(ctx, h1, true) }); err != nil {
		t.Fatalf("ready with certificate A: %v", err)
	}
	ownKey, lease := ownLease(t, ctx, cli, prefix)
	t.Logf("ready with certificate A (expires %s), holding %s on lease %x", expiry.Format(time.TimeOnly), ownKey, lease)

	if rotate {
		// Written beside, renamed over: a handshake reads the old file or
		// the new one, never half of one. Between the two renames it may
		// read a mismatched pair, fail, and retry.
		if err := c.IssueEtcdClientCert(crt+".new", key+".new", time.Now().Add(24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{key, crt} {
			if err := os.Rename(f+".new", f); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("replaced %s and %s with certificate B (expires %s)", crt, key, certNotAfter(t, crt).Format(time.DateTime))
	}

	// Wait out A's life. The connection made with A stays up after: TLS
	// checks certificates at the handshake only. (The endpoint checker's
	// connections are new ones: without B it finds both endpoints down
	// already.)
	select {
	case <-time.After(time.Until(expiry) + time.Second):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if !time.Now().After(expiry) {
		t.Fatalf("certificate A (until %s) has not expired yet", expiry)
	}
	if v, err := h1.Metric(ctx, "agentd_etcd_connected"); err != nil || v != 1 {
		t.Fatalf("certificate A expired, before the restart: agentd_etcd_connected %v, %v; want 1", v, err)
	}

	// A new handshake: etcd restarted on the same address and data dir.
	if err := c.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	if err := c.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	peerKey, peer := writePeer(t, ctx, cli, prefix, ownKey)
	t.Logf("etcd restarted; wrote peer %s", peerKey)

	if !rotate {
		// The control: the agent keeps trying with the expired A, and says
		// why it cannot connect.
		const want = "client certificate (CN=agentd) expired at"
		var lines []string
		err := cluster.Eventually(ctx, 60*time.Second, func() error {
			lines = logLinesWith(h1, restarted, want)
			if len(lines) == 0 {
				return fmt.Errorf("the agent has not logged %q since etcd restarted", want)
			}
			return nil
		})
		if err != nil {
			log, _ := h1.AgentLog()
			t.Fatalf("%v; its log:\n%s", err, log)
		}
		t.Logf("the agent, with A not replaced, logged:\n%s", strings.Join(lines, "\n"))
		if a.Exited() {
			t.Errorf("the agent exited (code %d) instead of retrying", a.ExitCode())
		}
		if n := peersKnown(t, ctx, h1); n != 0 {
			t.Errorf("agentd_peers %v, want 0: the peer %s was written while the agent could not connect", n, peerKey)
		}
		if n := etcdKeepAlives(t, ctx, c); n != 0 {
			t.Errorf("the restarted etcd received %d lease keepalives from an agent with an expired certificate, want none", n)
		}
		// The endpoint checker says the same, for each endpoint. Its
		// rounds are its own: one that began before etcd stopped may
		// still be waiting (up to endpointCheckTimeout per endpoint) when
		// the line above is logged, so the metrics and /status can show
		// the endpoints up a few seconds longer.
		err = cluster.Eventually(ctx, 30*time.Second, func() error {
			if err := agentConnected(ctx, h1, false); err != nil {
				return err
			}
			st := agentStatus(t, ctx, h1)
			if len(st.EtcdEndpoints) != 2 {
				return fmt.Errorf("/status shows endpoints %v, want %s and %s", st.EtcdEndpoints, rotEtcd1, rotEtcd2)
			}
			for _, ep := range st.EtcdEndpoints {
				if ep.Up || !strings.Contains(ep.Error, want) {
					return fmt.Errorf("/status: endpoint %s up=%v: %q; want down, with %q", ep.Endpoint, ep.Up, ep.Error, want)
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		return
	}

	// With B in place, the next handshake succeeds.
	err = cluster.Eventually(ctx, 60*time.Second, func() error {
		if err := agentConnected(ctx, h1, true); err != nil {
			return err
		}
		if n := etcdKeepAlives(t, ctx, c); n == 0 {
			return errors.New("the restarted etcd has received no keepalive of our lease yet")
		}
		if n := peersKnown(t, ctx, h1); n != 1 {
			return fmt.Errorf("agentd_peers %v, want 1 (%s, written after the restart)", n, peerKey)
		}
		return nil
	})
	if err != nil {
		log, _ := h1.AgentLog()
		t.Fatalf("after the rotation and etcd's restart: %v; the agent's log:\n%s", err, log)
	}
	t.Logf("reconnected with certificate B %v after the restart", time.Since(restarted).Round(100*time.Millisecond))
	// The lease is the one from before, renewed over the new connection.
	if k, l := ownLease(t, ctx, cli, prefix); k != ownKey || l != lease {
		t.Errorf("own lease %s on %x after the restart, want %s on %x", k, l, ownKey, lease)
	}
	ttl, err := cli.TimeToLive(ctx, lease)
	if err != nil || ttl.TTL <= 0 {
		t.Errorf("lease %x after the restart: TTL %v, %v; want it alive", lease, ttl, err)
	}
	if err := h1.WaitReady(ctx, 30*time.Second); err != nil {
		t.Error(err)
	}
	st := agentStatus(t, ctx, h1)
	if !st.EtcdConnected || st.PeersKnown != 1 {
		t.Errorf("/status after the rotation: etcdConnected %v, peersKnown %d; want true, 1 (%s)", st.EtcdConnected, st.PeersKnown, peer)
	}
	if a.Exited() {
		t.Errorf("the agent exited with code %d", a.ExitCode())
	}
}

// certNotAfter is the end of the validity of the PEM certificate in path.
func certNotAfter(t *testing.T, path string) time.Time {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cert.NotAfter
}

// agentConnected checks that the agent reports its etcd connection, and
// each endpoint, up (want true) or down (false).
func agentConnected(ctx context.Context, h *cluster.Host, want bool) error {
	v := 0.0
	if want {
		v = 1
	}
	for _, m := range []string{
		"agentd_etcd_connected",
		`agentd_etcd_endpoint_up{endpoint="` + rotEtcd1 + `"}`,
		`agentd_etcd_endpoint_up{endpoint="` + rotEtcd2 + `"}`,
	} {
		got, err := h.Metric(ctx, m)
		if err != nil {
			return err
		}
		if got != v {
			return fmt.Errorf("%s %v, want %v", m, got, v)
		}
	}
	return nil
}

func peersKnown(t *testing.T, ctx context.Context, h *cluster.Host) float64 {
	t.Helper()
	n, err := h.Metric(ctx, "agentd_peers")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func agentStatus(t *testing.T, ctx context.Context, h *cluster.Host) Status {
	t.Helper()
	code, body, err := h.HealthGet(ctx, "/status")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /status: %d %s %v", code, body, err)
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	return st
}

// ownLease is the agent's lease key under prefix (the only one bound to an
// etcd lease) and that lease.
func ownLease(t *testing.T, ctx context.Context, cli *clientv3.Client, prefix string) (string, clientv3.LeaseID) {
	t.Helper()
	r, err := cli.Get(ctx, prefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	var lease clientv3.LeaseID
	for _, kv := range r.Kvs {
		if kv.Lease != 0 {
			keys = append(keys, strings.TrimPrefix(string(kv.Key), prefix+"/subnets/"))
			lease = clientv3.LeaseID(kv.Lease)
		}
	}
	if len(keys) != 1 {
		t.Fatalf("leased keys under %s/subnets: %v, want the agent's only", prefix, keys)
	}
	return keys[0], lease
}

// writePeer writes a reservation for another host (198.18.0.2) in a subnet
// next to own, and returns its key and value.
func writePeer(t *testing.T, ctx context.Context, cli *clientv3.Client, prefix, own string) (string, string) {
	t.Helper()
	sn, _, err := subnet.ParseSubnetKey(own)
	if err != nil {
		t.Fatal(err)
	}
	b := sn.Addr().As4()
	b[2] ^= 1
	key := subnet.MakeSubnetKey(netip.PrefixFrom(netip.AddrFrom4(b), sn.Bits()), netip.Prefix{})
	val := `{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"host-gw","HostID":"0123456789abcdef0123456789abcdef"}`
	if _, err := cli.Put(ctx, prefix+"/subnets/"+key, val); err != nil {
		t.Fatal(err)
	}
	return key, val
}

// logLinesWith returns the entries of the agent's log that contain s and
// were logged at or after since (klog's header gives the time of day; an
// entry may go on over several lines).
func logLinesWith(h *cluster.Host, since time.Time, s string) []string {
	log, _ := h.AgentLog()
	var out []string
	var entry []string
	var at time.Time
	flush := func() {
		if e := strings.Join(entry, "\n"); strings.Contains(e, s) && !at.Before(since.Truncate(time.Second)) {
			out = append(out, e)
		}
		entry = nil
	}
	for _, l := range strings.Split(log, "\n") {
		if t, ok := klogTime(l, since); ok {
			flush()
			at = t
		}
		entry = append(entry, l)
	}
	flush()
	return out
}

// klogTime reads the time of day of a klog line ("E0102 15:04:05.000000 …")
// as a time on since's day.
func klogTime(line string, since time.Time) (time.Time, bool) {
	f := strings.Fields(line)
	if len(f) < 2 || len(f[0]) != 5 {
		return time.Time{}, false
	}
	tod, err := time.ParseInLocation("15:04:05.000000", f[1], time.Local)
	if err != nil {
		return time.Time{}, false
	}
	y, m, d := since.Date()
	return time.Date(y, m, d, tod.Hour(), tod.Minute(), tod.Second(), tod.Nanosecond(), time.Local), true
}

// etcdKeepAlives is how many lease keepalives the running etcd process has
// received (only the agent sends any).
func etcdKeepAlives(t *testing.T, ctx context.Context, c *cluster.Cluster) int {
	t.Helper()
	n, err := c.EtcdMetric(ctx, `grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"}`)
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}
