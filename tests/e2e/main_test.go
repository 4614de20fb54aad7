package e2e

import (
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestMain prints, after all tests, the pings each traffic-carrying scenario
// sent and lost, so a run's output ends with the suite's evidence.
// go test shows a passing package's output only with -v, so the table also
// goes to the file named by AGENTD_E2E_RESULTS when set (make test prints it).
func TestMain(m *testing.M) {
	code := m.Run()
	printResults(os.Stdout)
	if path := os.Getenv("AGENTD_E2E_RESULTS"); path != "" {
		if f, err := os.Create(path); err == nil {
			printResults(f)
			f.Close()
		}
	}
	os.Exit(code)
}

type resultRow struct {
	scenario   string
	sent, lost int
	note       string
}

var results struct {
	sync.Mutex
	rows []resultRow
}

// recordLoss adds a scenario's ping counts to the table printed at the end.
func recordLoss(scenario string, r cluster.PingResult, note string) {
	results.Lock()
	defer results.Unlock()
	results.rows = append(results.rows, resultRow{scenario, r.Sent, r.Lost(), note})
}

func printResults(w io.Writer) {
	results.Lock()
	defer results.Unlock()
	if len(results.rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nlost pings per scenario (10 ms interval):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tsent\tlost\tnote")
	for _, r := range results.rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", r.scenario, r.sent, r.lost, r.note)
	}
	tw.Flush()
}

// pingInterval is how far apart the tests' pings are.
const pingInterval = 10 * time.Millisecond
