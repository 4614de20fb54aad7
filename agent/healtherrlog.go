package agent

import (
	stdlog "log"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/internal/lograte"
	"github.com/go-logr/logr"
)

// healthServerErrMsg is logged, with err=, for each complaint of net/http
// about the health server: an accept that failed (`accept4: too many open
// files; retrying in 1s` once the file descriptor limit is reached), a
// handler that panicked.
const healthServerErrMsg = "health server error"

// httpErrorLines is how many of net/http's complaints a minute are logged
// at the default verbosity; the rest go to -v=2. While the file descriptor
// limit is reached, net/http retries each accept after a wait that doubles
// up to 1 s, and a connection accepted in between starts it again at 5 ms:
// that was 206 lines in 20 s with udp under `ulimit -n 24`.
const httpErrorLines = 5

// httpErrorLog is the health server's http.Server.ErrorLog. Without one,
// net/http writes its complaints to stderr in the standard logger's format
// (`2026/12/07 08:27:17 http: Accept error: …`), past klog's format, -v
// and bounds.
func httpErrorLog(log logr.Logger) *stdlog.Logger {
	return stdlog.New(&httpErrorWriter{log: log, lines: lograte.New(httpErrorLines, time.Minute, nil)}, "", 0)
}

// httpErrorWriter logs each message the standard logger writes to it (one
// Write each) through log, at most httpErrorLines a minute at -v=0.
type httpErrorWriter struct {
	log   logr.Logger
	mu    sync.Mutex
	lines *lograte.Limiter
}

func (w *httpErrorWriter) Write(p []byte) (int, error) {
	text := strings.TrimSpace(string(p))
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.lines.Next() {
	case lograte.Log:
		w.log.Error(nil, healthServerErrMsg, "err", text)
	case lograte.Last:
		w.log.Error(nil, healthServerErrMsg+"; the next ones are logged at -v=2 only until "+w.lines.Until().Format(time.TimeOnly), "err", text)
	case lograte.Quiet:
		w.log.V(2).Info(healthServerErrMsg, "err", text)
	}
	return len(p), nil
}
