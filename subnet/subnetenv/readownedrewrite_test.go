package subnetenv

import (
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
)

// TestReadOwnedWhileRewritten: root's writer replacing subnet.env (a new
// file renamed over it, as agentd does when the MTU changes) while it is
// read is no reason to refuse it: ReadOwned reads one or the other.
func TestReadOwnedWhileRewritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	envs := []Env{
		{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.5.1/24"), MTU: 1450},
		{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.5.1/24"), MTU: 1400},
	}
	if err := Write(path, envs[0]); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := Write(path, envs[i%2]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for i := 0; i < 2000; i++ {
		env, err := ReadOwned(path)
		if err != nil {
			t.Fatalf("read %d while root rewrites it: %v", i+1, err)
		}
		if env.MTU != 1450 && env.MTU != 1400 {
			t.Fatalf("read %d: MTU %d, want 1450 or 1400", i+1, env.MTU)
		}
	}
}
