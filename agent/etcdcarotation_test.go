package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestEtcdCARotation: the file named by --etcd-cafile is read again at each
// new connection to etcd, so an agent follows etcd to a new CA once the
// file holds it, without a restart (TestEtcdClientCertRotation does the
// same for the client certificate; TestEtcdTLSVerify and TestCABundleReload
// have the verification and the file's changes in detail).
//
//	ns sw: bridge ─┬─ h1 198.18.0.1     agentd --etcd-cafile=etcd-ca.pem: CA 1, then CA 1 and CA 2
//	               └─ etcd 198.18.0.254  etcd on :2379 and :2389, a server certificate of CA 1, then of CA 2
//
// The agent connects trusting CA 1. etcd is then restarted with a server
// certificate of a new CA 2: the agent cannot reconnect, says why (an
// unknown authority), and does not see a peer written meanwhile. Then its CA
// file is replaced (written beside, renamed over) with a bundle of both
// CAs: the agent reconnects through both endpoints, sees the peer and keeps
// its lease. The first half is the control: the reconnection is the new
// file's doing, not a connection that never broke.
func TestEtcdCARotation(t *testing.T) {
	c := cluster.Start(t, cluster.Options{
		Hosts:   1,
		EtcdTLS: &cluster.EtcdTLS{},
		EtcdArgs: []string{
			"--listen-client-urls=" + rotEtcd1 + "," + rotEtcd2,
			"--advertise-client-urls=" + rotEtcd1 + "," + rotEtcd2,
		},
	})
	ctx := t.Context()
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "/coreos.com/network"
	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`); err != nil {
		t.Fatal(err)
	}
	clusterCA, _, _ := c.EtcdTLSFiles()
	ca1, err := os.ReadFile(clusterCA)
	if err != nil {
		t.Fatal(err)
	}
	agentCA := filepath.Join(t.TempDir(), "etcd-ca.pem")
	writeFileRenamed(t, agentCA, ca1)

	h1 := c.Host(1)
	a, err := h1.StartAgent(ctx, "--etcd-cafile="+agentCA,
		"--etcd-endpoints="+rotEtcd1+","+rotEtcd2, "--etcd-endpoint-check-interval=1s",
		"--iptables-forward-rules=false")
	if err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx, 120*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Eventually(ctx, 30*time.Second, func() error { return agentConnected(ctx, h1, true) }); err != nil {
		t.Fatalf("ready trusting CA 1: %v", err)
	}
	ownKey, lease := ownLease(t, ctx, cli, prefix)

	// etcd moves to CA 2; the test's clients follow it.
	if err := c.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	if err := c.RotateEtcdCA("agentd test CA 2"); err != nil {
		t.Fatal(err)
	}
	if err := c.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	if cli, err = c.EtcdClient(); err != nil {
		t.Fatal(err)
	}
	peerKey, _ := writePeer(t, ctx, cli, prefix, ownKey)
	t.Logf("etcd restarted with a certificate of CA 2; wrote peer %s", peerKey)

	const unknown = "x509: certificate signed by unknown authority"
	var lines []string
	err = cluster.Eventually(ctx, 60*time.Second, func() error {
		if lines = logLinesWith(h1, restarted, unknown); len(lines) == 0 {
			return fmt.Errorf("the agent has not logged %q since etcd restarted", unknown)
		}
		return agentConnected(ctx, h1, false)
	})
	if err != nil {
		log, _ := h1.AgentLog()
		t.Fatalf("trusting CA 1 only: %v; the agent's log:\n%s", err, log)
	}
	t.Logf("the agent, trusting CA 1 only, logged:\n%s", strings.Join(lines, "\n"))
	for _, ep := range agentStatus(t, ctx, h1).EtcdEndpoints {
		if ep.Up || !strings.Contains(ep.Error, unknown) {
			t.Errorf("/status: endpoint %s up=%v: %q; want down, with %q", ep.Endpoint, ep.Up, ep.Error, unknown)
		}
	}
	if n := peersKnown(t, ctx, h1); n != 0 {
		t.Errorf("agentd_peers %v, want 0: the peer %s was written while the agent could not connect", n, peerKey)
	}

	// The bundle of both CAs, as cert-manager writes it during a rotation.
	ca2, err := os.ReadFile(clusterCA)
	if err != nil {
		t.Fatal(err)
	}
	writeFileRenamed(t, agentCA, append(ca1, ca2...))
	replaced := time.Now()
	err = cluster.Eventually(ctx, 60*time.Second, func() error {
		if err := agentConnected(ctx, h1, true); err != nil {
			return err
		}
		if n := peersKnown(t, ctx, h1); n != 1 {
			return fmt.Errorf("agentd_peers %v, want 1 (%s, written after the restart)", n, peerKey)
		}
		return nil
	})
	if err != nil {
		log, _ := h1.AgentLog()
		t.Fatalf("after the CA file was replaced with both CAs: %v; the agent's log:\n%s", err, log)
	}
	t.Logf("reconnected %v after the CA file was replaced", time.Since(replaced).Round(100*time.Millisecond))
	const reread = `"etcd CA file read again; new connections to etcd trust its certificates"`
	if lines := logLinesWith(h1, replaced, reread); len(lines) == 0 || !strings.Contains(lines[0], `cas=["CN=agentd test CA","CN=agentd test CA 2"]`) {
		t.Errorf("the agent logged %q since the CA file was replaced, want %s naming both CAs", lines, reread)
	}
	if k, l := ownLease(t, ctx, cli, prefix); k != ownKey || l != lease {
		t.Errorf("own lease %s on %x after the rotation, want %s on %x", k, l, ownKey, lease)
	}
	if err := h1.WaitReady(ctx, 30*time.Second); err != nil {
		t.Error(err)
	}
	if a.Exited() {
		t.Errorf("the agent exited with code %d", a.ExitCode())
	}
}
