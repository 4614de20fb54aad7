package agent

import (
	"os"
	"testing"

	"github.com/agentd/agentd/backend/udp"
)

func TestMain(m *testing.M) {
	// The udp backend's descriptor keeper is this binary run again
	// (/proc/self/exe), as it is agentd in production.
	if udp.IsKeeper() {
		os.Exit(udp.RunKeeper())
	}
	os.Exit(m.Run())
}
