package agent

import "testing"

// TestConnsForFDLimit: the health server keeps a quarter of the file
// descriptor limit at most, and never more than maxHealthConns.
func TestConnsForFDLimit(t *testing.T) {
	for _, tc := range []struct {
		nofile uint64
		want   int
	}{
		{0, 1}, {3, 1}, {64, 16}, {128, 32}, {256, maxHealthConns}, {1024, maxHealthConns}, {1 << 20, maxHealthConns}, {^uint64(0), maxHealthConns},
	} {
		if got := connsForFDLimit(tc.nofile); got != tc.want {
			t.Errorf("connsForFDLimit(%d) = %d, want %d", tc.nofile, got, tc.want)
		}
	}
}
