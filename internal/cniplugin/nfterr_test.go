package cniplugin

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNFTMissingTableOlderMessage: some nft releases say of a table that
// is not there "Error: Could not process rule: No such file or directory",
// and nft says so of a rule deleted by a handle gone since the listing.
// That is nothing to remove, as "Error: No such file or directory" is
// (knftables reads both alike). Before, it was a failure: on such a node,
// where bridge never made the table, every DEL without the pod's namespace
// recorded a removal that later commands failed the same way for good, one
// more record per pod.
func TestNFTMissingTableOlderMessage(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\necho 'Error: Could not process rule: No such file or directory' >&2\necho \"$*\" >&2\necho '^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "nft"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(filepath.ListSeparator)+os.Getenv("PATH"))
	has, err := nftMasq{}.Has("cbr0", "c1", "eth0")
	if has || err != nil {
		t.Errorf("Has with the table not there: %v, %v; want false, nil", has, err)
	}
	if err := (nftMasq{}).Remove("cbr0", "c1", "eth0"); err != nil {
		t.Errorf("Remove with the table not there: %v", err)
	}
}
