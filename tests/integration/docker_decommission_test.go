package integration

import (
	"context"
	"net/netip"
	"slices"
	"testing"
)

// TestDockerDecommission: what a Docker host decommissioned as README says
// (agentd stopped, agentd --release-lease, the drop-in removed, docker
// restarted with no container running) gives dockerd, which keeps the bridge
// network it was last given:
//
//	h1: agentd ── subnet.env 10.244.A.1/24 ── drop-in ── dockerd --bip=10.244.A.1/24 ── docker0 10.244.A.1, container 10.244.A.2
//	    agentd stopped; --release-lease: the lease and subnet.env gone (10.244.A.0/24 free for another host)
//	    dockerd without the drop-in, daemon.json {}:                docker0 10.244.A.1, a new container 10.244.A.x
//	    the same after ip link delete docker0:                     docker0 10.244.A.1 again (dockerd's network store)
//	    daemon.json {"bip":"172.17.0.1/16"}:                         docker0 172.17.0.1/16, a new container 172.17.0.x
//	    "bip" removed again:                                         docker0 stays 172.17.0.1/16
//
// dockerd 20.10 behaves so; the test fails, naming what changed, if a
// dockerd does not.
func TestDockerDecommission(t *testing.T) {
	removeDockerTrustKeyAfter(t)
	dc := newDockerCluster(t, "vxlan", 1, "--ip-masq")
	c := dc.c
	ctx := context.Background()
	h := c.Host(1)
	lease := readEnv(t, h).Subnet

	// dockerd's IPv4 bridge address, and that of a new container, which is
	// stopped again so that the next dockerd starts with none running.
	check := func(d *dockerd) ([]netip.Prefix, netip.Addr) {
		t.Helper()
		addrs, err := h.Addrs("docker0")
		if err != nil {
			t.Fatalf("%s: docker0: %v", h, err)
		}
		addrs = slices.DeleteFunc(addrs, func(p netip.Prefix) bool { return !p.Addr().Is4() })
		_, ip := d.run(t, ctx, "--stop-timeout=1")
		if out, err := d.docker(ctx, append([]string{"stop"}, d.containers...)...); err != nil {
			t.Fatalf("%s: docker stop: %v: %s", h, err, out)
		}
		return addrs, ip
	}
	// restart is systemctl restart docker with the drop-ins given, dockerd
	// reading daemonJSON; the containers stay dockerd's (stopped).
	restart := func(d *dockerd, daemonJSON string, dropIns ...string) *dockerd {
		t.Helper()
		if _, err := d.proc.Stop(); err != nil {
			t.Fatal(err)
		}
		nd, err := startDockerdUnit(t, c, h, dc.dockerdBin, dc.dockerBin, dc.optsBin, daemonJSON, dropIns...)
		if err != nil {
			t.Fatal(err)
		}
		nd.containers, d.containers = d.containers, nil
		return nd
	}

	d, err := startDockerd(t, c, h, dc.dockerdBin, dc.dockerBin, dc.optsBin, "{}\n")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.docker(ctx, "import", "--change", `CMD ["/bin/sleep","1000000"]`, dc.rootfs, "agentd-busybox:test"); err != nil {
		t.Fatal(err)
	}
	addrs, ip := check(d)
	if !slices.Equal(addrs, []netip.Prefix{lease}) || !lease.Masked().Contains(ip) {
		t.Fatalf("%s: with the drop-in, docker0 %v and a container %s, want %s and an address in it", h, addrs, ip, lease)
	}
	t.Logf("%s: with the drop-in: docker0 %v, container %s", h, addrs, ip)

	// Decommission: agentd stopped, then agentd --release-lease.
	if _, err := h.Agent().Stop(); err != nil {
		t.Fatal(err)
	}
	rel, err := h.StartAgent(ctx, "--release-lease")
	if err != nil {
		t.Fatal(err)
	}
	if code, err := rel.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("%s: agentd --release-lease: exit %d, %v", h, code, err)
	}
	if fileExists(h.SubnetFile()) {
		t.Fatalf("%s: subnet.env still there after --release-lease", h)
	}

	// The drop-in removed: dockerd as docker.service alone starts it keeps
	// the released subnet, also once docker0 is deleted.
	d = restart(d, "{}\n")
	addrs, ip = check(d)
	if !slices.Equal(addrs, []netip.Prefix{lease}) || !lease.Masked().Contains(ip) {
		t.Errorf("%s: drop-in removed: docker0 %v and a new container %s, want the released %s kept (dockerd's behaviour changed: update README)", h, addrs, ip, lease)
	}
	t.Logf("%s: lease %s released, drop-in removed, dockerd restarted: docker0 %v, a new container %s", h, lease.Masked(), addrs, ip)
	if _, err := d.proc.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := h.Exec(ctx, "ip", "link", "delete", "docker0"); err != nil {
		t.Fatalf("%s: ip link delete docker0: %v: %s", h, err, out)
	}
	d = restart(d, "{}\n")
	addrs, ip = check(d)
	if !slices.Equal(addrs, []netip.Prefix{lease}) || !lease.Masked().Contains(ip) {
		t.Errorf("%s: drop-in removed, docker0 deleted: docker0 %v and a new container %s, want the released %s back (dockerd's behaviour changed: update README)", h, addrs, ip, lease)
	}
	t.Logf("%s: and after ip link delete docker0: docker0 %v, a new container %s", h, addrs, ip)

	// The way out: a "bip" of the operator's choosing.
	own := netip.MustParsePrefix("172.17.0.1/16")
	d = restart(d, `{"bip": "172.17.0.1/16"}`)
	addrs, ip = check(d)
	if !slices.Equal(addrs, []netip.Prefix{own}) || !own.Masked().Contains(ip) {
		t.Errorf("%s: daemon.json \"bip\": %s: docker0 %v and a new container %s, want both in it", h, own, addrs, ip)
	}
	t.Logf("%s: daemon.json \"bip\": %q: docker0 %v, a new container %s", h, own, addrs, ip)
	d = restart(d, "{}\n")
	addrs, ip = check(d)
	if !slices.Equal(addrs, []netip.Prefix{own}) || !own.Masked().Contains(ip) {
		t.Errorf("%s: \"bip\" removed again: docker0 %v and a new container %s, want %s kept", h, addrs, ip, own)
	}
	t.Logf("%s: \"bip\" removed again: docker0 %v, a new container %s", h, addrs, ip)
}
