package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestEtcdAuthTokenExpiry: agents with --etcd-username keep their leases
// and follow peers' changes while their auth tokens expire between uses:
// each lease renewal comes 3 s after the last, a token lives 1 s. etcd
// refuses an expired token (a simple token expires --auth-token-ttl after
// its last use, a JWT its ttl after it was issued, in use or not), so the
// agents must get new ones: to renew their lease from etcd 3.5 on (3.4.23
// renews without looking at the token; 3.5.36 ends the keepalive stream as
// unauthenticated, and the etcd client authenticates again and opens a new
// one), and to watch and read again after their connections to etcd were
// cut or etcd restarted. Against 3.4.23 both cases failed without
// agent/etcd.go's tokenlessAuth (3.4 refuses to authenticate a request that
// carries an expired token); passed against 3.4.23, 3.5.36 and 3.7.3 when
// written.
func TestEtcdAuthTokenExpiry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args func(t *testing.T) []string
	}{
		{"simple", func(*testing.T) []string { return []string{"--auth-token-ttl=1"} }},
		{"jwt", func(t *testing.T) []string {
			pub, priv := jwtKeys(t)
			return []string{"--auth-token=jwt,pub-key=" + pub + ",priv-key=" + priv + ",sign-method=ES256,ttl=1s"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testEtcdAuthTokenExpiry(t, tc.args(t))
		})
	}
}

func testEtcdAuthTokenExpiry(t *testing.T, etcdArgs []string) {
	f := authFixture(t, 2, etcdArgs)
	h1, h2 := f.c.Host(1), f.c.Host(2)
	// Renewals every 3 s: the token (1 s) has expired at each.
	agentArgs := []string{"--etcd-username=flannel", "--etcd-password=flpw", "--subnet-lease-ttl=9s"}
	f.start(h1, agentArgs...)
	f.start(h2, agentArgs...)
	f.waitReady(h1, h2)
	f.pingAll([]*cluster.Container{f.container(h1), f.container(h2)})
	leases := f.ownLeases(f.rootClient(), h1, h2)

	f.renewedAfterExpiry(h1, h2)
	f.followsPut(f.rootClient(), "02:00:00:00:00:08", h1, h2)
	// New connections, a new watch and reads, with expired tokens.
	f.cutEtcdConns(h1, h2)
	f.followsPut(f.rootClient(), "02:00:00:00:00:0a", h1, h2)

	if err := f.c.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	if err := f.c.StartEtcd(f.ctx); err != nil {
		t.Fatal(err)
	}
	f.followsPut(f.rootClient(), "02:00:00:00:00:09", h1, h2)
	f.renewedAfterExpiry(h1, h2)
	f.pingAll([]*cluster.Container{f.container(h1), f.container(h2)})
	f.leasesKept(f.rootClient(), leases)
}

// renewedAfterExpiry waits until etcd has renewed each host's lease twice,
// each time more than 2 s after the last: the time left that the agent
// reports from etcd's keepalive answers (agentd_lease_ttl_remaining_seconds)
// went up.
func (f *fixture) renewedAfterExpiry(hosts ...*cluster.Host) {
	f.t.Helper()
	type seen struct {
		last    time.Time
		left    float64
		renewed int
	}
	s := make([]seen, len(hosts))
	for i := range s {
		s[i] = seen{last: time.Now(), left: -1}
	}
	f.eventually("each host renews its lease twice after its token expired", 30*time.Second, func() error {
		var errs []error
		for i, h := range hosts {
			v, err := h.Metric(f.ctx, "agentd_lease_ttl_remaining_seconds")
			if err != nil {
				return err
			}
			if v > s[i].left+0.5 && s[i].left >= 0 {
				if time.Since(s[i].last) > 2*time.Second {
					s[i].renewed++
				}
				s[i].last = time.Now()
			}
			s[i].left = v
			if s[i].renewed < 2 {
				errs = append(errs, fmt.Errorf("%s renewed %d times, %.1f s left", h, s[i].renewed, v))
			}
		}
		return errors.Join(errs...)
	})
}

// cutEtcdConns closes the hosts' TCP connections to etcd (ss -K: the
// kernel aborts them, and both ends see a reset).
func (f *fixture) cutEtcdConns(hosts ...*cluster.Host) {
	f.t.Helper()
	u, err := url.Parse(f.c.EtcdEndpoint())
	if err != nil {
		f.t.Fatal(err)
	}
	for _, h := range hosts {
		if out, err := h.Exec(f.ctx, "ss", "-K", "dst", u.Hostname()); err != nil {
			f.t.Fatalf("%s: ss -K: %v %s", h, err, out)
		}
	}
}

// followsPut writes, through root, a peer's lease with VTEP MAC mac and
// waits until every host programs it.
func (f *fixture) followsPut(root *clientv3.Client, mac string, hosts ...*cluster.Host) {
	f.t.Helper()
	// Retried: with several members, a put during an election fails.
	f.eventually("put a peer's lease", ready, func() error {
		_, err := root.Put(f.ctx, prefix+"/subnets/10.244.200.0-24",
			`{"PublicIP":"198.18.0.77","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"`+mac+`"}}`)
		return err
	})
	for _, h := range hosts {
		f.eventually(h.String()+" programs the lease written with "+mac, ready, func() error {
			out, err := h.Exec(f.ctx, "ip", "neigh", "show", "10.244.200.0", "dev", "flannel.1")
			if err != nil || !strings.Contains(string(out), mac) {
				return fmt.Errorf("neighbour 10.244.200.0: %q %v", out, err)
			}
			return nil
		})
	}
}

// ownLeases returns the etcd lease of each host's subnet key.
func (f *fixture) ownLeases(root *clientv3.Client, hosts ...*cluster.Host) map[string]int64 {
	f.t.Helper()
	m := map[string]int64{}
	for _, h := range hosts {
		key := prefix + "/subnets/" + strings.Replace(hostSubnet(f.t, h).String(), "/", "-", 1)
		resp, err := root.Get(f.ctx, key)
		if err != nil {
			f.t.Fatal(err)
		}
		if len(resp.Kvs) != 1 {
			f.t.Fatalf("%s's key %s is gone", h, key)
		}
		m[key] = resp.Kvs[0].Lease
	}
	return m
}

// leasesKept fails unless every key of want still has its lease.
func (f *fixture) leasesKept(root *clientv3.Client, want map[string]int64) {
	f.t.Helper()
	for key, id := range want {
		resp, err := root.Get(f.ctx, key)
		if err != nil {
			f.t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || resp.Kvs[0].Lease != id {
			f.t.Errorf("%s: lease %x lost: %v", key, id, resp.Kvs)
		}
	}
}

// jwtKeys writes an ECDSA key pair for etcd's JWT tokens and returns the
// paths of the public and the private key.
func jwtKeys(t *testing.T) (pub, priv string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pub, priv = filepath.Join(dir, "jwt.pub"), filepath.Join(dir, "jwt.key")
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return pub, priv
}
