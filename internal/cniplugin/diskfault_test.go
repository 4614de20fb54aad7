package cniplugin

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/fsfault"
	"github.com/containernetworking/cni/pkg/types"
)

// TestAddCannotSave: when ADD cannot save the attachment's delegate
// configuration (a file size limit stands in for a full data dir), it fails
// with an I/O failure (code 5) naming the file and the cause before the
// delegate runs, so host-local allocates no address that nothing would
// release; no temporary file stays. DEL afterwards, as the runtime sends
// it, succeeds (it rebuilds the configuration from subnet.env), and again.
func TestAddCannotSave(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var err error
	fsfault.Full(t, func() { err = f.p.Add(f.args("c1", "")) })
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrIOFailure || !strings.Contains(te.Msg, f.saved("c1")+":") || !strings.Contains(te.Msg, "file too large") {
		t.Errorf("ADD that cannot save = %v, want code %d naming %s and the cause", err, types.ErrIOFailure, f.saved("c1"))
	}
	if len(f.exec.calls) != 0 {
		t.Errorf("ADD that cannot save ran the delegate: %+v", f.exec.calls)
	}
	if entries, err := os.ReadDir(f.dataDir); err != nil || len(entries) != 0 {
		t.Errorf("data dir holds %v, %v; want nothing", entries, err)
	}
	for _, when := range []string{"DEL", "DEL again"} {
		if err := f.p.Del(f.args("c1", "")); err != nil {
			t.Errorf("%s after the failed ADD: %v", when, err)
		}
	}
}
