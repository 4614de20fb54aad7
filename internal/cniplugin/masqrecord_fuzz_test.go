package cniplugin

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/testtmp"
)

// FuzzReadMasqRecord: whatever a file in _masq-retry holds (a record of
// this agentd-cni, an empty file of an older one or of a full disk, one cut
// short, an operator's edit), readMasqRecord returns a record with a time:
// the file's when it decodes as a record with a time, else now with no
// failed retries, so that the record counts from its next failed retry.
// A record it writes reads back the same.
func FuzzReadMasqRecord(f *testing.F) {
	for _, s := range []string{
		`{"since":"2026-12-06T11:45:33.123456789Z","failedRetries":3}` + "\n",
		`{"since":"2026-12-06T11:45:33Z"}`, `{"failedRetries":7}`, `{"since":"0001-01-01T00:00:00Z","failedRetries":2}`,
		``, "\n", `{"since":"2026-12-06T11:45`, `null`, `[]`, `{"since":5}`, `{"failedRetries":-1,"since":"2026-12-06T11:45:33+02:00"}`,
		`{"since":"2026-12-06T11:45:33Z","failedRetries":1e99}`, `{"since":"2026-12-06T11:45:33Z"}x`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	dir := testtmp.Dir(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "cbr0:c1:eth0")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r := readMasqRecord(path, now)
		var want masqRecord
		if err := json.Unmarshal(b, &want); err != nil || want.Since.IsZero() {
			want = masqRecord{Since: now}
		}
		if !r.Since.Equal(want.Since) || r.FailedRetries != want.FailedRetries {
			t.Fatalf("readMasqRecord(%q) = %+v, want %+v", b, r, want)
		}
		if err := writeMasqRecord(path, r); err != nil {
			t.Fatal(err)
		}
		if back := readMasqRecord(path, now.Add(time.Hour)); !back.Since.Equal(r.Since) || back.FailedRetries != r.FailedRetries {
			t.Fatalf("record %+v written and read back as %+v", r, back)
		}
	})
}
