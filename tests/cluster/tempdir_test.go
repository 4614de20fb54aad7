package cluster

import (
	"os"
	"path/filepath"
	"testing"
)

func TestInsideTempDir(t *testing.T) {
	tmp := os.TempDir()
	for _, tc := range []struct {
		dir  string
		want bool
	}{
		{filepath.Join(tmp, "agentd-1234"), true},
		{filepath.Join(tmp, "a", "b"), true},
		{tmp, false},
		{tmp + "foo", false},
		{filepath.Join(tmp, "..", "etc"), false},
		{"/", false},
		{"", false},
		{"agentd-1234", false},
	} {
		if got := insideTempDir(tc.dir); got != tc.want {
			t.Errorf("insideTempDir(%q) = %v, want %v", tc.dir, got, tc.want)
		}
	}
}
