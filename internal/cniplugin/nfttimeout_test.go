package cniplugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNFTTimeout: an nft that never finishes (its netlink socket stuck) is
// killed after nftTimeout and its error says so, rather than holding the
// DEL that asked it, and every ADD queued behind that DEL's retries, for
// good. Before 2026-12-06 nft ran without a limit.
func TestNFTTimeout(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nft"), []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	was := nftTimeout
	nftTimeout = 200 * time.Millisecond
	t.Cleanup(func() { nftTimeout = was })

	done := make(chan error, 1)
	go func() { done <- nft("list", "tables") }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "nft list tables: not done within 200ms, killed") {
			t.Fatalf("nft: %v, want it killed after 200ms", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nft still running 10 s after it was started, with a limit of 200ms")
	}
}
