package cluster

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestBuildLeavesMakeBin checks that the harness, with no Options.BinDir,
// builds outside bin/: make build puts the static, version-stamped programs
// there, and make test (which runs make build first) must leave them as they
// are, not replace them with plain go builds.
func TestBuildLeavesMakeBin(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	made := filepath.Join(root, "bin", "agentd-docker-opts")
	before, err := os.ReadFile(made)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := &Cluster{logf: t.Logf}
	got, err := c.Binary(ctx, "agentd-docker-opts")
	if err != nil {
		t.Fatal(err)
	}
	if got == made {
		t.Errorf("Binary built %s, where make build puts its own", got)
	}
	after, err := os.ReadFile(made)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("building %s changed %s", got, made)
	}
}
