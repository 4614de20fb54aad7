package main

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/testnobody"
	"github.com/agentd/agentd/subnet/subnetenv"
)

// TestOutputPathRefused: an --output in a directory another user may write
// to (without the sticky bit) is refused before anything is read or
// written, naming the directory and how to mend it. The file is dockerd's
// command line: before 2026-12-06 it was written (exit 0), and the test's
// nobody then replaced it with one giving dockerd -H tcp://0.0.0.0:2375,
// an unauthenticated Docker API, which is root for whoever reaches it. In
// a sticky directory of root's, as /tmp is, the file is written and nobody
// cannot replace it.
func TestOutputPathRefused(t *testing.T) {
	testnobody.Require(t)
	subnetFile := filepath.Join(t.TempDir(), "subnet.env")
	if err := subnetenv.Write(subnetFile, subnetenv.Env{
		Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.5.1/24"), MTU: 1450, IPMasq: true,
	}); err != nil {
		t.Fatal(err)
	}
	const forged = `DOCKER_NETWORK_OPTIONS="-H tcp://0.0.0.0:2375"` + "\n"
	for _, tc := range []struct {
		name   string
		mode   os.FileMode
		refuse bool
	}{
		{"writable by all", 0o777, true},
		{"sticky and root's", 0o777 | os.ModeSticky, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := testnobody.Dir(t, "outputpath")
			dir := filepath.Join(base, "flannel")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			output := filepath.Join(dir, "docker-network.env")
			var stdout, stderr strings.Builder
			code := run(context.Background(), []string{"--subnet-file", subnetFile, "--output", output, "--docker-config=", "--bridge="}, &stdout, &stderr)

			swapOut, swapErr := testnobody.Run(t, `printf '%s' "$FORGED" > "$OUT.new" && mv -f "$OUT.new" "$OUT"`, "FORGED="+forged, "OUT="+output)
			b, _ := os.ReadFile(output)

			if !tc.refuse {
				if code != exitOK || !strings.Contains(string(b), "--bip=10.244.5.1/24") {
					t.Errorf("exit %d, stderr %q, %s holds %q; want 0 and this host's options", code, stderr.String(), output, b)
				}
				if swapErr == nil {
					t.Errorf("nobody replaced root's file in a sticky directory: %s", b)
				}
				return
			}
			if swapErr != nil {
				t.Fatalf("nobody's replacement: %v %s; want it to succeed in a directory others may write to", swapErr, swapOut)
			}
			want := "agentd-docker-opts: --output: " + dir + " is writable by its group or others (mode 0777) and not sticky, so someone other than root may have replaced " + output + ": "
			if code != exitFailure || !strings.HasPrefix(stderr.String(), want) || !strings.HasSuffix(stderr.String(), "(chown root: "+dir+"; chmod go-w "+dir+")\n") {
				t.Errorf("exit %d, stderr %q; want %d, starting %q and saying how to mend it (after it, dockerd would read %q)", code, stderr.String(), exitFailure, want, b)
			}
		})
	}
}
