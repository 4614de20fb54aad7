package cluster

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// FlanneldEnv names the flanneld binary the tests run; make test and make
// bench build it (make flanneld-bin) and set it.
const FlanneldEnv = "AGENTD_FLANNELD_BIN"

// FlanneldBin returns the flanneld binary named by FlanneldEnv. Without one
// the test fails in CI and is skipped elsewhere, saying how to get one.
func FlanneldBin(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(FlanneldEnv)
	if bin == "" {
		msg := FlanneldEnv + " is not set: `make test` builds flanneld (make flanneld-bin) and sets it; or point it at a flanneld binary"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set, so this is a failure, not a skip)")
		}
		t.Skip(msg)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s=%s: %v", FlanneldEnv, bin, err)
	}
	return bin
}

// StartFlanneld starts the flanneld program bin in the host's namespace
// with the flags a flanneld unit would have (the cluster's etcd, the
// /coreos.com/network prefix, eth0, the host's subnet.env), followed by
// args; its output is appended to <LogDir>/h<i>-flanneld.log. It waits up
// to timeout until flanneld has written subnet.env: one without agentd's
// AGENTD_HOST_ID, so a file an agent left is not taken for flanneld's.
// When flanneld exits first it returns at once, with an error giving the
// exit code and the last lines of flanneld's log. flanneld runs until
// stopped, killed or the cluster closes.
func (h *Host) StartFlanneld(ctx context.Context, bin string, timeout time.Duration, args ...string) (*Process, error) {
	flags := []string{
		"-etcd-endpoints=" + h.c.EtcdEndpoint(), "-etcd-prefix=/coreos.com/network",
		"-iface=eth0", "-subnet-file=" + h.SubnetFile(), "-v=1",
	}
	if t := h.c.etcdTLS; t != nil {
		flags = append(flags, "-etcd-cafile="+t.ca)
		if t.clientCert != "" {
			flags = append(flags, "-etcd-certfile="+t.clientCert, "-etcd-keyfile="+t.clientKey)
		}
	}
	p, err := h.StartNamed("flanneld", bin, append(flags, args...)...)
	if err != nil {
		return nil, err
	}
	err = p.Eventually(ctx, timeout, func() error {
		if p.Exited() {
			return fmt.Errorf("flanneld exited with code %d", p.ExitCode())
		}
		env, err := h.SubnetEnv()
		if err != nil {
			return err
		}
		if env["FLANNEL_SUBNET"] == "" {
			return fmt.Errorf("no FLANNEL_SUBNET in %v", env)
		}
		if _, agentd := env["AGENTD_HOST_ID"]; agentd {
			return fmt.Errorf("subnet.env is still agentd's: %v", env)
		}
		return nil
	})
	if err != nil {
		return p, fmt.Errorf("%s: flanneld did not write subnet.env (log: %s): %w", h.Short, p.LogPath, err)
	}
	return p, nil
}
