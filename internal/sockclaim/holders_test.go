package sockclaim

import (
	"fmt"
	"os"
	"slices"
	"testing"
)

// TestHoldersExactName: a socket bound to the name with a blank after it,
// another name, is not a holder of the name; one bound to the name is.
// /proc/net/unix ends each line with the bound name as it is, blanks and
// all; read as blank-separated fields, "@name " was taken for "@name", so
// that any local process could be counted among a claim's holders (a
// squatter of another user standing in for an agentd this process cannot
// see makes Claim report only squatters, and its caller go on).
func TestHoldersExactName(t *testing.T) {
	addr := fmt.Sprintf("@agentd-sockclaim-test-%d", os.Getpid())
	for _, other := range []string{addr + " ", addr + "\t", addr + "\v"} {
		f, err := Bind(other, "other")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	if got := Holders(addr); got != nil {
		t.Fatalf("Holders(%q) = %v with only %q, %q and %q bound", addr, got, addr+" ", addr+"\t", addr+"\v")
	}
	f, err := Bind(addr, "claim")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := Holders(addr); !slices.Equal(got, []int{os.Getpid()}) {
		t.Fatalf("Holders(%q) = %v, want this process, %d", addr, got, os.Getpid())
	}
}
