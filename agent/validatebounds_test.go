package agent

import (
	"strings"
	"testing"
	"time"
)

// TestValidateResyncBounds: a Config built by a program rather than by
// agentd's flags is judged by the same bounds. A resync interval of a
// million hours made the health server's heartbeat limit
// (3*ResyncInterval+1m) negative, so /healthz stopped watching the
// reconcile loop.
func TestValidateResyncBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string // "" for accepted
	}{
		{"resync a day", func(c *Config) { c.ResyncInterval = 24 * time.Hour }, ""},
		{"resync beyond a day", func(c *Config) { c.ResyncInterval = 1000000 * time.Hour }, `invalid --resync-interval "1000000h0m0s": must be at most 24h0m0s`},
		{"iptables resync a day", func(c *Config) { c.IPTablesResync = 24 * time.Hour }, ""},
		{"iptables resync beyond a day", func(c *Config) { c.IPTablesResync = 25 * time.Hour }, `invalid --iptables-resync "90000": must be at most 86400 (seconds)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.set(&cfg)
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
