package agent

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
)

// TestFollowMTULoggedBeforeStatus: when the external interface's MTU goes
// from 1450 to 1400 and followMTU writes subnet.env again, the line saying
// that subnet.env's MTU was lowered is logged while /status still says
// 1450: whoever sees 1400 there finds the line. It was logged once
// writeSubnetEnv had returned, after /status said 1400.
func TestFollowMTULoggedBeforeStatus(t *testing.T) {
	dir := t.TempDir()
	logs := &logLines{}
	var a *agent
	shown := make(chan int, 1) // /status's mtu when the line was logged
	log := funcr.New(func(prefix, args string) {
		logs.add(prefix, args)
		if strings.Contains(args, mtuLoweredMsg) {
			select {
			case shown <- a.obs.status(a.health).MTU:
			default:
			}
		}
	}, funcr.Options{})
	a = &agent{
		cfg:        Config{SubnetFile: filepath.Join(dir, "subnet.env"), StateDir: dir},
		log:        log,
		health:     newHealth(log),
		obs:        newObserver(),
		mtuChanged: make(chan struct{}, 1),
	}
	a.health.notify = func(string) (bool, error) { return false, nil }
	env := subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.5.1/24"), MTU: 1450}
	a.obs.setMTU(env.MTU)
	a.mtu.Store(1400)
	signal(a.mtuChanged)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.followMTU(ctx, &env, func(err error) { t.Errorf("fail(%v) called", err) })
	}()
	defer func() {
		cancel()
		<-done
	}()
	err := cluster.Eventually(ctx, 10*time.Second, func() error {
		if mtu := a.obs.status(a.health).MTU; mtu != 1400 {
			return fmt.Errorf("/status says mtu %d, want 1400", mtu)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := logs.count(mtuLoweredMsg); n != 1 {
		t.Fatalf("/status says mtu 1400 with %d lines saying subnet.env's MTU was lowered, want 1: %q", n, logs.get())
	}
	if mtu := <-shown; mtu != 1450 {
		t.Errorf("subnet.env's MTU lowered logged when /status said mtu %d, want 1450 still", mtu)
	}
}
